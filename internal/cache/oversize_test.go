package cache

import (
	"context"
	"math"
	"strings"
	"testing"
)

// TestOversizeDecisionsAreNotCached: a decision whose JSON is over
// MaxEntryBytes is not stored (L1 is bounded in entries, and a policy that
// echoes its input would make each entry as large as a request); one at
// the bound is. A value without its JSON is bounded by its result's
// encoding, and not stored when it has none. Neither reaches L2's write
// queue when not stored.
func TestOversizeDecisionsAreNotCached(t *testing.T) {
	r := startRedis(t)
	c := newCache(t, r.URL())
	withJSON := func(n int) Value { // n bytes of JSON
		s := strings.Repeat("x", n-2)
		return Value{Result: s, Defined: true, JSON: []byte(`"` + s + `"`)}
	}
	withoutJSON := func(n int) Value { return Value{Result: strings.Repeat("x", n-2), Defined: true} }
	tests := []struct {
		name   string
		v      Value
		stored bool
	}{
		{"JSON at the bound", withJSON(MaxEntryBytes), true},
		{"JSON over the bound", withJSON(MaxEntryBytes + 1), false},
		{"no JSON, result encoded at the bound", withoutJSON(MaxEntryBytes), true},
		{"no JSON, result encoded over the bound", withoutJSON(MaxEntryBytes + 1), false},
		{"no JSON, result not encodable", Value{Result: math.Inf(1), Defined: true}, false},
	}
	written := 0
	for i, tt := range tests {
		k := key(t, i)
		c.Set(k, tt.v)
		if _, _, ok := c.Lookup(context.Background(), k); ok != tt.stored {
			t.Errorf("%s: cached %v, want %v", tt.name, ok, tt.stored)
		}
		if tt.stored {
			written++
		}
	}
	if got, want := c.Stats().Oversize, uint64(len(tests)-written); got != want {
		t.Fatalf("Oversize %d, want %d", got, want)
	}
	// Close writes what is queued: only the entries stored reach L2.
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if got := c.Stats().WriteEntries; got != uint64(written) {
		t.Fatalf("%d entries written to L2, want %d", got, written)
	}
}
