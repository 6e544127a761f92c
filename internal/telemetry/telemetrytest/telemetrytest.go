// Package telemetrytest holds test helpers around package telemetry: a
// registry that has seen every kind of observation (for exposition linting
// and for checking that dashboards and alerts name metrics that exist), and a
// real Prometheus server to scrape a test target. It is imported by tests
// only; nothing in the service may depend on it.
package telemetrytest

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/acgs-lite/acgs/internal/admission"
	"github.com/acgs-lite/acgs/internal/cache"
	"github.com/acgs-lite/acgs/internal/telemetry"
)

// ExerciseStats is the cache snapshot Exercise registers: L2 enabled and
// healthy, breaker half-open, every counter non-zero, so that every cache
// series is present.
var ExerciseStats = cache.Stats{
	L1Hits: 90, L1Misses: 10, L2Hits: 6, L2Misses: 4,
	L2Errors: 1, L2Rejected: 1, L1Entries: 100, L1Capacity: 10000,
	L1Evictions: 3, Oversize: 1, WriteQueueLen: 2, WriteQueueCap: 4096, WriteDropped: 1,
	WriteBatches: 5, WriteEntries: 40, L2RoundTrips: 7, BreakerState: "half-open",
	L2Enabled: true, L2Healthy: true, Epoch: 2,
}

// ExerciseAdmission is the admission snapshot Exercise registers: every
// slot busy, some waiting, every counter non-zero.
var ExerciseAdmission = admission.Stats{
	MaxInFlight: 2, MaxQueue: 16, InFlight: 2, Waiting: 5,
	Admitted: 100, Queued: 40, QueueFull: 3, Timeout: 2, Deadline: 1, Canceled: 6, Abandoned: 4,
}

// Exercise makes m see at least one observation of every kind, with every
// label value the service produces, and registers a cache and a decision log.
// The decision log is closed when tb ends.
func Exercise(tb testing.TB, m *telemetry.Metrics) {
	tb.Helper()
	for _, code := range []int{200, 207, 400, 404, 413, 500, 503} {
		m.ObserveHTTP("acgs_decision", code, 300*time.Microsecond)
	}
	m.ObserveHTTP("opa_data_v1", 200, 2*time.Millisecond)
	m.ObserveHTTP("opa_batch", 207, 20*time.Millisecond)
	for _, outcome := range []string{"allow", "deny", "undefined", "error"} {
		m.ObserveDecision("acgs/main/decision", outcome, "full", 50*time.Microsecond)
	}
	for _, source := range []string{"l1", "l2", "plan_constant", "vm", "full"} {
		m.ObserveDecision("acgs/main/decision", "allow", source, 3*time.Microsecond)
	}
	for _, o := range []string{"constant", "fallback"} {
		m.ObservePartialEval(o)
	}
	m.ObserveBatch(100)
	m.ObserveWriteBehindBatch(17)
	m.HashMismatch()
	m.PolicyReload("success")
	m.PolicyReload("failure")
	m.SetActivePolicy("rev-1", "82d24e0be3e3b09d", "cdd01ef066bc6cf2")
	m.EvalTimeout()
	m.EvalError()
	for _, r := range telemetry.ShedReasons {
		m.Shed(r)
	}
	m.Canceled()
	m.ObserveDecision("acgs/main/decision", "overloaded", "shed", 20*time.Microsecond)
	m.RegisterAdmission(func() admission.Stats { return ExerciseAdmission })
	m.RegisterCacheStats(func() cache.Stats { return ExerciseStats })

	l, err := telemetry.NewDecisionLog(telemetry.DecisionLogConfig{Sink: "stdout", Writer: io.Discard, QueueSize: 8})
	if err != nil {
		tb.Fatal(err)
	}
	l.Log(&telemetry.DecisionEvent{DecisionID: telemetry.NewDecisionID(), Path: "acgs/main/decision"})
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := l.Close(ctx); err != nil {
			tb.Errorf("closing decision log: %v", err)
		}
	})
	m.RegisterDecisionLog(l)
}
