package gateway

import (
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// blockedCall is a call's progress whose agent does not read until
// release is closed: its first send waits (sending is closed then).
type blockedCall struct {
	cp      *callProgress
	sending chan struct{}
	release chan struct{}
	got     chan float64
	dropped atomic.Int64
}

func newBlockedCall() *blockedCall {
	b := &blockedCall{sending: make(chan struct{}), release: make(chan struct{}), got: make(chan float64, 4*progressQueueLen)}
	first := true
	b.cp = newCallProgress("agent-1", func(p *mcp.ProgressNotificationParams) error {
		if first {
			first = false
			close(b.sending)
			<-b.release
		}
		b.got <- p.Progress
		return nil
	}, func() { b.dropped.Add(1) })
	return b
}

func (b *blockedCall) ended() bool {
	b.cp.mu.Lock()
	defer b.cp.mu.Unlock()
	return b.cp.ended
}

func (b *blockedCall) add(progress float64) {
	b.cp.add(&mcp.ProgressNotificationParams{ProgressToken: "agent-1", Progress: progress, Total: 1000})
}

// TestFullProgressQueueDropsTheOldest: a call whose agent is not reading
// while three times the queue's bound of notifications arrive. A full
// queue dropped the newest, so the agent, once it read again, got the
// call's oldest progress and never its latest; progress is cumulative, so
// the oldest are dropped, and counted.
func TestFullProgressQueueDropsTheOldest(t *testing.T) {
	b := newBlockedCall()
	b.add(1)
	<-b.sending
	const last = 3 * progressQueueLen
	for i := 2; i <= last; i++ {
		b.add(float64(i))
	}
	close(b.release)
	deadline := time.After(60 * time.Second)
	var seen []float64
	for {
		select {
		case p := <-b.got:
			seen = append(seen, p)
			if p != last {
				continue
			}
			if n := len(seen); n != 1+progressQueueLen {
				t.Errorf("the agent got %d notifications, want the one being sent and the queue's bound (%d)", n, progressQueueLen)
			}
			if d := b.dropped.Load(); d != last-1-progressQueueLen {
				t.Errorf("%d dropped, want %d", d, last-1-progressQueueLen)
			}
			b.cp.end()
			return
		case <-deadline:
			t.Fatalf("the call's latest progress (%d) never reached the agent; it got %v", last, seen)
		}
	}
}

// TestCallEndDropsQueuedProgress: the call's end (before its answer)
// waits for the notification being sent and drops, counting them, those
// still queued: none is sent after it.
func TestCallEndDropsQueuedProgress(t *testing.T) {
	b := newBlockedCall()
	b.add(1)
	<-b.sending
	for i := 2; i <= 6; i++ {
		b.add(float64(i))
	}
	ended := make(chan struct{})
	go func() { b.cp.end(); close(ended) }()
	for !b.ended() {
		time.Sleep(time.Millisecond)
	}
	close(b.release)
	<-ended
	b.add(7) // after the end: dropped
	close(b.got)
	if got := slices.Collect(func(yield func(float64) bool) {
		for p := range b.got {
			if !yield(p) {
				return
			}
		}
	}); !slices.Equal(got, []float64{1}) {
		t.Errorf("the agent got %v, want only the notification being sent when the call ended (1)", got)
	}
	if d := b.dropped.Load(); d != 6 {
		t.Errorf("%d dropped, want 6 (5 queued at the end, 1 after it)", d)
	}
}
