package engine_test

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/acgs-lite/acgs/internal/admission"
	"github.com/acgs-lite/acgs/internal/cache"
	"github.com/acgs-lite/acgs/internal/engine"
	"github.com/acgs-lite/acgs/internal/jsoneq"
	"github.com/acgs-lite/acgs/policies"
)

// racingCache is the real cache, with a hook run once after a miss (of
// Decide's lookup, or of any key of DecideBatch's): what another request
// does between this request's miss and its flight.
type racingCache struct {
	*cache.Tiered
	armed  atomic.Bool
	during func()
}

func (r *racingCache) after(missed bool) {
	if missed && r.armed.CompareAndSwap(true, false) {
		r.during()
	}
}

func (r *racingCache) Lookup(ctx context.Context, k cache.Key) (cache.Value, cache.Tier, bool) {
	v, tier, ok := r.Tiered.Lookup(ctx, k)
	r.after(!ok)
	return v, tier, ok
}

func (r *racingCache) LookupMany(ctx context.Context, keys []cache.Key, vals []cache.Value, tiers []cache.Tier, found []bool) {
	r.Tiered.LookupMany(ctx, keys, vals, tiers, found)
	r.after(slices.Contains(found, false))
}

// TestMissAnsweredByTheFlightBefore: a request that missed the cache just
// before another request's evaluation of the same input stored its
// decision is answered from the cache, not by an evaluation of its own
// (which, with every slot busy, was shed although the answer was cached).
func TestMissAnsweredByTheFlightBefore(t *testing.T) {
	tc, err := cache.New(context.Background(), cache.Config{L1Size: 100, TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tc.Close() })
	rc := &racingCache{Tiered: tc}
	adm := admission.New(admission.Config{MaxInFlight: 1, MaxQueue: -1, MaxWait: time.Second}) // no waiting: a busy slot sheds
	e, err := engine.New(context.Background(), engine.FSSource{FS: policies.FS, Name: "embedded"}, engine.Options{
		ConstitutionalHash: hash, EvalTimeout: 10 * time.Second, Logger: quiet, Admit: adm.Do, Cache: rc,
	})
	if err != nil {
		t.Fatal(err)
	}
	in := loadRequest(t, "safe")
	var first engine.Decision
	var release func()
	rc.during = func() {
		// Another request decides the same input (evaluated, stored), then
		// something else takes the only slot.
		var err error
		if first, err = e.Decide(context.Background(), "acgs/main/decision", in); err != nil || (first.Source != engine.SourceFull && first.Source != engine.SourceVM) {
			t.Fatalf("the other request: %v from %s, want an evaluation", err, first.Source)
		}
		if release, err = adm.Admit(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	rc.armed.Store(true)
	d, err := e.Decide(context.Background(), "acgs/main/decision", in)
	if release != nil {
		defer release()
	}
	if err != nil {
		t.Fatalf("the request that missed first: %v, want the cached decision", err)
	}
	if d.Source != engine.SourceL1 || !d.Defined || !jsoneq.Equal(d.Result, first.Result) {
		t.Errorf("the request that missed first: %v from %s, want %v from L1", d.Result, d.Source, first.Result)
	}
	if st := adm.Stats(); st.Admitted != 2 || st.QueueFull != 0 {
		t.Errorf("admission %+v: want 2 admitted (the other's evaluation, the slot taken), none refused", st)
	}
}
