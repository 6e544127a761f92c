package gateway

import (
	"context"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// gatedReader stops returning what it reads once closed is set, until
// open is closed.
type gatedReader struct {
	r      io.ReadCloser
	closed atomic.Bool
	open   chan struct{}
}

func (g *gatedReader) Read(p []byte) (int, error) {
	n, err := g.r.Read(p)
	if g.closed.Load() {
		<-g.open
	}
	return n, err
}

func (g *gatedReader) Close() error { return g.r.Close() }

// TestFullProgressQueueDropsTheOldest: an agent session whose sending
// goroutine waits (its agent is not reading) while three times the
// queue's bound of notifications arrive for a call. A full queue dropped
// the newest, so the agent, once it read again, got the call's oldest
// progress and never its latest; progress is cumulative, so the oldest
// are dropped now.
func TestFullProgressQueueDropsTheOldest(t *testing.T) {
	g := &Gateway{log: slog.New(slog.DiscardHandler), m: newMetrics(nil), progressQueues: map[*mcp.ServerSession][]queuedProgress{}}
	got := make(chan float64, 4*progressQueueLen)
	client := mcp.NewClient(&mcp.Implementation{Name: "agent", Version: "1"}, &mcp.ClientOptions{
		ProgressNotificationHandler: func(_ context.Context, req *mcp.ProgressNotificationClientRequest) {
			got <- req.Params.Progress
		},
	})
	server := mcp.NewServer(&mcp.Implementation{Name: "gw", Version: "1"}, nil)
	// synchronous pipes: once the agent stops reading, the gateway's
	// write waits
	toAgentR, toAgentW := io.Pipe()
	toGwR, toGwW := io.Pipe()
	gate := &gatedReader{r: toAgentR, open: make(chan struct{})}
	ss, err := server.Connect(t.Context(), &mcp.IOTransport{Reader: toGwR, Writer: toAgentW}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := client.Connect(t.Context(), &mcp.IOTransport{Reader: gate, Writer: toGwW}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cs.Close(); _ = ss.Close() })
	gate.closed.Store(true) // the agent stops reading (after what it is reading now)

	g.progress.Store("up-1", progressRoute{session: ss, token: "agent-1"})
	relay := func(progress float64) {
		g.relayProgress(t.Context(), &mcp.ProgressNotificationClientRequest{Params: &mcp.ProgressNotificationParams{ProgressToken: "up-1", Progress: progress, Total: 1000}})
	}
	const last = 3 * progressQueueLen
	for i := 1; i <= last; i++ {
		relay(float64(i))
	}
	close(gate.open)
	deadline := time.After(60 * time.Second)
	var seen []float64
	for {
		select {
		case p := <-got:
			seen = append(seen, p)
			if p == last {
				if n := len(seen); n > 2+progressQueueLen {
					t.Errorf("the agent got %d notifications: the queue's bound is %d", n, progressQueueLen)
				}
				return
			}
		case <-deadline:
			t.Fatalf("the call's latest progress (%d) never reached the agent; it got %v", last, seen)
		}
	}
}

// TestSupersededProgress: a full queue drops the oldest notification whose
// call has a newer one waiting or arriving, and the oldest only when none
// has.
func TestSupersededProgress(t *testing.T) {
	q := func(toks ...string) []queuedProgress {
		out := make([]queuedProgress, len(toks))
		for i, tok := range toks {
			out[i] = queuedProgress{upTok: tok}
		}
		return out
	}
	for _, tc := range []struct {
		name     string
		queue    []queuedProgress
		arriving string
		want     int
	}{
		{"the arriving call's oldest", q("a", "b", "a"), "a", 0},
		{"another call's oldest outdated one, not a call's only one", q("a", "b", "b", "b"), "c", 1},
		{"the arriving call's, before a later outdated one", q("a", "c", "b", "b"), "c", 1},
		{"every call has one: the oldest", q("a", "b", "c"), "d", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := supersededProgress(tc.queue, tc.arriving); got != tc.want {
				t.Errorf("supersededProgress(%v, %q) = %d, want %d", tc.queue, tc.arriving, got, tc.want)
			}
		})
	}
}
