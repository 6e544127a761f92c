package perfhistory

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"
)

// benchText renders a Go benchmark file with one line per sample: ns/op
// around nsCenter and req/s around rpsCenter, each with relative normal
// noise of sd, from a fixed seed.
func benchText(seed uint64, n int, nsCenter, rpsCenter, sd float64) []byte {
	rng := rand.New(rand.NewPCG(seed, seed*7+1))
	var b bytes.Buffer
	b.WriteString("goos: linux\ngoarch: amd64\npkg: example\n")
	for range n {
		ns := nsCenter * (1 + sd*rng.NormFloat64())
		rps := rpsCenter * (1 + sd*rng.NormFloat64())
		fmt.Fprintf(&b, "BenchmarkHTTP/scenario=safe_action/c=10\t1000\t%.0f ns/op\t%.2f req/s\n", ns, rps)
	}
	return b.Bytes()
}

func mustSet(t *testing.T, data []byte) *Set {
	t.Helper()
	s, err := ParseBenchmarks(data)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func verdicts(c *Comparison) map[string]Delta {
	out := map[string]Delta{}
	for _, d := range c.Deltas {
		out[d.Unit] = d
	}
	return out
}

func TestCompareDecisions(t *testing.T) {
	const n = 12
	base := benchText(1, n, 100000, 10000, 0.02)
	for _, tc := range []struct {
		name     string
		cur      []byte
		opts     CompareOptions
		secOp    Verdict
		reqS     Verdict
		wantSig  bool // the U test must find the change significant
		checkSig bool
	}{
		{"15% slower and 15% less throughput", benchText(2, n, 115000, 8500, 0.02), DefaultCompareOptions(), VerdictRegression, VerdictRegression, true, true},
		{"15% faster and 15% more throughput: improvements", benchText(3, n, 85000, 11500, 0.02), DefaultCompareOptions(), VerdictImprovement, VerdictImprovement, true, true},
		{"noise alone", benchText(4, n, 100000, 10000, 0.02), DefaultCompareOptions(), VerdictNoChange, VerdictNoChange, false, false},
		{"significant 5% change is within a 10% threshold", benchText(5, n, 105000, 9500, 0.005), CompareOptions{Alpha: 0.05, ThresholdPct: 10}, VerdictWithin, VerdictWithin, true, true},
		{"the same 5% change regresses at a 3% threshold", benchText(5, n, 105000, 9500, 0.005), CompareOptions{Alpha: 0.05, ThresholdPct: 3}, VerdictRegression, VerdictRegression, true, true},
		{"15% slower with 3 samples: too few to decide", benchText(6, 3, 115000, 8500, 0.02), DefaultCompareOptions(), VerdictInsufficient, VerdictInsufficient, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old := base
			if strings.Contains(tc.name, "3 samples") {
				old = benchText(1, 3, 100000, 10000, 0.02)
			}
			c := Compare(mustSet(t, old), mustSet(t, tc.cur), tc.opts)
			v := verdicts(c)
			if v["sec/op"].Verdict != tc.secOp {
				t.Errorf("sec/op: %s (p=%.4f change %.1f%%), want %s", v["sec/op"].Verdict, v["sec/op"].P, v["sec/op"].ChangePct, tc.secOp)
			}
			if v["req/s"].Verdict != tc.reqS {
				t.Errorf("req/s: %s (p=%.4f change %.1f%%), want %s", v["req/s"].Verdict, v["req/s"].P, v["req/s"].ChangePct, tc.reqS)
			}
			if tc.checkSig {
				for _, d := range v {
					if (d.P < c.Alpha) != tc.wantSig {
						t.Errorf("%s: p=%.4f, want significant=%v", d.Unit, d.P, tc.wantSig)
					}
				}
			}
			if want := tc.secOp == VerdictRegression; (len(c.Regressions()) > 0) != want {
				t.Errorf("regressions %v, want some: %v", c.Regressions(), want)
			}
		})
	}
}

// Noise alone must rarely be called a regression, and that is the U test's
// doing, not the threshold's: at the sample count CI uses (6 + 6) and a
// noise of 25%, the medians of two samples of one distribution often differ
// by more than the 10% threshold, so a threshold alone would flag a large
// share of noise-only pairs. The U test keeps the flagged share of metrics
// under alpha. Fixed seeds: the counts are the same on every run.
func TestNoiseIsRarelyARegression(t *testing.T) {
	const trials, n, sd = 200, 6, 0.25
	opts := DefaultCompareOptions()
	metrics, beyondThreshold, flagged := 0, 0, 0
	for seed := uint64(10); seed < 10+trials; seed++ {
		c := Compare(mustSet(t, benchText(seed, n, 100000, 10000, sd)), mustSet(t, benchText(seed+1000, n, 100000, 10000, sd)), opts)
		for _, d := range c.Deltas {
			metrics++
			if float64(d.Direction)*-d.ChangePct > opts.ThresholdPct {
				beyondThreshold++
			}
		}
		flagged += len(c.Regressions())
	}
	t.Logf("%d noise-only metrics: %d moved beyond the threshold for the worse, %d flagged", metrics, beyondThreshold, flagged)
	// The test is only meaningful if the threshold alone would fail often.
	if float64(beyondThreshold) < 0.2*float64(metrics) {
		t.Fatalf("only %d of %d metrics moved beyond the threshold: too little noise to test the U test", beyondThreshold, metrics)
	}
	if float64(flagged) > opts.Alpha*float64(metrics) {
		t.Fatalf("%d of %d noise-only metrics flagged as regressions, more than alpha %.2f of them (%d moved beyond the threshold)", flagged, metrics, opts.Alpha, beyondThreshold)
	}
}

func TestCompareAddedAndRemoved(t *testing.T) {
	old := mustSet(t, []byte("BenchmarkA 1 10 ns/op\nBenchmarkGone 1 5 ns/op\n"))
	cur := mustSet(t, []byte("BenchmarkA 1 10 ns/op\nBenchmarkNew 1 7 ns/op\n"))
	c := Compare(old, cur, DefaultCompareOptions())
	got := map[string]Verdict{}
	for _, d := range c.Deltas {
		got[d.Name] = d.Verdict
	}
	if got["New"] != VerdictAdded || got["Gone"] != VerdictRemoved || got["A"] != VerdictInsufficient {
		t.Fatalf("verdicts %v", got)
	}
}

func TestUnitDirection(t *testing.T) {
	meta := mustSet(t, []byte("Unit score/op better=higher\nBenchmarkA 1 3 score/op\n")).Units
	for _, tc := range []struct {
		unit string
		want Direction
	}{
		{"sec/op", LowerIsBetter},
		{"B/op", LowerIsBetter},
		{"allocs/op", LowerIsBetter},
		{"p99-sec/op", LowerIsBetter},
		{"errors", LowerIsBetter},
		{"req/s", HigherIsBetter},
		{"B/s", HigherIsBetter},
		{"decisions/s", HigherIsBetter},
		{"gateway-calls/s", HigherIsBetter},
		// Neither a "/s" nor a "-ratio" suffix makes a unit a rate to
		// maximise (review: a doubled errors/s or miss-ratio improved).
		{"errors/s", LowerIsBetter},
		{"miss-ratio", LowerIsBetter},
		{"ops/s", LowerIsBetter},     // not emitted here: unknown, judged a cost
		{"score/op", HigherIsBetter}, // explicit unit metadata wins
		// The project's own benchmarks' higher-is-better units (review:
		// a speed-up that halved was an improvement).
		{"speedup", HigherIsBetter},
		{"x-faster", HigherIsBetter},
		{"throughput-ratio", HigherIsBetter},
		{"l1hits/decision", HigherIsBetter},
		{"roundtrips/decision", LowerIsBetter},
		{"added-p50-us", LowerIsBetter},
	} {
		if got := UnitDirection(tc.unit, meta); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.unit, got, tc.want)
		}
	}
}

// TestBaselineCandidates: the records that fit a baseline selection, best
// first (LoadBaseline takes the first that is not damaged).
func TestBaselineCandidates(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	meta := func(ago time.Duration, commit string) RecordMeta {
		tm := now.Add(-ago)
		return RecordMeta{Time: tm, Commit: commit, Name: RecordName(tm, commit)}
	}
	metas := []RecordMeta{meta(10*day, "aaa111"), meta(3*day, "bbb222"), meta(1*day, "aaa111"), meta(time.Hour, "ccc333")}
	for _, tc := range []struct {
		name    string
		commit  string
		days    int
		exclude string
		want    string // commit@days-ago of the first candidate, or "" for none
	}{
		{"newest", "", 0, "", "ccc333"},
		{"newest of a commit", "aaa111", 0, "", "aaa111@1"},
		{"commit prefix", "bbb", 0, "", "bbb222@3"},
		{"at least 2 days old", "", 2, "", "bbb222@3"},
		{"at least 5 days old", "", 5, "", "aaa111@10"},
		{"nothing that old", "", 30, "", ""},
		{"unknown commit", "fff", 0, "", ""},
		{"own commit is not its baseline", "", 0, "ccc333", "aaa111@1"},
		// The exclusion matches abbreviations as --baseline-commit does
		// (review: it wanted the exact name, so a short-SHA record was the
		// baseline of its own full-SHA run).
		{"own commit given in full", "", 0, "ccc333ffffffffff", "aaa111@1"},
		{"own commit given abbreviated", "", 0, "ccc3", "aaa111@1"},
		{"baseline commit given in full", "bbb222ffffffffff", 0, "", "bbb222@3"},
		{"own commit given as a short prefix", "", 0, "ccc", "aaa111@1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ms := baselineCandidates(metas, tc.commit, tc.days, now, tc.exclude)
			if tc.want == "" {
				if len(ms) != 0 {
					t.Fatalf("got %+v, want no baseline", ms)
				}
				return
			}
			if len(ms) == 0 {
				t.Fatal("no baseline")
			}
			got := ms[0]
			commit, ago, _ := strings.Cut(tc.want, "@")
			if got.Commit != commit {
				t.Fatalf("got %s, want %s", got.Name, tc.want)
			}
			if ago != "" && got.Time != now.Add(-time.Duration(ago[0]-'0')*day) && got.Time != now.Add(-10*day) {
				t.Fatalf("got %s, want %s", got.Name, tc.want)
			}
		})
	}
}

func TestCompareMarkdown(t *testing.T) {
	c := Compare(mustSet(t, benchText(1, 10, 100000, 10000, 0.02)), mustSet(t, benchText(2, 10, 120000, 10000, 0.02)), DefaultCompareOptions())
	c.Baseline = &RecordMeta{Name: "2026-11-26T10-00-00Z_abc.txt", Commit: "abc"}
	var buf bytes.Buffer
	if err := WriteCompareMarkdown(&buf, c); err != nil {
		t.Fatal(err)
	}
	md := buf.String()
	for _, want := range []string{"## Performance regression check", "**1 regression(s)**", "### Regressions", "`HTTP/scenario=safe_action/c=10`", "| 🔴 |", "<details>"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	buf.Reset()
	if err := WriteCompareTable(&buf, c); err != nil || !strings.Contains(buf.String(), "regression") {
		t.Fatalf("table: %v\n%s", err, buf.String())
	}
}

func TestTrends(t *testing.T) {
	start := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	var metas []RecordMeta
	var sets []*Set
	// ns/op grows 100 -> 130 µs over 4 records; req/s stays flat.
	for i, ns := range []float64{100000, 110000, 90000, 130000} {
		tm := start.Add(time.Duration(i) * 24 * time.Hour)
		metas = append(metas, RecordMeta{Time: tm, Commit: fmt.Sprint(i), Name: RecordName(tm, fmt.Sprint(i))})
		sets = append(sets, mustSet(t, benchText(uint64(i+1), 5, ns, 10000, 0.001)))
	}
	ts := ComputeTrends(metas, sets, 10)
	if len(ts) != 2 {
		t.Fatalf("%d trends, want 2", len(ts))
	}
	for _, tr := range ts {
		if len(tr.Points) != 4 {
			t.Fatalf("%s: %d points", tr.Unit, len(tr.Points))
		}
		switch tr.Unit {
		case "sec/op":
			if tr.Direction != "worsening" || tr.Min > 91e-6 || tr.Max < 129e-6 || tr.First > 101e-6 || tr.Last < 129e-6 {
				t.Errorf("sec/op trend %+v", tr)
			}
			if tr.Median < 104e-6 || tr.Median > 106e-6 { // median of 90, 100, 110, 130
				t.Errorf("sec/op median %v, want 105µs", tr.Median)
			}
		case "req/s":
			if tr.Direction != "flat" {
				t.Errorf("req/s trend %+v", tr)
			}
		}
	}
	var buf bytes.Buffer
	if err := WriteTrendMarkdown(&buf, ts, 30); err != nil || !strings.Contains(buf.String(), "worsening") {
		t.Fatalf("markdown: %v\n%s", err, buf.String())
	}
	buf.Reset()
	if err := WriteTrendTable(&buf, ts, 30); err != nil || !strings.Contains(buf.String(), "flat") {
		t.Fatalf("table: %v\n%s", err, buf.String())
	}
}

// procsBench renders n samples of each named benchmark (name with any -N
// GOMAXPROCS suffix) at nsCenter ns/op with 1% noise.
func procsBench(seed uint64, n int, nsCenter float64, names ...string) []byte {
	rng := rand.New(rand.NewPCG(seed, 3))
	var b bytes.Buffer
	for range n {
		for _, name := range names {
			fmt.Fprintf(&b, "Benchmark%s\t1000\t%.0f ns/op\n", name, nsCenter*(1+0.01*rng.NormFloat64()))
		}
	}
	return b.Bytes()
}

// A GOMAXPROCS suffix is not part of a benchmark's identity: a runner with
// another core count (or GOMAXPROCS=1, where go test writes no suffix) must
// still be compared, with a warning, not reported as new and missing.
func TestCompareAcrossGOMAXPROCS(t *testing.T) {
	for _, tc := range []struct {
		name      string
		old, cur  []byte
		wantRegs  []string // names of the regressed metrics
		wantNames []string // names of every delta
		warn      string   // in the text report; "" for no GOMAXPROCS warning
	}{
		{"-2 then -4, twice as slow", procsBench(1, 10, 1000, "Decide-2"), procsBench(2, 10, 2000, "Decide-4"),
			[]string{"Decide"}, []string{"Decide"}, "GOMAXPROCS 2 in the baseline and 4 in this run"},
		{"-4 then GOMAXPROCS=1 (no suffix), twice as slow", procsBench(1, 10, 1000, "Decide-4"), procsBench(2, 10, 2000, "Decide"),
			[]string{"Decide"}, []string{"Decide"}, "GOMAXPROCS 4 in the baseline and 1 in this run"},
		{"sub-benchmark, -8 then -2", procsBench(1, 10, 1000, "HTTP/c=10-8"), procsBench(2, 10, 2000, "HTTP/c=10-2"),
			[]string{"HTTP/c=10"}, []string{"HTTP/c=10"}, "GOMAXPROCS 8 in the baseline and 2"},
		{"same GOMAXPROCS: no warning", procsBench(1, 10, 1000, "Decide-4"), procsBench(2, 10, 2000, "Decide-4"),
			[]string{"Decide"}, []string{"Decide"}, ""},
		{"noise at another GOMAXPROCS is no regression", procsBench(1, 10, 1000, "Decide"), procsBench(2, 10, 1000, "Decide-8"),
			nil, []string{"Decide"}, "GOMAXPROCS 1 in the baseline and 8"},
		{"-cpu 1,2 on both sides stay apart", procsBench(1, 10, 1000, "Decide", "Decide-2"),
			append(procsBench(2, 10, 1000, "Decide"), procsBench(3, 10, 2000, "Decide-2")...),
			[]string{"Decide-2"}, []string{"Decide-1", "Decide-2"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Compare(mustSet(t, tc.old), mustSet(t, tc.cur), DefaultCompareOptions())
			var regs, names []string
			for _, d := range c.Regressions() {
				regs = append(regs, d.Name)
			}
			for _, d := range c.Deltas {
				names = append(names, d.Name)
			}
			if fmt.Sprint(regs) != fmt.Sprint(tc.wantRegs) || fmt.Sprint(names) != fmt.Sprint(tc.wantNames) {
				t.Errorf("regressions %v of deltas %v, want %v of %v", regs, names, tc.wantRegs, tc.wantNames)
			}
			var buf bytes.Buffer
			if err := WriteCompareTable(&buf, c); err != nil {
				t.Fatal(err)
			}
			if got := strings.Contains(buf.String(), "GOMAXPROCS"); got != (tc.warn != "") || !strings.Contains(buf.String(), tc.warn) {
				t.Errorf("report, want GOMAXPROCS warning %q:\n%s", tc.warn, buf.String())
			}
			buf.Reset()
			c.Baseline = &RecordMeta{Name: "b.txt", Commit: "b"}
			if err := WriteCompareMarkdown(&buf, c); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(buf.String(), tc.warn) {
				t.Errorf("markdown lacks %q:\n%s", tc.warn, buf.String())
			}
		})
	}
}

// A baseline that shares no benchmark with the new result compares nothing;
// the reports must say so instead of "no regression".
func TestCompareNothingInCommon(t *testing.T) {
	for _, tc := range []struct {
		name     string
		old, cur []byte
		want     string // in the markdown; "" when something was compared
	}{
		{"renamed benchmarks", procsBench(1, 5, 1000, "Old"), procsBench(2, 5, 2000, "New"), "**Nothing compared**"},
		{"same names, other units", []byte("BenchmarkA 1 5 ns/op\n"), []byte("BenchmarkA 1 5 req/s\n"), "**Nothing compared**"},
		{"one shared benchmark is enough", procsBench(1, 5, 1000, "Old", "Both"), procsBench(2, 5, 1000, "New", "Both"), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Compare(mustSet(t, tc.old), mustSet(t, tc.cur), DefaultCompareOptions())
			c.Baseline = &RecordMeta{Name: "b.txt", Commit: "b"}
			var md, table bytes.Buffer
			if err := WriteCompareMarkdown(&md, c); err != nil {
				t.Fatal(err)
			}
			if err := WriteCompareTable(&table, c); err != nil {
				t.Fatal(err)
			}
			if tc.want == "" {
				if strings.Contains(md.String(), "Nothing compared") || strings.Contains(table.String(), "nothing compared") {
					t.Errorf("nothing compared reported with a shared benchmark:\n%s\n%s", md.String(), table.String())
				}
				return
			}
			if !strings.Contains(md.String(), tc.want) || strings.Contains(md.String(), "No regression") {
				t.Errorf("markdown lacks %q:\n%s", tc.want, md.String())
			}
			if !strings.Contains(table.String(), "nothing compared") {
				t.Errorf("table lacks nothing compared:\n%s", table.String())
			}
		})
	}
}

// A unit's verdict follows the project's explicit list of higher-is-better
// units: a doubled errors/s or miss-ratio is a regression (it was reported
// as an improvement), and a unit of unknown direction is named in the
// comparison's warnings.
func TestDirectionVerdicts(t *testing.T) {
	for _, tc := range []struct {
		name, old, cur string
		want           Verdict
		unknown        bool // a warning names the unit
	}{
		{"req/s halves", "1000 req/s", "500 req/s", VerdictRegression, false},
		{"req/s doubles", "500 req/s", "1000 req/s", VerdictImprovement, false},
		{"errors/s doubles", "10 errors/s", "20 errors/s", VerdictRegression, true},
		{"miss-ratio doubles", "0.1 miss-ratio", "0.2 miss-ratio", VerdictRegression, true},
		{"speedup halves", "8 speedup", "4 speedup", VerdictRegression, false},
		{"l1hits/decision halves", "1 l1hits/decision", "0.5 l1hits/decision", VerdictRegression, false},
		{"p99 doubles", "1000 p99-ns/op", "2000 p99-ns/op", VerdictRegression, false},
		{"gateway p50 doubles", "100 gateway-p50-us", "200 gateway-p50-us", VerdictRegression, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ob, nb strings.Builder
			for i := range 6 {
				// a little spread so the test has distinct ranks
				fmt.Fprintf(&ob, "BenchmarkX 1 %s\n", scaleFirst(tc.old, 1+0.001*float64(i)))
				fmt.Fprintf(&nb, "BenchmarkX 1 %s\n", scaleFirst(tc.cur, 1+0.001*float64(i)))
			}
			c := Compare(mustSet(t, []byte(ob.String())), mustSet(t, []byte(nb.String())), DefaultCompareOptions())
			if len(c.Deltas) != 1 || c.Deltas[0].Verdict != tc.want {
				t.Fatalf("deltas %+v, want one %s", c.Deltas, tc.want)
			}
			unit := c.Deltas[0].Unit
			warned := strings.Contains(strings.Join(c.Warnings, "\n"), "unknown direction, judged lower is better: "+unit)
			if warned != tc.unknown {
				t.Errorf("warnings %q: naming %s %v, want %v", c.Warnings, unit, warned, tc.unknown)
			}
		})
	}
}

// scaleFirst multiplies the number that starts "value unit" by f.
func scaleFirst(vu string, f float64) string {
	v, u, _ := strings.Cut(vu, " ")
	x, err := strconv.ParseFloat(v, 64)
	if err != nil {
		panic(err)
	}
	return strconv.FormatFloat(x*f, 'g', -1, 64) + " " + u
}

// Compare tidies its gate units as ParseBenchmarks tidies the input's: a
// gate of ns/op (as the benchmark printed it) judges the sec/op metric
// rather than gating nothing, and the units it reports are the tidied
// ones, each once. An empty gate still gates nothing, and nil every unit.
func TestCompareTidiesGateUnits(t *testing.T) {
	old := mustSet(t, benchText(1, 10, 100000, 10000, 0.02))
	cur := mustSet(t, benchText(2, 10, 200000, 10000, 0.02))
	for _, tc := range []struct {
		name     string
		gate     []string
		want     []string
		informal map[string]bool // by unit
	}{
		{"ns/op is sec/op", []string{"ns/op", " sec/op", "MB/s"}, []string{"sec/op", "B/s"}, map[string]bool{"sec/op": false, "req/s": true}},
		{"empty gates nothing", []string{}, []string{}, map[string]bool{"sec/op": true, "req/s": true}},
		{"nil gates every unit", nil, nil, map[string]bool{"sec/op": false, "req/s": false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := DefaultCompareOptions()
			opts.Gate = tc.gate
			c := Compare(old, cur, opts)
			if fmt.Sprintf("%q", c.Gate) != fmt.Sprintf("%q", tc.want) || (c.Gate == nil) != (tc.want == nil) {
				t.Errorf("gate %q (nil %v), want %q", c.Gate, c.Gate == nil, tc.want)
			}
			for unit, want := range tc.informal {
				if d := verdicts(c)[unit]; d.Informational != want {
					t.Errorf("%s: informational %v, want %v", unit, d.Informational, want)
				}
			}
			if !tc.informal["sec/op"] && len(c.Regressions()) != 1 {
				t.Errorf("twice as slow, sec/op gated: %d regression(s), want 1", len(c.Regressions()))
			}
		})
	}
}
