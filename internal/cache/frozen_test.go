package cache

import (
	"context"
	"fmt"
	"io"
	"net"
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

// TestFrozenRedisDoesNotHoldRequests: with Redis frozen, no Lookup or LookupMany
// waits much beyond its L2 deadline, and L2 serves again once Redis does.
// Before, a request that reached L2 while the client was redialing waited
// for that dial whatever its own deadline: rueidis dials a lost connection
// once for all its callers, with the deadline of the first, which was the
// supervisor's one-second epoch read or an operator's flush; such requests
// waited up to a second, a few times in a few seconds.
func TestFrozenRedisDoesNotHoldRequests(t *testing.T) {
	r := startRedis(t)
	const timeout = 10 * time.Millisecond
	// A second where it was held (0.95-1 s in every run); well above what a
	// loaded 2-core machine under -race adds to a 10 ms deadline (up to
	// 130 ms seen at a load average of 6).
	const bound = 400 * time.Millisecond
	// A lookup beyond the bound counts as held only if the process ran on
	// meanwhile: ticks, a goroutine sleeping a millisecond at a time,
	// advanced at least minTicks while it waited. One held by the dial
	// waits while the rest of the process runs (hundreds of ticks); one
	// slowed by the machine (the process not scheduled, a GC pause) was
	// stopped with everything else, and is not what this test is about.
	const minTicks = 20
	a := newCache(t, r.URL(), func(c *Config) { c.L2Timeout = timeout })
	b := newCache(t, r.URL())
	eventually(t, 5*time.Second, "connected", func() bool { return a.Stats().L2Healthy && b.Stats().L2Healthy })

	thaw := freeze(t, r)
	var (
		mu      sync.Mutex
		worst   time.Duration
		lookups int
		held    []string // lookups beyond the bound while the process ran on
		slow    []string // beyond the bound with the process stopped too
		ticks   atomic.Int64
	)
	// timed runs one lookup and records how long it took.
	timed := func(lookup func()) {
		t0, n0 := time.Now(), ticks.Load()
		lookup()
		d, n := time.Since(t0), ticks.Load()-n0
		mu.Lock()
		defer mu.Unlock()
		worst = max(worst, d)
		lookups++
		if d > bound {
			desc := fmt.Sprintf("%s (%d ticks)", d, n)
			if n >= minTicks {
				held = append(held, desc)
			} else {
				slow = append(slow, desc)
			}
		}
	}
	ctx := context.Background()
	start := time.Now()
	const span = 5 * time.Second // the breaker half-opens every second: several chances to be held
	var wg sync.WaitGroup
	stopTicks := make(chan struct{})
	ticking := make(chan struct{})
	go func() {
		defer close(ticking)
		for {
			select {
			case <-stopTicks:
				return
			case <-time.After(time.Millisecond):
				ticks.Add(1)
			}
		}
	}()
	for g := range 4 {
		wg.Go(func() {
			for i := 0; time.Since(start) < span; i++ {
				k := key(t, 1_000_000*(g+1)+i) // always an L1 miss
				timed(func() { a.Lookup(ctx, k) })
				time.Sleep(time.Millisecond)
			}
		})
	}
	wg.Go(func() {
		const n = 20
		keys := make([]Key, n)
		vals, tiers, found := make([]Value, n), make([]Tier, n), make([]bool, n)
		for i := 0; time.Since(start) < span; i++ {
			for j := range keys {
				keys[j] = key(t, 10_000_000+i*n+j)
			}
			timed(func() { a.LookupMany(ctx, keys, vals, tiers, found) })
			time.Sleep(time.Millisecond)
		}
	})
	// An operator empties the cache meanwhile (DELETE /v1/cache): a call
	// with a one-second deadline, as the supervisor's, that dials too.
	wg.Go(func() {
		for time.Since(start) < span {
			fctx, cancel := context.WithTimeout(ctx, time.Second)
			_, _ = a.Flush(fctx)
			cancel()
			time.Sleep(10 * time.Millisecond)
		}
	})
	wg.Wait()
	close(stopTicks)
	<-ticking
	s := a.Stats()
	t.Logf("%d lookups against a frozen Redis, the slowest %s, %d ticks; beyond %s with the process stopped too: %v; stats %+v", lookups, worst, ticks.Load(), bound, slow, s)
	if len(held) > 0 {
		t.Errorf("%d lookups held with Redis frozen while the process ran on: %v, want each under %s (L2Timeout %s)", len(held), held, bound, timeout)
	}
	if s.L2Errors == 0 || s.L2Hits != 0 {
		t.Errorf("the frozen Redis was not noticed: %+v", s)
	}

	thaw()
	eventually(t, 10*time.Second, "L2 healthy again", func() bool { return a.Stats().L2Healthy && b.Stats().L2Healthy })
	k := key(t, 1)
	b.Set(k, decision(t, true))
	waitL2(t, a, k)
	eventually(t, 5*time.Second, "the reads given up have ended", func() bool { return a.l2.abandoned.Load() == 0 })
}

// slowProxy forwards TCP connections to a Redis, holding each new
// connection's first bytes for delay: a handshake slower than a request's
// deadline, as with TLS to a distant Redis. drop closes the connections
// forwarded so far.
type slowProxy struct {
	ln     net.Listener
	target string
	delay  time.Duration
	mu     sync.Mutex
	conns  []net.Conn
}

func startSlowProxy(t *testing.T, target string, delay time.Duration) *slowProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &slowProxy{ln: ln, target: target, delay: delay}
	go p.serve()
	t.Cleanup(func() { ln.Close(); p.drop() })
	return p
}

func (p *slowProxy) URL() string { return "redis://" + p.ln.Addr().String() }

func (p *slowProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go func() {
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

func (p *slowProxy) drop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// TestL2ReconnectsWhenADialOutlastsL2Timeout: requests read with a
// deadline (L2_TIMEOUT) too short for a dial and a handshake; when their
// connections are lost, they cannot dial them again themselves, and L2
// must still come back (the supervisor redials with a generous deadline).
func TestL2ReconnectsWhenADialOutlastsL2Timeout(t *testing.T) {
	r := startRedis(t)
	p := startSlowProxy(t, r.Addr(), 100*time.Millisecond)
	a := newCache(t, p.URL(), func(c *Config) { c.L2Timeout = 20 * time.Millisecond })
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
// comes in time, gives up at the deadline of one that does not, counts it
// as abandoned until it returns, and reads skip L2 while maxAbandoned are.
func TestAwaitGivesUpAtTheDeadline(t *testing.T) {
	var abandoned atomic.Int64
	tests := []struct {
		name     string
		delay    time.Duration // how long the call takes
		deadline time.Duration
		ok       bool
	}{
		{"in time", 0, time.Second, true},
		{"late", time.Second, 20 * time.Millisecond, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			release := make(chan struct{})
			ctx, cancel := context.WithTimeout(context.Background(), tt.deadline)
			defer cancel()
			start := time.Now()
			got, ok := await(ctx, &abandoned, func() int {
				select {
				case <-release:
				case <-time.After(tt.delay):
				}
				return 42
			})
			took := time.Since(start)
			if ok != tt.ok || ok && got != 42 {
				t.Fatalf("await = %d, %v; want ok %v", got, ok, tt.ok)
			}
			if !ok {
				if took > 500*time.Millisecond {
					t.Fatalf("gave up after %s, deadline %s", took, tt.deadline)
				}
				if n := abandoned.Load(); n != 1 {
					t.Fatalf("%d calls counted as abandoned, want 1", n)
				}
			}
			close(release)
			eventually(t, 5*time.Second, "the abandoned call counted out", func() bool { return abandoned.Load() == 0 })
		})
	}

	r := startRedis(t)
	c := newCache(t, r.URL())
	eventually(t, 5*time.Second, "connected", func() bool { return c.Stats().L2Healthy })
	c.l2.abandoned.Store(maxAbandoned)
	c.Lookup(context.Background(), key(t, 1))
	c.l2.abandoned.Store(0)
	if s := c.Stats(); s.L2Skipped != 1 || s.L2RoundTrips != 0 {
		t.Fatalf("with %d reads abandoned: %+v, want the lookup skipped", maxAbandoned, s)
	}
}
