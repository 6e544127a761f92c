package server

import (
	"context"
	"net/http"
	"time"

	"github.com/acgs-lite/acgs/internal/admission"
	"github.com/acgs-lite/acgs/internal/engine"
	"github.com/acgs-lite/acgs/internal/telemetry"
	"github.com/acgs-lite/acgs/internal/telemetry/decisionmetrics"
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
// passed is it too late (lateUntil): its answer could not be written. A
// batch keeps the window's bound: its answer, up to MAX_BATCH_ITEMS
// items each logged, needs the window's whole reserve; one whose body came
// after the window is too late at once. A too-late request's context is
// done when it is made, with cause lateCause, which says until when its
// caches may still answer: it is the one place its lateness is kept.
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
	// less what writing the answer needs: lateReserve without an
	// evaluation, at least lateMargin. Bounded at WRITE_TIMEOUT itself, a
	// slow L2 read (L2_TIMEOUT may be up to 10s) ended where nothing can
	// be written any more, its answer counted, logged and lost (review).
	tooLate := lateCause{lookupUntil: start.Add(wt - lateReserve(wt, 0))}
	if isBatch(w) {
		return context.WithDeadlineCause(r.Context(), bound, tooLate)
	}
	late := start.Add(wt - lateReserve(wt, s.cfg.Policy.EvalTimeout))
	if !now.Before(late) {
		return context.WithDeadlineCause(r.Context(), late, tooLate)
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

// lateCause is a too-late request's cause (decisionContext): its body
// arrived when even its late bound had passed (a single request's
// WRITE_TIMEOUT less lateReserve, a batch's the decision window), so its
// decisions are not made, only answered from the caches and constant
// plans (engine.DecideCached) until lookupUntil. What they do not hold is
// refused as late (engine.TooLate, admission.ErrLate, which lateCause
// wraps): no load refused it, so its answer says so rather than that the
// service is overloaded (which admission, refusing its passed deadline,
// says), and it is counted as shed for reason "late", which ACGSShedding
// does not page on: adding instances does not make a client send sooner.
type lateCause struct {
	// lookupUntil bounds the request's cache lookups: its start plus
	// WRITE_TIMEOUT, less time to write its answer.
	lookupUntil time.Time
}

func (lateCause) Error() string { return admission.ErrLate.Error() }
func (lateCause) Unwrap() error { return admission.ErrLate }

// lateUntil reports whether ctx is a too-late request's (lateCause), and
// until when its cache lookups may run.
//
// decisionContext sets the cause itself, unwrapped, so a type assertion
// finds it; errors.As would need c's address, which moved c to the heap on
// every decision, late or not (review).
func lateUntil(ctx context.Context) (lookupUntil time.Time, late bool) {
	if ctx.Err() == nil {
		return time.Time{}, false
	}
	c, ok := context.Cause(ctx).(lateCause)
	return c.lookupUntil, ok
}

// decide asks the engine and records the decision in metrics and the audit
// log. Errors come back in the result: callers fail closed.
//
// A too-late request (lateUntil) is answered by engine.DecideCached, as a
// late batch's items are: from the caches (L1 and L2, looked up until its
// lookupUntil) or a constant plan when they hold its decision, refused as
// late otherwise, asking admission nothing. Decide would ask admission for
// a miss, which refuses its passed deadline and counts the refusal as a
// deadline's in acgs_admission_refused_total, a sign of overload that no
// load caused.
func (s *Server) decide(ctx context.Context, path string, input any, batchID string) decided {
	start := time.Now()
	var d engine.Decision
	var err error
	if until, late := lateUntil(ctx); late {
		ds, errs := s.d.Engine.DecideCached(ctx, path, []any{input}, until)
		d, err = ds[0], errs[0]
	} else {
		d, err = s.d.Engine.Decide(ctx, path, input)
	}
	return s.record(ctx, path, input, batchID, d, err, start, time.Since(start))
}

// decideMany answers a batch through the engine's batch path (one L2 round
// trip for all L1 misses, parallel evaluation), in input order; a
// too-late batch through DecideCached, as a single request (decide).
func (s *Server) decideMany(ctx context.Context, path string, inputs []any, batchID string) []decided {
	start := time.Now()
	var ds []engine.Decision
	var errs []error
	if until, late := lateUntil(ctx); late {
		ds, errs = s.d.Engine.DecideCached(ctx, path, inputs, until)
	} else {
		ds, errs = s.d.Engine.DecideBatch(ctx, path, inputs)
	}
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
	outcome := decisionmetrics.Outcome(d, err)
	out := decided{Decision: d, ID: telemetry.NewDecisionID(), Err: err}
	src := d.Source.String()
	if err != nil {
		src = decisionmetrics.CountFailure(s.d.Metrics, err)
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

// retryAfter is the Retry-After of an overloaded answer (admission.Overloaded:
// a decision not made because no evaluation slot was free in time), in
// seconds: the shortest the header can say; a queue that overflowed has
// usually drained well within it. Such a decision is answered 503 with
// Retry-After in every dialect (the ACGS body still says "allow": false),
// never as a denial.
const retryAfter = "1"
