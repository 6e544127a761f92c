package service_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/acgs-lite/acgs/internal/config"
	"github.com/acgs-lite/acgs/internal/faults"
	"github.com/acgs-lite/acgs/internal/service/servicetest"
	"github.com/acgs-lite/acgs/internal/testenv"
)

// TestWarmUpShedsAreNotClientSheds: requests of the cache warm-up that
// admission sheds for overload are reported by the warm-up
// (shed_scenarios), not counted in acgs_decisions_shed_total, which counts
// decisions refused to clients (answered 503 overloaded) and is paged on
// (ACGSShedding) as a share of acgs_decisions_total, where the warm-up's
// decisions are not. They were counted there: an operator's warm-up of a
// busy service added up to the whole set's sheds to the ratio's numerator
// and nothing to its denominator. Admission's own counter still sees them,
// and a client's shed in the same state is still counted.
func TestWarmUpShedsAreNotClientSheds(t *testing.T) {
	in := servicetest.Start(t, func(c *config.Config) {
		c.Admission.MaxInFlight = 1
		c.Admission.QueueTimeout = time.Millisecond // a miss while the slot is held is shed
	})
	release, err := in.Service.Admit.Admit(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	a := admissionDo(t, "POST", in.URL+"/v1/cache/warm", "")
	warmed, _ := a.doc["warmed_scenarios"].(float64)
	shed, hasShed := a.doc["shed_scenarios"].(float64)
	total, _ := a.doc["total_scenarios"].(float64)
	if a.status != http.StatusOK || total == 0 || warmed >= total {
		t.Fatalf("warm-up with the only slot held: %d %s, want some scenarios not warmed", a.status, a.raw)
	}
	if !hasShed || shed == 0 || warmed+shed > total {
		t.Errorf("warm-up answer %s: want shed_scenarios > 0 and warmed + shed <= total", a.raw)
	}
	if n, err := faults.Metric(in.URL, "acgs_decisions_shed_total"); err != nil || n != 0 {
		t.Errorf("acgs_decisions_shed_total = %v (%v) after the warm-up, want 0: no client was refused", n, err)
	}
	if n, err := faults.Metric(in.URL, "acgs_decisions_canceled_total"); err != nil || n != 0 {
		t.Errorf("acgs_decisions_canceled_total = %v (%v) after the warm-up, want 0", n, err)
	}
	if n, err := faults.Metric(in.URL, "acgs_decisions_total"); err != nil || n != 0 {
		t.Errorf("acgs_decisions_total = %v (%v): the warm-up's decisions are not clients'", n, err)
	}
	// Admission counts evaluations: requests that waited for one shared
	// evaluation are one refusal.
	if n, err := faults.Metric(in.URL, "acgs_admission_refused_total"); err != nil || n == 0 {
		t.Errorf("acgs_admission_refused_total = %v (%v), want the warm-up's refusals counted", n, err)
	}
	// A client's request in the same state is shed and counted.
	c := admissionDo(t, "POST", in.URL+"/v1/data/acgs/main/decision", newSafe())
	wantShed(t, c, c.doc)
	if n, err := faults.Metric(in.URL, "acgs_decisions_shed_total"); err != nil || n != 1 {
		t.Errorf("acgs_decisions_shed_total = %v (%v) after one client's shed, want 1", n, err)
	}
}

// TestWarmUpCountsItsEvaluationFailures: an evaluation of the cache
// warm-up that runs past EVAL_TIMEOUT is counted in
// acgs_evaluation_failures_total{reason="timeout"} as a client's would be
// (it says the same of the policy whoever asked), though it is neither a
// client's decision nor shed: acgs_decisions_total and
// acgs_decisions_shed_total stay 0, and the warm-up answers it as neither
// warmed nor shed. A rule every decision evaluates, slow for every input of
// a four-request warm-up set, makes each evaluation run past EVAL_TIMEOUT
// however fast the machine.
func TestWarmUpCountsItsEvaluationFailures(t *testing.T) {
	dir := testenv.WriteConstitution(t, t.TempDir(), nil, map[string]string{
		// Depends on the input, so that no plan settles it; never holds,
		// so that it adds no second value to decision. Over a million
		// iterations for an agent id of "slow-agent-N".
		"acgs/slow_warm.rego": "package acgs.main\n\n" +
			"decision := {\"allow\": false} if {\n" +
			"\tn := count(input.context.agent.id) * 300\n" +
			"\tcount([1 | some i in numbers.range(1, n); some j in numbers.range(1, n); i != j]) < 0\n" +
			"}\n",
	})
	warm := filepath.Join(t.TempDir(), "warm.json")
	if err := os.WriteFile(warm, []byte(`{"name":"slow","method":"POST","path":"/v1/data/acgs/main/decision","scenarios":[{"name":"slow","weight":1,`+
		`"vary":{"context.agent.id":{"format":"slow-agent-%d","cardinality":4}},`+
		`"request":{"type":"constitutional_evaluation","constitutional_hash":"cdd01ef066bc6cf2","action":"data.read_public",`+
		`"context":{"environment":{"sandbox_enabled":true,"audit_enabled":true},"agent":{"id":"slow-agent-0","trust_level":0.9}}}}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	in := servicetest.Start(t, func(c *config.Config) {
		c.Policy.BundlePath = dir
		c.Policy.EvalTimeout = 50 * time.Millisecond
		c.Policy.CacheWarmFile = warm
		c.Admission.QueueTimeout = 10 * time.Second // a warm-up request waits for a slot, however busy the machine, and is not shed
	})
	a := admissionDo(t, "POST", in.URL+"/v1/cache/warm", "")
	if a.status != http.StatusOK || a.doc["total_scenarios"] != 4.0 || a.doc["warmed_scenarios"] != 0.0 || a.doc["shed_scenarios"] != 0.0 {
		t.Fatalf("warm-up of four slow requests: %d %s, want 4 neither warmed nor shed", a.status, a.raw)
	}
	if n, err := faults.Metric(in.URL, "acgs_evaluation_failures_total", `reason="timeout"`); err != nil || n != 4 {
		t.Errorf(`acgs_evaluation_failures_total{reason="timeout"} = %v (%v), want the warm-up's 4 timeouts`, n, err)
	}
	for _, name := range []string{"acgs_decisions_total", "acgs_decisions_shed_total"} {
		if n, err := faults.Metric(in.URL, name); err != nil || n != 0 {
			t.Errorf("%s = %v (%v), want 0: the warm-up's decisions are not clients'", name, n, err)
		}
	}
}
