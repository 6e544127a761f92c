package cache

import (
	"bytes"
	"context"
	"testing"
)

// TestPeekGivesTheJSONWithoutDecoding: Peek returns a cold entry's JSON,
// byte for byte what was stored, without decoding it (Result nil) and
// without offering it to the hot set; it counts neither hits nor misses; an
// entry held decoded comes with its Result.
func TestPeekGivesTheJSONWithoutDecoding(t *testing.T) {
	ctx := context.Background()
	c := newCache(t, "")
	v := decisionWithJSON(t, true)
	k := key(t, 1)
	c.Set(k, v)
	before := c.Stats()
	for i := 0; i < 3; i++ {
		got, ok := c.Peek(k)
		if !ok || !got.Defined || !bytes.Equal(got.JSON, v.JSON) {
			t.Fatalf("Peek = %+v, %v; want the stored JSON %s", got, ok, v.JSON)
		}
		if got.Result != nil {
			t.Fatalf("Peek decoded a cold entry: %v", got.Result)
		}
	}
	if _, ok := c.Peek(key(t, 2)); ok {
		t.Fatal("Peek found a key never set")
	}
	countedNothing(t, c, before)
	holdDecoded(ctx, c, k)
	if got, _ := c.Peek(k); got.Result == nil || !sameDecision(got, v) {
		t.Errorf("Peek of an entry held decoded = %+v", got)
	}
}

// TestPeekValueDecodesForItsCallerAlone: PeekValue returns a cold entry
// decoded, its JSON byte for byte what was stored, without keeping the
// decoded value or offering it to the hot set (Peek still finds the entry
// encoded after any number of PeekValues), and counts nothing; an entry
// held decoded comes as it is held; an undefined one as stored.
func TestPeekValueDecodesForItsCallerAlone(t *testing.T) {
	ctx := context.Background()
	c := newCache(t, "")
	v := decisionWithJSON(t, true)
	k := key(t, 1)
	c.Set(k, v)
	before := c.Stats()
	for range 3 {
		got, ok := c.PeekValue(k)
		if !ok || !bytes.Equal(got.JSON, v.JSON) || got.Result == nil || !sameDecision(got, v) {
			t.Fatalf("PeekValue = %+v, %v; want the stored decision decoded", got, ok)
		}
	}
	if got, _ := c.Peek(k); got.Result != nil {
		t.Fatalf("PeekValue kept the entry decoded: %v", got.Result)
	}
	if _, ok := c.PeekValue(key(t, 2)); ok {
		t.Fatal("PeekValue found a key never set")
	}
	countedNothing(t, c, before)
	holdDecoded(ctx, c, k)
	held, _ := c.Peek(k)
	if got, _ := c.PeekValue(k); held.Result == nil || !sameDecision(got, v) {
		t.Errorf("PeekValue of an entry held decoded = %+v", got)
	}
	u := key(t, 3)
	c.Set(u, Value{})
	if got, ok := c.PeekValue(u); !ok || got.Defined || got.Result != nil {
		t.Errorf("PeekValue of an undefined entry = %+v, %v", got, ok)
	}
}

// countedNothing fails t if c has counted an L1 hit or miss since before.
func countedNothing(t *testing.T, c *Tiered, before Stats) {
	t.Helper()
	after := c.Stats()
	if after.L1Hits != before.L1Hits || after.L1Misses != before.L1Misses {
		t.Errorf("hits +%d, misses +%d; want +0, +0", after.L1Hits-before.L1Hits, after.L1Misses-before.L1Misses)
	}
}

// holdDecoded looks k up twice, decoding it twice through Lookup: c holds
// it decoded from then on.
func holdDecoded(ctx context.Context, c *Tiered, k Key) {
	for range 2 {
		c.Lookup(ctx, k)
	}
}
