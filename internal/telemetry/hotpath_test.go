package telemetry

import (
	"context"
	"io"
	"testing"
	"time"
)

// TestHotPathDoesNotAllocate checks the calls made on every request: they
// must not allocate once warm (an allocation count, not a timing).
func TestHotPathDoesNotAllocate(t *testing.T) {
	m := NewMetrics(BuildInfo{})
	w := NewWindow(time.Minute)
	l, err := NewDecisionLog(DecisionLogConfig{Writer: io.Discard, QueueSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close(context.Background())
	// The log owns an event once logged, so each call gets its own.
	events := make([]*DecisionEvent, 1100)
	for i := range events {
		events[i] = &DecisionEvent{Path: "acgs/main/decision", Timestamp: time.Now()}
	}
	next := 0
	ds := m.DecisionSeries("acgs/main/decision", "allow", "l1")
	hs := m.HTTPSeries("acgs_decision", 200)
	tests := []struct {
		name string
		f    func()
	}{
		{"Window.Record", func() { w.Record(300*time.Microsecond, Sample{CacheTier: "l1"}) }},
		{"Metrics.ObserveHTTP", func() { m.ObserveHTTP("acgs_decision", 200, time.Millisecond) }},
		{"Metrics.ObserveDecision", func() { m.ObserveDecision("acgs/main/decision", "allow", "l1", time.Microsecond) }},
		{"Metrics.ObservePartialEval", func() { m.ObservePartialEval("constant") }},
		// What a raw-tier hit and a route's 200 record in, resolved once.
		{"DecisionSeries.Observe", func() { ds.Observe(time.Microsecond) }},
		{"HTTPSeries.Observe", func() { hs.Observe(time.Millisecond) }},
		{"Window.RecordAt", func() { w.RecordAt(time.Now(), 300*time.Microsecond, Sample{CacheTier: "l1"}) }},
		// The queue holds one event and the writer may be busy: this mixes
		// accepted and dropped events, both of which must be free.
		{"DecisionLog.Log", func() { l.Log(events[next]); next++ }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.f() // warm: first use of a shard or a label set allocates
			if n := testing.AllocsPerRun(1000, tt.f); n != 0 {
				t.Errorf("%v allocations per call, want 0", n)
			}
		})
	}
}
