package decisionmetrics_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/acgs-lite/acgs/internal/admission"
	"github.com/acgs-lite/acgs/internal/apierror"
	"github.com/acgs-lite/acgs/internal/engine"
	"github.com/acgs-lite/acgs/internal/telemetry"
	"github.com/acgs-lite/acgs/internal/telemetry/decisionmetrics"
)

// TestOutcomeAndCountFailure: each decision, or error, is labelled and
// counted as the service and acgs gateway count one: a cancelled decision
// apart from a shed one (only the second pages), an EVAL_TIMEOUT and an
// evaluation error in acgs_evaluation_failures_total by reason, any other
// error in no other series.
func TestOutcomeAndCountFailure(t *testing.T) {
	shed := func(cause error) error {
		return apierror.Wrap(apierror.Overloaded, cause, "service overloaded; retry later")
	}
	defined := func(r any) engine.Decision { return engine.Decision{Defined: true, Result: r} }
	for _, c := range []struct {
		name    string
		d       engine.Decision
		err     error
		outcome string
		source  string // CountFailure's, for an error
		counted string // the series CountFailure adds one to: name or name/reason
	}{
		{name: "true", d: defined(true), outcome: "allow"},
		{name: "false", d: defined(false), outcome: "deny"},
		{name: "allow field true", d: defined(map[string]any{"allow": true}), outcome: "allow"},
		{name: "allow field false", d: defined(map[string]any{"allow": false, "reasons": []any{"no"}}), outcome: "deny"},
		{name: "object without allow", d: defined(map[string]any{"outcome": "allow"}), outcome: "defined"},
		{name: "string", d: defined("allow"), outcome: "defined"},
		{name: "undefined", outcome: "undefined"},
		{name: "queue full", err: shed(admission.ErrQueueFull), outcome: "overloaded", source: "shed", counted: "acgs_decisions_shed_total/queue_full"},
		{name: "queue timeout", err: shed(admission.ErrQueueTimeout), outcome: "overloaded", source: "shed", counted: "acgs_decisions_shed_total/queue_timeout"},
		{name: "late", err: shed(admission.ErrLate), outcome: "overloaded", source: "shed", counted: "acgs_decisions_shed_total/late"},
		{name: "deadline", err: shed(context.DeadlineExceeded), outcome: "overloaded", source: "shed", counted: "acgs_decisions_shed_total/deadline"},
		{name: "cancelled while waiting", err: shed(admission.ErrCanceled), outcome: "canceled", source: "canceled", counted: "acgs_decisions_canceled_total"},
		{name: "context cancelled", err: shed(context.Canceled), outcome: "canceled", source: "canceled", counted: "acgs_decisions_canceled_total"},
		{name: "EVAL_TIMEOUT", err: apierror.Wrap(apierror.EvaluationError, fmt.Errorf("%w: %w", engine.ErrEvalTimeout, context.DeadlineExceeded), "policy evaluation exceeded EVAL_TIMEOUT (1s)"),
			outcome: "error", source: "error", counted: "acgs_evaluation_failures_total/timeout"},
		{name: "evaluation error", err: apierror.Wrap(apierror.EvaluationError, errors.New("builtin error"), "policy evaluation failed"),
			outcome: "error", source: "error", counted: "acgs_evaluation_failures_total/error"},
		{name: "other error", err: errors.New("no active policy"), outcome: "error", source: "error"},
		{name: "unavailable", err: apierror.New(apierror.Unavailable, "no policy loaded"), outcome: "error", source: "error"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := decisionmetrics.Outcome(c.d, c.err); got != c.outcome {
				t.Errorf("Outcome = %q, want %q", got, c.outcome)
			}
			if c.err == nil {
				return
			}
			m := telemetry.NewMetrics(telemetry.BuildInfo{})
			if got := decisionmetrics.CountFailure(m, c.err); got != c.source {
				t.Errorf("CountFailure = %q, want %q", got, c.source)
			}
			for _, s := range []string{
				"acgs_decisions_shed_total/queue_full", "acgs_decisions_shed_total/queue_timeout", "acgs_decisions_shed_total/late", "acgs_decisions_shed_total/deadline",
				"acgs_decisions_canceled_total", "acgs_evaluation_failures_total/timeout", "acgs_evaluation_failures_total/error",
			} {
				want := 0.0
				if s == c.counted {
					want = 1
				}
				if got := count(t, m, s); got != want {
					t.Errorf("%s = %v, want %v", s, got, want)
				}
			}
		})
	}
}

// count is the value of series s (name, or name/reason) in m; 0 when m
// has none yet.
func count(t *testing.T, m *telemetry.Metrics, s string) float64 {
	t.Helper()
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	name, reason, _ := strings.Cut(s, "/")
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, x := range f.GetMetric() {
			r := ""
			for _, l := range x.GetLabel() {
				if l.GetName() == "reason" {
					r = l.GetValue()
				}
			}
			if r == reason {
				return x.GetCounter().GetValue()
			}
		}
	}
	return 0
}
