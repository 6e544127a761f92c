package loadgen

import (
	"context"
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

// newLoopbackServerWith is newLoopbackServer with the http.Server's settings
// adjusted by cfg before it starts.
func newLoopbackServerWith(t *testing.T, h http.Handler, cfg func(*http.Server)) *httptest.Server {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &httptest.Server{Listener: l, Config: &http.Server{Handler: h}}
	cfg(srv.Config)
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

// TestDirectConnectionsSurviveServerClosing: a server that closes every
// connection after its answer (Connection: close), one that drops idle
// connections without a word before the next request comes, and answers
// sent chunked are all read correctly, with no failed request.
func TestDirectConnectionsSurviveServerClosing(t *testing.T) {
	w, err := DefaultWorkload()
	if err != nil {
		t.Fatal(err)
	}
	var conns atomic.Int64
	count := func(s *http.Server) {
		s.ConnState = func(_ net.Conn, st http.ConnState) {
			if st == http.StateNew {
				conns.Add(1)
			}
		}
	}
	chunked := http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		rw.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(rw, `{"allow":`)
		rw.(http.Flusher).Flush() // no Content-Length: the answer goes chunked
		_, _ = io.WriteString(rw, `true, "padding": "`+strings.Repeat("x", 5000)+`"}`)
	})
	for _, tc := range []struct {
		name      string
		h         http.Handler
		cfg       func(*http.Server)
		wantConns int64 // at least
	}{
		{"connection close", &judgeHandler{}, func(s *http.Server) { s.SetKeepAlivesEnabled(false); count(s) }, 20},
		{"idle connections dropped", &judgeHandler{}, func(s *http.Server) { s.IdleTimeout = 5 * time.Millisecond; count(s) }, 5},
		{"chunked answers", chunked, count, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conns.Store(0)
			srv := newLoopbackServerWith(t, tc.h, tc.cfg)
			// 1 connection at 40 req/s: 25 ms between requests, far past
			// the idle timeout of the second case.
			res, err := RunOpen(context.Background(), OpenLoop{Rate: 40, Duration: 500 * time.Millisecond, Connections: 1}, Options{
				Target: Target{BaseURL: srv.URL}, Workload: w, Scenario: "safe_action",
			})
			if err != nil {
				t.Fatal(err)
			}
			if res.Total.Requests != 20 || res.Total.Failures != 0 || res.Total.Allowed != 20 {
				t.Fatalf("requests %d, failures %d, allowed %d (first error %q); want 20 allowed", res.Total.Requests, res.Total.Failures, res.Total.Allowed, res.FirstError)
			}
			if got := conns.Load(); got < tc.wantConns {
				t.Fatalf("server saw %d connections, want at least %d (did the case happen?)", got, tc.wantConns)
			}
		})
	}
}

// newHangingServer is a loopback server that never answers: each request
// waits until its client goes away or the test ends.
func newHangingServer(t *testing.T) *httptest.Server {
	t.Helper()
	release := make(chan struct{})
	srv := newLoopbackServer(t, http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(release) }) // before the server's own cleanup closes it
	return srv
}

// TestDirectConnectionCancelEndsRequestInFlight: cancelling a run ends a
// request the server never answers, instead of waiting for its timeout.
func TestDirectConnectionCancelEndsRequestInFlight(t *testing.T) {
	w, err := DefaultWorkload()
	if err != nil {
		t.Fatal(err)
	}
	srv := newHangingServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	began := time.Now()
	res, err := RunClosed(ctx, ClosedLoop{Users: 2, Duration: time.Minute}, Options{Target: Target{BaseURL: srv.URL, Timeout: time.Minute}, Workload: w})
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(began); took > 20*time.Second {
		t.Fatalf("a run cancelled after 200 ms returned after %v", took)
	}
	if res.Valid || res.Total.Requests != 0 {
		t.Fatalf("valid %v, %d requests measured; want an interrupted run with no measurement", res.Valid, res.Total.Requests)
	}
}

// TestDirectConnectionTimeout: a request the server does not answer within
// the target's timeout is a failure.
func TestDirectConnectionTimeout(t *testing.T) {
	w, err := DefaultWorkload()
	if err != nil {
		t.Fatal(err)
	}
	srv := newHangingServer(t)
	res, err := RunClosed(context.Background(), ClosedLoop{Users: 1, MaxRequests: 2}, Options{Target: Target{BaseURL: srv.URL, Timeout: 100 * time.Millisecond}, Workload: w})
	if err != nil {
		t.Fatal(err)
	}
	if res.Total.Failures != 2 || !strings.Contains(res.FirstError, "timeout") {
		t.Fatalf("failures %d, first error %q; want 2 timeouts", res.Total.Failures, res.FirstError)
	}
}

// TestDirectConnectionTimeoutIsNotResent: a request that timed out on a
// kept-alive connection is a failure, not sent again on a new one (the
// server may be working on it: sent again, it would be offered twice and
// counted once). Only requests under this run's own path prefix count: the
// listener's port may have been another test's a moment ago (go test runs
// packages side by side), and a client of that test still sending there
// is not this one.
func TestDirectConnectionTimeoutIsNotResent(t *testing.T) {
	w, err := DefaultWorkload()
	if err != nil {
		t.Fatal(err)
	}
	const prefix = "/timeout-is-not-resent"
	var (
		mu       sync.Mutex
		received []string // each of ours: the client's address
		foreign  []string
	)
	release := make(chan struct{})
	srv := newLoopbackServer(t, http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		mu.Lock()
		if !strings.HasPrefix(r.URL.Path, prefix+"/") {
			foreign = append(foreign, r.Method+" "+r.URL.Path+" from "+r.RemoteAddr)
			mu.Unlock()
			http.NotFound(rw, r)
			return
		}
		received = append(received, r.RemoteAddr)
		n := len(received)
		mu.Unlock()
		if n == 1 {
			rw.Header().Set("Content-Type", "application/json")
			_, _ = rw.Write([]byte(`{"allow":true}`))
			return
		}
		select { // every later request hangs
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(release) })
	// The timeout bounds the first request too, which must be answered:
	// long enough for a loaded machine to answer it, the second request
	// timing out whatever its length, as it is never answered.
	res, err := RunClosed(context.Background(), ClosedLoop{Users: 1, MaxRequests: 2}, Options{Target: Target{BaseURL: srv.URL + prefix, Timeout: 2 * time.Second}, Workload: w})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(foreign) > 0 {
		t.Logf("requests not of this test, left out: %q", foreign)
	}
	if res.Total.Failures != 1 || len(received) != 2 {
		t.Fatalf("%d failures, %d requests received (from %q, first error %q); want 1 timeout and 2 requests (the one that timed out not sent again)", res.Total.Failures, len(received), received, res.FirstError)
	}
}
