package gateway

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// TestReopeningOnlyBetweenEvents: streamGuard reopens a standalone stream
// that ends between events, as many times as it ends, joining the streams'
// events in one body, and stops when the upstream no longer serves it
// (405); it leaves to the SDK's client a stream that ends within an
// event (reopening would join a cut event to the next), one that carries
// event IDs (the client resumes it from the last). One that ended before
// reopenAfter is reopened once reopenAfter has passed since it opened
// (left to the SDK's client, the second such end would lose the session),
// unless the request ends first.
func TestReopeningOnlyBetweenEvents(t *testing.T) {
	for _, c := range []struct {
		name   string
		after  time.Duration
		stream func(n int) string // the n-th GET's stream (from 1); "" refuses it
		stop   time.Duration      // the request's context ends after it (0: never)
		want   string
		gets   int64
	}{
		{"between events", 0, func(n int) string {
			if n > 3 {
				return ""
			}
			return fmt.Sprintf(": ok\n\nevent: message\ndata: {\"n\":%d}\n\n", n)
		}, 0, ": ok\n\nevent: message\ndata: {\"n\":1}\n\n: ok\n\nevent: message\ndata: {\"n\":2}\n\n: ok\n\nevent: message\ndata: {\"n\":3}\n\n", 4},
		{"CRLF", 0, func(n int) string {
			if n > 2 {
				return ""
			}
			return "data: {}\r\n\r\n"
		}, 0, "data: {}\r\n\r\ndata: {}\r\n\r\n", 3},
		{"within an event", 0, func(int) string { return ": ok\n\nevent: message\ndata: {\"n\"" }, 0, ": ok\n\nevent: message\ndata: {\"n\"", 1},
		{"after a field", 0, func(int) string { return "event: message\n" }, 0, "event: message\n", 1},
		{"with event IDs", 0, func(int) string { return "id: 7\ndata: {}\n\n" }, 0, "id: 7\ndata: {}\n\n", 1},
		{"too soon, reopened later", 50 * time.Millisecond, func(n int) string {
			if n > 3 {
				return ""
			}
			return "data: {}\n\n"
		}, 0, "data: {}\n\ndata: {}\n\ndata: {}\n\n", 4},
		{"too soon, request ended", time.Hour, func(int) string { return "data: {}\n\n" }, 100 * time.Millisecond, "data: {}\n\n", 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			var gets atomic.Int64
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				s := c.stream(int(gets.Add(1)))
				if s == "" {
					w.WriteHeader(http.StatusMethodNotAllowed)
					return
				}
				w.Header().Set("Content-Type", "text/event-stream")
				_, _ = io.WriteString(w, s)
			}))
			defer srv.Close()
			g := &streamGuard{base: http.DefaultTransport, wait: 10 * time.Second, reopenAfter: c.after, log: slog.New(slog.DiscardHandler)}
			ctx := t.Context()
			if c.stop > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, c.stop)
				defer cancel()
			}
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
			resp, err := g.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if string(body) != c.want || gets.Load() != c.gets {
				t.Errorf("read %q after %d GET, want %q after %d", body, gets.Load(), c.want, c.gets)
			}
		})
	}
}

// TestOnlyTheFirstStandaloneGETIsBounded: streamGuard bounds the wait for
// the header of a connection's standalone GET only until one has had it
// (that GET is made within Connect, which nothing else bounds): a
// resumption (a GET with Last-Event-ID, whose header the SDK's server
// sends only with the resumed stream's next event) and the GETs after
// the first answered one wait for their header as long as it takes. A
// fake 405 there failed the session of an upstream that closed a call's
// stream early (review finding F1, TestSlowResumption).
func TestOnlyTheFirstStandaloneGETIsBounded(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Slow") != "" {
			time.Sleep(300 * time.Millisecond) // past the guard's wait
		}
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: {}\n\n")
	}))
	defer srv.Close()
	get := func(g *streamGuard, slow bool, lastEventID string) int {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL, nil)
		if slow {
			req.Header.Set("Slow", "1")
		}
		if lastEventID != "" {
			req.Header.Set("Last-Event-ID", lastEventID)
		}
		resp, err := g.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	guard := func() *streamGuard {
		return &streamGuard{base: http.DefaultTransport, wait: 50 * time.Millisecond, reopenAfter: time.Hour, log: slog.New(slog.DiscardHandler)}
	}

	g := guard()
	if code := get(g, true, "7"); code != http.StatusOK {
		t.Errorf("a slow resumption, before any standalone GET: %d, want 200 (not bounded)", code)
	}
	if code := get(g, false, ""); code != http.StatusOK {
		t.Errorf("the first standalone GET, answered at once: %d, want 200", code)
	}
	if code := get(g, true, ""); code != http.StatusOK {
		t.Errorf("a slow standalone GET after one answered: %d, want 200 (not bounded)", code)
	}
	if code := get(g, true, "7"); code != http.StatusOK {
		t.Errorf("a slow resumption: %d, want 200 (not bounded)", code)
	}
	if code := get(guard(), true, ""); code != http.StatusMethodNotAllowed {
		t.Errorf("a connection's first standalone GET without a header in time: %d, want the guard's 405", code)
	}
}
