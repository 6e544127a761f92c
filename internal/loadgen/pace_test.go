package loadgen

import (
	"context"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestFixedRequestIsSentVerbatim(t *testing.T) {
	// Unsorted keys, spaces and a newline: a workload would send this
	// compacted with sorted keys; --request sends it as written.
	body := []byte("{\"type\": \"constitutional_evaluation\",  \"action\": \"data.read_public\",\n \"context\": {\"agent\": {\"trust_level\": 0.9}}}\n")
	w, err := FixedWorkload("", "/v1/data/acgs/main/decision", body, nil)
	if err != nil {
		t.Fatal(err)
	}
	allow := true
	wa, err := FixedWorkload("POST", "/v1/data/acgs/main/decision", body, &allow)
	if err != nil {
		t.Fatal(err)
	}
	if len(w.Scenarios) != 1 || w.Method != "POST" || w.Scenarios[0].Expect != nil || wa.Scenarios[0].Expect == nil {
		t.Fatalf("fixed workload %+v / %+v", w, wa)
	}
	var mu sync.Mutex
	paths := map[string]int{}
	judge := &judgeHandler{}
	srv := newLoopbackServer(t, http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		mu.Lock()
		paths[r.Method+" "+r.URL.Path+" "+r.Header.Get("Content-Type")]++
		mu.Unlock()
		judge.ServeHTTP(rw, r)
	}))
	res, err := RunOpen(context.Background(), OpenLoop{Rate: 200, Duration: 250 * time.Millisecond, Connections: 4}, Options{
		Target: Target{BaseURL: srv.URL}, Workload: wa, Body: body,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Total.Requests != 50 || res.Total.Allowed != 50 {
		t.Fatalf("requests %d allowed %d, want 50 allowed", res.Total.Requests, res.Total.Allowed)
	}
	if len(judge.bodies) != 1 || judge.bodies[string(body)] != 50 {
		t.Fatalf("server saw bodies %v, want the request byte for byte 50 times", judge.bodies)
	}
	if len(paths) != 1 || paths["POST /v1/data/acgs/main/decision application/json"] != 50 {
		t.Fatalf("server saw %v", paths)
	}
	if res.Compliance == nil || *res.Compliance != 1 {
		t.Fatalf("compliance %v, want 1 (expect allow, all allowed)", res.Compliance)
	}
	if res.SendLag == nil || res.SendLag.Count != 50 {
		t.Fatalf("send lag %+v, want 50 samples", res.SendLag)
	}
	if _, err := FixedWorkload("", "/p", []byte(`{"a":`), nil); err == nil {
		t.Fatal("a body that is not JSON was accepted")
	}
	if _, err := FixedWorkload("", "/p", []byte(`[1]`), nil); err == nil {
		t.Fatal("a body that is not a JSON object was accepted")
	}
}

func TestWaiterNeverWakesEarly(t *testing.T) {
	w, err := newWaiter()
	if err != nil {
		t.Skipf("no timerfd here: %v", err)
	}
	defer w.close()
	start := time.Now()
	for k := 0; k < 40; k++ {
		due := start.Add(time.Duration(k) * 700 * time.Microsecond)
		if !w.wait(context.Background(), due) {
			t.Fatal("wait reported a cancelled context")
		}
		if now := time.Now(); now.Before(due) {
			t.Fatalf("wait %d woke %v before its time", k, due.Sub(now))
		}
	}
	// Waits so short that the timer often fires before the waiter parks:
	// the wait must still end (it once did not, when the waiter parked
	// before reading and the poller had dropped the early readiness).
	done := make(chan struct{})
	go func() {
		defer close(done)
		for k := 0; k < 3000; k++ {
			w.wait(context.Background(), time.Now().Add(time.Duration(k%25)*time.Microsecond))
		}
	}()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("3,000 waits of under 25 µs did not end within a minute: a wake-up was lost")
	}
	// A stray wake (the timer fired with nobody waiting) does not end the
	// next wait early.
	w.wake()
	time.Sleep(time.Millisecond)
	due := time.Now().Add(20 * time.Millisecond)
	if !w.wait(context.Background(), due) || time.Now().Before(due) {
		t.Fatal("a stray wake ended the next wait early")
	}
}

func TestCancelEndsOpenLoopWaits(t *testing.T) {
	judge := &judgeHandler{}
	srv := newLoopbackServer(t, judge)
	w, err := DefaultWorkload()
	if err != nil {
		t.Fatal(err)
	}
	// 4 senders at 2 req/s: after the first slots every sender waits for
	// seconds; cancelling must end those waits, not let them run out.
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	began := time.Now()
	res, err := RunOpen(ctx, OpenLoop{Rate: 2, Duration: time.Minute, Connections: 4}, Options{Target: Target{BaseURL: srv.URL}, Workload: w})
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(began); took > 20*time.Second {
		t.Fatalf("a run cancelled after 300 ms returned after %v", took)
	}
	if res.Valid || res.InvalidReason != "interrupted" {
		t.Fatalf("valid %v reason %q, want an interrupted run", res.Valid, res.InvalidReason)
	}
}

// BenchmarkPaceLateness reports how late an open-loop sender wakes for its
// slot, at 2,000 slots/s over 64 senders as in a run of acgs load, with a Go
// timer per wait (the load tool before 2026-12-05) and with the waiter (a
// timerfd on Linux). It reports and asserts nothing: the figures depend on
// the machine.
func BenchmarkPaceLateness(b *testing.B) {
	const every, senders = 500 * time.Microsecond, 64
	run := func(b *testing.B, wait func(w *waiter, due time.Time)) {
		late := make([]time.Duration, b.N)
		var next atomic.Int64
		start := time.Now().Add(5 * time.Millisecond)
		var wg sync.WaitGroup
		for range senders {
			w, err := newWaiter()
			if err != nil {
				b.Fatal(err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer w.close()
				for {
					i := next.Add(1) - 1
					if i >= int64(b.N) {
						return
					}
					due := start.Add(time.Duration(i) * every)
					wait(&w, due)
					late[i] = time.Since(due)
				}
			}()
		}
		wg.Wait()
		slices.Sort(late)
		q := func(p float64) float64 { return float64(late[int(p*float64(len(late)-1))]) / 1e3 }
		b.ReportMetric(q(0.5), "late-p50-µs")
		b.ReportMetric(q(0.99), "late-p99-µs")
		b.ReportMetric(0, "ns/op")
	}
	b.Run("timer", func(b *testing.B) {
		run(b, func(_ *waiter, due time.Time) { sleepUntil(context.Background(), due) })
	})
	b.Run("waiter", func(b *testing.B) {
		run(b, func(w *waiter, due time.Time) { w.wait(context.Background(), due) })
	})
}
