package loadgen

import (
	"context"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"
)

func TestRelayWakesTheMostRecentlyParked(t *testing.T) {
	r := newRelay(time.Second, 8) // a slow rate: 2 senders ahead
	if r.ahead != 2 {
		t.Fatalf("ahead %d, want 2", r.ahead)
	}
	if hi := newRelay(100*time.Microsecond, 64).ahead; hi != 20 {
		t.Fatalf("ahead at 10,000 slots/s: %d, want 20 (2 ms of slots)", hi)
	}
	if capped := newRelay(time.Microsecond, 64).ahead; capped != 64 {
		t.Fatalf("ahead capped at %d, want the 64 senders", capped)
	}
	ctx := context.Background()
	a, b := make(chan struct{}, 1), make(chan struct{}, 1)
	if !r.take(ctx, a) || !r.take(ctx, b) {
		t.Fatal("the first two senders were not let through")
	}
	got := make(chan string, 2)
	park := func(name string) {
		me := make(chan struct{}, 1)
		go func() {
			if r.take(ctx, me) {
				got <- name
			} else {
				got <- name + " ended"
			}
		}()
		for { // until it is parked
			r.mu.Lock()
			n := len(r.idle)
			parked := n > 0 && r.idle[n-1] == me
			r.mu.Unlock()
			if parked {
				return
			}
			time.Sleep(time.Millisecond)
		}
	}
	park("older")
	park("newer")
	r.fired() // one left waiting: enough, nobody is woken
	select {
	case g := <-got:
		t.Fatalf("%s woken while a sender still waited", g)
	case <-time.After(20 * time.Millisecond):
	}
	r.fired() // none left: the most recently parked takes the next slot
	if g := <-got; g != "newer" {
		t.Fatalf("woke %q, want the most recently parked", g)
	}
	r.finish()
	if g := <-got; g != "older ended" {
		t.Fatalf("after finish: %q, want the parked sender to leave", g)
	}
}

// TestOpenLoopUsesFewConnections: against a server that answers at once, a
// run with 64 connections allowed sends over a few of them, not all 64 in
// turn (as it did when every sender held one of the next 64 slots). The
// bound is loose: only a stall of over a second (64 slots at 50/s) on a
// loaded machine could bring all 64 in.
func TestOpenLoopUsesFewConnections(t *testing.T) {
	w, err := DefaultWorkload()
	if err != nil {
		t.Fatal(err)
	}
	var conns atomic.Int64
	srv := newLoopbackServerWith(t, &judgeHandler{}, func(s *http.Server) {
		s.ConnState = func(_ net.Conn, st http.ConnState) {
			if st == http.StateNew {
				conns.Add(1)
			}
		}
	})
	res, err := RunOpen(context.Background(), OpenLoop{Rate: 50, Duration: 2 * time.Second, Connections: 64}, Options{
		Target: Target{BaseURL: srv.URL}, Workload: w,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Total.Requests != 100 || res.Total.Failures != 0 {
		t.Fatalf("requests %d failures %d", res.Total.Requests, res.Total.Failures)
	}
	if n := conns.Load(); n >= 64 {
		t.Fatalf("100 requests at 50/s went over %d connections, want a few", n)
	}
	t.Logf("100 requests over %d connections", conns.Load())
}
