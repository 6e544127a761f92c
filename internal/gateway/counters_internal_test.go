package gateway

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/acgs-lite/acgs/internal/testenv"
)

// counters runs f on the in-process counter and on the Redis one (a real
// Redis; its errors are counted in *errs).
func counters(t *testing.T, f func(t *testing.T, c Counter, errs *atomic.Int64)) {
	t.Run("in process", func(t *testing.T) { f(t, newLocalCounter(), new(atomic.Int64)) })
	t.Run("redis", func(t *testing.T) {
		errs := new(atomic.Int64)
		c, err := newRedisCounter(testenv.StartRedis(t).URL(), "test:", func(err error) {
			errs.Add(1)
			t.Logf("counter error: %v", err)
		})
		if err != nil {
			t.Fatal(err)
		}
		// The test asserts exact counts: Redis must answer every one,
		// which a loaded machine may not do within 50 ms.
		c.timeout = 10 * time.Second
		t.Cleanup(c.Close)
		f(t, c, errs)
	})
}

// add is c.Add, and the give-back of its Ticket.
func add(t *testing.T, c Counter, ctx context.Context, agent string, now time.Time) (int64, func(context.Context)) {
	t.Helper()
	n, ticket, err := c.Add(ctx, agent, now)
	if err != nil {
		t.Fatal(err)
	}
	return n, ticket.GiveBack
}

// TestCancelledCallGivesBackOnlyItsOwnCount: an agent cancels its call
// at once (the call's context is cancelled before its count) and the call
// gives its count back. The agent's real call stays counted. Before, the
// Redis counter's Add ran on the call's context: rueidis never sent the
// INCR, Add answered from the in-process count, and Undo decremented Redis
// anyway, taking the agent's real call away: the next call saw 0 calls, an
// agent could lower its own rate-limit count on demand.
func TestCancelledCallGivesBackOnlyItsOwnCount(t *testing.T) {
	counters(t, func(t *testing.T, c Counter, errs *atomic.Int64) {
		now := time.Now()
		add(t, c, context.Background(), "a", now) // a real call
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		n, back := add(t, c, ctx, "a", now)
		if n != 1 {
			t.Errorf("the cancelled call's count: %d calls before it, want 1", n)
		}
		back(ctx)
		// one real call before it; the cancelled one was given back
		if n, _ := add(t, c, context.Background(), "a", now); n != 1 {
			t.Errorf("the next call: %d calls before it, want 1 (the real call)", n)
		}
		if e := errs.Load(); e != 0 {
			t.Errorf("%d counter errors: an agent's cancellation must not keep its count from Redis", e)
		}
	})
}

// TestGiveBack: a call given back leaves the count as if it was not made,
// once however often it is given back (never below what the agent's other
// calls make, never negative), and touches neither another agent's count
// nor a later second that took over its second's bucket.
func TestGiveBack(t *testing.T) {
	counters(t, func(t *testing.T, c Counter, errs *atomic.Int64) {
		now := time.Now()
		bg := context.Background()

		// given back twice: one call taken back, not two
		add(t, c, bg, "twice", now)
		_, back := add(t, c, bg, "twice", now)
		back(bg)
		back(bg)
		if n, _ := add(t, c, bg, "twice", now); n != 1 {
			t.Errorf("a call given back twice: the next sees %d calls, want 1", n)
		}

		// never negative
		_, back = add(t, c, bg, "alone", now)
		back(bg)
		back(bg)
		if n, _ := add(t, c, bg, "alone", now); n != 0 {
			t.Errorf("the only call given back: the next sees %d calls, want 0", n)
		}

		// another agent's count is untouched
		_, back = add(t, c, bg, "x", now)
		add(t, c, bg, "y", now)
		back(bg)
		if n, _ := add(t, c, bg, "y", now); n != 1 {
			t.Errorf("agent y after x gave a call back: %d calls, want 1", n)
		}
		if n, _ := add(t, c, bg, "x", now); n != 0 {
			t.Errorf("agent x after giving its call back: %d calls, want 0", n)
		}

		// a call given back after its second left the window: the
		// second that took over its bucket keeps its count
		_, back = add(t, c, bg, "late", now)
		later := now.Add(window * time.Second)
		add(t, c, bg, "late", later)
		back(bg)
		if n, _ := add(t, c, bg, "late", later); n != 1 {
			t.Errorf("a call of a minute later, after an old call was given back: %d calls, want 1", n)
		}
		if e := errs.Load(); e != 0 {
			t.Errorf("%d counter errors", e)
		}
	})
}

// TestTicketFunc: another Counter's give-back, made a Ticket by
// TicketFunc, runs once however often the call is given back; a nil one,
// and the zero Ticket, give nothing back (and do not panic a shed call).
func TestTicketFunc(t *testing.T) {
	n := 0
	tk := TicketFunc(func(context.Context) { n++ })
	tk.GiveBack(context.Background())
	tk.GiveBack(context.Background())
	if n != 1 {
		t.Errorf("given back %d times, want once", n)
	}
	nilFunc := TicketFunc(nil)
	nilFunc.GiveBack(context.Background())
	var zero Ticket
	zero.GiveBack(context.Background())
}

// TestConcurrentGiveBackOnce: GiveBack from several goroutines at once
// takes the call back once, as the sync.Once before the Ticket did (a
// plain bool raced, and -race reported it).
func TestConcurrentGiveBackOnce(t *testing.T) {
	var n atomic.Int64
	tk := TicketFunc(func(context.Context) { n.Add(1) })
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() { tk.GiveBack(context.Background()) })
	}
	wg.Wait()
	if n.Load() != 1 {
		t.Errorf("given back %d times, want once", n.Load())
	}
}

// TestLocalCountAllocatesNothing: counting a known agent's call and
// giving it back allocate nothing (the give-back was a closure and a
// sync.Once, two allocations a call).
func TestLocalCountAllocatesNothing(t *testing.T) {
	c := newLocalCounter()
	now := time.Now()
	ctx := context.Background()
	c.Add(ctx, "a", now)
	if a := testing.AllocsPerRun(100, func() {
		_, tk, _ := c.Add(ctx, "a", now)
		tk.GiveBack(ctx)
	}); a != 0 {
		t.Errorf("%v allocations a call, want 0", a)
	}
}
