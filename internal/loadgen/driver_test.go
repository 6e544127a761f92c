package loadgen

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// newLoopbackServer starts an httptest server bound to 127.0.0.1 only. These
// servers are the thing the load tool measures in its own tests, never a
// stand-in for the ACGS service.
func newLoopbackServer(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &httptest.Server{Listener: l, Config: &http.Server{Handler: h}}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

// judgeHandler allows everything except shell execution, like the
// constitution does for the acgs-mixed scenarios, and counts bodies.
type judgeHandler struct {
	mu     sync.Mutex
	bodies map[string]int
	fail   func(n int64) int // HTTP status to force for request n (0: none)
	n      atomic.Int64
}

func (j *judgeHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	n := j.n.Add(1)
	j.mu.Lock()
	if j.bodies == nil {
		j.bodies = map[string]int{}
	}
	j.bodies[string(b)]++
	j.mu.Unlock()
	if j.fail != nil {
		if code := j.fail(n); code != 0 {
			w.WriteHeader(code)
			return
		}
	}
	var req struct {
		Action string `json:"action"`
	}
	if err := json.Unmarshal(b, &req); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	allow := req.Action != "system.execute_shell"
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"allow": allow, "compliance_score": 1})
}

func TestClosedLoopCountsAndCompliance(t *testing.T) {
	w, err := DefaultWorkload()
	if err != nil {
		t.Fatal(err)
	}
	h := &judgeHandler{}
	srv := newLoopbackServer(t, h)
	res, err := RunClosed(context.Background(), ClosedLoop{Users: 4, MaxRequests: 400}, Options{
		Target: Target{BaseURL: srv.URL}, Workload: w, Seed: 3,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Total.Requests != 400 || h.n.Load() != 400 {
		t.Fatalf("requests: result %d, server %d, want 400", res.Total.Requests, h.n.Load())
	}
	if res.Total.Failures != 0 || !res.Valid {
		t.Fatalf("failures %d valid %v first error %q", res.Total.Failures, res.Valid, res.FirstError)
	}
	if res.Compliance == nil || *res.Compliance != 1 {
		t.Fatalf("compliance %v, want 1", res.Compliance)
	}
	byName := map[string]ScenarioStats{}
	var sum int64
	for _, s := range res.Scenarios {
		byName[s.Name] = s
		sum += s.Requests
		if s.Latency.Count != s.Requests {
			t.Errorf("%s: %d latencies for %d requests", s.Name, s.Latency.Count, s.Requests)
		}
	}
	if sum != 400 || byName["dangerous_action"].Allowed != 0 || byName["safe_action"].Denied != 0 {
		t.Fatalf("per-scenario stats wrong: %+v", res.Scenarios)
	}
	if n := byName["safe_action"].Requests; n < 200 || n > 360 {
		t.Fatalf("safe_action got %d of 400 requests, want about 70%%", n)
	}
}

func TestClosedLoopClassifiesFailures(t *testing.T) {
	w, err := DefaultWorkload()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		handler http.Handler
		wantErr string
	}{
		{"HTTP 500", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(500) }), "HTTP 500"},
		{"bad JSON", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "{not json") }), "bad JSON"},
		{"no allow", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, `{"result": {}}`) }), `no boolean "allow"`},
		{"allow not bool", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, `{"allow": "yes"}`) }), "bad JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newLoopbackServer(t, tc.handler)
			res, err := RunClosed(context.Background(), ClosedLoop{Users: 2, MaxRequests: 20}, Options{Target: Target{BaseURL: srv.URL}, Workload: w})
			if err != nil {
				t.Fatal(err)
			}
			if res.Total.Failures != 20 || res.Total.ErrorRate != 1 {
				t.Fatalf("failures %d rate %v, want all 20", res.Total.Failures, res.Total.ErrorRate)
			}
			if !strings.Contains(res.FirstError, tc.wantErr) {
				t.Fatalf("first error %q, want %q", res.FirstError, tc.wantErr)
			}
			if res.Compliance != nil {
				t.Fatalf("compliance %v from failed requests", *res.Compliance)
			}
		})
	}
	t.Run("transport error", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close() // nothing listens there now
		res, err := RunClosed(context.Background(), ClosedLoop{Users: 1, MaxRequests: 3}, Options{Target: Target{BaseURL: "http://" + addr}, Workload: w})
		if err != nil {
			t.Fatal(err)
		}
		if res.Total.Failures != 3 {
			t.Fatalf("failures %d, want 3", res.Total.Failures)
		}
	})
}

// The point of the open loop: a server that stops answering for a while must
// show up in the latency of every request that was due during the stall.
// Measured from the actual send time (coordinated omission), the stall
// touches only the few requests that were in flight, and p99 hides it.
func TestOpenLoopCorrectsCoordinatedOmission(t *testing.T) {
	const stall = 500 * time.Millisecond
	w, err := DefaultWorkload()
	if err != nil {
		t.Fatal(err)
	}
	judge := &judgeHandler{}
	var mu sync.Mutex
	var stallUntil time.Time
	var seen atomic.Int64
	srv := newLoopbackServer(t, http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if seen.Add(1) == 40 { // once, a little after the start
			mu.Lock()
			stallUntil = time.Now().Add(stall)
			mu.Unlock()
		}
		mu.Lock()
		until := stallUntil
		mu.Unlock()
		if d := time.Until(until); d > 0 {
			time.Sleep(d) // every request arriving during the stall waits it out
		}
		judge.ServeHTTP(rw, r)
	}))
	res, err := RunOpen(context.Background(), OpenLoop{Rate: 200, Duration: 2 * time.Second, Connections: 2}, Options{
		Target: Target{BaseURL: srv.URL}, Workload: w, Seed: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	corrected := res.Total.Latency.P99Ms
	naive := res.ServiceLatency.P99Ms
	t.Logf("requests %d, achieved %.1f req/s (valid %v), p99 from schedule %.2f ms, p99 from send %.2f ms",
		res.Total.Requests, res.AchievedRate, res.Valid, corrected, naive)
	half := float64(stall/2) / float64(time.Millisecond)
	if res.Total.Requests != 400 {
		t.Fatalf("sent %d requests, want 400 (2 s at 200/s)", res.Total.Requests)
	}
	if corrected < half {
		t.Errorf("p99 from scheduled time %.2f ms does not show the %s stall (want >= %.0f ms)", corrected, stall, half)
	}
	// The relationship, not an absolute time: on a loaded machine the
	// service time can grow too, but measuring from the schedule must
	// always see more of the stall than measuring from the actual send.
	if corrected <= naive {
		t.Errorf("p99 from scheduled time %.2f ms is not above p99 from actual send %.2f ms; coordinated omission is not corrected", corrected, naive)
	}
	if res.Total.Latency.MaxMs < res.ServiceLatency.MaxMs {
		t.Errorf("corrected max %.2f below service-time max %.2f", res.Total.Latency.MaxMs, res.ServiceLatency.MaxMs)
	}
}

func TestOpenLoopBelowTargetIsInvalid(t *testing.T) {
	w, err := DefaultWorkload()
	if err != nil {
		t.Fatal(err)
	}
	judge := &judgeHandler{}
	srv := newLoopbackServer(t, http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		time.Sleep(20 * time.Millisecond) // one connection: at most ~50 req/s
		judge.ServeHTTP(rw, r)
	}))
	res, err := RunOpen(context.Background(), OpenLoop{Rate: 400, Duration: time.Second, Connections: 1, MaxLag: 200 * time.Millisecond}, Options{
		Target: Target{BaseURL: srv.URL}, Workload: w,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Valid {
		t.Fatalf("a run that could not keep 400 req/s was reported valid (achieved %.1f)", res.AchievedRate)
	}
	if res.InvalidReason == "" || res.Unsent == 0 {
		t.Fatalf("invalid reason %q, unsent %d", res.InvalidReason, res.Unsent)
	}
	rep := LoadSLO{MaxErrorRate: 0.01}.Evaluate(res)
	if rep.ExitCode() != 1 {
		t.Fatalf("SLO report of an invalid run exits %d, want 1", rep.ExitCode())
	}
}

// A run that sent every request on time is valid even when its last
// answer comes long after the planned end: the achieved rate is the
// rate of sending, not of answers.
func TestOpenLoopSlowLastAnswerIsValid(t *testing.T) {
	w, err := DefaultWorkload()
	if err != nil {
		t.Fatal(err)
	}
	judge := &judgeHandler{}
	var seen atomic.Int64
	srv := newLoopbackServer(t, http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if seen.Add(1) == 50 { // the last request of 1 s at 50/s
			time.Sleep(700 * time.Millisecond)
		}
		judge.ServeHTTP(rw, r)
	}))
	cfg := OpenLoop{Rate: 50, Duration: time.Second, Connections: 4}
	res, err := RunOpen(context.Background(), cfg, Options{
		Target: Target{BaseURL: srv.URL}, Workload: w,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Total.Requests != 50 {
		t.Fatalf("%d requests, want 50", res.Total.Requests)
	}
	if res.Total.Latency.MaxMs < 700 {
		t.Fatalf("max latency %.0f ms: the slow answer was not slow", res.Total.Latency.MaxMs)
	}
	// The achieved rate is over the time of sending (checkOpenWindow), not
	// up to the slow answer. If sending itself was late (a loaded
	// machine), the run may rightly be invalid.
	if !checkOpenWindow(t, res, cfg) {
		t.Logf("sent up to %.1f ms late (a loaded machine): validity not judged; valid %v (%s), achieved %.1f req/s", res.SendLag.MaxMs, res.Valid, res.InvalidReason, res.AchievedRate)
		return
	}
	if !res.Valid || res.AchievedRate < 0.95*50 {
		t.Fatalf("valid %v (%s), achieved %.1f req/s: want a valid run, every request sent within %.1f ms of its schedule", res.Valid, res.InvalidReason, res.AchievedRate, res.SendLag.MaxMs)
	}
}

// A short run at a low rate sends what its duration holds (rate ×
// duration, rounded up), and so is not judged slower than it was.
func TestOpenLoopShortRunRoundsUp(t *testing.T) {
	w, err := DefaultWorkload()
	if err != nil {
		t.Fatal(err)
	}
	srv := newLoopbackServer(t, &judgeHandler{})
	res, err := RunOpen(context.Background(), OpenLoop{Rate: 3, Duration: 1500 * time.Millisecond, Connections: 1}, Options{
		Target: Target{BaseURL: srv.URL}, Workload: w,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Total.Requests != 5 || !res.Valid {
		t.Fatalf("%d requests, valid %v (%s, achieved %.2f req/s); want 5 and a valid run", res.Total.Requests, res.Valid, res.InvalidReason, res.AchievedRate)
	}
}

func TestWarmupIsNotMeasured(t *testing.T) {
	w, err := DefaultWorkload()
	if err != nil {
		t.Fatal(err)
	}
	h := &judgeHandler{}
	srv := newLoopbackServer(t, h)
	res, err := RunOpen(context.Background(), OpenLoop{Rate: 100, Warmup: 500 * time.Millisecond, Duration: 500 * time.Millisecond, Connections: 4}, Options{
		Target: Target{BaseURL: srv.URL}, Workload: w,
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := h.n.Load(); got != 100 {
		t.Fatalf("server saw %d requests, want 100 (warm-up included)", got)
	}
	if res.Total.Requests != 50 {
		t.Fatalf("measured %d requests, want the 50 after warm-up", res.Total.Requests)
	}
}

func TestCheckLoopback(t *testing.T) {
	for _, tc := range []struct {
		url string
		ok  bool
	}{
		{"http://127.0.0.1:8004", true},
		{"http://127.3.4.5", true},
		{"http://[::1]:8004", true},
		{"http://localhost:8004", true},
		{"https://localhost", true},
		{"http://10.0.0.1:8004", false},
		{"http://192.168.1.10", false},
		{"http://8.8.8.8", false},
		{"ftp://127.0.0.1", false},
		{"127.0.0.1:8004", false},
		{"http://", false},
	} {
		err := CheckLoopback(context.Background(), tc.url)
		if (err == nil) != tc.ok {
			t.Errorf("%s: err %v, want ok=%v", tc.url, err, tc.ok)
		}
	}
}

// TestShedIsNeitherDecisionNorFailure: a 503 overloaded with Retry-After
// is counted as shed, apart from allows, denies and failures, and kept out
// of compliance, the error rate and the latency; without Retry-After, or
// with another code, a 503 is a failure. Both drivers, and the report.
func TestShedIsNeitherDecisionNorFailure(t *testing.T) {
	w, err := DefaultWorkload()
	if err != nil {
		t.Fatal(err)
	}
	shedEvery := func(retryAfter, code string) http.Handler {
		j := &judgeHandler{}
		return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			if j.n.Load()%2 == 1 { // every other request
				j.n.Add(1)
				if retryAfter != "" {
					rw.Header().Set("Retry-After", retryAfter)
				}
				rw.WriteHeader(http.StatusServiceUnavailable)
				_, _ = io.WriteString(rw, `{"allow":false,"code":"`+code+`","message":"service overloaded"}`)
				return
			}
			j.ServeHTTP(rw, r)
		})
	}
	for _, tc := range []struct {
		name              string
		h                 http.Handler
		wantShed, wantErr bool
	}{
		{"overloaded with Retry-After", shedEvery("1", "overloaded"), true, false},
		{"overloaded without Retry-After", shedEvery("", "overloaded"), false, true},
		{"another 503", shedEvery("1", "unavailable"), false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newLoopbackServer(t, tc.h)
			for _, mode := range []string{"closed", "open"} {
				opts := Options{Target: Target{BaseURL: srv.URL}, Workload: w, Scenario: "safe_action"}
				var res *Result
				if mode == "closed" {
					res, err = RunClosed(context.Background(), ClosedLoop{Users: 1, MaxRequests: 40}, opts)
				} else {
					res, err = RunOpen(context.Background(), OpenLoop{Rate: 200, Duration: 200 * time.Millisecond, Connections: 1}, opts)
				}
				if err != nil {
					t.Fatal(err)
				}
				tot := res.Total
				if tot.Requests != tot.Allowed+tot.Denied+tot.Failures+tot.Shed || tot.Requests < 10 {
					t.Fatalf("%s: counts do not add up: %+v", mode, tot)
				}
				half := tot.Requests / 2
				if tc.wantShed {
					if tot.Shed < half-1 || tot.Failures != 0 || tot.ErrorRate != 0 || tot.ShedRate == 0 {
						t.Errorf("%s: want about half shed and no failure: %+v", mode, tot)
					}
					if tot.Latency.Count != tot.Allowed+tot.Denied || res.ShedLatency == nil || res.ShedLatency.Count != tot.Shed {
						t.Errorf("%s: latency counts %d (shed %v), want decisions only", mode, tot.Latency.Count, res.ShedLatency)
					}
					if res.Compliance == nil || *res.Compliance != 1 {
						t.Errorf("%s: compliance %v, want 1: shed requests are not denials", mode, res.Compliance)
					}
					if want := float64(tot.Allowed) / res.DurationSec; res.Goodput < want*0.99 || res.Goodput > want*1.01 {
						t.Errorf("%s: goodput %v, want %v", mode, res.Goodput, want)
					}
					var b strings.Builder
					if err := WriteResultTable(&b, res); err != nil || !strings.Contains(b.String(), "shed (503 overloaded") {
						t.Errorf("%s: report does not show the shed requests: %v\n%s", mode, err, b.String())
					}
					rep := LoadSLO{MaxErrorRate: 0.01, MaxShedRate: 0.01}.Evaluate(res)
					if !strings.Contains(strings.Join(rep.Failed(), ","), "shed rate") || strings.Contains(strings.Join(rep.Failed(), ","), "error rate") {
						t.Errorf("%s: SLO failed %v, want the shed rate only", mode, rep.Failed())
					}
				}
				if tc.wantErr && (tot.Shed != 0 || tot.Failures < half-1) {
					t.Errorf("%s: want failures, not shed: %+v", mode, tot)
				}
			}
		})
	}
}
