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
	after := c.Stats()
	if after.L1Hits != before.L1Hits || after.L1Misses != before.L1Misses {
		t.Errorf("hits +%d, misses +%d; want +0, +0", after.L1Hits-before.L1Hits, after.L1Misses-before.L1Misses)
	}
	for range 2 { // decoded twice through Lookup: now held decoded
		c.Lookup(ctx, k)
	}
	if got, _ := c.Peek(k); got.Result == nil || !sameDecision(got, v) {
		t.Errorf("Peek of an entry held decoded = %+v", got)
	}
}
