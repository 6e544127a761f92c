// Package decisionmetrics labels and counts one decision of the engine for
// acgs_decisions_total and the series beside it, in one place for the
// service (internal/server) and acgs gateway (internal/gateway), so that
// both count a decision alike. It is apart from package telemetry, which
// does not import the engine: the labels depend on engine.Decision and
// engine.ErrEvalTimeout.
package decisionmetrics

import (
	"errors"

	"github.com/acgs-lite/acgs/internal/admission"
	"github.com/acgs-lite/acgs/internal/apierror"
	"github.com/acgs-lite/acgs/internal/engine"
	"github.com/acgs-lite/acgs/internal/telemetry"
)

// The source labels (acgs_decision_duration_seconds) of a decision that
// was not made or failed: CountFailure.
const (
	SourceShed     = "shed"
	SourceCanceled = "canceled"
	SourceError    = "error"
)

// CountFailure counts in m a decision that was not made or failed (err,
// not nil) by its cause and returns its source label for ObserveDecision:
//
//   - cancelled while it waited for an evaluation slot or a shared
//     evaluation (admission.ReasonCanceled: its client went away):
//     acgs_decisions_canceled_total, source canceled. Such a decision is
//     answered as an overloaded one is (nobody reads the answer), but it
//     is not shed: the service refused nothing, so it is not counted in
//     acgs_decisions_shed_total, whose ratio pages (ACGSShedding);
//   - shed by admission control (admission.Overloaded):
//     acgs_decisions_shed_total by its reason (admission.ReasonOf),
//     source shed;
//   - an evaluation that ran past EVAL_TIMEOUT (engine.ErrEvalTimeout) or
//     failed with an evaluation error: acgs_evaluation_failures_total by
//     reason, source error;
//   - anything else: nothing more counted, source error.
func CountFailure(m *telemetry.Metrics, err error) (source string) {
	switch {
	case admission.ReasonOf(err) == admission.ReasonCanceled:
		m.Canceled()
		return SourceCanceled
	case admission.Overloaded(err):
		m.Shed(admission.ReasonOf(err))
		return SourceShed
	case errors.Is(err, engine.ErrEvalTimeout):
		m.EvalTimeout()
	case apierror.CodeOf(err) == apierror.EvaluationError:
		m.EvalError()
	}
	return SourceError
}

// Outcome labels a decision (d, or err when it was not made or failed) for
// acgs_decisions_total as the service counts it: allow or deny for a
// boolean and for an object with a boolean allow field, undefined,
// overloaded (not evaluated: shed by admission control), canceled (not
// evaluated: its client went away while it waited; answered as
// overloaded, counted apart: CountFailure), error, or defined for another
// value.
func Outcome(d engine.Decision, err error) string {
	switch {
	case admission.ReasonOf(err) == admission.ReasonCanceled:
		return "canceled"
	case admission.Overloaded(err):
		return "overloaded"
	case err != nil:
		return "error"
	case !d.Defined:
		return "undefined"
	}
	switch v := d.Result.(type) {
	case bool:
		if v {
			return "allow"
		}
		return "deny"
	case map[string]any:
		if a, ok := v["allow"].(bool); ok {
			if a {
				return "allow"
			}
			return "deny"
		}
	}
	return "defined"
}
