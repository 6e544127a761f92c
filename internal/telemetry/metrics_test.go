package telemetry_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/acgs-lite/acgs/internal/cache"
	"github.com/acgs-lite/acgs/internal/telemetry"
	"github.com/acgs-lite/acgs/internal/telemetry/telemetrytest"
	"github.com/acgs-lite/acgs/internal/testenv"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

func exercised(t *testing.T) *telemetry.Metrics {
	t.Helper()
	m := telemetry.NewMetrics(telemetry.BuildInfo{Version: "1.2.3", Commit: "abc", GoVersion: "go1.26", OPAVersion: "1.22.3"})
	telemetrytest.Exercise(t, m)
	return m
}

func scrape(t *testing.T, h http.Handler) []byte {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %s\n%s", resp.Status, body)
	}
	return body
}

func families(t *testing.T, m *telemetry.Metrics) map[string]*dto.MetricFamily {
	t.Helper()
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]*dto.MetricFamily, len(mfs))
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

// value finds the sample of family name whose labels include want, and
// returns its value (the sample count for a histogram).
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	t.Helper()
	mf, ok := fams[name]
	if !ok {
		return 0, false
	}
next:
	for _, mt := range mf.GetMetric() {
		have := map[string]string{}
		for _, lp := range mt.GetLabel() {
			have[lp.GetName()] = lp.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		switch {
		case mt.Counter != nil:
			return mt.GetCounter().GetValue(), true
		case mt.Gauge != nil:
			return mt.GetGauge().GetValue(), true
		case mt.Histogram != nil:
			return float64(mt.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}

// TestPromtoolCheckMetrics lints the exposition of a registry that has seen
// every observation with the real promtool: any output is a problem.
func TestPromtoolCheckMetrics(t *testing.T) {
	promtool := testenv.RequireBinary(t, "promtool", "prometheus")
	body := scrape(t, exercised(t).Handler())

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("promtool check metrics: err=%v\n%s", err, out)
	}
}

// TestExpositionConventions checks what promtool does not: every family of
// ours is acgs_-prefixed and has help text, and the exposition parses.
func TestExpositionConventions(t *testing.T) {
	body := scrape(t, exercised(t).Handler())
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("exposition does not parse: %v", err)
	}
	var ours int
	for name, mf := range fams {
		if strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") {
			continue
		}
		ours++
		if !strings.HasPrefix(name, "acgs_") {
			t.Errorf("%s: not prefixed acgs_", name)
		}
		if strings.TrimSpace(mf.GetHelp()) == "" {
			t.Errorf("%s: no help text", name)
		}
		if !model.LegacyValidation.IsValidMetricName(name) {
			t.Errorf("%s: not a legacy-valid metric name", name)
		}
	}
	for _, std := range []string{"go_goroutines", "process_cpu_seconds_total"} {
		if _, ok := fams[std]; !ok {
			t.Errorf("standard collector metric %s missing", std)
		}
	}
	if ours < 30 {
		t.Errorf("only %d acgs_ families exposed; the exercise should reach every one", ours)
	}
}

func TestObservedValues(t *testing.T) {
	fams := families(t, exercised(t))
	tests := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"acgs_build_info", map[string]string{"version": "1.2.3", "commit": "abc", "goversion": "go1.26", "opa_version": "1.22.3"}, 1},
		{"acgs_http_requests_total", map[string]string{"handler": "acgs_decision", "code": "200"}, 1},
		{"acgs_http_requests_total", map[string]string{"handler": "opa_batch", "code": "207"}, 1},
		{"acgs_http_request_duration_seconds", map[string]string{"handler": "acgs_decision", "code": "500"}, 1},
		{"acgs_decisions_total", map[string]string{"path": "acgs/main/decision", "outcome": "allow"}, 6},
		{"acgs_decisions_total", map[string]string{"path": "acgs/main/decision", "outcome": "deny"}, 1},
		{"acgs_decision_duration_seconds", map[string]string{"source": "full"}, 5},
		{"acgs_decision_duration_seconds", map[string]string{"source": "plan_constant"}, 1},
		{"acgs_partial_eval_plans_total", map[string]string{"outcome": "fallback"}, 1},
		{"acgs_batch_request_items", nil, 1},
		{"acgs_cache_l2_write_batch_entries", nil, 1},
		{"acgs_constitutional_hash_mismatches_total", nil, 1},
		{"acgs_policy_reloads_total", map[string]string{"result": "failure"}, 1},
		{"acgs_policy_info", map[string]string{"revision": "rev-1", "constitutional_hash": "cdd01ef066bc6cf2"}, 1},
		{"acgs_evaluation_failures_total", map[string]string{"reason": "timeout"}, 1},
		{"acgs_evaluation_failures_total", map[string]string{"reason": "error"}, 1},
		{"acgs_cache_hits_total", map[string]string{"tier": "l1"}, 90},
		{"acgs_cache_misses_total", map[string]string{"tier": "l2"}, 4},
		{"acgs_cache_l1_capacity_entries", nil, 10000},
		{"acgs_cache_l2_breaker_state", nil, 1},
		{"acgs_cache_l2_up", nil, 1},
		{"acgs_cache_l2_enabled", nil, 1},
		{"acgs_cache_l2_roundtrips_total", nil, 7},
		{"acgs_cache_write_dropped_total", nil, 1},
		{"acgs_cache_oversize_total", nil, 1},
		{"acgs_cache_l2_written_entries_total", nil, 40},
		{"acgs_cache_epoch", nil, 2},
		{"acgs_decision_log_queue_capacity_entries", nil, 8},
		{"acgs_decisions_shed_total", map[string]string{"reason": "queue_timeout"}, 1},
		{"acgs_decisions_total", map[string]string{"path": "acgs/main/decision", "outcome": "overloaded"}, 1},
		{"acgs_admission_in_flight", nil, 2},
		{"acgs_admission_waiting", nil, 5},
		{"acgs_admission_max_in_flight", nil, 2},
		{"acgs_admission_max_queue", nil, 16},
		{"acgs_admission_admitted_total", nil, 100},
		{"acgs_admission_queued_total", nil, 40},
		{"acgs_admission_refused_total", map[string]string{"reason": "queue_full"}, 3},
		{"acgs_admission_refused_total", map[string]string{"reason": "deadline"}, 1},
		{"acgs_admission_abandoned_total", nil, 4},
		{"acgs_admission_canceled_total", nil, 6},
		{"acgs_decisions_canceled_total", nil, 1},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.name, tt.labels), func(t *testing.T) {
			got, ok := value(t, fams, tt.name, tt.labels)
			if !ok {
				t.Fatalf("no sample")
			}
			if got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

// TestSeriesExistBeforeEvents checks that the series the alerts take
// increase() of exist at zero before the first event.
func TestSeriesExistBeforeEvents(t *testing.T) {
	fams := families(t, telemetry.NewMetrics(telemetry.BuildInfo{}))
	for _, tt := range []struct {
		name   string
		labels map[string]string
	}{
		{"acgs_policy_reloads_total", map[string]string{"result": "failure"}},
		{"acgs_policy_reloads_total", map[string]string{"result": "success"}},
		{"acgs_evaluation_failures_total", map[string]string{"reason": "timeout"}},
		{"acgs_decisions_shed_total", map[string]string{"reason": "queue_full"}},
		{"acgs_decisions_shed_total", map[string]string{"reason": "queue_timeout"}},
		{"acgs_decisions_shed_total", map[string]string{"reason": "deadline"}},
		{"acgs_decisions_canceled_total", nil},
		{"acgs_partial_eval_plans_total", map[string]string{"outcome": "constant"}},
		{"acgs_decision_duration_seconds", map[string]string{"source": "l1"}},
		{"acgs_constitutional_hash_mismatches_total", nil},
		{"acgs_build_info", map[string]string{"version": "unknown"}},
	} {
		if v, ok := value(t, fams, tt.name, tt.labels); !ok || v != 0 && tt.name != "acgs_build_info" {
			t.Errorf("%s%v: present=%v value=%v, want present at 0", tt.name, tt.labels, ok, v)
		}
	}
}

func TestSetActivePolicyKeepsOneSeries(t *testing.T) {
	m := telemetry.NewMetrics(telemetry.BuildInfo{})
	// r2 with other content (d3) is a series of its own: two bundles of
	// one revision are told apart.
	steps := []struct{ rev, digest, hash string }{
		{"r1", "d1", "h1"}, {"r2", "d2", "h1"}, {"r2", "d2", "h1"}, {"r2", "d3", "h1"}, {"r3", "d4", "h2"},
	}
	for _, s := range steps {
		m.SetActivePolicy(s.rev, s.digest, s.hash)
		mf := families(t, m)["acgs_policy_info"]
		if n := len(mf.GetMetric()); n != 1 {
			t.Fatalf("after %v: %d series, want 1", s, n)
		}
		if _, ok := value(t, families(t, m), "acgs_policy_info", map[string]string{"revision": s.rev, "content_digest": s.digest, "constitutional_hash": s.hash}); !ok {
			t.Fatalf("after %v: series for it missing", s)
		}
	}
}

func TestDecisionPathLabelIsBounded(t *testing.T) {
	m := telemetry.NewMetrics(telemetry.BuildInfo{})
	for i := range 200 {
		m.ObserveDecision(fmt.Sprintf("client/path/%d", i), "allow", "full", time.Microsecond)
	}
	m.ObserveDecision("client/path/0", "deny", "full", time.Microsecond)
	mf := families(t, m)["acgs_decisions_total"]
	paths := map[string]bool{}
	for _, mt := range mf.GetMetric() {
		for _, lp := range mt.GetLabel() {
			if lp.GetName() == "path" {
				paths[lp.GetValue()] = true
			}
		}
	}
	if len(paths) != 65 || !paths["other"] || !paths["client/path/0"] {
		t.Errorf("got %d distinct paths (other=%v), want the first 64 plus \"other\"", len(paths), paths["other"])
	}
	if v, _ := value(t, families(t, m), "acgs_decisions_total", map[string]string{"path": "other", "outcome": "allow"}); v != 136 {
		t.Errorf("other/allow = %v, want 136", v)
	}
}

func TestCacheCollector(t *testing.T) {
	tests := []struct {
		name        string
		stats       cache.Stats
		wantUp      float64 // -1: absent
		wantBreaker float64 // -1: absent
	}{
		{"no L2", cache.Stats{BreakerState: "disabled"}, -1, -1},
		{"L2 healthy, closed", cache.Stats{L2Enabled: true, L2Healthy: true, BreakerState: "closed"}, 1, 0},
		{"L2 probing, half-open", cache.Stats{L2Enabled: true, L2Healthy: false, BreakerState: "half-open"}, 0, 1},
		{"L2 down, open", cache.Stats{L2Enabled: true, L2Healthy: false, BreakerState: "open"}, 0, 2},
		{"L2 enabled, unknown breaker", cache.Stats{L2Enabled: true, L2Healthy: true, BreakerState: "weird"}, 1, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := telemetry.NewMetrics(telemetry.BuildInfo{})
			m.RegisterCacheStats(func() cache.Stats { return tt.stats })
			fams := families(t, m)
			for _, c := range []struct {
				name string
				want float64
			}{{"acgs_cache_l2_up", tt.wantUp}, {"acgs_cache_l2_breaker_state", tt.wantBreaker}} {
				got, ok := value(t, fams, c.name, nil)
				switch {
				case c.want < 0 && ok:
					t.Errorf("%s = %v, want absent", c.name, got)
				case c.want >= 0 && (!ok || got != c.want):
					t.Errorf("%s = %v (present %v), want %v", c.name, got, ok, c.want)
				}
			}
			if got, _ := value(t, fams, "acgs_cache_l2_enabled", nil); got != map[bool]float64{true: 1}[tt.stats.L2Enabled] {
				t.Errorf("acgs_cache_l2_enabled = %v", got)
			}
		})
	}
}

// TestRegisterTwiceReplaces checks that re-registering swaps the source
// rather than panicking on a duplicate collector.
func TestRegisterTwiceReplaces(t *testing.T) {
	m := telemetry.NewMetrics(telemetry.BuildInfo{})
	m.RegisterCacheStats(func() cache.Stats { return cache.Stats{Epoch: 1} })
	m.RegisterCacheStats(func() cache.Stats { return cache.Stats{Epoch: 7} })
	if got, _ := value(t, families(t, m), "acgs_cache_epoch", nil); got != 7 {
		t.Errorf("epoch = %v, want 7 from the second registration", got)
	}
	l1, _ := telemetry.NewDecisionLog(telemetry.DecisionLogConfig{Writer: io.Discard, QueueSize: 3})
	l2, _ := telemetry.NewDecisionLog(telemetry.DecisionLogConfig{Writer: io.Discard, QueueSize: 5})
	defer l1.Close(context.Background())
	defer l2.Close(context.Background())
	m.RegisterDecisionLog(l1)
	m.RegisterDecisionLog(l2)
	if got, _ := value(t, families(t, m), "acgs_decision_log_queue_capacity_entries", nil); got != 5 {
		t.Errorf("queue capacity = %v, want 5 from the second registration", got)
	}
}

// TestMetricNames lists the acgs_ families, so a rename shows in review as a
// test change; dashboards and alerts depend on these names.
func TestMetricNames(t *testing.T) {
	var got []string
	for name := range families(t, exercised(t)) {
		if strings.HasPrefix(name, "acgs_") {
			got = append(got, name)
		}
	}
	sort.Strings(got)
	want := []string{
		"acgs_admission_abandoned_total",
		"acgs_admission_admitted_total",
		"acgs_admission_canceled_total",
		"acgs_admission_in_flight",
		"acgs_admission_max_in_flight",
		"acgs_admission_max_queue",
		"acgs_admission_queued_total",
		"acgs_admission_refused_total",
		"acgs_admission_waiting",
		"acgs_batch_request_items",
		"acgs_build_info",
		"acgs_cache_epoch",
		"acgs_cache_hits_total",
		"acgs_cache_keys_total",
		"acgs_cache_l1_capacity_entries",
		"acgs_cache_l1_entries",
		"acgs_cache_l1_evictions_total",
		"acgs_cache_l2_breaker_state",
		"acgs_cache_l2_enabled",
		"acgs_cache_l2_errors_total",
		"acgs_cache_l2_rejected_total",
		"acgs_cache_l2_roundtrips_total",
		"acgs_cache_l2_skipped_total",
		"acgs_cache_l2_up",
		"acgs_cache_l2_write_batch_entries",
		"acgs_cache_l2_write_batches_total",
		"acgs_cache_l2_written_entries_total",
		"acgs_cache_misses_total",
		"acgs_cache_oversize_total",
		"acgs_cache_write_dropped_total",
		"acgs_cache_write_queue_capacity_entries",
		"acgs_cache_write_queue_entries",
		"acgs_cache_write_skipped_total",
		"acgs_constitutional_hash_mismatches_total",
		"acgs_decision_duration_seconds",
		"acgs_decision_log_dropped_total",
		"acgs_decision_log_failed_total",
		"acgs_decision_log_queue_capacity_entries",
		"acgs_decision_log_queue_entries",
		"acgs_decision_log_written_total",
		"acgs_decisions_canceled_total",
		"acgs_decisions_shed_total",
		"acgs_decisions_total",
		"acgs_evaluation_failures_total",
		"acgs_evaluations_total",
		"acgs_http_request_duration_seconds",
		"acgs_http_requests_total",
		"acgs_partial_eval_plans_total",
		"acgs_policy_info",
		"acgs_policy_reloads_total",
		"acgs_raw_body_lookups_total",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("acgs_ families:\n got %q\nwant %q", got, want)
	}
}

func BenchmarkObserveHTTP(b *testing.B) {
	m := telemetry.NewMetrics(telemetry.BuildInfo{})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.ObserveHTTP("acgs_decision", 200, 250*time.Microsecond)
		}
	})
}

func BenchmarkObserveDecision(b *testing.B) {
	m := telemetry.NewMetrics(telemetry.BuildInfo{})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.ObserveDecision("acgs/main/decision", "allow", "l1", time.Microsecond)
		}
	})
}
