package loadgen

import (
	"context"
	"encoding/json"
	"io"
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

// TestErrorRateIsTheJudgedOne: the error rate a result reports (its table,
// its JSON) is the one the SLO judges: failures over the answered requests,
// the shed ones (503 overloaded) out of both sides, as they are out of the
// latency and compliance figures.
func TestErrorRateIsTheJudgedOne(t *testing.T) {
	w, err := DefaultWorkload()
	if err != nil {
		t.Fatal(err)
	}
	const limit = 0.06
	for _, tc := range []struct {
		name       string
		shed, fail func(n int64) bool // for the nth request, 1-based
		wantRate   float64
		noData     bool // nothing answered: no error rate to judge
		wantShed   float64
		violated   bool
	}{
		{"none shed", func(int64) bool { return false }, func(n int64) bool { return n%20 == 0 }, 0.05, false, 0, false},
		// The reviewer's case: 100 requests, 50 shed, 5 failed.
		{"half shed, 5 failed", func(n int64) bool { return n%2 == 0 }, func(n int64) bool { return n%20 == 1 }, 0.10, false, 0.5, true},
		{"every answer failed", func(n int64) bool { return n%2 == 0 }, func(int64) bool { return true }, 1, false, 0.5, true},
		{"no failure", func(n int64) bool { return n%4 == 0 }, func(int64) bool { return false }, 0, false, 0.25, false},
		{"all shed", func(int64) bool { return true }, func(int64) bool { return false }, 0, true, 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			judge := &judgeHandler{}
			var n atomic.Int64
			srv := newLoopbackServer(t, http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
				i := n.Add(1)
				switch {
				case tc.shed(i):
					_, _ = io.Copy(io.Discard, r.Body)
					rw.Header().Set("Retry-After", "1")
					rw.WriteHeader(http.StatusServiceUnavailable)
					_, _ = io.WriteString(rw, `{"allow":false,"code":"overloaded","message":"service overloaded"}`)
				case tc.fail(i):
					_, _ = io.Copy(io.Discard, r.Body)
					rw.WriteHeader(http.StatusInternalServerError)
				default:
					judge.ServeHTTP(rw, r)
				}
			}))
			// One user: the requests reach the server in order.
			res, err := RunClosed(context.Background(), ClosedLoop{Users: 1, MaxRequests: 100}, Options{
				Target: Target{BaseURL: srv.URL}, Workload: w, Scenario: "safe_action",
			})
			if err != nil {
				t.Fatal(err)
			}
			if res.Total.Requests != 100 {
				t.Fatalf("%d requests, want 100", res.Total.Requests)
			}
			if res.Total.ErrorRate != tc.wantRate || res.Total.ShedRate != tc.wantShed {
				t.Errorf("reported error rate %v, shed rate %v; want %v, %v (%+v)", res.Total.ErrorRate, res.Total.ShedRate, tc.wantRate, tc.wantShed, res.Total)
			}
			for _, s := range res.Scenarios {
				if s.Requests > 0 && s.ErrorRate != tc.wantRate {
					t.Errorf("%s: error rate %v, want %v", s.Name, s.ErrorRate, tc.wantRate)
				}
			}
			var doc struct {
				Total struct {
					ErrorRate float64 `json:"error_rate"`
				} `json:"total"`
			}
			b, err := json.Marshal(res)
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(b, &doc); err != nil || doc.Total.ErrorRate != tc.wantRate {
				t.Errorf("JSON error_rate %v (%v), want %v", doc.Total.ErrorRate, err, tc.wantRate)
			}
			rep := LoadSLO{MaxErrorRate: limit}.Evaluate(res)
			var judged *Check
			for i := range rep.Checks {
				if rep.Checks[i].Name == "error rate" {
					judged = &rep.Checks[i]
				}
			}
			switch {
			case judged == nil:
				t.Fatalf("no error-rate check: %+v", rep.Checks)
			case tc.noData:
				if judged.Value != nil || judged.Status != StatusNoData {
					t.Errorf("judged %+v with nothing answered, want no data", *judged)
				}
			case judged.Value == nil:
				t.Errorf("error rate not judged (%s), reported %v", judged.Status, res.Total.ErrorRate)
			case *judged.Value != res.Total.ErrorRate:
				t.Errorf("judged error rate %v, reported %v: not the same figure", *judged.Value, res.Total.ErrorRate)
			}
			if got := judged.Status == StatusViolation || judged.Status == StatusNoData; got != tc.violated {
				t.Errorf("error-rate check %s, want violated=%v", judged.Status, tc.violated)
			}
		})
	}
}

// Failures and Shed of a benchmark count over the same requests: every one
// sent, shed ones included, in the levels and in the cold-versus-warm
// rounds alike.
func TestBenchFailuresAndShedShareTheirTotal(t *testing.T) {
	level := func(requests, failures, shed int64) BenchLevel {
		return BenchLevel{Requests: requests, Failures: failures, Shed: shed}
	}
	// Cold and warm latencies hold the decided and the failed requests.
	cw := func(cold, warm, failures, shed int64) *ColdWarm {
		return &ColdWarm{Cold: LatencySummary{Count: cold}, Warm: LatencySummary{Count: warm}, Failures: failures, Shed: shed}
	}
	for _, tc := range []struct {
		name                       string
		scenarios                  []BenchScenario
		wantFailed, wantShed, want int64
	}{
		{"levels only", []BenchScenario{{Levels: []BenchLevel{level(100, 2, 10), level(100, 0, 30)}}}, 2, 40, 200},
		{"cold and warm, none shed", []BenchScenario{{ColdWarm: cw(10, 30, 1, 0)}}, 1, 0, 40},
		{"cold and warm with shed", []BenchScenario{{ColdWarm: cw(8, 27, 1, 5)}}, 1, 5, 40},
		{"both, two scenarios", []BenchScenario{
			{Levels: []BenchLevel{level(50, 1, 5)}, ColdWarm: cw(9, 28, 2, 3)},
			{Levels: []BenchLevel{level(50, 0, 0)}, ColdWarm: &ColdWarm{Note: "no varied field"}},
		}, 3, 8, 140},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := &BenchResult{Scenarios: tc.scenarios}
			failed, ftotal := b.Failures()
			shed, stotal := b.Shed()
			if failed != tc.wantFailed || shed != tc.wantShed {
				t.Errorf("failed %d, shed %d; want %d, %d", failed, shed, tc.wantFailed, tc.wantShed)
			}
			if ftotal != tc.want || stotal != tc.want {
				t.Errorf("totals: Failures %d, Shed %d; want both %d requests", ftotal, stotal, tc.want)
			}
		})
	}
}
