package loadgen

import (
	"bytes"
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
