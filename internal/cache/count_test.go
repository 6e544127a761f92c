package cache

import (
	"bytes"
	"context"
	"testing"
)

// TestWhichLookupsCount: Lookup, LookupMany, Peek and PeekValue count no
// L1 hit or miss, for a caller that counts the request's outcome once with
// CountL1 (the engine, whose miss looks in L1 again before it evaluates).
func TestWhichLookupsCount(t *testing.T) {
	ctx := context.Background()
	c := newCache(t, "")
	v := decisionWithJSON(t, true)
	in, out := key(t, 1), key(t, 2)
	c.Set(in, v)
	many := func(f func(context.Context, []Key, []Value, []Tier, []bool)) func() {
		return func() {
			keys := []Key{in, out, in}
			vals, tiers, found := make([]Value, 3), make([]Tier, 3), make([]bool, 3)
			f(ctx, keys, vals, tiers, found)
			if !found[0] || found[1] || !found[2] || tiers[0] != TierL1 || tiers[1] != TierNone || !sameDecision(vals[0], v) {
				t.Fatalf("found %v, tiers %v, want the stored key in L1 and no other", found, tiers)
			}
		}
	}
	one := func(f func(context.Context, Key) (Value, Tier, bool)) func() {
		return func() {
			if got, tier, ok := f(ctx, in); !ok || tier != TierL1 || !sameDecision(got, v) {
				t.Fatalf("stored key: %+v from %s, %v", got, tier, ok)
			}
			if _, tier, ok := f(ctx, out); ok || tier != TierNone {
				t.Fatalf("key never set: found in %s", tier)
			}
		}
	}
	l1 := func(f func(Key) (Value, bool)) func() {
		return func() {
			if got, ok := f(in); !ok || !bytes.Equal(got.JSON, v.JSON) {
				t.Fatalf("stored key: %+v, %v", got, ok)
			}
			if _, ok := f(out); ok {
				t.Fatal("key never set: found")
			}
		}
	}
	for _, tc := range []struct {
		name         string
		run          func()
		hits, misses uint64
	}{
		{"Lookup", one(c.Lookup), 0, 0},
		{"Peek", l1(c.Peek), 0, 0},
		{"PeekValue", l1(c.PeekValue), 0, 0},
		{"LookupMany", many(c.LookupMany), 0, 0},
		{"CountL1", func() { c.CountL1(3, 2) }, 3, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := c.Stats()
			tc.run()
			after := c.Stats()
			if hits, misses := after.L1Hits-before.L1Hits, after.L1Misses-before.L1Misses; hits != tc.hits || misses != tc.misses {
				t.Errorf("counted %d hits, %d misses; want %d, %d", hits, misses, tc.hits, tc.misses)
			}
		})
	}
}
