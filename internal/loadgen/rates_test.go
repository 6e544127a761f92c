package loadgen

import (
	"context"
	"math"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// checkRates checks that every rate of res is over the same window,
// DurationSec.
func checkRates(t *testing.T, res *Result) {
	t.Helper()
	near := func(got, want float64) bool { return math.Abs(got-want) <= 1e-9*math.Max(1, want) }
	if want := float64(res.Total.Decided()) / res.DurationSec; !near(res.Goodput, want) {
		t.Errorf("goodput %.2f, want %d decisions / %.3f s = %.2f", res.Goodput, res.Total.Decided(), res.DurationSec, want)
	}
	if want := float64(res.Total.Requests) / res.DurationSec; !near(res.Total.RPS, want) {
		t.Errorf("total req/s %.2f, want %.2f", res.Total.RPS, want)
	}
	for _, s := range res.Scenarios {
		if want := float64(s.Requests) / res.DurationSec; !near(s.RPS, want) {
			t.Errorf("%s: req/s %.2f, want %.2f", s.Name, s.RPS, want)
		}
	}
}

// An open-loop run that sent every request on schedule and had every one
// answered decided at the rate it sent: one slow answer at the end does not
// make its goodput (judged by --min-rps and the overload target) a fraction
// of that. The rates are over the window the requests were sent in, as the
// achieved rate is.
func TestOpenLoopSlowLastAnswerKeepsGoodput(t *testing.T) {
	const rate, slow = 200, 1500 * time.Millisecond
	w, err := DefaultWorkload()
	if err != nil {
		t.Fatal(err)
	}
	judge := &judgeHandler{}
	var seen atomic.Int64
	srv := newLoopbackServer(t, http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if seen.Add(1) == rate { // the last request of 1 s at 200/s
			time.Sleep(slow)
		}
		judge.ServeHTTP(rw, r)
	}))
	res, err := RunOpen(context.Background(), OpenLoop{Rate: rate, Duration: time.Second, Connections: 4}, Options{
		Target: Target{BaseURL: srv.URL}, Workload: w, Seed: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("valid %v, %d decided, %d failures, window %.2f s, achieved %.1f/s, goodput %.1f/s, total %.1f req/s, max latency %.0f ms",
		res.Valid, res.Total.Decided(), res.Total.Failures, res.DurationSec, res.AchievedRate, res.Goodput, res.Total.RPS, res.Total.Latency.MaxMs)
	if !res.Valid || res.Total.Decided() != rate || res.Total.Failures != 0 {
		t.Fatalf("valid %v (%s), %d decided, %d failures: want %d requests decided on schedule", res.Valid, res.InvalidReason, res.Total.Decided(), res.Total.Failures, rate)
	}
	if res.Total.Latency.MaxMs < float64(slow/time.Millisecond) {
		t.Fatalf("max latency %.0f ms: the slow answer was not slow", res.Total.Latency.MaxMs)
	}
	// The window is the second of sending, not up to the last answer 1.5 s
	// after it (some slack for a loaded machine sending late).
	if res.DurationSec < 1 || res.DurationSec > 1.4 {
		t.Errorf("window %.3f s, want the 1 s of sending", res.DurationSec)
	}
	checkRates(t, res)
	rep := LoadSLO{MaxErrorRate: 0.01, MinRPS: 150}.Evaluate(res)
	for _, c := range rep.Checks {
		if c.Name == "throughput" && c.Status == StatusViolation {
			t.Errorf("throughput SLO of 150/s violated at goodput %.1f/s by a run that decided %d requests sent on time at %d/s", res.Goodput, rate, rate)
		}
	}
}

// A timed closed loop is measured over its run time: a request that starts
// just before the end and is answered long after it is counted, but its
// tail does not stretch the window in which the users sent nothing else.
func TestClosedLoopSlowLastAnswerKeepsRate(t *testing.T) {
	w, err := DefaultWorkload()
	if err != nil {
		t.Fatal(err)
	}
	judge := &judgeHandler{}
	var mu sync.Mutex
	var first time.Time
	var slowed atomic.Bool
	srv := newLoopbackServer(t, http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		mu.Lock()
		if first.IsZero() {
			first = time.Now()
		}
		since := time.Since(first)
		mu.Unlock()
		if since > 800*time.Millisecond && slowed.CompareAndSwap(false, true) {
			time.Sleep(1500 * time.Millisecond) // once, near the end
		} else {
			time.Sleep(5 * time.Millisecond) // bounds the traffic: ~400 req/s
		}
		judge.ServeHTTP(rw, r)
	}))
	res, err := RunClosed(context.Background(), ClosedLoop{Users: 2, Duration: time.Second}, Options{
		Target: Target{BaseURL: srv.URL}, Workload: w, Seed: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("valid %v, %d decided, window %.3f s, goodput %.1f/s, max latency %.0f ms",
		res.Valid, res.Total.Decided(), res.DurationSec, res.Goodput, res.Total.Latency.MaxMs)
	if !slowed.Load() || res.Total.Latency.MaxMs < 1500 || res.Total.Failures != 0 {
		t.Fatalf("slow answer not measured: max latency %.0f ms, %d failures", res.Total.Latency.MaxMs, res.Total.Failures)
	}
	if res.DurationSec > 1.0001 || res.DurationSec < 0.9 {
		t.Errorf("window %.3f s, want the 1 s run time, not up to the slow answer", res.DurationSec)
	}
	checkRates(t, res)
}
