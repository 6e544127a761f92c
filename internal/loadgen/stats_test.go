package loadgen

import (
	"math"
	"testing"
	"time"
)

// hdrClose reports whether got is within the precision of a 3-significant-
// digit HDR histogram (0.1%, plus one unit for tiny values) of want.
func hdrClose(got, want float64) bool {
	return math.Abs(got-want) <= want*1e-3+1e-6
}

func TestSummarizeKnownSamples(t *testing.T) {
	for _, tc := range []struct {
		name    string
		samples func(record func(time.Duration))
		want    LatencySummary
	}{
		{
			name: "1..10000 µs uniform",
			samples: func(rec func(time.Duration)) {
				for i := 1; i <= 10000; i++ {
					rec(time.Duration(i) * time.Microsecond)
				}
			},
			want: LatencySummary{Count: 10000, MinMs: 0.001, MeanMs: 5.0005, P50Ms: 5, P90Ms: 9, P95Ms: 9.5, P99Ms: 9.9, P999Ms: 9.99, MaxMs: 10},
		},
		{
			name: "99 fast, 1 slow",
			samples: func(rec func(time.Duration)) {
				for range 99 {
					rec(200 * time.Microsecond)
				}
				rec(300 * time.Millisecond)
			},
			want: LatencySummary{Count: 100, MinMs: 0.2, MeanMs: (99*0.2 + 300) / 100, P50Ms: 0.2, P90Ms: 0.2, P95Ms: 0.2, P99Ms: 0.2, P999Ms: 300, MaxMs: 300},
		},
		{
			name: "beyond the histogram range is clamped, not dropped",
			samples: func(rec func(time.Duration)) {
				rec(2 * time.Minute)
			},
			want: LatencySummary{Count: 1, MinMs: 60000, MeanMs: 60000, P50Ms: 60000, P90Ms: 60000, P95Ms: 60000, P99Ms: 60000, P999Ms: 60000, MaxMs: 60000},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := NewHistogram()
			tc.samples(func(d time.Duration) { recordLatency(h, d) })
			got := Summarize(h)
			if got.Count != tc.want.Count {
				t.Fatalf("count %d, want %d", got.Count, tc.want.Count)
			}
			for _, f := range []struct {
				name      string
				got, want float64
			}{
				{"min", got.MinMs, tc.want.MinMs}, {"mean", got.MeanMs, tc.want.MeanMs},
				{"p50", got.P50Ms, tc.want.P50Ms}, {"p90", got.P90Ms, tc.want.P90Ms},
				{"p95", got.P95Ms, tc.want.P95Ms}, {"p99", got.P99Ms, tc.want.P99Ms},
				{"p99.9", got.P999Ms, tc.want.P999Ms}, {"max", got.MaxMs, tc.want.MaxMs},
			} {
				if !hdrClose(f.got, f.want) {
					t.Errorf("%s = %v ms, want %v ms within HDR precision", f.name, f.got, f.want)
				}
			}
		})
	}
}

// Per-worker histograms merged must equal one histogram of all samples: the
// reason to merge rather than average percentiles.
func TestRecorderMergeEqualsSingleHistogram(t *testing.T) {
	const workers = 4
	recs := make([]*recorder, workers)
	for i := range recs {
		recs[i] = newRecorder(2)
	}
	single := NewHistogram()
	for i := 0; i < 4000; i++ {
		// Worker 3 is the slow one: averaging per-worker p99s would hide it.
		w := i % workers
		d := time.Duration(100+i%50) * time.Microsecond
		if w == 3 && i%8 == 3 {
			d = 50 * time.Millisecond
		}
		recs[w].record(i%2, d, Outcome(i%3))
		recordLatency(single, d)
	}
	total := newRecorder(2)
	for _, r := range recs {
		total.merge(r)
	}
	merged := NewHistogram()
	var requests, allowed, denied, failures int64
	for _, c := range total.scen {
		merged.Merge(c.hist)
		requests += c.requests
		allowed += c.allowed
		denied += c.denied
		failures += c.failures
	}
	if !merged.Equals(single) {
		t.Fatalf("merged histogram differs from the single one: %+v vs %+v", Summarize(merged), Summarize(single))
	}
	if requests != 4000 || allowed+denied+failures != 4000 {
		t.Fatalf("counts: requests %d allowed %d denied %d failures %d", requests, allowed, denied, failures)
	}
	if p99 := Summarize(merged).P99Ms; !hdrClose(p99, 50) {
		t.Fatalf("merged p99 %v ms, want 50 ms", p99)
	}
}

func TestCompliance(t *testing.T) {
	for _, tc := range []struct {
		name                           string
		allowOK, allowN, denyOK, denyN int64
		want                           float64 // NaN: nil
	}{
		{"all correct", 70, 70, 10, 10, 1},
		{"dangerous all allowed", 90, 90, 0, 10, 0.5},
		{"half of each", 5, 10, 5, 10, 0.5},
		{"only allow class", 95, 100, 0, 0, 0.95},
		{"only deny class", 0, 0, 9, 10, 0.9},
		{"nothing judged", 0, 0, 0, 0, math.NaN()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Compliance(tc.allowOK, tc.allowN, tc.denyOK, tc.denyN)
			if math.IsNaN(tc.want) {
				if got != nil {
					t.Fatalf("got %v, want nil", *got)
				}
				return
			}
			if got == nil || math.Abs(*got-tc.want) > 1e-12 {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestPercentileCurveIsMonotonic(t *testing.T) {
	h := NewHistogram()
	for i := 1; i <= 1000; i++ {
		recordLatency(h, time.Duration(i*i)*time.Microsecond)
	}
	pts := PercentileCurve(h)
	if len(pts) < 10 || pts[len(pts)-1].Percentile != 100 {
		t.Fatalf("curve too short or not ending at 100%%: %v", pts)
	}
	for i := 1; i < len(pts); i++ {
		if pts[i].Percentile < pts[i-1].Percentile || pts[i].LatencyMs < pts[i-1].LatencyMs {
			t.Fatalf("not monotonic at %d: %v then %v", i, pts[i-1], pts[i])
		}
	}
}
