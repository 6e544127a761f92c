package loadgen

import (
	"bytes"
	"encoding/json"
	"math"
	"strings"
	"testing"
)

func f64(v float64) *float64 { return &v }

func TestJudge(t *testing.T) {
	for _, tc := range []struct {
		name  string
		obj   Objective
		value *float64
		want  Status
	}{
		{"max ok", MaxObjective("p99", "ms", 5, 0.8), f64(3), StatusOK},
		{"max at warning level is ok", MaxObjective("p99", "ms", 5, 0.8), f64(4), StatusOK},
		{"max warning", MaxObjective("p99", "ms", 5, 0.8), f64(4.5), StatusWarning},
		{"max at limit is met", MaxObjective("p99", "ms", 5, 0.8), f64(5), StatusWarning},
		{"max violation", MaxObjective("p99", "ms", 5, 0.8), f64(5.01), StatusViolation},
		{"zero error budget, no errors", MaxObjective("errors", "ratio", 0, 0.8), f64(0), StatusOK},
		{"zero error budget, one error", MaxObjective("errors", "ratio", 0, 0.8), f64(0.001), StatusViolation},
		{"min ratio ok", MinRatioObjective("hit", 0.95, 0.8), f64(0.99), StatusOK},
		{"min ratio warning (80% of the 5% budget used)", MinRatioObjective("hit", 0.95, 0.8), f64(0.955), StatusWarning},
		{"min ratio violation", MinRatioObjective("hit", 0.95, 0.8), f64(0.94), StatusViolation},
		{"min ok", MinObjective("rps", "req/s", 1000, 0.8), f64(2000), StatusOK},
		{"min warning (within 25% of the floor)", MinObjective("rps", "req/s", 1000, 0.8), f64(1100), StatusWarning},
		{"min violation", MinObjective("rps", "req/s", 1000, 0.8), f64(999), StatusViolation},
		{"no data", MaxObjective("p99", "ms", 5, 0.8), nil, StatusNoData},
		{"NaN is no data", MaxObjective("p99", "ms", 5, 0.8), f64(math.NaN()), StatusNoData},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Judge(tc.obj, tc.value).Status; got != tc.want {
				t.Fatalf("status %s, want %s", got, tc.want)
			}
		})
	}
}

func TestReportExitCode(t *testing.T) {
	for _, tc := range []struct {
		name     string
		statuses []Status
		exit     int
	}{
		{"empty", nil, 0},
		{"all ok", []Status{StatusOK, StatusOK}, 0},
		{"warnings only", []Status{StatusOK, StatusWarning}, 0},
		{"a violation", []Status{StatusWarning, StatusViolation}, 1},
		{"no data fails the gate", []Status{StatusOK, StatusNoData}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &Report{}
			for _, s := range tc.statuses {
				r.Checks = append(r.Checks, Check{Status: s})
			}
			if got := r.ExitCode(); got != tc.exit {
				t.Fatalf("exit %d, want %d", got, tc.exit)
			}
		})
	}
}

func TestLoadSLOEvaluate(t *testing.T) {
	base := func() *Result {
		return &Result{
			Valid: true, AchievedRate: 500, Goodput: 499,
			Total:      ScenarioStats{Requests: 1000, Failures: 2, ErrorRate: 0.002, Latency: LatencySummary{Count: 998, P99Ms: 2}},
			Compliance: f64(0.99),
		}
	}
	defaults := LoadSLO{P99Ms: 5, MaxErrorRate: 0.01, MinCompliance: 0.95, WarnFraction: 0.8}
	for _, tc := range []struct {
		name   string
		slo    LoadSLO
		change func(*Result)
		exit   int
		failed string
	}{
		{"all met", defaults, func(*Result) {}, 0, ""},
		{"p99 over", defaults, func(r *Result) { r.Total.Latency.P99Ms = 6 }, 1, "p99 latency"},
		{"errors over", defaults, func(r *Result) { r.Total.Failures, r.Total.ErrorRate = 20, 0.02 }, 1, "error rate"},
		// Shed requests are judged by the shed rate, not hidden in the others:
		{"errors over among the answered", defaults, func(r *Result) { r.Total.Shed, r.Total.Failures = 500, 8 }, 1, "error rate"}, // 8 of 500 answered
		{"all shed: no latency", defaults, func(r *Result) {
			r.Total.Shed, r.Total.Failures, r.Total.Latency = 1000, 0, LatencySummary{}
		}, 1, "p99 latency"},
		{"throughput is decisions", LoadSLO{MaxErrorRate: 0.01, MinRPS: 400}, func(r *Result) { r.Goodput = 300 }, 1, "throughput"},
		{"compliance under", defaults, func(r *Result) { r.Compliance = f64(0.9) }, 1, "constitutional compliance"},
		{"compliance not measurable", defaults, func(r *Result) { r.Compliance = nil }, 1, "constitutional compliance"},
		{"rps under the floor", LoadSLO{MaxErrorRate: 0.01, MinRPS: 600}, func(*Result) {}, 1, "throughput"},
		{"open loop below target", defaults, func(r *Result) { r.TargetRate = 1000 }, 1, "achieved rate / target"},
		{"open loop on target", defaults, func(r *Result) { r.TargetRate = 510 }, 0, ""},
		{"no requests at all", defaults, func(r *Result) { r.Total = ScenarioStats{} }, 1, "p99 latency"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := base()
			tc.change(r)
			rep := tc.slo.Evaluate(r)
			if rep.ExitCode() != tc.exit {
				t.Fatalf("exit %d, want %d: %+v", rep.ExitCode(), tc.exit, rep.Checks)
			}
			if tc.failed != "" && !strings.Contains(strings.Join(rep.Failed(), ","), tc.failed) {
				t.Fatalf("failed %v, want %s among them", rep.Failed(), tc.failed)
			}
			var buf bytes.Buffer
			if err := rep.WriteTable(&buf); err != nil || !strings.Contains(buf.String(), "OBJECTIVE") {
				t.Fatalf("table: %v %q", err, buf.String())
			}
		})
	}
}

// A limit that is NaN compares false with every measurement and passed any
// run (a NaN p99 or throughput limit was not even checked); an infinite or
// negative one passes everything or turns the objective off; a share above
// 1 is a typo for a percentage. Evaluate judges nothing with such an
// objective: the report fails, naming the field. Entered directly, not
// through the command line's flags, which check the same first.
func TestSLOEvaluateRefusesBadLimits(t *testing.T) {
	nan, inf := math.NaN(), math.Inf(1)
	res := &Result{
		Valid: true, AchievedRate: 500, Goodput: 499,
		Total:      ScenarioStats{Requests: 1000, Latency: LatencySummary{Count: 1000, P99Ms: 2}},
		Compliance: f64(1),
	}
	met := ServiceMetrics{Requests: f64(1000), P50Ms: f64(1), P95Ms: f64(2), P99Ms: f64(3),
		ErrorRate: f64(0), RefusedRate: f64(0), CacheHitRate: f64(0.99)}
	load := LoadSLO{P99Ms: 5, MaxErrorRate: 0.01, MaxShedRate: 0.01, MinRPS: 100, MinCompliance: 0.95, WarnFraction: 0.8}
	svc := ServiceSLO{P50Ms: 2, P95Ms: 4, P99Ms: 5, MaxErrorRate: 0.01, MaxRefusedRate: 0.01, MinCacheHitRate: 0.95, WarnFraction: 0.8}
	for _, tc := range []struct {
		name  string
		eval  func() *Report
		field string // named in Failed(); "" for a pass
	}{
		{"load control", func() *Report { return load.Evaluate(res) }, ""},
		{"load p99 NaN", func() *Report { s := load; s.P99Ms = nan; return s.Evaluate(res) }, "P99Ms"},
		{"load p99 Inf", func() *Report { s := load; s.P99Ms = inf; return s.Evaluate(res) }, "P99Ms"},
		{"load p99 negative", func() *Report { s := load; s.P99Ms = -1; return s.Evaluate(res) }, "P99Ms"},
		{"load error rate NaN", func() *Report { s := load; s.MaxErrorRate = nan; return s.Evaluate(res) }, "MaxErrorRate"},
		{"load error rate in percent", func() *Report { s := load; s.MaxErrorRate = 5; return s.Evaluate(res) }, "MaxErrorRate"},
		{"load shed rate NaN", func() *Report { s := load; s.MaxShedRate = nan; return s.Evaluate(res) }, "MaxShedRate"},
		{"load min rps NaN", func() *Report { s := load; s.MinRPS = nan; return s.Evaluate(res) }, "MinRPS"},
		{"load min rps -Inf", func() *Report { s := load; s.MinRPS = math.Inf(-1); return s.Evaluate(res) }, "MinRPS"},
		{"load compliance NaN", func() *Report { s := load; s.MinCompliance = nan; return s.Evaluate(res) }, "MinCompliance"},
		{"load warn fraction NaN", func() *Report { s := load; s.WarnFraction = nan; return s.Evaluate(res) }, "WarnFraction"},
		{"service control", func() *Report { return svc.Evaluate(met) }, ""},
		{"service p50 NaN", func() *Report { s := svc; s.P50Ms = nan; return s.Evaluate(met) }, "P50Ms"},
		{"service p95 Inf", func() *Report { s := svc; s.P95Ms = inf; return s.Evaluate(met) }, "P95Ms"},
		{"service p99 NaN", func() *Report { s := svc; s.P99Ms = nan; return s.Evaluate(met) }, "P99Ms"},
		{"service error rate NaN", func() *Report { s := svc; s.MaxErrorRate = nan; return s.Evaluate(met) }, "MaxErrorRate"},
		{"service refused rate Inf", func() *Report { s := svc; s.MaxRefusedRate = inf; return s.Evaluate(met) }, "MaxRefusedRate"},
		{"service hit rate NaN", func() *Report { s := svc; s.MinCacheHitRate = nan; return s.Evaluate(met) }, "MinCacheHitRate"},
		{"service hit rate negative", func() *Report { s := svc; s.MinCacheHitRate = -0.5; return s.Evaluate(met) }, "MinCacheHitRate"},
		{"service warn fraction above 1", func() *Report { s := svc; s.WarnFraction = 8; return s.Evaluate(met) }, "WarnFraction"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep := tc.eval()
			failed := strings.Join(rep.Failed(), "; ")
			if tc.field == "" {
				if rep.ExitCode() != 0 {
					t.Fatalf("exit %d (%s), want 0", rep.ExitCode(), failed)
				}
				return
			}
			if rep.ExitCode() != 1 || !strings.Contains(failed, tc.field) {
				t.Fatalf("exit %d, failed %q: want exit 1 naming %s", rep.ExitCode(), failed, tc.field)
			}
			// The report of a refused objective still encodes (no NaN
			// limit in it) and prints.
			if _, err := json.Marshal(rep); err != nil {
				t.Fatalf("JSON: %v", err)
			}
			var buf bytes.Buffer
			if err := rep.WriteTable(&buf); err != nil || !strings.Contains(buf.String(), tc.field) {
				t.Fatalf("table: %v %q", err, buf.String())
			}
		})
	}
}
