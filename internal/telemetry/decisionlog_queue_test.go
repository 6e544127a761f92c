package telemetry

import (
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestDecisionLogQueueBoundedInBytes: with the writer blocked, large events
// fill the queue's byte bound long before its count: the events past it are
// dropped and counted, and Log does not wait for room. Each queued event
// keeps its decoded input alive (review: a queue of 1000 events of 1 MiB
// inputs held 1004 MiB with the writer blocked; the default 10,000 would
// have been 10 GiB).
func TestDecisionLogQueueBoundedInBytes(t *testing.T) {
	w := &stuckWriter{release: make(chan struct{}), entered: make(chan struct{})}
	// A byte bound of 4 MiB (the default is 64): writing what it holds
	// once released must not take the race detector past waitHandled's
	// 10 s (CI 16325d9: 64 events of 1 MiB were not written in 10 s).
	l, err := NewDecisionLog(DecisionLogConfig{Writer: w, QueueSize: 1000, queueBytes: 4 << 20, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	released := false
	defer func() {
		if !released {
			close(w.release)
		}
		closeLog(t, l)
	}()
	l.Log(&DecisionEvent{Path: "held by the writer"})
	<-w.entered
	// One string shared by every event keeps the test's own memory small;
	// the log cannot tell, and counts it for each event as it would a
	// fresh input decoded for each request.
	const inputBytes, n = 256 << 10, 200
	blob := strings.Repeat("x", inputBytes)
	start := time.Now()
	for range n {
		l.Log(&DecisionEvent{Path: "p", Input: map[string]any{"blob": blob}})
	}
	took := time.Since(start)
	bound := l.queueBytes / inputBytes
	if q := l.Queued(); q == 0 || int64(q) > bound {
		t.Errorf("queued %d events of %d bytes each: want some, and at most the byte bound's %d (%d bytes)", q, inputBytes, bound, l.queueBytes)
	}
	queued := l.Queued()
	if got, want := l.Dropped(), uint64(n-queued); got != want {
		t.Errorf("dropped %d, want the %d events past the byte bound", got, want)
	}
	if took > 5*time.Second {
		t.Errorf("%d calls of Log took %v: Log waited", n, took)
	}
	close(w.release)
	released = true
	waitHandled(t, l, uint64(1+queued))
	// Once written, the events no longer count: the queue takes large
	// events again.
	deadline := time.Now().Add(10 * time.Second)
	for l.queuedBytes.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("after the queue was written, %d bytes still counted", l.queuedBytes.Load())
		}
		time.Sleep(time.Millisecond)
	}
	before := l.Dropped()
	l.Log(&DecisionEvent{Path: "after", Input: map[string]any{"blob": blob}})
	if l.Dropped() != before {
		t.Errorf("an event was dropped with the queue written")
	}
}

// TestDecisionLogEventLargerThanTheByteBound: an event larger than the
// whole byte bound is still taken into an empty queue (it is not refused
// for its size alone); while it waits, the queue takes nothing more.
func TestDecisionLogEventLargerThanTheByteBound(t *testing.T) {
	w := &stuckWriter{release: make(chan struct{}), entered: make(chan struct{})}
	l, err := NewDecisionLog(DecisionLogConfig{Writer: w, queueBytes: 1 << 20, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	l.Log(&DecisionEvent{Path: "held by the writer"})
	<-w.entered
	l.Log(&DecisionEvent{Path: "large", Input: map[string]any{"blob": strings.Repeat("x", 2<<20)}})
	l.Log(&DecisionEvent{Path: "small"})
	if l.Queued() != 1 || l.Dropped() != 1 {
		t.Errorf("queued %d, dropped %d: want the large event queued and the small one after it dropped", l.Queued(), l.Dropped())
	}
	close(w.release)
	closeLog(t, l)
	if l.Written() != 2 {
		t.Errorf("written %d, want 2", l.Written())
	}
}

// TestDecisionLogQueueByteBound: the byte bound is 4 KiB an event of the
// queue's length, and at least 64 MiB; the estimate of an event counts
// the bytes of its input and result, and keeps an ordinary event under the
// 4 KiB, so that the count, not the bytes, bounds a queue of them.
func TestDecisionLogQueueByteBound(t *testing.T) {
	for _, tc := range []struct {
		queue int
		want  int64
	}{{0, 64 << 20}, {1000, 64 << 20}, {100_000, 100_000 * 4 << 10}} {
		l, err := NewDecisionLog(DecisionLogConfig{Writer: &memSink{}, QueueSize: tc.queue})
		if err != nil {
			t.Fatal(err)
		}
		closeLog(t, l)
		if l.queueBytes != tc.want {
			t.Errorf("queue of %d: bound %d bytes, want %d", tc.queue, l.queueBytes, tc.want)
		}
	}
	if _, err := NewDecisionLog(DecisionLogConfig{Writer: &memSink{}, queueBytes: -1}); err == nil {
		t.Error("a negative byte bound was accepted")
	}

	large := &DecisionEvent{Input: map[string]any{"a": []any{strings.Repeat("x", 1<<20)}}, Result: map[string]any{"r": strings.Repeat("y", 1<<10)}}
	if got := eventSize(large); got < 1<<20+1<<10 || got > 1<<20+1<<10+4<<10 {
		t.Errorf("an event of a 1 MiB input and a 1 KiB result is estimated at %d bytes", got)
	}
	ordinary := &DecisionEvent{
		Path: "acgs/gateway/decision",
		Input: map[string]any{
			"tool_call":           map[string]any{"name": "read_file", "arguments": map[string]any{"path": "/srv/data/report.csv"}},
			"context":             map[string]any{"agent": map[string]any{"id": "agent-7", "session": "3f2a"}, "calls_last_minute": json.Number("12")},
			"constitutional_hash": "608508a9bd224290", "upstream": "files", "shadow": false,
		},
		Result:  map[string]any{"allow": true, "reasons": []any{}},
		Metrics: map[string]any{"timer_gateway_decision_ns": 1234},
	}
	if got := eventSize(ordinary); got > decisionLogEventBytes {
		t.Errorf("an ordinary event is estimated at %d bytes, over the %d a queued event is allowed", got, decisionLogEventBytes)
	}
}
