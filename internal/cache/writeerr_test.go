package cache

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/acgs-lite/acgs/internal/testenv"
)

// fillRedis stores 2 MiB in r and then sets its maxmemory to 1 MiB,
// without eviction: from then on r refuses every write (an OOM error reply)
// and still answers reads.
func fillRedis(t *testing.T, r *testenv.Redis) {
	t.Helper()
	for _, cmd := range [][]string{
		{"SET", "ballast", strings.Repeat("x", 2<<20)},
		{"CONFIG", "SET", "maxmemory-policy", "noeviction"},
		{"CONFIG", "SET", "maxmemory", "1mb"},
	} {
		if _, err := r.Do(cmd...); err != nil {
			t.Fatalf("%s: %v", cmd[:2], err)
		}
	}
	if _, err := r.Do("SET", "probe", "x"); err == nil || !strings.HasPrefix(err.Error(), "OOM") {
		t.Fatalf("a write to the full Redis got %v, want an OOM error reply", err)
	}
}

// TestWriteErrorRepliesDoNotOpenTheReadBreaker: Redis refusing writes with
// an error reply (OOM under noeviction; READONLY, NOPERM likewise) is
// answering, not down. Such write-behind failures are counted, and reads
// of the entries Redis holds go on. Before, five failed write pipelines
// opened the breaker, and every read was skipped.
func TestWriteErrorRepliesDoNotOpenTheReadBreaker(t *testing.T) {
	r := startRedis(t)
	var flushed atomic.Int64 // OnFlush calls
	a := newCache(t, r.URL())
	b := newCache(t, r.URL(), func(c *Config) { c.OnFlush = func(int) { flushed.Add(1) } })
	eventually(t, 5*time.Second, "connected", func() bool { return a.Stats().L2Healthy && b.Stats().L2Healthy })
	present := key(t, 0)
	a.Set(present, decision(t, true))
	eventually(t, 5*time.Second, "written", func() bool { return a.Stats().WriteEntries == 1 })

	fillRedis(t, r)
	const n = 10 // each its own pipeline: twice what opens the breaker
	for i := range n {
		b.Set(key(t, 100+i), decision(t, true))
		eventually(t, 5*time.Second, "the write dequeued", func() bool {
			s := b.Stats()
			return s.L2Errors+s.WriteSkipped == uint64(i+1)
		})
	}
	if s := b.Stats(); s.BreakerState != "closed" || s.L2Errors != n || s.WriteEntries != 0 {
		t.Fatalf("after %d writes Redis refused: %+v, want the breaker closed, %d errors and nothing written", n, s, n)
	}
	// Pipelines that wrote nothing are no write batches (acgs_cache_l2_write_batches_total,
	// acgs_cache_l2_write_batch_entries): they counted before.
	if s := b.Stats(); s.WriteBatches != 0 || flushed.Load() != 0 {
		t.Fatalf("%d write batches, %d OnFlush calls for pipelines Redis refused, want 0", s.WriteBatches, flushed.Load())
	}
	v, tier, ok := b.Lookup(context.Background(), present)
	if !ok || tier != TierL2 || !sameDecision(v, decision(t, true)) {
		t.Fatalf("an entry Redis holds: found %v in %v, want it from L2; stats %+v", ok, tier, b.Stats())
	}
}
