package server

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/acgs-lite/acgs/internal/admission"
	"github.com/acgs-lite/acgs/internal/apierror"
	"github.com/acgs-lite/acgs/internal/engine"
	"github.com/acgs-lite/acgs/internal/telemetry"
)

// decided is one decision with what the server adds to it.
type decided struct {
	engine.Decision
	ID  string
	Err error
	// acgsChecked says the decision's value is known to pass
	// appendACGSFast's checks (handleDecision checked it once, or the
	// raw-body tier remembered it), so that its answer is written from
	// JSON without looking at the value again.
	acgsChecked bool
}

// decisionContext bounds a request's decisions, a single one's as a
// batch's, so that its answer is written before WRITE_TIMEOUT closes the
// connection (config.Server.DecideWithin): a wait for an evaluation slot,
// or for a shared evaluation, that would end past it is shed at it and
// answered overloaded (503, Retry-After). Without it a batch on few slots
// ran past WRITE_TIMEOUT, its whole answer lost while every item was
// counted and logged as decided, and a single request waited out the
// queue-wait limit and had its 503 written on a closed connection
// (review). The bound counts from the request's start, as the write
// deadline does (set once the headers are read), not from the end of a
// body that may have been slow to arrive.
//
// A single request whose body arrived after that window, which its
// decisions could not keep (admission refuses a passed deadline even with
// a free slot, and an L2 read under it misses), is decided until
// WRITE_TIMEOUT less lateReserve instead: it was shed 503 overloaded on
// an idle service, a refusal no load caused. Only when even that has
// passed is it too late (tooLate): its answer could not be written. A
// batch keeps the window's bound: its answer, up to MAX_BATCH_ITEMS
// items each logged, needs the window's whole reserve; one whose body came
// after the window is too late (tooLate) at once. What a too-late request
// cannot have decided is refused as late (lateErr, shed reason "late"),
// not as overloaded: no load refused it (admission.ErrLate).
func (s *Server) decisionContext(w http.ResponseWriter, r *http.Request) (context.Context, context.CancelFunc) {
	wt := s.cfg.Server.WriteTimeout
	if wt <= 0 {
		return context.WithCancel(r.Context())
	}
	start := startOf(w)
	bound := start.Add(s.cfg.Server.DecideWithin())
	now := time.Now()
	if now.Before(bound) {
		return context.WithDeadline(r.Context(), bound)
	}
	// A too-late request's caches may still answer until WRITE_TIMEOUT
	// less what writing the answer needs (lateLookup): lateReserve
	// without an evaluation, at least lateMargin. Bounded at WRITE_TIMEOUT
	// itself, a slow L2 read (L2_TIMEOUT may be up to 10s) ended where
	// nothing can be written any more, its answer counted, logged and
	// lost (review).
	tooLateCtx := context.WithValue(r.Context(), lateUntilKey{}, start.Add(wt-lateReserve(wt, 0)))
	if isBatch(w) {
		return context.WithDeadlineCause(tooLateCtx, bound, admission.ErrLate)
	}
	late := start.Add(wt - lateReserve(wt, s.cfg.Policy.EvalTimeout))
	if !now.Before(late) {
		return context.WithDeadlineCause(tooLateCtx, late, admission.ErrLate)
	}
	return context.WithDeadline(r.Context(), late)
}

// lateMargin is what lateReserve keeps beyond EVAL_TIMEOUT: the write of
// one small answer (far less than a millisecond) and the scheduling of its
// handler on a machine busy with evaluations, a few of Go's 10 ms slices.
const lateMargin = 50 * time.Millisecond

// lateReserve is what a single request whose body came after the decision
// window keeps of WRITE_TIMEOUT for its answer: the late bound is
// WRITE_TIMEOUT less it. It is the larger of
//
//   - a quarter of the window's own reserve (WRITE_TIMEOUT less
//     DecideWithin), so 250 ms from a WRITE_TIMEOUT of 10 s up: a wait
//     shed at the bound must be woken and its handler scheduled on a busy
//     machine, and
//   - EVAL_TIMEOUT and lateMargin: an evaluation that finds a free slot
//     just before the bound runs in the request's goroutine, bounded by
//     EVAL_TIMEOUT alone (admission does not watch the deadline then), and
//     was decided, counted and logged with its answer then cut off by
//     WRITE_TIMEOUT when the reserve was shorter than EVAL_TIMEOUT,
//
// and at most the window's reserve: the late bound is never before the
// window's end. When EVAL_TIMEOUT does not fit in the window's reserve,
// the late bound is the window's end, and a single request whose body
// came after the window is too late, as a batch's is.
func lateReserve(writeTimeout, evalTimeout time.Duration) time.Duration {
	reserve := min(writeTimeout/10, time.Second)
	return min(reserve, max(reserve/4, evalTimeout+lateMargin))
}

// isBatch reports whether w answers a batch (route.batch).
func isBatch(w http.ResponseWriter) bool {
	sw, ok := w.(*statusWriter)
	return ok && sw.batch
}

// tooLate reports whether ctx is a too-late request's: its deadline passed
// before it was asked anything, with cause admission.ErrLate (its body
// arrived when even its late bound had passed: a single request's
// WRITE_TIMEOUT less lateReserve, a batch's the decision window). No load
// refused it, so its answer says so rather than that the service is
// overloaded (which admission, refusing its passed deadline, says), and it
// is counted as shed for reason "late", which ACGSShedding does not page
// on: adding instances does not make a client send sooner.
func tooLate(ctx context.Context) bool {
	return ctx.Err() != nil && errors.Is(context.Cause(ctx), admission.ErrLate)
}

// lateUntilKey keys how long a too-late request's cache lookups may run
// (its start plus WRITE_TIMEOUT, less time to write its answer) in its
// context, set by decisionContext.
type lateUntilKey struct{}

// lateLookup is the context a too-late request's cache lookups run under:
// detached from its deadline, which has passed (under it an L2 read gives
// up at once and misses, and a decision only L2 held was refused as late,
// when a cache hit is never shed), and bounded before its WRITE_TIMEOUT,
// past which no answer is written; each L2 read is bounded by L2_TIMEOUT
// too.
// Only the lookups: evaluations and admission stay under ctx, which has
// ended, so what the caches do not hold is refused as late.
func lateLookup(ctx context.Context) (context.Context, context.CancelFunc) {
	until, ok := ctx.Value(lateUntilKey{}).(time.Time)
	if !ok {
		return ctx, func() {}
	}
	return context.WithDeadline(context.WithoutCancel(ctx), until)
}

// lateErr is err as the answer states it: a shed decision of a request
// whose body came too late (tooLate) says so.
func lateErr(ctx context.Context, err error) error {
	if admission.Overloaded(err) && admission.ReasonOf(err) != admission.ReasonCanceled && errors.Is(context.Cause(ctx), admission.ErrLate) {
		return apierror.Wrap(apierror.Overloaded, admission.ErrLate, "not decided: %s; send the body sooner or retry", admission.ErrLate)
	}
	return err
}

// decide asks the engine and records the decision in metrics and the audit
// log. Errors come back in the result: callers fail closed.
//
// A too-late request (tooLate) is answered as a late batch's item is: from
// the caches (L1 and L2, looked up under lateLookup) or a constant plan
// when they hold its decision, refused as late otherwise, through
// DecideBatchLookingUp, which asks admission nothing past the deadline.
// Decide would ask admission for a miss, which refuses it and counts the
// refusal as a deadline's in acgs_admission_refused_total, a sign of
// overload that no load caused.
func (s *Server) decide(ctx context.Context, path string, input any, batchID string) decided {
	start := time.Now()
	var d engine.Decision
	var err error
	if tooLate(ctx) {
		lookup, cancel := lateLookup(ctx)
		ds, errs := s.d.Engine.DecideBatchLookingUp(ctx, lookup, path, []any{input})
		cancel()
		d, err = ds[0], errs[0]
	} else {
		d, err = s.d.Engine.Decide(ctx, path, input)
	}
	return s.record(ctx, path, input, batchID, d, err, start, time.Since(start))
}

// decideMany answers a batch through the engine's batch path (one L2 round
// trip for all L1 misses, parallel evaluation), in input order. A too-late
// batch's lookups run under lateLookup, as a single request's (decide).
func (s *Server) decideMany(ctx context.Context, path string, inputs []any, batchID string) []decided {
	start := time.Now()
	lookup, cancel := ctx, context.CancelFunc(func() {})
	if tooLate(ctx) {
		lookup, cancel = lateLookup(ctx)
	}
	ds, errs := s.d.Engine.DecideBatchLookingUp(ctx, lookup, path, inputs)
	cancel()
	took := time.Since(start)
	out := make([]decided, len(inputs))
	for i := range inputs {
		out[i] = s.record(ctx, path, inputs[i], batchID, ds[i], errs[i], start, took)
	}
	return out
}

// record gives a decision its id and counts and logs it. (A raw-body tier
// hit does the part of this it needs itself: rawLookup.)
func (s *Server) record(ctx context.Context, path string, input any, batchID string, d engine.Decision, err error, start time.Time, took time.Duration) decided {
	outcome := outcomeOf(d, err)
	err = lateErr(ctx, err)
	out := decided{Decision: d, ID: telemetry.NewDecisionID(), Err: err}
	src := d.Source.String()
	if err != nil {
		src = s.countFailure(err)
	}
	s.d.Metrics.ObserveDecision(path, outcome, src, took)
	if s.d.DecisionLog != nil {
		rl := requestLogOf(ctx)
		ev := &telemetry.DecisionEvent{
			DecisionID:         out.ID,
			BatchDecisionID:    batchID,
			Path:               path,
			Input:              input,
			Timestamp:          start.UTC(),
			CacheTier:          d.Source.CacheTier(),
			ConstitutionalHash: s.hash,
			Metrics:            map[string]any{"timer_server_decision_ns": took.Nanoseconds(), "timer_rego_query_eval_ns": d.EvalNS},
			Labels:             map[string]string{"source": src},
		}
		if rl != nil {
			ev.RequestID = rl.id
			if input != nil {
				ev.InputSize = rl.inputSize
			}
		}
		if d.Defined {
			ev.Result = d.Result
		}
		if d.Revision != "" {
			ev.Bundles = map[string]telemetry.BundleInfo{"acgs": {Revision: d.Revision}}
		}
		if err != nil {
			ev.Error = err.Error()
		}
		s.d.DecisionLog.Log(ev)
	}
	return out
}

// countFailure counts a decision that failed by its cause (shed, an
// evaluation timeout or error) and returns its source label for
// ObserveDecision. The cache warm-up counts its evaluations' timeouts and
// errors here too, without counting its decisions; not its sheds, which
// are no client's (Warm).
//
// A decision not made because its request was cancelled (its client went
// away) while it waited for an evaluation slot or for a shared evaluation
// (admission.ReasonCanceled) is answered as an overloaded one is (nobody
// reads the answer), but it is not shed: the service refused nothing, so
// it is counted apart (acgs_decisions_canceled_total, outcome and source
// "canceled"). A shed one is counted by its reason (admission.ReasonOf),
// as the gateway counts its own.
func (s *Server) countFailure(err error) (source string) {
	switch {
	case admission.ReasonOf(err) == admission.ReasonCanceled:
		s.d.Metrics.Canceled()
		return "canceled"
	case admission.Overloaded(err):
		s.d.Metrics.Shed(admission.ReasonOf(err))
		return "shed"
	case errors.Is(err, engine.ErrEvalTimeout):
		s.d.Metrics.EvalTimeout()
	case apierror.CodeOf(err) == apierror.EvaluationError:
		s.d.Metrics.EvalError()
	}
	return "error"
}

// retryAfter is the Retry-After of an overloaded answer (admission.Overloaded:
// a decision not made because no evaluation slot was free in time), in
// seconds: the shortest the header can say; a queue that overflowed has
// usually drained well within it. Such a decision is answered 503 with
// Retry-After in every dialect (the ACGS body still says "allow": false),
// never as a denial.
const retryAfter = "1"

// outcomeOf labels a decision for metrics: allow or deny for booleans and
// objects with an allow field, undefined, overloaded (not evaluated: shed
// by admission control), canceled (not evaluated: the client went away
// while it waited; answered as overloaded, counted apart: countFailure),
// error, or defined for other values.
func outcomeOf(d engine.Decision, err error) string {
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
