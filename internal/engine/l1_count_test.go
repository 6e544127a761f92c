package engine_test

import (
	"context"
	"testing"
	"time"

	"github.com/acgs-lite/acgs/internal/cache"
	"github.com/acgs-lite/acgs/internal/engine"
	"github.com/acgs-lite/acgs/policies"
)

// TestL1CountsOneLookupPerRequest: every request counts one L1 lookup (a
// batch: one per distinct key), counted by what answered it: a hit exactly
// when its decision's Source is l1 — its first lookup, or the look a miss
// takes again before it evaluates (91ed357), which counted a miss and then
// a hit for one request — and a miss otherwise.
func TestL1CountsOneLookupPerRequest(t *testing.T) {
	ctx := context.Background()
	safe, risky := loadRequest(t, "safe"), loadRequest(t, "dangerous")
	for _, tc := range []struct {
		name string
		// run decides with e (its cache rc, a hook armed with during runs
		// once after a miss) and returns the decisions it gives callers.
		run                 func(t *testing.T, e *engine.Engine, rc *racingCache) []engine.Decision
		hits, misses        uint64
		fromL1, evaluations int // decisions answered from L1, evaluated
	}{
		{
			name: "a miss, then its evaluation",
			run: func(t *testing.T, e *engine.Engine, _ *racingCache) []engine.Decision {
				return []engine.Decision{decide(t, e, safe)}
			},
			misses: 1, evaluations: 1,
		},
		{
			name: "a miss, then a hit",
			run: func(t *testing.T, e *engine.Engine, _ *racingCache) []engine.Decision {
				return []engine.Decision{decide(t, e, safe), decide(t, e, safe)}
			},
			hits: 1, misses: 1, fromL1: 1, evaluations: 1,
		},
		{
			// The other request's miss and evaluation count one miss; this
			// request, answered by its second look, one hit (was a miss
			// and a hit: 3 lookups for 2 requests).
			name: "a miss whose second look finds the entry another request filled",
			run: func(t *testing.T, e *engine.Engine, rc *racingCache) []engine.Decision {
				var other engine.Decision
				rc.during = func() { other = decide(t, e, safe) }
				rc.armed.Store(true)
				d := decide(t, e, safe)
				return []engine.Decision{other, d}
			},
			hits: 1, misses: 1, fromL1: 1, evaluations: 1,
		},
		{
			name: "a batch with duplicates, cold",
			run: func(t *testing.T, e *engine.Engine, _ *racingCache) []engine.Decision {
				return decideBatch(t, e, safe, safe, risky, safe)
			},
			misses: 2, evaluations: 4, // two keys; each evaluation answers its twins
		},
		{
			name: "a batch with duplicates, warm",
			run: func(t *testing.T, e *engine.Engine, _ *racingCache) []engine.Decision {
				decideBatch(t, e, safe, risky)
				return decideBatch(t, e, safe, risky, safe, risky)
			},
			hits: 2, misses: 2, fromL1: 4, evaluations: 0, // the first batch's misses, the second's hits
		},
		{
			// Between the batch's lookup and its evaluations, another request
			// decides safe (a miss): the batch's safe items are answered by
			// the second look (one hit for the key), risky is evaluated (a
			// miss). Was a miss and a hit for safe's key.
			name: "a batch with duplicates whose second look finds an entry another request filled",
			run: func(t *testing.T, e *engine.Engine, rc *racingCache) []engine.Decision {
				var other engine.Decision
				rc.during = func() { other = decide(t, e, safe) }
				rc.armed.Store(true)
				return append(decideBatch(t, e, safe, risky, safe), other)
			},
			hits: 1, misses: 2, fromL1: 2, evaluations: 2,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc2, err := cache.New(ctx, cache.Config{L1Size: 100, TTL: time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = tc2.Close() })
			rc := &racingCache{Tiered: tc2}
			e, err := engine.New(ctx, engine.FSSource{FS: policies.FS, Name: "embedded"}, engine.Options{
				ConstitutionalHash: hash, EvalTimeout: 10 * time.Second, Logger: quiet, Cache: rc,
			})
			if err != nil {
				t.Fatal(err)
			}
			before := tc2.Stats()
			ds := tc.run(t, e, rc)
			after := tc2.Stats()
			if rc.armed.Load() {
				t.Fatal("the hook never ran: no miss reached the cache")
			}
			hits, misses := after.L1Hits-before.L1Hits, after.L1Misses-before.L1Misses
			if hits != tc.hits || misses != tc.misses {
				t.Errorf("L1 counted %d hits, %d misses (%d lookups); want %d, %d (%d)", hits, misses, hits+misses, tc.hits, tc.misses, tc.hits+tc.misses)
			}
			fromL1, evaluations := 0, 0
			for _, d := range ds {
				switch d.Source {
				case engine.SourceL1:
					fromL1++
				case engine.SourceFull, engine.SourceVM:
					evaluations++
				default:
					t.Errorf("a decision from %s, want l1 or an evaluation", d.Source)
				}
			}
			if fromL1 != tc.fromL1 || evaluations != tc.evaluations {
				t.Errorf("%d decisions from L1, %d evaluated; want %d, %d", fromL1, evaluations, tc.fromL1, tc.evaluations)
			}
		})
	}
}

func decide(t *testing.T, e *engine.Engine, in map[string]any) engine.Decision {
	t.Helper()
	d, err := e.Decide(context.Background(), "acgs/main/decision", in)
	if err != nil || !d.Defined {
		t.Fatalf("Decide: %v (defined %v)", err, d.Defined)
	}
	return d
}

func decideBatch(t *testing.T, e *engine.Engine, ins ...map[string]any) []engine.Decision {
	t.Helper()
	inputs := make([]any, len(ins))
	for i, in := range ins {
		inputs[i] = in
	}
	ds, errs := e.DecideBatch(context.Background(), "acgs/main/decision", inputs)
	for i, err := range errs {
		if err != nil || !ds[i].Defined {
			t.Fatalf("DecideBatch item %d: %v (defined %v)", i, err, ds[i].Defined)
		}
	}
	return ds
}
