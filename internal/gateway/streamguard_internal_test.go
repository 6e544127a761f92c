package gateway

import (
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
// event IDs (the client resumes it from the last), and one that ended
// before reopenAfter.
func TestReopeningOnlyBetweenEvents(t *testing.T) {
	for _, c := range []struct {
		name   string
		after  time.Duration
		stream func(n int) string // the n-th GET's stream (from 1); "" refuses it
		want   string
		gets   int64
	}{
		{"between events", 0, func(n int) string {
			if n > 3 {
				return ""
			}
			return fmt.Sprintf(": ok\n\nevent: message\ndata: {\"n\":%d}\n\n", n)
		}, ": ok\n\nevent: message\ndata: {\"n\":1}\n\n: ok\n\nevent: message\ndata: {\"n\":2}\n\n: ok\n\nevent: message\ndata: {\"n\":3}\n\n", 4},
		{"CRLF", 0, func(n int) string {
			if n > 2 {
				return ""
			}
			return "data: {}\r\n\r\n"
		}, "data: {}\r\n\r\ndata: {}\r\n\r\n", 3},
		{"within an event", 0, func(int) string { return ": ok\n\nevent: message\ndata: {\"n\"" }, ": ok\n\nevent: message\ndata: {\"n\"", 1},
		{"after a field", 0, func(int) string { return "event: message\n" }, "event: message\n", 1},
		{"with event IDs", 0, func(int) string { return "id: 7\ndata: {}\n\n" }, "id: 7\ndata: {}\n\n", 1},
		{"too soon", time.Hour, func(int) string { return "data: {}\n\n" }, "data: {}\n\n", 1},
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
			g := streamGuard{base: http.DefaultTransport, wait: 10 * time.Second, reopenAfter: c.after, log: slog.New(slog.DiscardHandler)}
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL, nil)
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
