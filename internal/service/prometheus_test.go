package service_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/acgs-lite/acgs/internal/service/servicetest"
	"github.com/acgs-lite/acgs/internal/telemetry/telemetrytest"
	"github.com/acgs-lite/acgs/internal/testenv"
)

// TestPrometheusScrapesRunningService lets a real Prometheus scrape a running
// acgs serve through a short load, then checks through Prometheus' HTTP API
// that the request, decision and cache series are there and agree with what
// was sent: L1 hits + misses = decisions asked = HTTP decision requests.
func TestPrometheusScrapesRunningService(t *testing.T) {
	in := servicetest.Start(t)
	target := strings.TrimPrefix(in.URL, "http://")
	rules := filepath.Join(testenv.ModuleRoot(t), "deploy", "prometheus", "alerts.yml")
	api := telemetrytest.StartPrometheus(t, []string{target}, rules)

	var bodies []string
	for _, name := range []string{"safe", "dangerous", "complex", "low_trust"} {
		b, err := os.ReadFile(filepath.Join(testenv.ModuleRoot(t), "testdata", "requests", name+".json"))
		if err != nil {
			t.Fatal(err)
		}
		bodies = append(bodies, string(b))
	}
	const n = 400
	allowed := 0
	for i := 0; i < n; i++ {
		resp, err := http.Post(in.URL+"/v1/data/acgs/main/decision", "application/json", strings.NewReader(bodies[i%len(bodies)]))
		if err != nil {
			t.Fatal(err)
		}
		var buf [16]byte
		nr, _ := resp.Body.Read(buf[:])
		if strings.HasPrefix(string(buf[:nr]), `{"decision_id"`) {
			allowed++
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	// Wait until Prometheus has scraped the final counts.
	want := fmt.Sprintf(`sum(acgs_http_requests_total{handler="acgs_decision",code="200"}) == %d`, n)
	telemetrytest.WaitQuery(t, api, want, 60*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	value := func(expr string) float64 {
		t.Helper()
		s, err := telemetrytest.Query(ctx, api, expr)
		if err != nil || len(s) != 1 {
			t.Fatalf("%s: %v %v", expr, s, err)
		}
		return s[0].Value
	}
	if got := value(`sum(acgs_decisions_total{path="acgs/main/decision"})`); got != n {
		t.Errorf("decisions %v, want %d", got, n)
	}
	if got := value(`sum(acgs_decisions_total{path="acgs/main/decision",outcome="deny"})`); got != n/2 {
		t.Errorf("denied decisions %v, want %d (dangerous and low_trust)", got, n/2)
	}
	hits, misses := value(`sum(acgs_cache_hits_total{tier="l1"})`), value(`sum(acgs_cache_misses_total{tier="l1"})`)
	if hits+misses != n {
		t.Errorf("L1 hits %v + misses %v != %d lookups", hits, misses, n)
	}
	if hits < n-20 {
		t.Errorf("only %v L1 hits for %d requests over 4 distinct inputs", hits, n)
	}
	if got := value(`sum(acgs_http_request_duration_seconds_count{handler="acgs_decision"})`); got != n {
		t.Errorf("duration histogram count %v, want %d", got, n)
	}
	if got := value(`count(acgs_policy_info{revision="constitution-1.0.0",content_digest=~"[0-9a-f]{16}"})`); got != 1 {
		t.Errorf("policy info series %v", got)
	}
	if got := value(`up`); got != 1 {
		t.Errorf("target up = %v", got)
	}
}
