package cache

import (
	"bytes"
	"context"
	"testing"
)

// TestGetL1GivesTheJSONWithoutDecoding: GetL1 returns a cold entry's JSON,
// byte for byte what was stored, without decoding it (Result nil) and
// without offering it to the hot set; it counts hits, not misses; an entry
// held decoded comes with its Result.
func TestGetL1GivesTheJSONWithoutDecoding(t *testing.T) {
	ctx := context.Background()
	c := newCache(t, "")
	v := decisionWithJSON(t, true)
	k := key(t, 1)
	c.Set(k, v)
	before := c.Stats()
	for i := 0; i < 3; i++ {
		got, ok := c.GetL1(k)
		if !ok || !got.Defined || !bytes.Equal(got.JSON, v.JSON) {
			t.Fatalf("GetL1 = %+v, %v; want the stored JSON %s", got, ok, v.JSON)
		}
		if got.Result != nil {
			t.Fatalf("GetL1 decoded a cold entry: %v", got.Result)
		}
	}
	if _, ok := c.GetL1(key(t, 2)); ok {
		t.Fatal("GetL1 found a key never set")
	}
	after := c.Stats()
	if after.L1Hits-before.L1Hits != 3 || after.L1Misses != before.L1Misses {
		t.Errorf("hits +%d, misses +%d; want +3, +0", after.L1Hits-before.L1Hits, after.L1Misses-before.L1Misses)
	}
	for range 2 { // decoded twice through Get: now held decoded
		c.Get(ctx, k)
	}
	if got, _ := c.GetL1(k); got.Result == nil || !sameDecision(got, v) {
		t.Errorf("GetL1 of an entry held decoded = %+v", got)
	}
}
