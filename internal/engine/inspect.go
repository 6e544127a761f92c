package engine

import (
	"context"
	"time"

	"github.com/maypok86/otter/v2"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/open-policy-agent/opa/v1/topdown/builtins"

	"github.com/acgs-lite/acgs/internal/apierror"
	"github.com/acgs-lite/acgs/internal/datapath"
)

// Inspection is what a request of OPA's Data API can ask of an evaluation
// beyond its result, and how OPA's server gets it from rego:
// ?strict-builtin-errors (rego.StrictBuiltinErrors), ?explain (a query
// tracer) and ?instrument (rego.EvalInstrument, into Metrics).
type Inspection struct {
	// StrictBuiltinErrors makes a built-in function's error fail the
	// evaluation (topdown's first built-in error, an evaluation error)
	// instead of leaving the expression that called it undefined.
	StrictBuiltinErrors bool
	// Tracer, when set, is given topdown's trace events (?explain: a
	// topdown.BufferTracer, filtered by topdown/lineage).
	Tracer topdown.QueryTracer
	// Metrics, when set, gets OPA's metrics of the evaluation, as OPA's
	// server gathers them: counter_server_query_cache_hit (whether the
	// query was prepared already), timer_rego_query_eval_ns and, with
	// Instrument, topdown's timers, counters and histograms of its
	// operations (timer_eval_op_*, ...).
	Metrics    metrics.Metrics
	Instrument bool
	// TooLate refuses the inspection as too late (TooLate) instead of
	// evaluating it: an inspection is never answered from a cache, so a
	// request whose body came too late has nothing else to give. Without
	// an active policy it is unavailable first, and a path naming a
	// function is refused, as DecideCached's items are.
	TooLate bool
}

// maxInspectedPaths bounds the queries kept prepared for inspections per
// snapshot, strict and not counted apart: paths come from requests.
const maxInspectedPaths = 256

// inspectedKey names a query prepared for inspections (snapshot's
// inspections), as OPA's server keys its query cache: by
// "strict-builtin-errors::" and path.
type inspectedKey struct {
	path   string
	strict bool
}

// Inspect answers the policy at path for input as OPA's server does with
// what in asks: always by a topdown evaluation of its own, never from the
// decision cache, a constant plan or the compiled evaluator (none of them
// can trace, instrument or tell a built-in error from undefined), and
// never stored in the cache. The evaluation is admitted and bounded by
// EVAL_TIMEOUT as any other; errors are mapped as Decide maps them (a
// strict built-in error is an evaluation error with topdown's details).
//
// in.Tracer and in.Metrics are written by the evaluation: read them only
// when Inspect returned no error (with an overloaded error, an evaluation
// that had started may still be running).
func (e *Engine) Inspect(ctx context.Context, path string, input any, in Inspection) (Decision, error) {
	return e.Inspector().Inspect(ctx, path, input, in)
}

// Inspector inspects decisions of one policy revision: the one that was
// active when Engine.Inspector was called. A batch inspects all its items
// with one Inspector, so that a reload during the batch (SIGHUP, POST
// /v1/admin/reload, a remote bundle) cannot answer some items from the old
// revision and others from the new one: DecideBatch reads the snapshot once
// for the same reason. It keeps that snapshot alive while it is held.
type Inspector struct {
	e *Engine
	s *snapshot // nil: no policy was active
}

// Inspector returns an Inspector of the active revision; without one, its
// inspections fail with unavailable.
func (e *Engine) Inspector() Inspector { return Inspector{e: e, s: e.cur.Load()} }

// Inspect is Engine.Inspect with the Inspector's revision.
func (i Inspector) Inspect(ctx context.Context, path string, input any, in Inspection) (Decision, error) {
	if i.s == nil {
		return Decision{}, apierror.New(apierror.Unavailable, "no policy bundle is active")
	}
	// A path naming a function is refused before anything else, as
	// Decide and DecideCached refuse it: 400, not a shed or a late 503.
	if err := i.s.function(path); err != nil {
		return Decision{}, err
	}
	if in.TooLate {
		return Decision{}, TooLate()
	}
	var d Decision
	var err error
	if _, aerr := i.e.admit(ctx, func() { d, err = i.e.inspectNow(ctx, i.s, path, input, in) }); aerr != nil {
		return Decision{}, aerr
	}
	return d, err
}

// inspectNow is Inspect's evaluation, on an admission slot when there is
// admission control; a panic fails it as evalNow's does.
func (e *Engine) inspectNow(ctx context.Context, s *snapshot, path string, input any, in Inspection) (d Decision, err error) {
	defer func() {
		if r := recover(); r != nil {
			e.log.Error("policy evaluation panicked", "path", path, "panic", r)
			d, err = Decision{}, apierror.New(apierror.EvaluationError, "policy evaluation failed: internal error (%v)", r)
		}
	}()
	var inv ast.Value
	if input != nil {
		v, err := s.inputValue(input)
		if err != nil {
			return Decision{}, apierror.Wrap(apierror.InvalidParameter, err, "input is not a JSON value: %v", err)
		}
		inv = v
	}
	ctx, cancel := context.WithTimeoutCause(ctx, e.opts.EvalTimeout, ErrEvalTimeout)
	defer cancel()
	e.onEvaluator("topdown")
	pq, hit, err := e.inspectedQuery(ctx, s, path, in.StrictBuiltinErrors)
	if in.Metrics != nil {
		c := in.Metrics.Counter(metrics.ServerQueryCacheHit) // 0 unless hit, as OPA's server counts
		if hit {
			c.Incr()
		}
	}
	if err != nil {
		if ctx.Err() != nil { // ended while it was prepared: EVAL_TIMEOUT, or its caller, told apart as in the evaluation
			return Decision{}, evalError(err, ctx, e.opts.EvalTimeout)
		}
		return Decision{}, err
	}
	opts := make([]rego.EvalOption, 0, 5)
	opts = append(opts, rego.EvalNDBuiltinCache(builtins.NDBCache{}))
	if inv != nil {
		opts = append(opts, rego.EvalParsedInput(inv))
	}
	if in.Tracer != nil {
		opts = append(opts, rego.EvalQueryTracer(in.Tracer))
	}
	if in.Metrics != nil {
		opts = append(opts, rego.EvalMetrics(in.Metrics))
	}
	if in.Instrument {
		opts = append(opts, rego.EvalInstrument(true))
	}
	start := time.Now()
	rs, err := pq.Eval(ctx, opts...)
	took := time.Since(start)
	if err != nil {
		return Decision{}, evalError(err, ctx, e.opts.EvalTimeout)
	}
	d = Decision{Revision: s.revision, Source: SourceFull, EvalNS: took.Nanoseconds()}
	if len(rs) > 0 && len(rs[0].Expressions) > 0 {
		d.Result, d.Defined = rs[0].Expressions[0].Value, true
	}
	return d, nil
}

// inspectedQuery returns path's query prepared for inspections of s,
// preparing it on first use; hit says it was prepared before.
//
// It is prepared apart from the query Decide evaluates, as OPA's server
// prepares it: strict built-in errors are an option of the preparation,
// not of the evaluation, and the query is parsed from the path's text
// ("data.a.b") so that its expressions have the location a pretty
// explanation shows ("query:1"), which a query built from the reference
// has not.
func (e *Engine) inspectedQuery(ctx context.Context, s *snapshot, path string, strict bool) (*rego.PreparedEvalQuery, bool, error) {
	k := inspectedKey{path: path, strict: strict}
	if pq, ok := s.inspections.GetIfPresent(k); ok {
		return pq, true, nil
	}
	prepared := false // by this request, not one it waited for
	pq, err := s.inspections.Get(ctx, k, otter.LoaderFunc[inspectedKey, *rego.PreparedEvalQuery](func(ctx context.Context, k inspectedKey) (*rego.PreparedEvalQuery, error) {
		prepared = true
		return s.prepareInspected(ctx, k.path, k.strict)
	}))
	if err != nil && apierror.CodeOf(err) == apierror.InternalError {
		// ctx ended before the preparation began, or while this request
		// waited for another preparing the same query.
		return nil, false, apierror.Wrap(apierror.EvaluationError, err, "preparing query for %q: %v", path, err)
	}
	return pq, err == nil && !prepared, err
}

// prepareInspected prepares path's query for inspections, strict or not.
func (s *snapshot) prepareInspected(ctx context.Context, path string, strict bool) (*rego.PreparedEvalQuery, error) {
	ref, err := datapath.Parse(path)
	if err != nil {
		return nil, err
	}
	// As OPA's server makes it (stringPathToQuery): the reference's text,
	// parsed. A reference whose text does not parse back to itself alone
	// is queried as built.
	body, err := ast.ParseBody(ref.String())
	if t, ok := lone(body, err); !ok || t.Value.Compare(ref) != 0 {
		body = ast.NewBody(ast.NewExpr(ast.NewTerm(ref)))
	}
	return s.prepareBody(ctx, path, body, rego.StrictBuiltinErrors(strict))
}

// lone returns the term of a query of one expression that is a term alone.
func lone(body ast.Body, err error) (*ast.Term, bool) {
	if err != nil || len(body) != 1 {
		return nil, false
	}
	t, ok := body[0].Terms.(*ast.Term)
	return t, ok
}
