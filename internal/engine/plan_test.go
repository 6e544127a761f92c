package engine_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/acgs-lite/acgs/internal/engine"
	"github.com/acgs-lite/acgs/internal/inputgen"
	"github.com/acgs-lite/acgs/internal/jsoneq"
	"github.com/acgs-lite/acgs/internal/plan"
	"github.com/acgs-lite/acgs/policies"
)

var planKeys = []string{"input.type", "input.action", "input.constitutional_hash"}

func mustOpenPlans(tb testing.TB) *engine.Engine {
	tb.Helper()
	return openPlans(tb, quiet)
}

func openPlans(tb testing.TB, log *slog.Logger) *engine.Engine {
	tb.Helper()
	e, err := engine.New(context.Background(), engine.FSSource{FS: policies.FS, Name: "embedded"}, engine.Options{
		ConstitutionalHash: hash, EvalTimeout: 10 * time.Second, Logger: log,
		PartialEval: true, PartialEvalKeys: planKeys, PlanCacheSize: 1024,
	})
	if err != nil {
		tb.Fatal(err)
	}
	return e
}

// plannable reports whether input can have a plan: an object whose
// specialisation fields, where present, are not objects or arrays.
func plannable(input any) bool {
	obj, ok := input.(map[string]any)
	if !ok {
		return false
	}
	for _, k := range []string{"type", "action", "constitutional_hash"} {
		switch obj[k].(type) {
		case map[string]any, []any:
			return false
		}
	}
	return true
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

// TestEveryProhibitedActionHasAConstantPlan: the constitution's entry-point
// annotation seeds plans for every prohibited action, so each is a constant
// before any request has been seen, and a safe action is not.
func TestEveryProhibitedActionHasAConstantPlan(t *testing.T) {
	e := mustOpenPlans(t)
	for _, path := range []string{"acgs/main/decision"} {
		for _, typ := range []string{"constitutional_evaluation", "action_authorization"} {
			for _, a := range inputgen.Prohibited {
				in := map[string]any{"type": typ, "action": a, "constitutional_hash": hash, "context": map[string]any{"agent": map[string]any{"trust_level": 1}}}
				if k := e.PlanKind(path, in); k != plan.Constant {
					t.Errorf("%s %s %s: plan %q right after activation, want constant", path, typ, a, k)
				}
				d, err := e.Decide(context.Background(), path, in)
				if err != nil || d.Source != engine.SourcePlanConstant {
					t.Errorf("%s %s %s: decided by %v (%v)", path, typ, a, d.Source, err)
				}
			}
		}
	}
	safe := loadRequest(t, "safe")
	if k := waitPlan(t, e, safe); k == plan.Constant {
		t.Errorf("a safe action cannot be a constant plan")
	}
}

// TestPlansEqualFullEvaluation is the differential test of constant plans:
// generated inputs across every request type and action class give the same
// decision through a constant plan as through full evaluation.
func TestPlansEqualFullEvaluation(t *testing.T) {
	n := 10000
	if testing.Short() {
		n = 1000
	}
	// No plan build may fail (a partial evaluation that errs, say).
	warned := &warnings{}
	e := openPlans(t, slog.New(warned))
	ctx := context.Background()
	inputs := inputgen.New(7).Inputs(n)
	// Plans exist for the actions of the bundle's lists (built at
	// activation); make sure those are among the inputs in every size.
	for i := 0; i < 50; i++ {
		safe := loadRequest(t, "safe")
		safe["context"].(map[string]any)["agent"].(map[string]any)["id"] = fmt.Sprintf("agent-%d", i)
		inputs = append(inputs, safe)
	}
	// First pass builds the plans for every combination seen (in the
	// background, one at a time: wait for each).
	for _, in := range inputs {
		if plannable(in) {
			waitPlan(t, e, in)
		}
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
		// As text too: a client sees 1 and 1.0 differently.
		if !jsoneq.SameText(got.Result, want.Result) {
			t.Fatalf("input %d via %v: numbers spelt differently from full evaluation\ninput: %v", i, got.Source, in)
		}
	}
	t.Logf("%d inputs: %d constant, %d full", n, counts[engine.SourcePlanConstant], counts[engine.SourceFull])
	if counts[engine.SourcePlanConstant] < len(inputs)/20 {
		t.Errorf("the differential test did not exercise constant plans: %v", counts)
	}
	if w := warned.logged(); len(w) > 0 {
		t.Errorf("plan builds warned: %q", w)
	}
}

// BenchmarkPlans measures a constant plan against full evaluation of the
// same input in the same run (performance.md: constant ≥ 10× faster).
func BenchmarkPlans(b *testing.B) {
	e := mustOpenPlans(b)
	ctx := context.Background()
	for _, tc := range []struct{ name, req string }{{"dangerous", "dangerous"}} {
		in := loadRequest(b, tc.req)
		kind := waitPlan(b, e, in)
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
		// The ratio itself, from the two paths interleaved decision by
		// decision: a shared machine's load drifts between the runs above,
		// but here every full evaluation has a plan decision beside it.
		b.Run("side_by_side_"+kind+"/"+tc.name, func(b *testing.B) {
			var full, plan time.Duration
			var d engine.Decision
			for b.Loop() {
				t0 := time.Now()
				if _, err := e.EvaluateFull(ctx, "acgs/main/decision", in); err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				var err error
				if d, err = e.Decide(ctx, "acgs/main/decision", in); err != nil {
					b.Fatal(err)
				}
				full, plan = full+t1.Sub(t0), plan+time.Since(t1)
			}
			if d.Source != engine.SourcePlanConstant {
				b.Fatalf("the plan side was decided by %v", d.Source)
			}
			b.ReportMetric(float64(full)/float64(plan), "x-faster")
			b.ReportMetric(float64(full.Nanoseconds())/float64(b.N), "full-ns/op")
			b.ReportMetric(float64(plan.Nanoseconds())/float64(b.N), "plan-ns/op")
		})
	}
}

// TestPlansAreBuiltForNewCombinations checks the background builds: a
// combination no seed named gets a plan after it is first seen (a constant
// for an unknown request type, a fallback for an unlisted safe action), and
// every decision still equals full evaluation.
func TestPlansAreBuiltForNewCombinations(t *testing.T) {
	e := mustOpenPlans(t)
	ctx := context.Background()
	for i := range 10 {
		for _, tc := range []struct{ typ, want string }{
			{fmt.Sprintf("unheard_of_%d", i), plan.Constant},
			{"constitutional_evaluation", plan.Fallback},
		} {
			in := loadRequest(t, "safe")
			in["type"], in["action"] = tc.typ, fmt.Sprintf("data.read_unlisted_%d", i)
			if k := e.PlanKind("acgs/main/decision", in); k != "" {
				t.Fatalf("%v already had a %s plan before it was seen", in["action"], k)
			}
			if k := waitPlan(t, e, in); k != tc.want {
				t.Errorf("%s %s: plan %s, want %s", tc.typ, in["action"], k, tc.want)
			}
			want, err := e.EvaluateFull(ctx, "acgs/main/decision", in)
			if err != nil {
				t.Fatal(err)
			}
			got, err := e.Decide(ctx, "acgs/main/decision", in)
			if err != nil || !jsoneq.SameText(got.Result, want.Result) {
				t.Fatalf("%s via %v: %v (%v), want %v", in["action"], got.Source, got.Result, err, want.Result)
			}
		}
	}
}

// TestPlanBuildsDuringConcurrentDecisions runs decisions on four goroutines
// while background builds start for new actions: under -race this is the
// test that plan builds share nothing mutable with serving evaluations.
func TestPlanBuildsDuringConcurrentDecisions(t *testing.T) {
	e := mustOpenPlans(t)
	ctx := context.Background()
	per := 60
	if testing.Short() {
		per = 20
	}
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				in := loadRequest(t, "safe")
				in["action"] = fmt.Sprintf("data.read_concurrent_%d", (i*4+g)%(per/2))
				got, err := e.Decide(ctx, "acgs/main/decision", in)
				if err != nil {
					errs <- err
					return
				}
				want, err := e.EvaluateFull(ctx, "acgs/main/decision", in)
				if err != nil || !jsoneq.Equal(got.Result, want.Result) {
					errs <- fmt.Errorf("%s via %v: %v, want %v (%v)", in["action"], got.Source, got.Result, want.Result, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestPlansReadTheDocumentOfTheirPath: a path with an integer segment is
// read with a number there (t/o/1 is data.t.o[1]) by the plans as by the
// evaluators, so a plan never answers for another document.
func TestPlansReadTheDocumentOfTheirPath(t *testing.T) {
	ctx := context.Background()
	bundle := fstest.MapFS{
		".manifest": {Data: []byte(`{"revision":"paths-1","roots":["t"],"metadata":{"constitutional_hash":"` + hash + `"}}`)},
		"t/p.rego":  {Data: []byte("package t\n\no[1] := \"one\" if input.action\no[\"1\"] := \"string key\" if input.action\n")},
	}
	e, err := engine.New(ctx, engine.FSSource{FS: bundle, Name: "paths"}, engine.Options{
		ConstitutionalHash: hash, EvalTimeout: 10 * time.Second, Logger: quiet,
		PartialEval: true, PartialEvalKeys: []string{"input.action"}, PlanCacheSize: 16,
	})
	if err != nil {
		t.Fatal(err)
	}
	in := map[string]any{"action": "x"}
	deadline := time.Now().Add(30 * time.Second)
	for e.PlanKind("t/o/1", in) == "" {
		if _, err := e.Decide(ctx, "t/o/1", in); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatal("no plan built for t/o/1")
		}
		time.Sleep(5 * time.Millisecond)
	}
	for range 3 {
		d, err := e.Decide(ctx, "t/o/1", in)
		if err != nil || !d.Defined || d.Result != "one" {
			t.Fatalf("t/o/1 (%s): %v %v, want \"one\"", d.Source, d.Result, err)
		}
	}
}

// TestActivationOutlivesItsCaller: a reload whose caller has gone (an admin
// request's client that timed out) activates the bundle with the plans a
// reload that was waited for builds. Before, the activation ran under the
// caller's context: cancelled, it failed, or left the seeds' plans as
// fallbacks for the revision's life (review).
func TestActivationOutlivesItsCaller(t *testing.T) {
	e := mustOpenPlans(t)
	kinds := func() []string {
		var ks []string
		for _, typ := range []string{"constitutional_evaluation", "action_authorization"} {
			for _, a := range inputgen.Prohibited {
				in := map[string]any{"type": typ, "action": a, "constitutional_hash": hash, "context": map[string]any{"agent": map[string]any{"trust_level": 1}}}
				ks = append(ks, typ+" "+a+": "+e.PlanKind("acgs/main/decision", in))
			}
		}
		return ks
	}
	if err := e.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := kinds()
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	if err := e.Reload(gone); err != nil {
		t.Fatalf("a reload whose caller left: %v", err)
	}
	if got := kinds(); !slices.Equal(got, want) {
		t.Fatalf("plans after a reload whose caller left:\n%v\nwant\n%v", got, want)
	}
}
