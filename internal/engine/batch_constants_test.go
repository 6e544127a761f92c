package engine_test

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/acgs-lite/acgs/internal/apierror"
	"github.com/acgs-lite/acgs/internal/cache"
	"github.com/acgs-lite/acgs/internal/engine"
	"github.com/acgs-lite/acgs/internal/jsoneq"
	"github.com/acgs-lite/acgs/internal/plan"
)

// TestBatchNeverShedsConstantPlans: a batch item that a constant plan
// answers is answered, as it is alone, however long the items before it
// wait for admission. The workers took the items in order and only they
// looked for plans: with every worker waiting for a slot on a cold item
// when the batch's bound passed, the constant items behind were shed as
// overloaded (review). Each plan is still looked up once per decision.
func TestBatchNeverShedsConstantPlans(t *testing.T) {
	const path = "shop/authz/verdict"
	workers := runtime.GOMAXPROCS(0)
	cold := func(i int) map[string]any { // a fallback plan: the evaluator answers
		return map[string]any{"op": "read", "region": "apac", "amount": i, "user": map[string]any{"level": 2, "verified": true}}
	}
	constant := func(i int) map[string]any { // seeded at activation
		return map[string]any{"op": "wipe", "region": "eu", "amount": i, "user": map[string]any{"level": 2, "verified": true}}
	}
	for _, cached := range []bool{true, false} {
		name := "no cache"
		if cached {
			name = "cache"
		}
		t.Run(name, func(t *testing.T) {
			var c engine.Cache
			if cached {
				tc, err := cache.New(context.Background(), cache.Config{L1Size: 1000, TTL: time.Hour})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = tc.Close() })
				c = tc
			}
			release := make(chan struct{})
			t.Cleanup(func() { close(release) })
			var mu sync.Mutex
			plans := map[string]int{}
			e, err := engine.New(context.Background(), engine.FSSource{FS: shopBundle(shopPolicy), Name: "shop"}, engine.Options{
				ConstitutionalHash: hash, EvalTimeout: 10 * time.Second, Logger: quiet, Cache: c,
				PartialEval: true, PlanCacheSize: 1024,
				// No slot before the batch's bound: its cold items are shed.
				Admit: func(context.Context, func()) (bool, error) {
					<-release
					return false, apierror.New(apierror.Overloaded, "no evaluation slot")
				},
				OnPlan: func(kind string) { mu.Lock(); plans[kind]++; mu.Unlock() },
			})
			if err != nil {
				t.Fatal(err)
			}
			for deadline := time.Now().Add(30 * time.Second); e.PlanKind(path, cold(0)) != plan.Fallback; time.Sleep(5 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("no fallback plan for %v", cold(0))
				}
			}
			want, err := e.EvaluateFull(context.Background(), path, constant(0))
			if err != nil {
				t.Fatal(err)
			}
			// Enough cold items for every worker to wait on one, then the
			// constant ones (the last one twice: one decision).
			var batch []any
			for i := range workers {
				batch = append(batch, cold(i))
			}
			for i := range 4 {
				batch = append(batch, constant(i))
			}
			batch = append(batch, constant(3))
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			out, errs := e.DecideBatch(ctx, path, batch)
			for i := range batch {
				if i < workers {
					if apierror.CodeOf(errs[i]) != apierror.Overloaded {
						t.Errorf("cold item %d: %+v, %v; want overloaded", i, out[i], errs[i])
					}
					continue
				}
				if errs[i] != nil || out[i].Source != engine.SourcePlanConstant || !out[i].Defined || !jsoneq.Equal(out[i].Result, want.Result) {
					t.Errorf("constant-plan item %d: %v from %v, %v; want %v from plan_constant", i, out[i].Result, out[i].Source, errs[i], want.Result)
				}
			}
			mu.Lock()
			got := map[string]int{plan.Constant: plans[plan.Constant], plan.Fallback: plans[plan.Fallback]}
			mu.Unlock()
			wantConstant := 5 // each item looked up once
			if cached {
				wantConstant = 4 // the twins are one decision
			}
			if got[plan.Constant] != wantConstant || got[plan.Fallback] != workers {
				t.Errorf("plans looked up: %v; want %d constant and %d fallback (once per decision)", got, wantConstant, workers)
			}
			if cached { // stored, as alone
				if d, err := e.Decide(context.Background(), path, constant(1)); err != nil || d.Source != engine.SourceL1 {
					t.Errorf("a constant-plan item after the batch: from %v, %v; want l1", d.Source, err)
				}
			}
		})
	}
}
