package cache

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/acgs-lite/acgs/internal/testenv"
)

// freeze stops r's process (SIGSTOP): connections stay open and connects
// still succeed, since the kernel accepts them, but nothing is answered,
// as with a Redis stuck in a long command, a host that stopped or a
// network that drops packets. It returns the function that resumes it,
// which the test's cleanup calls too.
func freeze(t *testing.T, r *testenv.Redis) (thaw func()) {
	t.Helper()
	info, err := r.Do("INFO", "server")
	if err != nil {
		t.Fatal(err)
	}
	pid := 0
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
			pid, _ = strconv.Atoi(v)
		}
	}
	if pid <= 0 {
		t.Fatal("no process_id in INFO server")
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	thaw = func() { once.Do(func() { _ = syscall.Kill(pid, syscall.SIGCONT) }) }
	t.Cleanup(thaw) // before the caches' Close and the server's Kill, which were registered earlier
	return thaw
}

// TestFrozenRedisDoesNotHoldRequests: with Redis frozen, every Lookup and
// LookupMany returns a miss, its keys skipped or read and given up at the
// L2 deadline (an L2 error each), while the frozen Redis still holds what
// it was sent: first reads on the open connections, then, once those are
// lost, the handshake of their redial. L2 serves again once Redis does.
// Before, a request that reached L2 while the client was redialing waited
// for that dial whatever its own deadline: rueidis dials a lost connection
// once for all its callers, with the deadline of the first, which was the
// supervisor's one-second epoch read or an operator's flush. The
// operator's Flushes meanwhile return by their deadline too, not confirmed.
//
// The client's dial and write timeouts are a minute (gateProxy's URL,
// forwarding to the frozen Redis), beyond hangGuard: nothing but a
// request's own deadline ends its wait while Redis is frozen, so a request
// that waited for Redis or for a dial would not return (returns: hung).
func TestFrozenRedisDoesNotHoldRequests(t *testing.T) {
	r := startRedis(t)
	p := startGateProxy(t, r.Addr()) // left open: it only lets the test drop connections
	a := newCache(t, p.URL(), func(c *Config) { c.L2Timeout = 10 * time.Millisecond })
	b := newCache(t, r.URL())
	ctx := context.Background()
	eventually(t, 5*time.Second, "connected", func() bool { return a.Stats().L2Healthy && b.Stats().L2Healthy })

	thaw := freeze(t, r)
	// An operator empties the cache meanwhile (DELETE /v1/cache): a call
	// with a one-second deadline, as the supervisor's, that dials too. Its
	// client (bg) is not the requests' (rd). Each Flush returns by its
	// deadline, not confirmed, during the freeze too: once the connections
	// are lost, one may meet the epoch subscription's redial, which has no
	// deadline but the dial timeout (a minute here).
	stopFlushes, flushed := make(chan struct{}), make(chan struct{})
	var flushes atomic.Int64 // returned
	var flushErr error       // the first Flush's that is not "not confirmed"; written before flushed is closed
	go func() {
		defer close(flushed)
		for {
			select {
			case <-stopFlushes:
				return
			default:
			}
			fctx, cancel := context.WithTimeout(ctx, time.Second)
			_, err := a.Flush(fctx)
			cancel()
			if !errors.Is(err, errFlushNotConfirmed) && flushErr == nil {
				flushErr = fmt.Errorf("Flush = %v, want not confirmed", err)
			}
			flushes.Add(1)
			time.Sleep(10 * time.Millisecond)
		}
	}()

	// Each round looks up fresh keys (always L1 misses) concurrently, four
	// alone and 20 in one LookupMany, and must return with none found.
	const single, many = 4, 20
	next := 0
	round := func(what string) {
		t.Helper()
		var hits atomic.Int64
		var wg sync.WaitGroup
		for range single {
			k := key(t, 1_000_000+next)
			next++
			wg.Go(func() {
				if _, _, ok := a.Lookup(ctx, k); ok {
					hits.Add(1)
				}
			})
		}
		keys := make([]Key, many)
		for j := range keys {
			keys[j] = key(t, 1_000_000+next)
			next++
		}
		wg.Go(func() {
			vals, tiers, found := make([]Value, many), make([]Tier, many), make([]bool, many)
			a.LookupMany(ctx, keys, vals, tiers, found)
			for _, f := range found {
				if f {
					hits.Add(1)
				}
			}
		})
		returns(t, what, wg.Wait)
		if n := hits.Load(); n != 0 {
			t.Fatalf("%s: %d keys found that were never set", what, n)
		}
	}
	// check: every key looked up since before was skipped or read and
	// given up (an L2 error), none answered, and some reached Redis.
	check := func(what string, before Stats, looked int) {
		t.Helper()
		s := a.Stats()
		trips, errs, skipped := s.L2RoundTrips-before.L2RoundTrips, s.L2Errors-before.L2Errors, s.L2Skipped-before.L2Skipped
		if trips == 0 || errs+skipped != uint64(looked) || s.L2Hits != before.L2Hits || s.L2Misses != before.L2Misses || s.L2Rejected != before.L2Rejected {
			t.Fatalf("%s: %d keys looked up, %d round trips, %d L2 errors, %d skipped, L2 hits %d → %d, misses %d → %d; want some round trips and each key given up (an error) or skipped",
				what, looked, trips, errs, skipped, before.L2Hits, s.L2Hits, before.L2Misses, s.L2Misses)
		}
		t.Logf("%s: %d keys looked up, %d round trips, %d L2 errors, %d skipped", what, looked, trips, errs, skipped)
	}

	// The open connections: reads go out and the frozen Redis holds them,
	// until the breaker has opened on their failures.
	before, first := a.Stats(), next
	for guard := time.Now().Add(hangGuard); a.Stats().BreakerState != "open"; {
		if time.Now().After(guard) {
			t.Fatalf("hung: the breaker has not opened after %s of failed reads: %+v", hangGuard, a.Stats())
		}
		round("lookups with the reads held by the frozen Redis")
		time.Sleep(time.Millisecond)
	}
	check("reads held", before, next-first)

	// The connections lost: the client dials the frozen Redis again, which
	// accepts (the kernel does) and holds the handshake. Rounds go on until
	// the breaker, half-open each second, has let requests meet the redial
	// a few times (the supervisor's ping dials too, with its one-second
	// deadline).
	p.drop()
	flushesAtDrop := flushes.Load()
	before, first = a.Stats(), next
	for guard := time.Now().Add(hangGuard); p.forwarded() == 0 || a.Stats().L2RoundTrips-before.L2RoundTrips < 3; {
		if time.Now().After(guard) {
			t.Fatalf("hung: after %s, %d connections redialed, %d round trips since the drop; want some of each", hangGuard, p.forwarded(), a.Stats().L2RoundTrips-before.L2RoundTrips)
		}
		round("lookups with the redial held by the frozen Redis")
		time.Sleep(time.Millisecond)
	}
	check("redial held", before, next-first)
	returns(t, "a Flush made since the drop, with Redis frozen", func() {
		for flushes.Load() < flushesAtDrop+2 {
			time.Sleep(time.Millisecond)
		}
	})
	close(stopFlushes)
	returns(t, "the Flushes while Redis is frozen", func() { <-flushed })
	if flushErr != nil {
		t.Fatalf("a Flush while Redis is frozen: %v", flushErr)
	}
	t.Logf("%d Flushes returned while Redis is frozen, %d since the drop", flushes.Load(), flushes.Load()-flushesAtDrop)

	thaw()
	eventually(t, 10*time.Second, "L2 healthy again", func() bool { return a.Stats().L2Healthy && b.Stats().L2Healthy })
	k := key(t, 1)
	b.Set(k, decision(t, true))
	waitL2(t, a, k)
	eventually(t, 5*time.Second, "the reads given up have ended", func() bool { return a.l2.abandoned.Load() == 0 })
}

// TestFlushReturnsByItsDeadline: a Flush (DELETE /v1/cache) returns by its
// deadline, with an error saying it was not confirmed, whatever bg's
// connections are doing. First their redial is held: the connections are
// dropped and dialed again for callers without a deadline (the epoch
// subscription's, and the test's own calls, which stand for such callers
// on every connection) at a shut gate, for longer than the test runs
// (gateProxy: a minute's dial timeout), so a Flush that waited for a dial
// would not return (returns: hung). Once the gate opens, the calls given
// up end and a Flush succeeds. Then Redis holds the increment itself
// (CLIENT PAUSE WRITE) past the Flush's deadline: the Flush returns not
// confirmed, and once Redis does the increment, this instance and another
// adopt the new epoch (their periodic read of it) and the entry flushed is
// no longer read.
func TestFlushReturnsByItsDeadline(t *testing.T) {
	r := startRedis(t)
	p := startGateProxy(t, r.Addr())
	a := newCache(t, p.URL())
	t.Cleanup(p.open) // before a's Close, which waits for the held dials
	b := newCache(t, r.URL())
	raw := rawClient(t, r.URL())
	ctx := context.Background()
	eventually(t, 5*time.Second, "connected", func() bool { return a.Stats().L2Healthy && b.Stats().L2Healthy })
	redisEpoch := func() uint64 {
		t.Helper()
		n, err := raw.Do(ctx, raw.B().Get().Key(DefaultKeyPrefix+"epoch").Build()).AsUint64()
		if err != nil {
			t.Fatalf("read the epoch: %v", err)
		}
		return n
	}

	p.shut()
	p.drop()
	// Each GET goes to one of bg's connections at random; a call that
	// meets a dial made with a deadline fails when it does and is made
	// again, until every connection is dialed for one without.
	bg := a.l2.client.Load().bg
	stop := make(chan struct{})
	var holders sync.WaitGroup
	for i := range 8 {
		holders.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				bg.Do(ctx, bg.B().Get().Key("hold:"+strconv.Itoa(i)).Build())
			}
		})
	}
	eventually(t, 10*time.Second, "bg's redial held at the gate", func() bool { return p.held.Load() > 0 })
	for i := range 20 {
		fctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		var err error
		returns(t, "a Flush with bg's redial held", func() { _, err = a.Flush(fctx) })
		cancel()
		if !errors.Is(err, errFlushNotConfirmed) {
			t.Fatalf("Flush %d with bg's redial held = %v, want not confirmed", i, err)
		}
	}
	if n := a.l2.flushAbandoned.Load(); n == 0 {
		t.Fatal("no Flush's call was given up while held at the gate")
	}
	close(stop)
	p.open()
	returns(t, "the calls held at the gate", holders.Wait)
	eventually(t, 10*time.Second, "the Flushes' calls given up have ended", func() bool { return a.l2.flushAbandoned.Load() == 0 })
	eventually(t, 10*time.Second, "the epoch in Redis adopted", func() bool { return a.Epoch() == redisEpoch() })
	e, err := a.Flush(ctx)
	if err != nil || e != redisEpoch() || a.Epoch() != e {
		t.Fatalf("Flush once the gate is open = %d, %v; epoch in Redis %d, adopted %d", e, err, redisEpoch(), a.Epoch())
	}

	k := key(t, 1)
	a.Set(k, decision(t, true))
	waitL2(t, b, k)
	e = redisEpoch()
	// Paused until the test unpauses it (the minute is a backstop): the
	// increment is sent and held unanswered.
	if _, err := r.Do("CLIENT", "PAUSE", "60000", "WRITE"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = r.Do("CLIENT", "UNPAUSE") })
	fctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	returns(t, "a Flush whose increment Redis holds", func() { _, err = a.Flush(fctx) })
	cancel()
	if !errors.Is(err, errFlushNotConfirmed) {
		t.Fatalf("Flush with its increment held = %v, want not confirmed", err)
	}
	if _, err := r.Do("CLIENT", "UNPAUSE"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "both instances adopt the increment done after the Flush returned", func() bool {
		return redisEpoch() == e+1 && a.Epoch() == e+1 && b.Epoch() == e+1
	})
	for _, c := range []*Tiered{a, b} {
		if v, tier, ok := c.Lookup(ctx, k); ok {
			t.Fatalf("the flushed entry is still read, from %v: %s", tier, mustJSON(v))
		}
	}
}

// forwarded is how many connections p forwards (two each) since its last
// drop.
func (p *gateProxy) forwarded() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns) / 2
}

// TestL2ReconnectsWhenADialOutlastsL2Timeout: requests read with a
// deadline (L2_TIMEOUT) too short for a dial and a handshake; when their
// connections are lost, they cannot dial them again themselves, and L2
// must still come back (the supervisor redials with a generous deadline).
func TestL2ReconnectsWhenADialOutlastsL2Timeout(t *testing.T) {
	r := startRedis(t)
	p := startSlowProxy(t, r.Addr(), 100*time.Millisecond)
	a := newCache(t, p.plainURL(), func(c *Config) { c.L2Timeout = 20 * time.Millisecond })
	b := newCache(t, r.URL())
	eventually(t, 5*time.Second, "connected", func() bool { return a.Stats().L2Healthy && b.Stats().L2Healthy })
	ctx := context.Background()
	for i := range 3 {
		p.drop()
		k := key(t, i)
		b.Set(k, decision(t, true))
		eventually(t, 10*time.Second, "an L2 hit after the connections were lost", func() bool {
			_, tier, ok := a.Lookup(ctx, k)
			return ok && tier == TierL2
		})
	}
	if s := a.Stats(); s.L2Errors == 0 {
		t.Fatalf("no request met the lost connections: %+v", s)
	}
}

// TestAwaitGivesUpAtTheDeadline: await returns a call's result when it
// comes before the deadline, gives up at the deadline of one that has not
// returned, while the call is still held, counts it as abandoned until it
// returns, and reads skip L2 while maxAbandoned are.
func TestAwaitGivesUpAtTheDeadline(t *testing.T) {
	var abandoned atomic.Int64

	t.Run("in time", func(t *testing.T) {
		// The context ends only after await returned: nothing but the
		// call's result can end the wait.
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var got int
		var ok bool
		returns(t, "await of a call that returns at once", func() {
			got, ok = await(ctx, &abandoned, func() int { return 42 })
		})
		if !ok || got != 42 {
			t.Fatalf("await = %d, %v; want 42, true", got, ok)
		}
		if n := abandoned.Load(); n != 0 {
			t.Fatalf("%d calls counted as abandoned, want 0", n)
		}
	})

	t.Run("late", func(t *testing.T) {
		// The call is held until the test releases it, which it does only
		// after checking await: await must return at the deadline while
		// the call is still held (returns: hung if it waited for it).
		release, returned := make(chan struct{}), make(chan struct{})
		defer func() {
			select {
			case <-release:
			default:
				close(release)
			}
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		var got int
		var ok bool
		returns(t, "await of a held call", func() {
			got, ok = await(ctx, &abandoned, func() int {
				<-release
				defer close(returned)
				return 42
			})
		})
		if ok || got != 0 {
			t.Fatalf("await = %d, %v with the call held; want 0, false", got, ok)
		}
		if ctx.Err() != context.DeadlineExceeded {
			t.Fatalf("await gave up before the deadline (ctx.Err() = %v)", ctx.Err())
		}
		select {
		case <-returned:
			t.Fatal("the held call returned before it was released")
		default:
		}
		if n := abandoned.Load(); n != 1 {
			t.Fatalf("%d calls counted as abandoned while the call is held, want 1", n)
		}
		close(release)
		returns(t, "the released call", func() { <-returned })
		eventually(t, 5*time.Second, "the abandoned call counted out", func() bool { return abandoned.Load() == 0 })
	})

	r := startRedis(t)
	c := newCache(t, r.URL())
	eventually(t, 5*time.Second, "connected", func() bool { return c.Stats().L2Healthy })
	c.l2.abandoned.Store(maxAbandoned)
	c.Lookup(context.Background(), key(t, 1))
	c.l2.abandoned.Store(0)
	if s := c.Stats(); s.L2Skipped != 1 || s.L2RoundTrips != 0 {
		t.Fatalf("with %d reads abandoned: %+v, want the lookup skipped", maxAbandoned, s)
	}

	// Flushes have a bound of their own: past it a Flush is not confirmed
	// at once and Redis's epoch does not move; below it, it does.
	before := c.Stats().Epoch
	c.l2.flushAbandoned.Store(maxFlushAbandoned)
	_, err := c.Flush(context.Background())
	c.l2.flushAbandoned.Store(0)
	if !errors.Is(err, errFlushNotConfirmed) {
		t.Fatalf("Flush with %d flush calls abandoned = %v, want not confirmed", maxFlushAbandoned, err)
	}
	if e, err := c.l2.readEpoch(context.Background(), c.l2.client.Load().bg); err != nil || e != before {
		t.Fatalf("epoch in Redis after a Flush past the bound: %d, %v; want %d unchanged", e, err, before)
	}
	if e, err := c.Flush(context.Background()); err != nil || e != before+1 {
		t.Fatalf("Flush below the bound = %d, %v; want %d", e, err, before+1)
	}
}
