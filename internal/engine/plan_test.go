package engine_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/acgs-lite/acgs/internal/engine"
	"github.com/acgs-lite/acgs/internal/inputgen"
	"github.com/acgs-lite/acgs/internal/jsoneq"
	"github.com/acgs-lite/acgs/policies"
)

var planKeys = []string{"input.type", "input.action", "input.constitutional_hash"}

func mustOpenPlans(tb testing.TB) *engine.Engine {
	tb.Helper()
	e, err := engine.New(context.Background(), engine.FSSource{FS: policies.FS, Name: "embedded"}, engine.Options{
		ConstitutionalHash: hash, EvalTimeout: 10 * time.Second, Logger: quiet,
		PartialEval: true, PartialEvalKeys: planKeys, PlanCacheSize: 1024,
	})
	if err != nil {
		tb.Fatal(err)
	}
	return e
}

// waitPlan polls until the background build of input's plan has finished.
func waitPlan(tb testing.TB, e *engine.Engine, in map[string]any) string {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if k := e.PlanKind("acgs/main/decision", in); k != "" {
			return k
		}
		time.Sleep(5 * time.Millisecond)
	}
	tb.Fatalf("no plan built for %v", in)
	return ""
}

func TestEveryProhibitedActionHasAConstantPlan(t *testing.T) {
	e := mustOpenPlans(t)
	for _, typ := range []string{"constitutional_evaluation", "action_authorization"} {
		for _, a := range inputgen.Prohibited {
			in := map[string]any{"type": typ, "action": a, "constitutional_hash": hash, "context": map[string]any{"agent": map[string]any{"trust_level": 1}}}
			if k := waitPlan(t, e, in); k != engine.PlanConstant {
				t.Errorf("%s %s: plan %q, want constant", typ, a, k)
			}
			d, err := e.Decide(context.Background(), "acgs/main/decision", in)
			if err != nil || d.Source != engine.SourcePlanConstant {
				t.Errorf("%s %s: decided by %v (%v)", typ, a, d.Source, err)
			}
		}
	}
	safe := loadRequest(t, "safe")
	if k := waitPlan(t, e, safe); k == engine.PlanConstant {
		t.Errorf("a safe action cannot be a constant plan")
	}
}

// TestPlansEqualFullEvaluation is the differential test of the fast paths:
// generated inputs across every request type and action class give the same
// decision through constants, residuals and full evaluation.
func TestPlansEqualFullEvaluation(t *testing.T) {
	n := 10000
	if testing.Short() {
		n = 1000
	}
	e := mustOpenPlans(t)
	ctx := context.Background()
	inputs := inputgen.New(7).Inputs(n)
	// Plans exist for the actions of the bundle's lists (built at
	// activation); make sure those are among the inputs in every size.
	for i := 0; i < 50; i++ {
		safe := loadRequest(t, "safe")
		safe["context"].(map[string]any)["agent"].(map[string]any)["id"] = fmt.Sprintf("agent-%d", i)
		inputs = append(inputs, safe)
	}
	// First pass builds the plans for every combination seen.
	for _, in := range inputs {
		_ = e.PlanKind("acgs/main/decision", in)
	}
	counts := map[engine.Source]int{}
	for i, in := range inputs {
		want, err := e.EvaluateFull(ctx, "acgs/main/decision", in)
		if err != nil {
			t.Fatalf("full evaluation of input %d: %v", i, err)
		}
		got, err := e.Decide(ctx, "acgs/main/decision", in)
		if err != nil {
			t.Fatalf("decision %d: %v", i, err)
		}
		counts[got.Source]++
		if got.Defined != want.Defined || !jsoneq.Equal(got.Result, want.Result) {
			t.Fatalf("input %d via %v differs at %s\ninput: %v", i, got.Source, jsoneq.Diff(want.Result, got.Result), in)
		}
	}
	t.Logf("%d inputs: %d constant, %d residual, %d full", n, counts[engine.SourcePlanConstant], counts[engine.SourcePlanResidual], counts[engine.SourceFull])
	// Residual plans are kept only when their first input shows them faster
	// than full evaluation, a timing judgement, so only constants are required here.
	if counts[engine.SourcePlanConstant] == 0 {
		t.Errorf("the differential test did not exercise constant plans: %v", counts)
	}
}

// BenchmarkPlans measures the plan paths against full evaluation of the same
// input in the same run (performance.md: constant ≥ 10×, residual ≥ 2× faster).
func BenchmarkPlans(b *testing.B) {
	e := mustOpenPlans(b)
	ctx := context.Background()
	for _, tc := range []struct{ name, req string }{{"dangerous", "dangerous"}, {"safe", "safe"}} {
		in := loadRequest(b, tc.req)
		kind := waitPlan(b, e, in)
		// The first decision through a residual plan measures it against full evaluation.
		if _, err := e.Decide(ctx, "acgs/main/decision", in); err != nil {
			b.Fatal(err)
		}
		b.Run("full/"+tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := e.EvaluateFull(ctx, "acgs/main/decision", in); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("plan_"+kind+"/"+tc.name, func(b *testing.B) {
			b.ReportAllocs()
			var d engine.Decision
			for b.Loop() {
				d, _ = e.Decide(ctx, "acgs/main/decision", in)
			}
			b.Logf("decided by %v", d.Source)
		})
	}
}
