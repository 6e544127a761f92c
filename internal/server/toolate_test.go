package server

import (
	"context"
	"errors"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/acgs-lite/acgs/internal/admission"
	"github.com/acgs-lite/acgs/internal/config"
	"github.com/acgs-lite/acgs/internal/engine"
	"github.com/acgs-lite/acgs/internal/telemetry"
	"github.com/acgs-lite/acgs/internal/telemetry/decisionmetrics"
	"github.com/acgs-lite/acgs/policies"
)

// TestTooLateAsksNoAdmission: every way a too-late request (its body read
// past its late bound: decisionContext) asks for decisions that no cache
// holds, a single decision, a batch, an inspected one (?strict-builtin-
// errors) and an inspected batch, is refused as late (admission.ErrLate,
// shed reason late, 503 overloaded), and admission is asked nothing: it
// would refuse the passed deadline and count that as overload's
// (acgs_admission_refused_total{reason="deadline"}), which no load caused.
// An inspection asked admission, which refused it, and its refusal was
// then restated as late.
func TestTooLateAsksNoAdmission(t *testing.T) {
	ctx := context.Background()
	cfg := config.Default()
	cfg.Server.WriteTimeout = 10 * time.Second
	ctrl := admission.New(admission.Config{MaxInFlight: 1, MaxWait: time.Second})
	e, err := engine.New(ctx, engine.FSSource{FS: policies.FS, Name: "embedded"}, engine.Options{
		ConstitutionalHash: cfg.Policy.ConstitutionalHash, EvalTimeout: 10 * time.Second, Admit: ctrl.Do,
	})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Deps{Config: cfg, Engine: e, Metrics: telemetry.NewMetrics(telemetry.BuildInfo{}), Window: telemetry.NewWindow(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	input := func(action string) any {
		return map[string]any{"type": "tool_call", "constitutional_hash": cfg.Policy.ConstitutionalHash, "action": action}
	}
	strict := inspection{strict: true}
	for _, tc := range []struct {
		name  string
		batch bool
		ask   func(ctx context.Context) []decided
	}{
		{"single", false, func(ctx context.Context) []decided {
			return []decided{s.decide(ctx, decisionPath, input("read a"), "")}
		}},
		{"batch", true, func(ctx context.Context) []decided {
			return s.decideMany(ctx, decisionPath, []any{input("read b"), input("read c")}, "b-1")
		}},
		{"inspected", false, func(ctx context.Context) []decided {
			d, _ := s.decideOPA(ctx, decisionPath, input("read d"), strict)
			return []decided{d}
		}},
		{"inspected batch", true, func(ctx context.Context) []decided {
			ds, _ := s.inspectMany(ctx, decisionPath, []any{input("read e"), input("read f")}, "b-2", strict)
			return ds
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := &statusWriter{ResponseWriter: httptest.NewRecorder(), start: time.Now().Add(-cfg.Server.WriteTimeout), batch: tc.batch}
			dctx, cancel := s.decisionContext(w, httptest.NewRequest("POST", "/v1/data/acgs/main/decision", nil))
			defer cancel()
			if _, late := lateUntil(dctx); !late {
				t.Fatal("the request is not too late: the test tests nothing")
			}
			before := ctrl.Stats()
			for i, d := range tc.ask(dctx) {
				if !errors.Is(d.Err, admission.ErrLate) || admission.ReasonOf(d.Err) != admission.ReasonLate || d.Defined {
					t.Errorf("decision %d: %+v, %v; want refused as late", i, d.Decision, d.Err)
				}
				if got := decisionmetrics.Outcome(d.Decision, d.Err); got != "overloaded" {
					t.Errorf("decision %d: outcome %q, want overloaded", i, got)
				}
			}
			if after := ctrl.Stats(); after.Admitted != before.Admitted || after.Deadline != before.Deadline || after.Canceled != before.Canceled {
				t.Errorf("admission was asked: admitted %d -> %d, refused for the deadline %d -> %d, canceled %d -> %d",
					before.Admitted, after.Admitted, before.Deadline, after.Deadline, before.Canceled, after.Canceled)
			}
		})
	}
}
