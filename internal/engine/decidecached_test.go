package engine_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/acgs-lite/acgs/internal/admission"
	"github.com/acgs-lite/acgs/internal/apierror"
	"github.com/acgs-lite/acgs/internal/cache"
	"github.com/acgs-lite/acgs/internal/engine"
	"github.com/acgs-lite/acgs/internal/jsoneq"
	"github.com/acgs-lite/acgs/internal/plan"
	"github.com/acgs-lite/acgs/internal/testenv"
)

// TestDecideCached: DecideCached (a too-late request's decisions) answers
// what L1, L2 and constant plans hold, and refuses the rest as late
// (engine.TooLate: overloaded for admission.ErrLate, shed reason late)
// without asking admission. Its ctx is past its deadline, as a too-late
// request's is: the L2 read runs until lookupUntil all the same (under
// ctx it gave up at once and missed). Two engines share a Redis: A's
// evaluation is in B's L2 and not in B's L1.
func TestDecideCached(t *testing.T) {
	const path = "shop/authz/verdict"
	redis := testenv.StartRedis(t)
	open := func(asked *atomic.Int64) (*engine.Engine, *cache.Tiered) {
		c, err := cache.New(context.Background(), cache.Config{
			L1Size: 1000, TTL: time.Hour, RedisURL: redis.URL(), SigningKey: []byte(signingKey),
			L2Timeout: 2 * time.Second, BatchSize: 64, BatchWindow: time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		e, err := engine.New(context.Background(), engine.FSSource{FS: shopBundle(shopPolicy), Name: "shop"}, engine.Options{
			ConstitutionalHash: hash, EvalTimeout: 10 * time.Second, Logger: quiet, Cache: c,
			PartialEval: true, PlanCacheSize: 1024,
			Admit: func(_ context.Context, fn func()) (bool, error) {
				asked.Add(1)
				fn()
				return true, nil
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		return e, c
	}
	var askedA, askedB atomic.Int64
	a, ca := open(&askedA)
	b, _ := open(&askedB)
	input := func(op, region string, amount int) map[string]any {
		return map[string]any{"op": op, "region": region, "amount": amount, "user": map[string]any{"level": 2, "verified": true}}
	}
	inL1 := input("read", "apac", 1)    // decided by B: in its L1
	inL2 := input("read", "apac", 2)    // decided by A: in B's L2 only
	cold := input("read", "apac", 3)    // decided by no one
	constant := input("wipe", "eu", 4)  // a constant plan answers it (and stores it in L1)
	constant2 := input("wipe", "eu", 5) // the same, new to the batch
	for deadline := time.Now().Add(30 * time.Second); b.PlanKind(path, cold) != plan.Fallback || b.PlanKind(path, constant) != plan.Constant; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("plans not built: cold %q, constant %q", b.PlanKind(path, cold), b.PlanKind(path, constant))
		}
	}
	want := map[string]engine.Decision{}
	for name, in := range map[string]any{"l1": inL1, "l2": inL2, "cold": cold, "constant": constant} {
		d, err := a.EvaluateFull(context.Background(), path, in)
		if err != nil {
			t.Fatal(err)
		}
		want[name] = d
	}
	if d, err := b.Decide(context.Background(), path, inL1); err != nil || d.Source != engine.SourceFull && d.Source != engine.SourceVM {
		t.Fatalf("warming B's L1: from %v, %v; want an evaluation", d.Source, err)
	}
	if d, err := a.Decide(context.Background(), path, inL2); err != nil || d.Source != engine.SourceFull && d.Source != engine.SourceVM {
		t.Fatalf("warming A: from %v, %v; want an evaluation", d.Source, err)
	}
	for deadline := time.Now().Add(30 * time.Second); ca.Stats().WriteQueueLen > 0 || ca.Stats().WriteEntries == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("A's decision never reached Redis")
		}
	}

	type answer struct {
		name string // of want; "" for refused as late
		src  engine.Source
	}
	late := answer{}
	for _, tc := range []struct {
		name   string
		inputs []any
		want   []answer
	}{
		{"L1 hit", []any{inL1}, []answer{{"l1", engine.SourceL1}}},
		{"L2 hit", []any{inL2}, []answer{{"l2", engine.SourceL2}}},
		{"constant plan", []any{constant}, []answer{{"constant", engine.SourcePlanConstant}}},
		{"miss", []any{cold}, []answer{late}},
		{"constant plan again, from L1", []any{constant}, []answer{{"constant", engine.SourceL1}}},
		{"batch", []any{cold, inL1, constant2, cold, inL1}, []answer{late, {"l1", engine.SourceL1}, {"constant", engine.SourcePlanConstant}, late, {"l1", engine.SourceL1}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Past its deadline, as a too-late request's context is.
			ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
			defer cancel()
			asked := askedB.Load()
			out, errs := b.DecideCached(ctx, path, tc.inputs, time.Now().Add(5*time.Second))
			if len(out) != len(tc.inputs) || len(errs) != len(tc.inputs) {
				t.Fatalf("%d decisions and %d errors for %d inputs", len(out), len(errs), len(tc.inputs))
			}
			for i, w := range tc.want {
				d, err := out[i], errs[i]
				if w == late {
					if !errors.Is(err, admission.ErrLate) || apierror.CodeOf(err) != apierror.Overloaded || admission.ReasonOf(err) != admission.ReasonLate || d.Defined {
						t.Errorf("item %d: %+v, %v; want refused as late (overloaded, reason late)", i, d, err)
					}
					continue
				}
				if err != nil || d.Source != w.src || d.Defined != want[w.name].Defined || !jsoneq.Equal(d.Result, want[w.name].Result) {
					t.Errorf("item %d: %v from %v, %v; want %v from %v", i, d.Result, d.Source, err, want[w.name].Result, w.src)
				}
			}
			if n := askedB.Load() - asked; n != 0 {
				t.Errorf("admission asked %d times, want none", n)
			}
		})
	}
}
