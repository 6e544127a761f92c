package service_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/acgs-lite/acgs/internal/config"
	"github.com/acgs-lite/acgs/internal/faults"
	"github.com/acgs-lite/acgs/internal/service/servicetest"
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
