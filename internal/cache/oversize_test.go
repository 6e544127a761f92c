package cache

import (
	"context"
	"strings"
	"testing"
)

// TestOversizeDecisionsAreNotCached: a decision whose JSON is over
// MaxEntryBytes is not stored (L1 is bounded in entries, and a policy that
// echoes its input would make each entry as large as a request); one at
// the bound is. Neither reaches L2's write queue when not stored.
func TestOversizeDecisionsAreNotCached(t *testing.T) {
	r := startRedis(t)
	c := newCache(t, r.URL())
	for _, tc := range []struct {
		n      int // bytes of JSON
		stored bool
	}{{MaxEntryBytes, true}, {MaxEntryBytes + 1, false}} {
		s := strings.Repeat("x", tc.n-2)
		k := key(t, tc.n)
		c.Set(k, Value{Result: s, Defined: true, JSON: []byte(`"` + s + `"`)})
		if _, _, ok := c.Get(context.Background(), k); ok != tc.stored {
			t.Fatalf("%d bytes: cached %v, want %v", tc.n, ok, tc.stored)
		}
	}
	if got := c.Stats().Oversize; got != 1 {
		t.Fatalf("Oversize %d, want 1", got)
	}
	// Close writes what is queued: only the entry at the bound reaches L2.
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if got := c.Stats().WriteEntries; got != 1 {
		t.Fatalf("%d entries written to L2, want 1", got)
	}
}
