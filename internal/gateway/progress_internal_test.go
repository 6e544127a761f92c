package gateway

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"testing/synctest"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// blockedCall is a call's progress whose agent does not read until
// release is closed: its first send waits. Run it in a synctest bubble:
// synctest.Wait returns once the sender waits (for release, or for
// progress).
type blockedCall struct {
	cp      *callProgress
	release chan struct{}
	got     chan float64
	dropped atomic.Int64
}

func newBlockedCall() *blockedCall {
	b := &blockedCall{release: make(chan struct{}), got: make(chan float64, 64)}
	first := true
	b.cp = newCallProgress("agent-1", func(p *mcp.ProgressNotificationParams) error {
		if first {
			first = false
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

// sent is what the agent has got so far.
func (b *blockedCall) sent() []float64 {
	var got []float64
	for {
		select {
		case p := <-b.got:
			got = append(got, p)
		default:
			return got
		}
	}
}

// TestNewestProgressSupersedesTheWaiting: a call whose agent is not
// reading while notifications arrive. A call kept up to 64 waiting, and
// nothing bounds an agent's calls, so an agent reading slowly could hold
// 64 messages (each up to 16 MiB) a call; progress is cumulative, so only
// the newest waits, the ones it supersedes dropped and counted, and the
// agent, once it reads again, gets the call's latest.
func TestNewestProgressSupersedesTheWaiting(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBlockedCall()
		b.add(1)
		synctest.Wait() // 1 is being sent
		const last = 10
		for i := 2; i <= last; i++ {
			b.add(float64(i))
		}
		close(b.release)
		synctest.Wait()
		if got := b.sent(); len(got) != 2 || got[0] != 1 || got[1] != last {
			t.Errorf("the agent got %v, want the one being sent and the newest: [1 %d]", got, last)
		}
		if d := b.dropped.Load(); d != last-2 {
			t.Errorf("%d dropped, want %d (each superseded)", d, last-2)
		}
		b.cp.end()
		if d := b.dropped.Load(); d != last-2 {
			t.Errorf("%d dropped after the end, want still %d: nothing was waiting", d, last-2)
		}
	})
}

// TestCallEndSendsWaitingProgress: the call's end (before its answer)
// waits for the notification being sent, then sends the one still waiting
// (it dropped it: an upstream's last notification, sent just before its
// answer, never reached the agent), and none after it.
func TestCallEndSendsWaitingProgress(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBlockedCall()
		b.add(1)
		synctest.Wait() // 1 is being sent
		b.add(2)
		b.add(3) // supersedes 2
		ended := make(chan struct{})
		go func() { b.cp.end(); close(ended) }()
		synctest.Wait()
		if !b.ended() {
			t.Fatal("the call has not ended")
		}
		select {
		case <-ended:
			t.Error("end returned while a notification was being sent: the answer could come before it")
		default:
		}
		close(b.release)
		<-ended
		b.add(4) // after the end: dropped
		synctest.Wait()
		if got := b.sent(); len(got) != 2 || got[0] != 1 || got[1] != 3 {
			t.Errorf("the agent got %v, want the one being sent and the one waiting when the call ended: [1 3]", got)
		}
		if d := b.dropped.Load(); d != 2 {
			t.Errorf("%d dropped, want 2 (2 superseded, 4 after the end)", d)
		}
	})
}

// TestCallEndAfterAFailedSend: once a send has failed (the agent's stream
// broken, or its write timeout passed), the one waiting is dropped at the
// call's end, not written: the answer does not wait for a second write to
// a stream that takes none.
func TestCallEndAfterAFailedSend(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		var sends, dropped atomic.Int64
		cp := newCallProgress("agent-1", func(*mcp.ProgressNotificationParams) error {
			sends.Add(1)
			<-release
			return errAnswered
		}, func() { dropped.Add(1) })
		cp.add(&mcp.ProgressNotificationParams{ProgressToken: "agent-1", Progress: 1})
		synctest.Wait() // 1 is being sent
		cp.add(&mcp.ProgressNotificationParams{ProgressToken: "agent-1", Progress: 2})
		close(release)
		cp.end()
		if n := sends.Load(); n != 1 {
			t.Errorf("%d sends, want 1: the one waiting was written after a failed send", n)
		}
		if d := dropped.Load(); d != 2 {
			t.Errorf("%d dropped, want 2 (the failed one and the one waiting)", d)
		}
	})
}

// TestRefusedProgressIsCounted: a notification the call's sink refuses
// (its POST answered, or gone) was lost without being counted in
// acgs_gateway_progress_dropped_total; it is now counted, and one the
// sink takes is not.
func TestRefusedProgressIsCounted(t *testing.T) {
	answered := &postStream{w: httptest.NewRecorder()}
	answered.WriteHeader(http.StatusOK) // the SDK's answer has begun
	gone := (&Gateway{}).progressSink(context.Background(), nil, &mcp.RequestExtra{Header: http.Header{postStreamHeader: {"1"}}})
	for _, tc := range []struct {
		name    string
		send    func(*mcp.ProgressNotificationParams) error
		dropped int64
	}{
		{"taken", func(*mcp.ProgressNotificationParams) error { return nil }, 0},
		{"POST answered", func(*mcp.ProgressNotificationParams) error { return answered.notify([]byte(`{}`)) }, 1},
		{"POST gone", gone, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var dropped atomic.Int64
				cp := newCallProgress("agent-1", tc.send, func() { dropped.Add(1) })
				cp.add(&mcp.ProgressNotificationParams{ProgressToken: "agent-1", Progress: 1})
				synctest.Wait() // sent
				cp.end()
				if d := dropped.Load(); d != tc.dropped {
					t.Errorf("%d dropped, want %d", d, tc.dropped)
				}
			})
		})
	}
}
