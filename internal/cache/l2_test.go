package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/acgs-lite/acgs/internal/testenv"
	"github.com/redis/rueidis"
)

// waitL2 polls c until k is answered from L2 (the write-behind flush of
// another instance has landed) and returns that value.
func waitL2(t *testing.T, c *Tiered, k Key) Value {
	t.Helper()
	var got Value
	eventually(t, 5*time.Second, "entry reaches the other instance through L2", func() bool {
		v, tier, ok := c.Lookup(context.Background(), k)
		if ok && tier != TierL2 {
			t.Fatalf("hit from %v before L2 answered", tier)
		}
		got = v
		return ok
	})
	return got
}

func TestTwoInstancesShareL2(t *testing.T) {
	tests := []struct {
		name string
		opts []testenv.RedisOption
	}{
		{name: "no password"},
		{name: "password", opts: []testenv.RedisOption{testenv.WithPassword("pa ss@word")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := startRedis(t, tt.opts...)
			url := r.URL()
			if tt.name == "password" {
				url = "redis://:pa%20ss%40word@" + r.Addr()
			}
			a, b := newCache(t, url), newCache(t, url)
			eventually(t, 5*time.Second, "both instances healthy", func() bool {
				return a.Stats().L2Healthy && b.Stats().L2Healthy
			})
			if a.Epoch() != b.Epoch() || a.Epoch() == 0 {
				t.Fatalf("epochs %d and %d, want equal and seeded", a.Epoch(), b.Epoch())
			}

			k, undef := key(t, 1), key(t, 2)
			want := decision(t, true)
			a.Set(k, want)
			a.Set(undef, Value{})
			if got := waitL2(t, b, k); !sameDecision(got, want) {
				t.Fatalf("L2 value %s, want %s", mustJSON(got), mustJSON(want))
			}
			if got := waitL2(t, b, undef); got.Defined || got.Result != nil || got.JSON != nil {
				t.Fatalf("undefined decision came back as %+v", got)
			}
			if _, tier, ok := b.Lookup(context.Background(), k); !ok || tier != TierL1 {
				t.Fatalf("second Lookup: tier %v ok %v, want promoted to L1", tier, ok)
			}
			s := b.Stats()
			if s.L2Hits != 2 || s.L2Rejected != 0 || s.L2Errors != 0 {
				t.Fatalf("stats %+v", s)
			}
		})
	}
}

// TestL2CarriesResultJSON checks that the JSON encoding a writer attaches to
// a value is what readers get back, byte for byte, and that a value without
// one gets the encoding of its result.
func TestL2CarriesResultJSON(t *testing.T) {
	r := startRedis(t)
	a, b := newCache(t, r.URL()), newCache(t, r.URL())
	tests := []struct {
		name     string
		v        Value
		wantJSON string
	}{
		{"attached", Value{Defined: true, Result: decodeJSON(t, `{"allow":true,"score":1.50}`), JSON: []byte(`{"allow":true,"score":1.50}`)}, `{"allow":true,"score":1.50}`},
		{"encoded by the writer", Value{Defined: true, Result: decodeJSON(t, `{"b":[1.0],"a":"<"}`)}, `{"a":"\u003c","b":[1.0]}`},
		{"undefined", Value{}, ""},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := key(t, i)
			a.Set(k, tt.v)
			got := waitL2(t, b, k)
			if !sameDecision(got, tt.v) || string(got.JSON) != tt.wantJSON {
				t.Fatalf("got %+v with JSON %q, want JSON %q", got, got.JSON, tt.wantJSON)
			}
		})
	}
}

func TestL2RejectsTamperedEntries(t *testing.T) {
	r := startRedis(t)
	raw := rawClient(t, r.URL())
	c := newCache(t, r.URL())
	eventually(t, 5*time.Second, "connected", func() bool { return c.Stats().L2Healthy })
	ctx := context.Background()
	good := decision(t, true)
	now := time.Now()

	seal := func(s *signer, rk string, v Value) []byte {
		b, err := s.seal(rk, v, now)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := []struct {
		name  string
		entry func(rk string) []byte
	}{
		{"signed with another key", func(rk string) []byte { return seal(newSigner(testKey2, nil), rk, good) }},
		{"result changed", func(rk string) []byte {
			b := seal(c.l2.signer, rk, good)
			b[envelopeHeader+2] ^= 0x20
			return b
		}},
		{"defined flag flipped", func(rk string) []byte {
			b := seal(c.l2.signer, rk, good)
			b[1] ^= flagDefined
			return b
		}},
		{"creation time extended", func(rk string) []byte {
			b := seal(c.l2.signer, rk, good)
			b[5]++
			return b
		}},
		{"truncated", func(rk string) []byte { b := seal(c.l2.signer, rk, good); return b[:len(b)-1] }},
		{"too short", func(string) []byte { return []byte{1, 1} }},
		{"unknown version", func(rk string) []byte { b := seal(c.l2.signer, rk, good); b[0] = 9; return b }},
		{"garbage", func(string) []byte {
			return []byte("not an envelope at all, but long enough to have a mac field in it")
		}},
		{"replayed from another key", func(string) []byte {
			return seal(c.l2.signer, c.l2.redisKey(c.Epoch(), key(t, 999)), Value{Defined: true, Result: "allow everything"})
		}},
		{"replayed from an older epoch", func(string) []byte {
			return seal(c.l2.signer, c.l2.redisKey(c.Epoch()-1, key(t, 100)), good)
		}},
		{"signed but over the entry bound", func(rk string) []byte {
			body := strings.Repeat("x", MaxEntryBytes-1)
			return seal(c.l2.signer, rk, Value{Defined: true, Result: body, JSON: []byte(`"` + body + `"`)})
		}},
		{"signed but not JSON", func(rk string) []byte {
			b := make([]byte, envelopeHeader, 64)
			b[0], b[1] = envelopeVersion, flagDefined
			b = append(b, "{not json"...)
			return c.l2.signer.mac(b, 0, rk, b)
		}},
		{"signed with trailing JSON", func(rk string) []byte {
			b := make([]byte, envelopeHeader, 64)
			b[0], b[1] = envelopeVersion, flagDefined
			b = append(b, `true false`...)
			return c.l2.signer.mac(b, 0, rk, b)
		}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := key(t, 100+i)
			rk := c.l2.redisKey(c.Epoch(), k)
			if err := raw.Do(ctx, raw.B().Set().Key(rk).Value(rueidis.BinaryString(tt.entry(rk))).Build()).Error(); err != nil {
				t.Fatal(err)
			}
			before := c.Stats().L2Rejected
			if v, tier, ok := c.Lookup(ctx, k); ok {
				t.Fatalf("tampered entry served from %v: %.200s", tier, mustJSON(v))
			}
			if got := c.Stats().L2Rejected; got != before+1 {
				t.Fatalf("L2Rejected %d → %d, want +1", before, got)
			}
			// A rejected entry is not promoted: the next Lookup asks L2 again.
			if _, _, ok := c.Lookup(ctx, k); ok {
				t.Fatal("served on second Lookup")
			}
		})
	}
	// The same machinery accepts a correctly signed entry.
	k := key(t, 1)
	rk := c.l2.redisKey(c.Epoch(), k)
	raw.Do(ctx, raw.B().Set().Key(rk).Value(rueidis.BinaryString(seal(c.l2.signer, rk, good))).Build())
	if v, tier, ok := c.Lookup(ctx, k); !ok || tier != TierL2 || !sameDecision(v, good) {
		t.Fatalf("valid entry: %v %v %+v", tier, ok, v)
	}
}

func TestSigningKeyRotation(t *testing.T) {
	r := startRedis(t)
	old := newCache(t, r.URL()) // signs with testKey1
	rotated := newCache(t, r.URL(), func(c *Config) {
		c.SigningKey, c.PreviousSigningKeys = testKey2, [][]byte{testKey1}
	})
	newOnly := newCache(t, r.URL(), func(c *Config) { c.SigningKey = testKey2 })
	k := key(t, 1)
	old.Set(k, decision(t, true))
	waitL2(t, rotated, k)
	eventually(t, time.Second, "entry rejected by an instance without the old key", func() bool {
		newOnly.Lookup(context.Background(), k)
		return newOnly.Stats().L2Rejected > 0
	})
}

func TestL2TTL(t *testing.T) {
	r := startRedis(t)
	raw := rawClient(t, r.URL())
	ttl := 400 * time.Millisecond
	a := newCache(t, r.URL(), func(c *Config) { c.TTL = ttl })
	b := newCache(t, r.URL(), func(c *Config) { c.TTL = ttl })
	k := key(t, 1)
	a.Set(k, decision(t, true))
	waitL2(t, b, k) // promoted with the rest of its life, not a fresh TTL
	rk := a.l2.redisKey(a.Epoch(), k)
	pttl, err := raw.Do(context.Background(), raw.B().Pttl().Key(rk).Build()).AsInt64()
	if err != nil || pttl <= 0 || pttl > ttl.Milliseconds() {
		t.Fatalf("PTTL = %d, %v; want in (0, %d]", pttl, err, ttl.Milliseconds())
	}
	eventually(t, 3*time.Second, "entry expires from L1 and L2", func() bool {
		_, _, okA := a.Lookup(context.Background(), k)
		_, _, okB := b.Lookup(context.Background(), k)
		n, _ := raw.Do(context.Background(), raw.B().Exists().Key(rk).Build()).AsInt64()
		return !okA && !okB && n == 0
	})
}

func TestFlushReachesOtherInstances(t *testing.T) {
	r := startRedis(t)
	a, b := newCache(t, r.URL()), newCache(t, r.URL())
	ctx := context.Background()
	eventually(t, 5*time.Second, "both connected", func() bool { return a.Stats().L2Healthy && b.Stats().L2Healthy })
	k := key(t, 1)
	a.Set(k, decision(t, true))
	waitL2(t, b, k)
	before := b.Epoch()
	e, err := a.Flush(ctx)
	if err != nil || e != before+1 || a.Epoch() != e {
		t.Fatalf("Flush = %d, %v; epoch before %d", e, err, before)
	}
	if _, _, ok := a.Lookup(ctx, k); ok {
		t.Fatal("flushing instance still answers")
	}
	// Pub/sub delivers in milliseconds; the periodic re-read heals within 1s.
	eventually(t, 3*time.Second, "other instance adopts the new epoch", func() bool { return b.Epoch() == e })
	if v, tier, ok := b.Lookup(ctx, k); ok {
		t.Fatalf("old entry still served from %v: %+v", tier, v)
	}
	// The cache keeps working under the new epoch.
	a.Set(k, decision(t, false))
	if got := waitL2(t, b, k); !sameDecision(got, decision(t, false)) {
		t.Fatalf("after flush got %s", mustJSON(got))
	}
}

func TestFlushWithoutSubscriptionHealsByPolling(t *testing.T) {
	r := startRedis(t)
	a := newCache(t, r.URL())
	eventually(t, 5*time.Second, "connected", func() bool { return a.Stats().L2Healthy })
	// Another fleet member bumps the epoch without publishing.
	if _, err := r.Do("INCR", DefaultKeyPrefix+"epoch"); err != nil {
		t.Fatal(err)
	}
	want := a.Epoch() + 1
	eventually(t, 3*time.Second, "epoch re-read", func() bool { return a.Epoch() == want })
}

func TestRedisOutageAndRecovery(t *testing.T) {
	r := startRedis(t)
	timeout := 20 * time.Millisecond
	var changes atomic.Int64 // a's breaker's state changes
	a := newCache(t, r.URL(), func(c *Config) {
		c.L2Timeout = timeout
		c.Logger = slog.New(breakerChanges{c.Logger.Handler(), &changes})
	})
	b := newCache(t, r.URL(), func(c *Config) { c.L2Timeout = timeout })
	ctx := context.Background()
	eventually(t, 5*time.Second, "connected", func() bool { return a.Stats().L2Healthy && b.Stats().L2Healthy })

	r.Stop()
	written := a.Stats().WriteEntries
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; ; i++ {
		// Each Lookup of an L1 miss returns a miss, and Redis either was
		// asked and failed (a round trip and an L2 error: it ended, and
		// it said so) or was skipped (breaker open). That a read gives up
		// at its own deadline rather than waiting for a dial is
		// TestLookupGivesUpAtItsDeadlineWhileADialIsHeld's; here a read
		// without its deadline does not return at all (returns: hung).
		k, v := key(t, 1000+i), decision(t, true)
		before := a.Stats()
		var hit bool
		returns(t, "Lookup during the outage", func() { _, _, hit = a.Lookup(ctx, k) })
		if hit {
			t.Fatal("hit for a key never set")
		}
		s := a.Stats()
		trips, errs, skipped := s.L2RoundTrips-before.L2RoundTrips, s.L2Errors-before.L2Errors, s.L2Skipped-before.L2Skipped
		failed, wasSkipped := trips == 1 && errs >= 1 && skipped == 0, trips == 0 && skipped == 1
		if !failed && !wasSkipped || s.L2Hits != before.L2Hits || s.L2Misses != before.L2Misses {
			t.Fatalf("Lookup during the outage: %d round trips, %d more L2 errors, %d skipped, L2 hits %d → %d, misses %d → %d; want a round trip that failed, or a skip",
				trips, errs, skipped, before.L2Hits, s.L2Hits, before.L2Misses, s.L2Misses)
		}
		// Set is write-behind: it returns with the value in L1 and its L2
		// write queued, dropped, skipped or failed, never written while
		// Redis is down. A Set that waited for Redis is
		// TestWriteBehindQueueFullDrops's.
		returns(t, "Set during the outage", func() { a.Set(k, v) })
		if _, tier, ok := a.Lookup(ctx, k); !ok || tier != TierL1 {
			t.Fatal("L1 stopped working during the outage")
		}
		s = a.Stats()
		if s.WriteEntries != written {
			t.Fatalf("%d entries written to a stopped Redis", s.WriteEntries-written)
		}
		if s.BreakerState == "open" && !s.L2Healthy {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("breaker did not open: %+v", s)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if changes.Load() == 0 {
		t.Fatal("the breaker's opening is not in its log: breakerChanges counts nothing")
	}
	// While open, Lookup skips L2: no round trip to Redis (which would
	// wait for its timeout), each miss counted as skipped. Should the
	// breaker half-open during the Lookups (breakerOpenFor after it
	// opened: only on a machine stalled that long), one Lookup of each
	// half-open spell may go to Redis as its probe: that run is made
	// again once the failed probe has opened the breaker again.
	for i := 0; ; i++ {
		if i == 5 {
			t.Fatal("the breaker changed state during each of 5 runs of 100 Lookups")
		}
		eventually(t, 5*time.Second, "breaker open", func() bool { return a.Stats().BreakerState == "open" })
		before := a.Stats()
		n := changes.Load() // after Stats, which half-opens (and logs) a breaker whose time is up
		if before.BreakerState != "open" {
			continue
		}
		for j := range 100 {
			a.Lookup(ctx, key(t, 5000+100*i+j))
		}
		after := a.Stats()
		changed := uint64(changes.Load() - n)
		trips, skipped := after.L2RoundTrips-before.L2RoundTrips, after.L2Skipped-before.L2Skipped
		if trips > changed || changed == 0 && skipped != 100 {
			t.Fatalf("100 Lookups with the breaker open: %d round trips to Redis, %d skipped, the breaker changing state %d times meanwhile; want 0, 100, 0",
				trips, skipped, changed)
		}
		if changed == 0 {
			break
		}
	}
	if s := a.Stats(); s.L2Errors == 0 || s.L2Skipped == 0 {
		t.Fatalf("outage not counted: %+v", s)
	}

	r.Start() // same port, empty data set
	restarted := time.Now()
	eventually(t, 5*time.Second, "L2 healthy again on both instances", func() bool {
		return a.Stats().L2Healthy && b.Stats().L2Healthy
	})
	k := key(t, 1)
	a.Set(k, decision(t, true))
	waitL2(t, b, k)
	t.Logf("L2 recovered %s after the restart", time.Since(restarted).Round(time.Millisecond))
}

// breakerChanges is a log handler that counts the L2 breaker's state
// changes a Tiered logs: each is logged (OnStateChange) under the
// breaker's lock, before any call sees the new state.
type breakerChanges struct {
	slog.Handler
	n *atomic.Int64
}

func (h breakerChanges) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "cache: L2 circuit breaker changed state" {
		h.n.Add(1)
	}
	return h.Handler.Handle(ctx, r)
}

func (h breakerChanges) WithAttrs(as []slog.Attr) slog.Handler {
	return breakerChanges{h.Handler.WithAttrs(as), h.n}
}

func (h breakerChanges) WithGroup(g string) slog.Handler {
	return breakerChanges{h.Handler.WithGroup(g), h.n}
}

// TestStartWithRedisDown: New with Redis stopped returns a cache that serves
// from L1, reports L2 down and connects once Redis is back.
func TestStartWithRedisDown(t *testing.T) {
	r := startRedis(t)
	r.Stop()
	var a *Tiered
	returns(t, "New with Redis down", func() { a = newCache(t, r.URL()) })
	degradedThenConnects(t, a, "with Redis down", r.URL(), nil, r.Start)
}

// TestStartWithRedisNotAnswering: New does not wait for Redis beyond its
// startup wait. Its first dial is held at a shut gate for longer than the
// test runs (gateProxy: a minute's dial timeout); New returns while it is
// still held, which a New waiting for the connection could not, with L2
// reported down, not connected (Flush says so), and L1 serving. Once the
// gate opens the cache connects in the background.
func TestStartWithRedisNotAnswering(t *testing.T) {
	r := startRedis(t)
	p := startGateProxy(t, r.Addr())
	p.shut()
	var a *Tiered
	returns(t, "New with Redis not answering", func() { a = newCache(t, p.URL()) })
	t.Cleanup(p.open) // before a's Close, which waits for the held dial
	eventually(t, 10*time.Second, "New's dial held at the gate", func() bool { return p.held.Load() > 0 })
	if s := a.Stats(); s.L2RoundTrips != 0 {
		t.Fatalf("stats with the first dial held: %+v", s)
	}
	degradedThenConnects(t, a, "with the first dial held", r.URL(), func() {
		if s := a.Stats(); s.L2Skipped != 0 || s.L2RoundTrips != 0 {
			t.Fatalf("an L1 hit went to L2: %+v", s)
		}
		a.Lookup(context.Background(), key(t, 2))
		if s := a.Stats(); s.L2Skipped != 1 || s.L2RoundTrips != 0 {
			t.Fatalf("an L1 miss before L2 connected: %+v, want it skipped", s)
		}
	}, p.open)
}

// degradedThenConnects checks a cache whose L2 has not connected yet (how
// says why): L2 enabled and reported down, Flush not connected, a Set
// served from L1 (key 1); then whileDown, when set, checks more. Once
// connect lets Redis answer, the cache connects in the background and its
// Sets reach L2: another instance on redisURL reads one (key 3).
func degradedThenConnects(t *testing.T, a *Tiered, how, redisURL string, whileDown, connect func()) {
	t.Helper()
	s := a.Stats()
	if !s.L2Enabled || s.L2Healthy {
		t.Fatalf("stats %s: %+v", how, s)
	}
	if _, err := a.Flush(context.Background()); !errors.Is(err, errNotConnected) {
		t.Fatalf("Flush %s = %v, want not connected", how, err)
	}
	k := key(t, 1)
	a.Set(k, decision(t, true))
	if _, tier, ok := a.Lookup(context.Background(), k); !ok || tier != TierL1 {
		t.Fatalf("L1 not serving %s", how)
	}
	if whileDown != nil {
		whileDown()
	}
	connect()
	eventually(t, 10*time.Second, "connects in the background", func() bool { return a.Stats().L2Healthy })
	b := newCache(t, redisURL)
	k2 := key(t, 3)
	a.Set(k2, decision(t, false))
	waitL2(t, b, k2)
}

// TestLookupGivesUpAtItsDeadlineWhileADialIsHeld: a Lookup whose L2 read
// meets its connection being dialed again ends at its own deadline
// (L2Timeout) with a miss, counted as an L2 error (or skipped, once the
// breaker has opened), and does not wait for the dial, held here at a shut
// gate for longer than the test runs (gateProxy: a minute's dial timeout):
// each returns while the gate is still shut, which a Lookup that waited for
// the dial could not. Once the gate opens, L2 serves again and the reads
// given up have ended.
func TestLookupGivesUpAtItsDeadlineWhileADialIsHeld(t *testing.T) {
	r := startRedis(t)
	p := startGateProxy(t, r.Addr())
	a := newCache(t, p.URL(), func(c *Config) { c.L2Timeout = 20 * time.Millisecond })
	t.Cleanup(p.open) // before a's Close, which waits for a held dial
	b := newCache(t, r.URL())
	ctx := context.Background()
	eventually(t, 5*time.Second, "connected", func() bool { return a.Stats().L2Healthy && b.Stats().L2Healthy })

	p.shut()
	p.drop()
	for i := range 10 {
		k := key(t, 100+i)
		before := a.Stats()
		var hit bool
		returns(t, "a Lookup with its connection's dial held", func() { _, _, hit = a.Lookup(ctx, k) })
		s := a.Stats()
		trips, errs, skipped := s.L2RoundTrips-before.L2RoundTrips, s.L2Errors-before.L2Errors, s.L2Skipped-before.L2Skipped
		failed, wasSkipped := trips == 1 && errs == 1, trips == 0 && skipped == 1
		if hit || !failed && !wasSkipped {
			t.Fatalf("Lookup %d with the dial held: hit %v, %d round trips, %d L2 errors, %d skipped; want a miss, by a failed round trip or a skip",
				i, hit, trips, errs, skipped)
		}
	}
	eventually(t, 10*time.Second, "a dial held at the gate", func() bool { return p.held.Load() > 0 })
	if s := a.Stats(); s.L2Errors == 0 {
		t.Fatalf("no Lookup went to Redis: %+v", s)
	}

	p.open()
	eventually(t, 10*time.Second, "L2 healthy again", func() bool { return a.Stats().L2Healthy })
	k := key(t, 1)
	b.Set(k, decision(t, true))
	waitL2(t, a, k)
	eventually(t, 10*time.Second, "the reads given up have ended", func() bool { return a.l2.abandoned.Load() == 0 })
}

// hangGuard is how long a call that must not wait for Redis may take before
// a test calls it hung. It is no speed bound: such a call returns in
// milliseconds, and one that waited for Redis would wait for good (a
// stopped or paused Redis) or for a minute (gateProxy's dial). It only makes
// the test fail rather than hang.
const hangGuard = 30 * time.Second

// returns runs f, which must not call t's Fatal, and fails the test if it
// has not returned within hangGuard.
func returns(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(hangGuard):
		t.Fatalf("hung: %s has not returned after %s", what, hangGuard)
	}
}

// gateProxy forwards TCP connections to a Redis. While shut, it accepts a
// new connection and holds it unanswered until it opens: to its client, a
// dial (the connection's handshake) that lasts as long as the test wants.
// Its URL sets the client's dial and write timeouts (the handshake's read
// deadline is the latter) to a minute, beyond hangGuard. A slow proxy
// (startSlowProxy) holds each connection's first bytes for delay instead.
type gateProxy struct {
	ln     net.Listener
	target string
	delay  time.Duration // before a connection's bytes are forwarded
	held   atomic.Int64  // connections waiting at the shut gate
	mu     sync.Mutex
	gate   chan struct{} // closed while open
	conns  []net.Conn
}

func startGateProxy(t *testing.T, target string) *gateProxy {
	t.Helper()
	return startProxy(t, target, 0)
}

// startSlowProxy starts an open proxy that holds each new connection's
// first bytes for delay: a handshake slower than a request's deadline, as
// with TLS to a distant Redis. Its plainURL keeps the client's default
// timeouts.
func startSlowProxy(t *testing.T, target string, delay time.Duration) *gateProxy {
	t.Helper()
	return startProxy(t, target, delay)
}

func startProxy(t *testing.T, target string, delay time.Duration) *gateProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &gateProxy{ln: ln, target: target, delay: delay, gate: make(chan struct{})}
	close(p.gate)
	go p.serve()
	t.Cleanup(func() { p.open(); ln.Close(); p.drop() })
	return p
}

func (p *gateProxy) URL() string {
	return p.plainURL() + "?dial_timeout=60s&write_timeout=60s"
}

// plainURL is the proxy's URL with the client's default timeouts.
func (p *gateProxy) plainURL() string { return "redis://" + p.ln.Addr().String() }

// shut holds the connections accepted from now on.
func (p *gateProxy) shut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.gate:
		p.gate = make(chan struct{})
	default:
	}
}

// open forwards the held connections and those to come.
func (p *gateProxy) open() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.gate:
	default:
		close(p.gate)
	}
}

func (p *gateProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		gate := p.gate
		p.mu.Unlock()
		go func() {
			select {
			case <-gate:
			default:
				p.held.Add(1)
				<-gate
				p.held.Add(-1)
			}
			s, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				return
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, s)
			p.mu.Unlock()
			time.Sleep(p.delay)
			go func() { _, _ = io.Copy(s, c); s.Close() }()
			_, _ = io.Copy(c, s)
			c.Close()
		}()
	}
}

// drop closes the connections forwarded so far.
func (p *gateProxy) drop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func TestWriteBehindBatches(t *testing.T) {
	r := startRedis(t)
	var mu sync.Mutex
	var sizes []int
	a := newCache(t, r.URL(), func(c *Config) {
		c.BatchSize = 4
		c.BatchWindow = 20 * time.Millisecond
		c.OnFlush = func(n int) { mu.Lock(); sizes = append(sizes, n); mu.Unlock() }
	})
	eventually(t, 5*time.Second, "connected", func() bool { return a.Stats().L2Healthy })
	for i := range 10 {
		a.Set(key(t, i), decision(t, true))
	}
	// OnFlush runs after a batch's entries are counted: wait for both.
	flushed := func() int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, s := range sizes {
			n += s
		}
		return n
	}
	eventually(t, 5*time.Second, "10 entries written", func() bool { return a.Stats().WriteEntries == 10 && flushed() == 10 })
	mu.Lock()
	total := 0
	for _, n := range sizes {
		if n < 1 || n > 4 {
			t.Fatalf("batch of %d, want 1..4: %v", n, sizes)
		}
		total += n
	}
	if total != 10 || a.Stats().WriteBatches != uint64(len(sizes)) {
		t.Fatalf("batches %v (total %d), WriteBatches %d", sizes, total, a.Stats().WriteBatches)
	}
	sizes = nil
	mu.Unlock()

	// A lone entry goes out when the window closes, as a batch of one.
	a.Set(key(t, 100), decision(t, true))
	eventually(t, 5*time.Second, "window flush", func() bool { return a.Stats().WriteEntries == 11 && flushed() == 1 })
	mu.Lock()
	if !reflect.DeepEqual(sizes, []int{1}) {
		t.Fatalf("window flush batches %v, want [1]", sizes)
	}
	mu.Unlock()
	if n, _ := r.Do("DBSIZE"); n != "12" { // 11 entries and the epoch
		t.Fatalf("DBSIZE = %s, want 12", n)
	}
}

func TestWriteBehindQueueFullDrops(t *testing.T) {
	r := startRedis(t)
	a := newCache(t, r.URL(), func(c *Config) {
		c.BatchSize = 2
		c.QueueSize = 4
	})
	eventually(t, 5*time.Second, "connected", func() bool { return a.Stats().L2Healthy })
	// Paused until the test unpauses it (the minute is a backstop): no write
	// reaches Redis meanwhile, so a Set that waited for its write would not
	// return (returns: hung).
	if _, err := r.Do("CLIENT", "PAUSE", "60000", "WRITE"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = r.Do("CLIENT", "UNPAUSE") })
	const n = 200
	keys, v := make([]Key, n), decision(t, true)
	for i := range keys {
		keys[i] = key(t, i)
	}
	returns(t, fmt.Sprintf("%d Sets against a paused Redis", n), func() {
		for _, k := range keys {
			a.Set(k, v)
		}
	})
	s := a.Stats()
	if s.WriteEntries != 0 || s.WriteDropped == 0 || s.WriteQueueCap != 4 {
		t.Fatalf("%d Sets against a paused Redis: %+v, want none written and some dropped", n, s)
	}
	for i, k := range keys {
		if _, tier, ok := a.Lookup(context.Background(), k); !ok || tier != TierL1 {
			t.Fatalf("Set %d returned without its value in L1", i)
		}
	}
	if _, err := r.Do("CLIENT", "UNPAUSE"); err != nil {
		t.Fatal(err)
	}
	// Every Set is accounted for: written, dropped, skipped or failed.
	eventually(t, 10*time.Second, "queue settles", func() bool {
		s = a.Stats()
		return s.WriteQueueLen == 0 && s.WriteDropped+s.WriteEntries+s.WriteSkipped+s.L2Errors == n
	})
	t.Logf("dropped %d, written %d, skipped %d, failed %d", s.WriteDropped, s.WriteEntries, s.WriteSkipped, s.L2Errors)
}

// TestWriteBehindQueueIsBoundedInBytes: large decisions queued behind a
// paused Redis take at most maxQueuedBytes (32 MiB): of 2,000 entries of
// 60 KiB (117 MiB), most are dropped, where the queue's entry bound alone
// (100,000 here) held them all. Once Redis answers, every entry is
// accounted for and the byte count is back to 0.
func TestWriteBehindQueueIsBoundedInBytes(t *testing.T) {
	r := startRedis(t)
	a := newCache(t, r.URL(), func(c *Config) { c.QueueSize = 100000 })
	eventually(t, 5*time.Second, "connected", func() bool { return a.Stats().L2Healthy })
	if _, err := r.Do("CLIENT", "PAUSE", "3000", "WRITE"); err != nil {
		t.Fatal(err)
	}
	const n, size = 2000, 60 << 10
	body := strings.Repeat("x", size-2)
	for i := range n {
		a.Set(key(t, i), Value{Result: body, Defined: true, JSON: []byte(`"` + body + `"`)})
	}
	if s := a.Stats(); s.WriteDropped < n/2 {
		t.Fatalf("dropped %d of %d entries of %d bytes behind a paused Redis, want at least half", s.WriteDropped, n, size)
	}
	if _, err := r.Do("CLIENT", "UNPAUSE"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "queue settles", func() bool {
		s := a.Stats()
		return s.WriteQueueLen == 0 && s.WriteDropped+s.WriteEntries+s.WriteSkipped+s.L2Errors == n
	})
	if q := a.l2.queuedBytes.Load(); q != 0 {
		t.Fatalf("%d bytes still counted as queued with the queue empty", q)
	}
}

// TestWriteBehindQueueHoldsJSONOnly: a queued write-behind entry keeps what
// the L2 write needs, the JSON, and not the decoded result, which is
// several times its size and not what maxQueuedBytes counts. A value given
// without its JSON is queued with its result's encoding.
func TestWriteBehindQueueHoldsJSONOnly(t *testing.T) {
	c, err := New(context.Background(), Config{Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	// An L2 whose queue nobody drains: what Set queues stays there to be read.
	l := &l2{t: c, queue: make(chan pending, 1)}
	c.l2 = l
	t.Cleanup(func() { c.l2 = nil }) // before Close, which would stop an L2 that never started
	with, without := decisionWithJSON(t, true), decision(t, false)
	tests := []struct {
		name string
		v    Value
		json string // what is queued
	}{
		{"with JSON", with, string(with.JSON)},
		{"without JSON", without, mustJSON(without.Result)},
		{"undefined", Value{}, ""},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c.Set(key(t, i), tt.v)
			p, n := <-l.queue, l.queuedBytes.Swap(0)
			if p.v.Result != nil || string(p.v.JSON) != tt.json || p.v.Defined != tt.v.Defined {
				t.Fatalf("queued defined %v, JSON %s and result %v; want defined %v and JSON %s alone",
					p.v.Defined, p.v.JSON, p.v.Result != nil, tt.v.Defined, tt.json)
			}
			if n != int64(len(tt.json))+128 {
				t.Fatalf("queued entry counted %d bytes, want %d", n, len(tt.json)+128)
			}
		})
	}
}

func TestCloseFlushesPendingWrites(t *testing.T) {
	r := startRedis(t)
	a := newCache(t, r.URL(), func(c *Config) {
		c.BatchSize = 100
		c.BatchWindow = time.Hour // only Close can flush
	})
	eventually(t, 5*time.Second, "connected", func() bool { return a.Stats().L2Healthy })
	for i := range 5 {
		a.Set(key(t, i), decision(t, true))
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if n, _ := r.Do("DBSIZE"); n != "6" {
		t.Fatalf("DBSIZE after Close = %s, want 6 (5 entries and the epoch)", n)
	}
}

func TestLookupManyOneRoundTrip(t *testing.T) {
	r := startRedis(t)
	a, b := newCache(t, r.URL()), newCache(t, r.URL())
	ctx := context.Background()
	keys := make([]Key, 15)
	for i := range keys {
		keys[i] = key(t, i)
		if i < 10 {
			a.Set(keys[i], decision(t, i%2 == 0))
		}
	}
	eventually(t, 5*time.Second, "written", func() bool { return a.Stats().WriteEntries == 10 })
	b.Set(keys[0], decision(t, true)) // one L1 hit
	vals, tiers, found := make([]Value, 15), make([]Tier, 15), make([]bool, 15)
	before := b.Stats().L2RoundTrips
	b.LookupMany(ctx, keys, vals, tiers, found)
	if rt := b.Stats().L2RoundTrips - before; rt != 1 {
		t.Fatalf("LookupMany made %d L2 round trips, want 1", rt)
	}
	for i := range keys {
		wantTier := map[bool]Tier{true: TierL2, false: TierNone}[i < 10]
		if i == 0 {
			wantTier = TierL1
		}
		if found[i] != (i < 10) || tiers[i] != wantTier {
			t.Fatalf("key %d: found %v tier %v, want tier %v", i, found[i], tiers[i], wantTier)
		}
		if i < 10 && !sameDecision(vals[i], decision(t, i%2 == 0)) {
			t.Fatalf("key %d: value %s", i, mustJSON(vals[i]))
		}
	}
	b.LookupMany(ctx, keys[:10], vals[:10], tiers[:10], found[:10])
	for i := range 10 {
		if tiers[i] != TierL1 {
			t.Fatalf("key %d not promoted: %v", i, tiers[i])
		}
	}
}

// TestLookupManyOfAFullBatch: a batch of the most items the batch API takes,
// read from L2 by an instance whose L1 has none of them, under the default
// L2Timeout. Each key is found: the read's deadline grows with the batch
// (batchTimeout). With one L2Timeout for all of them, a batch that ran over
// 2 ms (at p90, 4.5 ms here) found none and counted an L2 error.
func TestLookupManyOfAFullBatch(t *testing.T) {
	r := startRedis(t)
	const n = 1000
	a := newCache(t, r.URL())
	b := newCache(t, r.URL(), func(c *Config) { c.L2Timeout = DefaultL2Timeout })
	keys := make([]Key, n)
	for i := range keys {
		keys[i] = key(t, i)
		a.Set(keys[i], decision(t, i%2 == 0))
	}
	eventually(t, 10*time.Second, "written", func() bool { return a.Stats().WriteEntries == n })
	eventually(t, 5*time.Second, "connected", func() bool { return b.Stats().L2Healthy })
	vals, tiers, found := make([]Value, n), make([]Tier, n), make([]bool, n)
	b.LookupMany(context.Background(), keys, vals, tiers, found)
	missed := 0
	for i := range keys {
		if !found[i] || tiers[i] != TierL2 {
			missed++
		}
	}
	if s := b.Stats(); missed > 0 || s.L2Errors != 0 {
		t.Fatalf("%d of %d keys not found in L2, %d L2 errors", missed, n, s.L2Errors)
	}
}

func TestCallerCancellationIsNotARedisFailure(t *testing.T) {
	r := startRedis(t)
	a := newCache(t, r.URL())
	eventually(t, 5*time.Second, "connected", func() bool { return a.Stats().L2Healthy })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for i := range 50 {
		if _, _, ok := a.Lookup(ctx, key(t, i)); ok {
			t.Fatal("hit")
		}
	}
	if s := a.Stats(); s.BreakerState != "closed" || s.L2Errors != 0 {
		t.Fatalf("cancelled callers tripped the breaker: %+v", s)
	}
}

func TestCluster(t *testing.T) {
	cl := testenv.StartRedisCluster(t, 3)
	a, b := newCache(t, cl.URL()), newCache(t, cl.URL())
	ctx := context.Background()
	eventually(t, 10*time.Second, "connected to the cluster", func() bool { return a.Stats().L2Healthy && b.Stats().L2Healthy })
	keys := make([]Key, 30) // spread over all slots and nodes
	for i := range keys {
		keys[i] = key(t, i)
		a.Set(keys[i], Value{Defined: true, Result: strconv.Itoa(i)})
	}
	eventually(t, 5*time.Second, "written", func() bool { return a.Stats().WriteEntries == 30 })
	vals, tiers, found := make([]Value, 30), make([]Tier, 30), make([]bool, 30)
	b.LookupMany(ctx, keys, vals, tiers, found)
	for i := range keys {
		if !found[i] || tiers[i] != TierL2 || vals[i].Result != strconv.Itoa(i) {
			t.Fatalf("key %d: found %v tier %v value %v", i, found[i], tiers[i], vals[i].Result)
		}
	}
	e, err := a.Flush(ctx)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*time.Second, "flush reaches the other instance", func() bool { return b.Epoch() == e })
	if _, _, ok := b.Lookup(ctx, keys[0]); ok {
		t.Fatal("served after flush")
	}
}
