package cache

import (
	"context"
	"strconv"
	"testing"
	"time"
)

// TestEpochNeverGoesBack: a Redis that comes back with an older epoch (a
// restart from a snapshot taken before a flush, a lagging replica
// promoted) is set back to the instance's epoch; the entries the flush
// emptied are not read again.
func TestEpochNeverGoesBack(t *testing.T) {
	r := startRedis(t)
	c := newCache(t, r.URL())
	eventually(t, 3*time.Second, "connected", func() bool { return c.Stats().L2Healthy })
	k := key(t, 1)
	c.Set(k, decisionWithJSON(t, true))
	eventually(t, 2*time.Second, "written", func() bool { return c.Stats().WriteEntries >= 1 })
	e0 := c.Epoch()
	e1, err := c.Flush(context.Background())
	if err != nil || e1 <= e0 {
		t.Fatalf("flush: %d -> %d, %v", e0, e1, err)
	}
	if _, err := r.Do("SET", "acgs:epoch", strconv.FormatUint(e0, 10)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "Redis set back to the instance's epoch", func() bool {
		got, err := r.Do("GET", "acgs:epoch")
		return err == nil && got == strconv.FormatUint(e1, 10)
	})
	if c.Epoch() != e1 {
		t.Fatalf("epoch %d, want %d", c.Epoch(), e1)
	}
	if _, tier, ok := c.Lookup(context.Background(), k); ok {
		t.Fatalf("a flushed entry was read again (tier %v)", tier)
	}
	// A flush from there goes past both.
	e2, err := c.Flush(context.Background())
	if err != nil || e2 != e1+1 {
		t.Fatalf("flush: %d, %v; want %d", e2, err, e1+1)
	}
}

// TestRedisDataLossKeepsL1: a Redis that lost its data (a restart without
// persistence, the epoch key evicted) gets the instance's epoch back, and
// the instance keeps its L1: a fleet does not go cold all at once.
func TestRedisDataLossKeepsL1(t *testing.T) {
	r := startRedis(t)
	c := newCache(t, r.URL())
	eventually(t, 3*time.Second, "connected", func() bool { return c.Stats().L2Healthy })
	for i := range 20 {
		c.Set(key(t, i), decisionWithJSON(t, true))
	}
	e0 := c.Epoch()
	if _, err := r.Do("FLUSHALL"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "epoch key seeded again", func() bool {
		got, err := r.Do("GET", "acgs:epoch")
		return err == nil && got == strconv.FormatUint(e0, 10)
	})
	if c.Epoch() != e0 {
		t.Fatalf("epoch %d, want %d", c.Epoch(), e0)
	}
	for i := range 20 {
		if _, ok := c.Peek(key(t, i)); !ok {
			t.Fatalf("entry %d left L1", i)
		}
	}
}

// TestImplausibleEpochIsReplaced: an epoch key set far past any epoch (by
// hand, or by someone with access to Redis) or to something that is not a
// number is replaced by the instance's epoch, rather than adopted for good
// (epochs only move forward) or failing every flush.
func TestImplausibleEpochIsReplaced(t *testing.T) {
	r := startRedis(t)
	c := newCache(t, r.URL())
	eventually(t, 3*time.Second, "connected", func() bool { return c.Stats().L2Healthy })
	e0 := c.Epoch()
	for _, bad := range []string{"18446744073709551615", "9007199254740993", "not a number"} {
		if _, err := r.Do("SET", "acgs:epoch", bad); err != nil {
			t.Fatal(err)
		}
		eventually(t, 5*time.Second, "epoch key "+bad+" replaced", func() bool {
			got, err := r.Do("GET", "acgs:epoch")
			return err == nil && got == strconv.FormatUint(e0, 10)
		})
		if c.Epoch() != e0 {
			t.Fatalf("after %s: epoch %d, want %d", bad, c.Epoch(), e0)
		}
	}
	if e1, err := c.Flush(context.Background()); err != nil || e1 != e0+1 {
		t.Fatalf("flush: %d, %v; want %d", e1, err, e0+1)
	}
}
