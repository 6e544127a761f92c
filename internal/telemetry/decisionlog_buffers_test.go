package telemetry

import (
	"io"
	"log/slog"
	"runtime"
	"strings"
	"testing"
)

// TestDecisionLogLargeEventBuffersAreNotKept: after one very large event
// is written, the writer does not keep buffers of its size (review: the
// event's encoding and the batch buffer each kept twice its size for the
// life of the log).
func TestDecisionLogLargeEventBuffersAreNotKept(t *testing.T) {
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	l, err := NewDecisionLog(DecisionLogConfig{Writer: io.Discard, Chain: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer closeLog(t, l)
	l.Log(&DecisionEvent{Path: "small"})
	waitHandled(t, l, 1)
	before := heap()
	const size = 32 << 20
	l.Log(&DecisionEvent{Path: "large", Input: map[string]any{"blob": strings.Repeat("x", size)}})
	waitHandled(t, l, 2)
	l.Log(&DecisionEvent{Path: "small again"})
	waitHandled(t, l, 3)
	after := heap()
	if grown := int64(after) - int64(before); grown > size/2 {
		t.Errorf("after a %d MiB event was written the heap holds %d MiB more", size>>20, grown>>20)
	}
}
