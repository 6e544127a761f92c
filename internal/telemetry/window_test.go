package telemetry

import (
	"encoding/json"
	"math"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock is a settable clock for the window.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *fakeClock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// near reports whether got is within HDR precision (two significant digits:
// 1%) of want.
func near(got, want float64) bool {
	return math.Abs(got-want) <= want*0.01+1e-9
}

func TestWindowEmpty(t *testing.T) {
	w := NewWindow(0)
	if w.Span() != DefaultWindowSpan {
		t.Errorf("span = %v, want %v", w.Span(), DefaultWindowSpan)
	}
	s := w.Snapshot()
	if s != (WindowStats{}) {
		t.Errorf("empty window snapshot = %+v, want all zero", s)
	}
	for name, body := range map[string]map[string]any{
		"metrics": s.MetricsJSON(DefaultTargets()),
		"health":  s.HealthPerformance(DefaultTargets()),
	} {
		if _, err := json.Marshal(body); err != nil {
			t.Errorf("%s body does not encode: %v", name, err)
		}
	}
	met := s.TargetsMet(DefaultTargets())
	if !met["p99_under_1ms"] || met["cache_hit_rate_over_95"] {
		t.Errorf("empty window targets = %v: latency targets read as met, hit rate not", met)
	}
}

func TestWindowStats(t *testing.T) {
	type rec struct {
		d time.Duration
		s Sample
		n int
	}
	tests := []struct {
		name string
		recs []rec
		want WindowStats // percentiles compared within HDR precision
	}{
		{
			name: "one tier each",
			recs: []rec{
				{100 * time.Microsecond, Sample{CacheTier: "l1"}, 6},
				{200 * time.Microsecond, Sample{CacheTier: "l2"}, 2},
				{1 * time.Millisecond, Sample{CacheTier: "none", Partial: true}, 1},
				{2 * time.Millisecond, Sample{CacheTier: "none"}, 1},
			},
			want: WindowStats{
				RequestCount: 10,
				AvgLatencyMS: (0.6 + 0.4 + 1 + 2) / 10,
				P50MS:        0.1, P95MS: 2, P99MS: 2,
				CacheHitRate: 0.8, L1HitRate: 0.6, L2HitRate: 0.2, PartialEvalRate: 0.1,
			},
		},
		{
			name: "batches are counted apart from decisions",
			recs: []rec{
				{50 * time.Microsecond, Sample{CacheTier: "l1", Batch: true}, 30},
				{5 * time.Millisecond, Sample{BatchSize: 10}, 2},
				{5 * time.Millisecond, Sample{BatchSize: 40}, 1},
			},
			want: WindowStats{
				RequestCount: 30, AvgLatencyMS: 0.05,
				P50MS: 0.05, P95MS: 0.05, P99MS: 0.05,
				CacheHitRate: 1, L1HitRate: 1,
				BatchCount: 3, AvgBatchSize: 20, TotalBatchedRequests: 60,
			},
		},
		{
			name: "percentiles of a spread",
			recs: func() []rec {
				var r []rec
				for i := 1; i <= 1000; i++ {
					r = append(r, rec{time.Duration(i) * time.Microsecond, Sample{CacheTier: "none"}, 1})
				}
				return r
			}(),
			want: WindowStats{RequestCount: 1000, AvgLatencyMS: 0.5005, P50MS: 0.5, P95MS: 0.95, P99MS: 0.99},
		},
		{
			name: "negative and huge durations are clamped",
			recs: []rec{
				{-time.Second, Sample{}, 1},
				{time.Hour, Sample{}, 1},
			},
			want: WindowStats{RequestCount: 2, AvgLatencyMS: float64(time.Hour/time.Millisecond) / 2, P50MS: 0, P95MS: 10000, P99MS: 10000},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := NewWindow(time.Minute)
			for _, r := range tt.recs {
				for range r.n {
					w.Record(r.d, r.s)
				}
			}
			got := w.Snapshot()
			for _, c := range []struct {
				name      string
				got, want float64
			}{
				{"P50MS", got.P50MS, tt.want.P50MS},
				{"P95MS", got.P95MS, tt.want.P95MS},
				{"P99MS", got.P99MS, tt.want.P99MS},
				{"AvgLatencyMS", got.AvgLatencyMS, tt.want.AvgLatencyMS},
			} {
				if !near(c.got, c.want) {
					t.Errorf("%s = %v, want %v (±1%%)", c.name, c.got, c.want)
				}
			}
			got.P50MS, got.P95MS, got.P99MS, got.AvgLatencyMS = 0, 0, 0, 0
			tt.want.P50MS, tt.want.P95MS, tt.want.P99MS, tt.want.AvgLatencyMS = 0, 0, 0, 0
			for _, f := range []*float64{&got.CacheHitRate, &got.L1HitRate, &got.L2HitRate, &got.PartialEvalRate, &got.AvgBatchSize} {
				*f = math.Round(*f*1e9) / 1e9
			}
			if got != tt.want {
				t.Errorf("snapshot\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// TestWindowSlides drives the window with a fake clock: records age out after
// the span, a slot reused for a later second forgets its old content, and
// what is within the span stays.
func TestWindowSlides(t *testing.T) {
	tests := []struct {
		name  string
		steps []time.Duration // advance the clock, then record one decision
		after time.Duration   // advance before the snapshot
		want  uint64
	}{
		{"all within the span", []time.Duration{0, time.Second, 10 * time.Second}, 0, 3},
		{"everything expired", []time.Duration{0, time.Second}, 61 * time.Second, 0},
		{"the oldest falls out", []time.Duration{0, 30 * time.Second, 29 * time.Second}, 2 * time.Second, 2},
		{"a reused slot forgets", []time.Duration{0, 61 * time.Second}, 0, 1},
		{"two laps later", []time.Duration{0, 0, 0, 122 * time.Second}, time.Second, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock()
			w := newWindow(time.Minute, clk.now)
			for _, d := range tt.steps {
				clk.advance(d)
				w.Record(time.Millisecond, Sample{CacheTier: "l1"})
			}
			clk.advance(tt.after)
			if got := w.Snapshot().RequestCount; got != tt.want {
				t.Errorf("RequestCount = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestTargetsMet(t *testing.T) {
	tests := []struct {
		name    string
		stats   WindowStats
		targets Targets
		want    map[string]bool
	}{
		{
			name:    "default targets, all met",
			stats:   WindowStats{RequestCount: 1, P50MS: 0.1, P95MS: 0.3, P99MS: 0.9, CacheHitRate: 0.99},
			targets: DefaultTargets(),
			want: map[string]bool{"p50_under_0_5ms": true, "p95_under_0_8ms": true, "p99_under_1ms": true, "cache_hit_rate_over_95": true,
				"p50": true, "p95": true, "p99": true, "cache_hit_rate": true},
		},
		{
			name:    "at the threshold is not under it",
			stats:   WindowStats{RequestCount: 1, P50MS: 0.5, P95MS: 0.8, P99MS: 1, CacheHitRate: 0.95},
			targets: DefaultTargets(),
			want: map[string]bool{"p50_under_0_5ms": false, "p95_under_0_8ms": false, "p99_under_1ms": false, "cache_hit_rate_over_95": false,
				"p50": false, "p95": false, "p99": false, "cache_hit_rate": false},
		},
		{
			name:    "looser configured targets: fixed names keep their literal meaning",
			stats:   WindowStats{RequestCount: 1, P50MS: 2, P95MS: 3, P99MS: 4, CacheHitRate: 0.9},
			targets: Targets{P50MS: 5, P95MS: 5, P99MS: 5, CacheHitRate: 0.8},
			want: map[string]bool{"p50_under_0_5ms": false, "p95_under_0_8ms": false, "p99_under_1ms": false, "cache_hit_rate_over_95": false,
				"p50": true, "p95": true, "p99": true, "cache_hit_rate": true},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.stats.TargetsMet(tt.targets)
			if len(got) != len(tt.want) {
				t.Errorf("keys %v, want %v", keys(got), keys(tt.want))
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("%s = %v, want %v", k, got[k], v)
				}
			}
		})
	}
}

func keys[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// TestMetricsJSONShape checks the /v1/metrics and health bodies against
// api.md: exact key sets, numbers where numbers are due.
func TestMetricsJSONShape(t *testing.T) {
	w := NewWindow(time.Minute)
	w.Record(300*time.Microsecond, Sample{CacheTier: "l1"})
	w.Record(700*time.Microsecond, Sample{CacheTier: "none", Partial: true})
	w.Record(time.Millisecond, Sample{BatchSize: 4})
	s := w.Snapshot()

	decode := func(v map[string]any) map[string]any {
		t.Helper()
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		var out map[string]any
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	tests := []struct {
		name string
		body map[string]any
		keys map[string][]string // object path ("" = top) -> exact keys
	}{
		{
			name: "metrics",
			body: decode(s.MetricsJSON(DefaultTargets())),
			keys: map[string][]string{
				"":            {"avg_latency_ms", "batch_stats", "cache_hit_rate", "l1_hit_rate", "l2_hit_rate", "partial_eval_rate", "percentiles", "request_count", "targets_met"},
				"percentiles": {"p50", "p95", "p99"},
				"batch_stats": {"avg_batch_size", "batch_count", "total_batched_requests"},
				"targets_met": {"cache_hit_rate", "cache_hit_rate_over_95", "p50", "p50_under_0_5ms", "p95", "p95_under_0_8ms", "p99", "p99_under_1ms"},
			},
		},
		{
			name: "health",
			body: decode(s.HealthPerformance(DefaultTargets())),
			keys: map[string][]string{
				"":            {"avg_latency_ms", "p50_latency_ms", "p95_latency_ms", "p99_latency_ms", "request_count", "targets_met"},
				"targets_met": {"cache_hit_rate", "cache_hit_rate_over_95", "p50", "p50_under_0_5ms", "p95", "p95_under_0_8ms", "p99", "p99_under_1ms"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for path, want := range tt.keys {
				obj := tt.body
				if path != "" {
					obj, _ = tt.body[path].(map[string]any)
				}
				if got := keys(obj); strings.Join(got, ",") != strings.Join(want, ",") {
					t.Errorf("%q keys = %v, want %v", path, got, want)
				}
			}
			if n, _ := tt.body["request_count"].(float64); n != 2 {
				t.Errorf("request_count = %v, want 2", tt.body["request_count"])
			}
			if _, ok := tt.body["avg_latency_ms"].(float64); !ok {
				t.Errorf("avg_latency_ms is %T, want a number", tt.body["avg_latency_ms"])
			}
		})
	}
	m := decode(s.MetricsJSON(DefaultTargets()))
	if bs := m["batch_stats"].(map[string]any); bs["batch_count"] != 1.0 || bs["avg_batch_size"] != 4.0 || bs["total_batched_requests"] != 4.0 {
		t.Errorf("batch_stats = %v", bs)
	}
	if m["cache_hit_rate"] != 0.5 || m["partial_eval_rate"] != 0.5 {
		t.Errorf("rates: cache %v partial %v, want 0.5 each", m["cache_hit_rate"], m["partial_eval_rate"])
	}
}

// TestWindowConcurrent records from many goroutines while snapshots run; with
// -race it checks the locking, and the count checks nothing is lost.
func TestWindowConcurrent(t *testing.T) {
	w := NewWindow(time.Minute)
	const goroutines, each = 8, 2000
	var wg sync.WaitGroup
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
				_ = w.Snapshot()
			}
		}
	}()
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				w.Record(time.Duration(i+g)*time.Microsecond, Sample{CacheTier: "l1", Partial: i%2 == 0})
			}
		}()
	}
	wg.Wait()
	close(stop)
	// The goroutines may straddle a second boundary, but not a minute.
	if got := w.Snapshot().RequestCount; got != goroutines*each {
		t.Errorf("RequestCount = %d, want %d", got, goroutines*each)
	}
}

func BenchmarkWindowRecord(b *testing.B) {
	w := NewWindow(time.Minute)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			w.Record(time.Duration(i%1000)*time.Microsecond, Sample{CacheTier: "l1"})
		}
	})
}

func BenchmarkWindowSnapshot(b *testing.B) {
	w := NewWindow(time.Minute)
	for i := range 100000 {
		w.Record(time.Duration(i%5000)*time.Microsecond, Sample{CacheTier: "l1"})
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = w.Snapshot()
	}
}

// referenceStats computes what Snapshot must return the slow, obvious way:
// hdr Merge of every live shard, no cache.
func referenceStats(w *Window) (count uint64, p50, p95, p99 float64) {
	cur := w.now().UnixNano() / int64(windowSlot)
	merged := newWindowHistogram()
	for i := range w.ring {
		sh := &w.ring[i]
		sh.mu.Lock()
		if w.live(sh.slot, cur) {
			count += sh.count
			merged.Merge(sh.hist)
		}
		sh.mu.Unlock()
	}
	if count == 0 {
		return 0, 0, 0, 0
	}
	q := func(p float64) float64 { return float64(merged.ValueAtQuantile(p)) / 1e6 }
	return count, q(50), q(95), q(99)
}

// TestWindowSnapshotCache interleaves records, clock steps and snapshots, and
// checks every snapshot against an uncached merge: the per-slot sums must be
// refreshed when a slot gains records, when its ring position is reused for a
// later second, and when it leaves the window.
func TestWindowSnapshotCache(t *testing.T) {
	type step struct {
		advance time.Duration
		n       int
		d       time.Duration
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"growing current slot", []step{{0, 10, time.Millisecond}, {0, 10, 3 * time.Millisecond}, {0, 1, 9 * time.Millisecond}}},
		{"finished slots then new ones", []step{{0, 50, 100 * time.Microsecond}, {time.Second, 50, 2 * time.Millisecond}, {time.Second, 5, 50 * time.Millisecond}, {0, 0, 0}}},
		{"ring position reused", []step{{0, 20, time.Millisecond}, {30 * time.Second, 20, 5 * time.Millisecond}, {31 * time.Second, 1, 20 * time.Millisecond}, {0, 20, time.Millisecond}}},
		{"slots expire one by one", []step{{0, 10, time.Millisecond}, {20 * time.Second, 10, 2 * time.Millisecond}, {20 * time.Second, 10, 4 * time.Millisecond}, {21 * time.Second, 0, 0}, {20 * time.Second, 0, 0}, {20 * time.Second, 0, 0}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock()
			w := newWindow(time.Minute, clk.now)
			for i, s := range tt.steps {
				clk.advance(s.advance)
				for range s.n {
					w.Record(s.d, Sample{CacheTier: "l1"})
				}
				got := w.Snapshot()
				n, p50, p95, p99 := referenceStats(w)
				if got.RequestCount != n || got.P50MS != p50 || got.P95MS != p95 || got.P99MS != p99 {
					t.Errorf("step %d: snapshot count %d p50 %v p95 %v p99 %v; merge gives %d %v %v %v",
						i, got.RequestCount, got.P50MS, got.P95MS, got.P99MS, n, p50, p95, p99)
				}
			}
		})
	}
}

// BenchmarkWindowSnapshotFull is a snapshot of a full window: 60 seconds of
// 20,000 decisions each, spread from 20µs to 2ms.
func BenchmarkWindowSnapshotFull(b *testing.B) {
	clk := newFakeClock()
	w := newWindow(time.Minute, clk.now)
	for range 60 {
		for i := range 20000 {
			w.Record(time.Duration(20000+(i*7919)%2000000), Sample{CacheTier: "l1"})
		}
		clk.advance(time.Second)
	}
	clk.advance(-time.Second)
	w.Snapshot() // fill the per-slot sums, as the first call after each second does
	b.ReportAllocs()
	for b.Loop() {
		w.Record(time.Millisecond, Sample{CacheTier: "l1"}) // the current slot changes between calls
		_ = w.Snapshot()
	}
}
