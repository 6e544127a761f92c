// Package engine embeds OPA: it activates a policy bundle into an immutable
// snapshot (revision, compiler, store, prepared queries, partial-evaluation
// plans) swapped atomically, and answers Decide through the decision cache,
// single flight, the plan cache and full evaluation, failing closed. It knows
// nothing of HTTP.
package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/topdown/builtins"
	"golang.org/x/sync/singleflight"

	"github.com/acgs-lite/acgs/internal/apierror"
	"github.com/acgs-lite/acgs/internal/cache"
	"github.com/acgs-lite/acgs/internal/jsoneq"
)

// Cache is what the engine needs of the decision cache (*cache.Tiered).
type Cache interface {
	Get(ctx context.Context, k cache.Key) (cache.Value, cache.Tier, bool)
	GetMany(ctx context.Context, keys []cache.Key, vals []cache.Value, tiers []cache.Tier, found []bool)
	Set(k cache.Key, v cache.Value)
	Purge()
}

var _ Cache = (*cache.Tiered)(nil)

// Source says what produced a decision.
type Source uint8

// Sources of a decision, fastest first.
const (
	SourceFull Source = iota
	SourceL1
	SourceL2
	SourcePlanConstant
	SourcePlanResidual
	SourceVM // the compiled evaluator (full evaluation on the Rego VM)
)

// String is the metric label of the source.
func (s Source) String() string {
	switch s {
	case SourceL1:
		return "l1"
	case SourceL2:
		return "l2"
	case SourcePlanConstant:
		return "plan_constant"
	case SourcePlanResidual:
		return "plan_residual"
	case SourceVM:
		return "vm"
	default:
		return "full"
	}
}

// CacheTier is the API's cache_tier: none, l1 or l2.
func (s Source) CacheTier() string {
	switch s {
	case SourceL1:
		return "l1"
	case SourceL2:
		return "l2"
	default:
		return "none"
	}
}

// Partial reports whether a partial-evaluation plan decided.
func (s Source) Partial() bool { return s == SourcePlanConstant || s == SourcePlanResidual }

// Decision is the answer for one input.
type Decision struct {
	Result   any // decoded JSON value of the policy; nil when undefined; shared, never mutate
	Defined  bool
	Revision string
	Source   Source
	EvalNS   int64  // time in OPA evaluation; 0 when a cache or a constant plan answered
	JSON     []byte // Result encoded as JSON when known (cached and constant decisions); nil otherwise
}

// Options configure an engine.
type Options struct {
	ConstitutionalHash string
	EvalTimeout        time.Duration
	Cache              Cache // nil: no decision cache
	Logger             *slog.Logger
	// PartialEval turns on partial-evaluation plans, specialised on
	// PartialEvalKeys (refs such as input.type), at most PlanCacheSize kept.
	PartialEval     bool
	PartialEvalKeys []string
	PlanCacheSize   int
	// MaxResidualPlans bounds the residual plans kept at once (each holds a
	// compiled copy of the modules it reaches, under a megabyte for the
	// constitution); beyond it a new residual is a fallback. 0: constants only.
	MaxResidualPlans int
	// PlanVerifyEvery: every so many decisions a residual plan answers, the
	// same input is also evaluated in full. A disagreement
	// demotes the plan (and is logged as an error); so does a residual that,
	// over its first eight such samples, took longer in total than full
	// evaluation. The first decision of every residual is always checked.
	// 0: only the first (PLAN_VERIFY_EVERY's default is 1,024).
	PlanVerifyEvery int
	// Compiled evaluates decisions on the compiled evaluator (internal/vm:
	// OPA's plan run by the Rego VM) wherever it can run the query, and with
	// topdown elsewhere (logged at preparation, shown by Evaluators).
	// EvaluateFull, the reference of the differential tests, stays topdown.
	Compiled bool
	// OnEvaluator is told which evaluator ran each evaluation ("vm" or
	// "topdown") that no cache or constant plan answered.
	OnEvaluator func(evaluator string)
	// OnKey is told, for every decision looked up in the cache, how its
	// key was made (on the read set, on the whole input, or not cached).
	OnKey func(KeyKind)
	// OnPlan is told the plan kind of every decision a plan was looked up for.
	OnPlan func(kind string)

	// keepSlowResiduals keeps a residual plan that its first input shows
	// slower than full evaluation (it must still agree with it), so that
	// differential tests exercise residuals on every input. Tests set it
	// through KeepSlowResiduals (export_test.go); it is no setting.
	keepSlowResiduals bool
	// Admit, when set, is asked for a slot before every evaluation that
	// neither the cache nor a constant plan answered, and release is called
	// when it ends. An error (an *apierror.Error with code Overloaded) means
	// no slot was free in time: the decision is not made and the caller
	// must not present it as a denial. The wait is bounded by ctx.
	Admit func(ctx context.Context) (release func(), err error)
	// OnReload is told the result of every activation attempt ("success" or "failure").
	OnReload func(result string, revision string, err error)
}

// Engine answers policy decisions from the active snapshot.
type Engine struct {
	opts   Options
	source BundleSource
	cur    atomic.Pointer[snapshot]
	sf     singleflight.Group
	reload sync.Mutex
	log    *slog.Logger

	lastErr atomic.Pointer[reloadError]
}

type reloadError struct {
	err error
	at  time.Time
}

// New loads and activates the first bundle from src; it fails when that
// bundle cannot be loaded, compiled or verified.
func New(ctx context.Context, src BundleSource, opts Options) (*Engine, error) {
	if opts.EvalTimeout <= 0 {
		opts.EvalTimeout = 100 * time.Millisecond
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	e := &Engine{opts: opts, source: src, log: opts.Logger}
	if src != nil {
		if err := e.Reload(ctx); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// Reload loads the bundle from the engine's source and activates it. On any
// failure the active snapshot stays in place.
func (e *Engine) Reload(ctx context.Context) error {
	if e.source == nil {
		return errors.New("no bundle source configured")
	}
	b, err := e.source.Load(ctx)
	if err != nil {
		e.failed(err)
		return err
	}
	return e.Activate(ctx, b, e.source.String())
}

// Activate compiles and verifies b and makes it the active policy. The old
// snapshot keeps serving until the swap; the decision cache is purged after
// it (keys are revision-scoped anyway, so no old entry can answer).
func (e *Engine) Activate(ctx context.Context, b *bundle.Bundle, source string) error {
	e.reload.Lock()
	defer e.reload.Unlock()
	s, err := activate(ctx, b, e.opts.ConstitutionalHash, source)
	if err == nil {
		err = s.prepareDefaults(ctx)
	}
	if err == nil && e.opts.Compiled {
		for _, p := range s.entryPoints {
			s.compiled(ctx, p, e.log)
		}
	}
	if err == nil && e.opts.PartialEval {
		maxResidual := e.opts.MaxResidualPlans
		if e.opts.Compiled {
			// The compiled evaluator runs the whole policy faster than
			// topdown runs a residual: only constant plans still pay.
			maxResidual = 0
		}
		s.plans = newPlanner(s, e.opts.PartialEvalKeys, e.opts.PlanCacheSize, maxResidual, s.parsed)
		s.plans.log = func(msg string, args ...any) { e.log.Warn(msg, args...) }
		// Built before the swap so that even the first requests of the new
		// revision for the bundle's listed actions are answered by plans.
		e.buildActivationPlans(ctx, s, b.Data)
	}
	if err != nil {
		e.failed(err)
		return err
	}
	e.lastErr.Store(nil) // before the swap: whoever sees the new revision sees no stale error
	old := e.cur.Swap(s)
	if e.opts.Cache != nil {
		e.opts.Cache.Purge()
	}
	oldRev := ""
	if old != nil {
		oldRev = old.revision
	}
	e.log.Info("policy bundle activated", "revision", s.revision, "previous_revision", oldRev, "source", source, "modules", len(s.modules))
	e.logReadSets(s)
	if e.opts.OnReload != nil {
		e.opts.OnReload("success", s.revision, nil)
	}
	return nil
}

func (e *Engine) failed(err error) {
	e.lastErr.Store(&reloadError{err: err, at: time.Now()})
	e.log.Error("policy bundle refused; the previous one stays active", "error", err)
	if e.opts.OnReload != nil {
		e.opts.OnReload("failure", "", err)
	}
}

// prepareDefaults prepares the entry points of the constitution so the first
// request does not pay for it.
func (s *snapshot) prepareDefaults(ctx context.Context) error {
	s.entryPoints = []string{"acgs/main/decision", "acgs/main/allow"}
	for _, p := range s.entryPoints {
		if _, err := s.query(ctx, p); err != nil {
			return err
		}
		s.reads.get(p)
	}
	return nil
}

// Info describes the active policy.
type Info struct {
	Revision           string
	Scope              string
	ConstitutionalHash string
	Activated          time.Time
	Source             string
	Roots              []string
	LastError          error
	LastErrorAt        time.Time
}

// Info returns what is active; ok is false before the first activation.
func (e *Engine) Info() (Info, bool) {
	s := e.cur.Load()
	var inf Info
	if le := e.lastErr.Load(); le != nil {
		inf.LastError, inf.LastErrorAt = le.err, le.at
	}
	if s == nil {
		return inf, false
	}
	inf.Revision, inf.Scope, inf.ConstitutionalHash = s.revision, s.scope, s.hash
	inf.Activated, inf.Source, inf.Roots = s.activated, s.source, s.roots
	return inf, true
}

// Modules returns the active policy modules.
func (e *Engine) Modules() []Module {
	if s := e.cur.Load(); s != nil {
		return s.modules
	}
	return nil
}

// Decide answers the policy at path (e.g. "acgs/main/decision") for input,
// a decoded JSON value. Errors are *apierror.Error; on error there is no
// decision and callers must deny.
func (e *Engine) Decide(ctx context.Context, path string, input any) (Decision, error) {
	s := e.cur.Load()
	if s == nil {
		return Decision{}, apierror.New(apierror.Unavailable, "no policy bundle is active")
	}
	c := e.opts.Cache
	if c == nil {
		return e.evaluate(ctx, s, path, input)
	}
	key, kind, ok := s.key(path, input)
	e.onKey(kind)
	if !ok {
		return e.evaluate(ctx, s, path, input)
	}
	if v, tier, ok := c.Get(ctx, key); ok {
		src := SourceL1
		if tier == cache.TierL2 {
			src = SourceL2
		}
		return Decision{Result: v.Result, Defined: v.Defined, Revision: s.revision, Source: src, JSON: v.JSON}, nil
	}
	return e.decideMiss(ctx, s, key, path, input)
}

type flightResult struct {
	d         Decision
	cacheable bool
}

// decideMiss evaluates once per key however many requests miss at the same
// time. The shared evaluation is detached from any one caller's cancellation
// and bounded by EVAL_TIMEOUT instead.
func (e *Engine) decideMiss(ctx context.Context, s *snapshot, key cache.Key, path string, input any) (Decision, error) {
	var kb [16]byte
	putKey(&kb, key)
	ch := e.sf.DoChan(string(kb[:]), func() (any, error) {
		d, cacheable, err := e.eval(context.WithoutCancel(ctx), s, path, input)
		if err != nil {
			return nil, err
		}
		if cacheable && e.cur.Load() == s {
			if d.JSON == nil && d.Defined {
				d.JSON, _ = json.Marshal(d.Result) // once per miss, so that every hit is written without encoding
			}
			e.opts.Cache.Set(key, cache.Value{Result: d.Result, Defined: d.Defined, JSON: d.JSON})
		}
		return flightResult{d: d, cacheable: cacheable}, nil
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return Decision{}, r.Err
		}
		return r.Val.(flightResult).d, nil
	case <-ctx.Done():
		// The request's deadline passed (or it was cancelled) while the
		// shared evaluation was still waiting for an admission slot or
		// running: nothing was decided for it, so it is overloaded (503,
		// Retry-After), never a denial.
		return Decision{}, apierror.Wrap(apierror.Overloaded, ctx.Err(), "no decision before the request's deadline: the shared evaluation was still queued or running (%v); retry later", ctx.Err())
	}
}

func putKey(b *[16]byte, k cache.Key) {
	for i := 0; i < 8; i++ {
		b[i] = byte(k.Hi >> (8 * i))
		b[8+i] = byte(k.Lo >> (8 * i))
	}
}

// evaluate runs the policy without the cache.
func (e *Engine) evaluate(ctx context.Context, s *snapshot, path string, input any) (Decision, error) {
	d, _, err := e.eval(ctx, s, path, input)
	return d, err
}

// eval answers a cache miss: through a partial-evaluation plan when one
// exists and pays, else by full evaluation, with the deadline and fail-closed
// error mapping. cacheable is false when a non-deterministic built-in ran.
func (e *Engine) eval(ctx context.Context, s *snapshot, path string, input any) (Decision, bool, error) {
	var pl *plan
	if s.plans != nil {
		// A constant plan answers before the input is even converted.
		if pl = s.plans.get(path, input); pl != nil && pl.Kind() == PlanConstant {
			e.onPlan(PlanConstant)
			return Decision{Result: pl.value, Defined: pl.defined, Revision: s.revision, Source: SourcePlanConstant, JSON: pl.json}, true, nil
		}
	}
	var in ast.Value
	if input != nil {
		v, err := ast.InterfaceToValue(input)
		if err != nil {
			return Decision{}, false, apierror.Wrap(apierror.InvalidParameter, err, "input is not a JSON value: %v", err)
		}
		in = v
	}
	if e.opts.Admit != nil {
		release, err := e.opts.Admit(ctx)
		if err != nil {
			return Decision{}, false, err
		}
		defer release()
	}
	ctx, cancel := context.WithTimeout(ctx, e.opts.EvalTimeout)
	defer cancel()
	if e.opts.Compiled {
		if pq := s.compiled(ctx, path, e.log); pq != nil {
			// The VM runs the whole policy faster than topdown runs any
			// residual, so residual plans are not consulted.
			if pl != nil {
				e.onPlan(PlanFallback)
			}
			e.onEvaluator("vm")
			return e.evalPrepared(ctx, s, pq, in, SourceVM)
		}
	}
	e.onEvaluator("topdown")
	if pl != nil {
		if pl.Kind() == PlanResidual {
			if d, cacheable, ok, err := e.evalPlan(ctx, s, pl, path, in); ok || err != nil {
				return d, cacheable, err
			}
		}
		e.onPlan(PlanFallback)
	}
	return e.evalFull(ctx, s, path, in)
}

// evalFull evaluates the prepared topdown query of path.
func (e *Engine) evalFull(ctx context.Context, s *snapshot, path string, in ast.Value) (Decision, bool, error) {
	pq, err := s.query(ctx, path)
	if err != nil {
		return Decision{}, false, err
	}
	return e.evalPrepared(ctx, s, pq, in, SourceFull)
}

// evalPrepared evaluates a prepared query of the whole document (topdown's
// or the VM's) on in, failing closed.
func (e *Engine) evalPrepared(ctx context.Context, s *snapshot, pq *rego.PreparedEvalQuery, in ast.Value, src Source) (Decision, bool, error) {
	var err error
	ndb := builtins.NDBCache{}
	start := time.Now()
	var rs rego.ResultSet
	if in != nil {
		rs, err = pq.Eval(ctx, rego.EvalParsedInput(in), rego.EvalNDBuiltinCache(ndb))
	} else {
		rs, err = pq.Eval(ctx, rego.EvalNDBuiltinCache(ndb))
	}
	took := time.Since(start)
	if err != nil {
		return Decision{}, false, evalError(err, ctx, e.opts.EvalTimeout)
	}
	d := Decision{Revision: s.revision, Source: src, EvalNS: took.Nanoseconds()}
	if len(rs) > 0 && len(rs[0].Expressions) > 0 {
		d.Result, d.Defined = rs[0].Expressions[0].Value, true
	}
	return d, len(ndb) == 0, nil
}

// evalPlan evaluates a residual plan. The first input that reaches a plan
// also runs full evaluation: the plan is kept only if it gave the same
// decision and was faster (best of three each); otherwise it becomes a
// fallback. ok is false when full evaluation must answer.
func (e *Engine) evalPlan(ctx context.Context, s *snapshot, pl *plan, path string, in ast.Value) (Decision, bool, bool, error) {
	if in == nil {
		return Decision{}, false, false, nil
	}
	ndb := builtins.NDBCache{}
	start := time.Now()
	val, defined, ok, err := evalResidual(ctx, pl, in, ndb)
	took := time.Since(start)
	if err != nil {
		return Decision{}, false, false, evalError(err, ctx, e.opts.EvalTimeout)
	}
	if !ok {
		return Decision{}, false, false, nil
	}
	d := Decision{Result: val, Defined: defined, Revision: s.revision, Source: SourcePlanResidual, EvalNS: took.Nanoseconds()}
	uses := pl.uses.Add(1)
	if pl.measured.CompareAndSwap(false, true) {
		full, disagreed, err := e.checkResidual(ctx, s, pl, path, in, d)
		if err != nil {
			return Decision{}, false, false, err
		}
		if disagreed {
			return full, len(ndb) == 0, true, nil
		}
		residualBest, fullBest := took, time.Duration(full.EvalNS)
		for i := 0; i < 2; i++ {
			t0 := time.Now()
			_, _, _, _ = evalResidual(ctx, pl, in, builtins.NDBCache{})
			residualBest = min(residualBest, time.Since(t0))
			f, _, _ := e.evalFull(ctx, s, path, in)
			fullBest = min(fullBest, time.Duration(f.EvalNS))
		}
		if residualBest >= fullBest && !e.opts.keepSlowResiduals {
			s.plans.demote(pl)
			e.log.Debug("residual plan is not faster than full evaluation; using full evaluation", "path", path, "residual", residualBest, "full", fullBest)
			full.Source = SourceFull
			return full, len(ndb) == 0, true, nil
		}
	} else if every := e.opts.PlanVerifyEvery; every > 0 && uses%uint64(every) == 0 {
		// A sampled decision; a failed full evaluation proves nothing and
		// the residual's answer stands.
		if full, disagreed, err := e.checkResidual(ctx, s, pl, path, in, d); err == nil {
			if disagreed {
				return full, len(ndb) == 0, true, nil
			}
			e.judgeSample(s, pl, path, d.EvalNS, full.EvalNS)
		}
	}
	e.onPlan(PlanResidual)
	return d, len(ndb) == 0, true, nil
}

// checkResidual evaluates in full the input of residual decision d and
// demotes the plan when the two disagree, in value or in the text of a
// number (1 and 1.0: a client sees the text), logged as an error: a plan
// must never be wrong. The caller then answers with full.
func (e *Engine) checkResidual(ctx context.Context, s *snapshot, pl *plan, path string, in ast.Value, d Decision) (full Decision, disagreed bool, err error) {
	full, _, err = e.evalFull(ctx, s, path, in)
	if err != nil {
		return Decision{}, false, err
	}
	if full.Defined != d.Defined || !jsoneq.SameText(full.Result, d.Result) {
		s.plans.demote(pl)
		e.log.Error("partial-evaluation plan disagreed with full evaluation; plan disabled", "path", path)
		return full, true, nil
	}
	return full, false, nil
}

// verifySamples is how many sampled timings judge a residual's speed.
const verifySamples = 8

// judgeSample adds one sampled pair of timings to pl; at the verifySamples-th
// it demotes a residual that took longer in total than full evaluation (the
// first input alone can be unrepresentative of the traffic a plan sees).
func (e *Engine) judgeSample(s *snapshot, pl *plan, path string, residualNS, fullNS int64) {
	pl.residualNS.Add(residualNS)
	pl.fullNS.Add(fullNS)
	if pl.samples.Add(1) == verifySamples && pl.residualNS.Load() >= pl.fullNS.Load() && !e.opts.keepSlowResiduals {
		s.plans.demote(pl)
		e.log.Debug("residual plan was slower than full evaluation on sampled decisions; using full evaluation", "path", path,
			"residual", time.Duration(pl.residualNS.Load()), "full", time.Duration(pl.fullNS.Load()))
	}
}

func (e *Engine) onEvaluator(name string) {
	if e.opts.OnEvaluator != nil {
		e.opts.OnEvaluator(name)
	}
}

func (e *Engine) onPlan(kind string) {
	if e.opts.OnPlan != nil {
		e.opts.OnPlan(kind)
	}
}

// ErrEvalTimeout is wrapped by evaluation errors caused by EVAL_TIMEOUT.
var ErrEvalTimeout = errors.New("policy evaluation exceeded EVAL_TIMEOUT")

func evalError(err error, ctx context.Context, timeout time.Duration) error {
	if ctx.Err() != nil {
		return apierror.Wrap(apierror.EvaluationError, fmt.Errorf("%w: %w", ErrEvalTimeout, err), "policy evaluation exceeded EVAL_TIMEOUT (%s)", timeout)
	}
	return apierror.Wrap(apierror.EvaluationError, err, "policy evaluation failed: %v", err)
}

// String describes the engine for logs.
func (e *Engine) String() string {
	if s := e.cur.Load(); s != nil {
		return fmt.Sprintf("engine(revision=%s)", s.revision)
	}
	return "engine(inactive)"
}

// EvaluateFull evaluates input without the cache or plans: the reference
// that every fast path must equal (differential tests use it).
func (e *Engine) EvaluateFull(ctx context.Context, path string, input any) (Decision, error) {
	s := e.cur.Load()
	if s == nil {
		return Decision{}, apierror.New(apierror.Unavailable, "no policy bundle is active")
	}
	var in ast.Value
	if input != nil {
		v, err := ast.InterfaceToValue(input)
		if err != nil {
			return Decision{}, apierror.Wrap(apierror.InvalidParameter, err, "input is not a JSON value: %v", err)
		}
		in = v
	}
	ctx, cancel := context.WithTimeout(ctx, e.opts.EvalTimeout)
	defer cancel()
	d, _, err := e.evalFull(ctx, s, path, in)
	return d, err
}

// PlanKind returns the kind of the plan that input at path would use now
// ("constant", "residual", "fallback"), or "" when it has none yet (looking
// starts a build in the background).
func (e *Engine) PlanKind(path string, input any) string {
	s := e.cur.Load()
	if s == nil || s.plans == nil {
		return ""
	}
	if pl := s.plans.get(path, input); pl != nil {
		return pl.Kind()
	}
	return ""
}

// DecideBatch answers many inputs for one path: one L2 round trip for all
// the L1 misses, then the remaining misses evaluated in parallel (single
// flight, plans) on GOMAXPROCS workers. Results and errors are in input order.
func (e *Engine) DecideBatch(ctx context.Context, path string, inputs []any) ([]Decision, []error) {
	out := make([]Decision, len(inputs))
	errs := make([]error, len(inputs))
	s := e.cur.Load()
	if s == nil {
		for i := range errs {
			errs[i] = apierror.New(apierror.Unavailable, "no policy bundle is active")
		}
		return out, errs
	}
	c := e.opts.Cache
	if c == nil {
		parallel(len(inputs), func(i int) { out[i], errs[i] = e.evaluate(ctx, s, path, inputs[i]) })
		return out, errs
	}
	keys := make([]cache.Key, 0, len(inputs))
	idx := make([]int, 0, len(inputs))
	var direct []int
	for i, in := range inputs {
		k, kind, ok := s.key(path, in)
		e.onKey(kind)
		if !ok {
			direct = append(direct, i)
			continue
		}
		keys = append(keys, k)
		idx = append(idx, i)
	}
	vals := make([]cache.Value, len(keys))
	tiers := make([]cache.Tier, len(keys))
	found := make([]bool, len(keys))
	c.GetMany(ctx, keys, vals, tiers, found)
	var miss []int // positions in keys
	for j, ok := range found {
		if !ok {
			miss = append(miss, j)
			continue
		}
		src := SourceL1
		if tiers[j] == cache.TierL2 {
			src = SourceL2
		}
		out[idx[j]] = Decision{Result: vals[j].Result, Defined: vals[j].Defined, Revision: s.revision, Source: src, JSON: vals[j].JSON}
	}
	parallel(len(miss)+len(direct), func(m int) {
		if m < len(miss) {
			j := miss[m]
			out[idx[j]], errs[idx[j]] = e.decideMiss(ctx, s, keys[j], path, inputs[idx[j]])
			return
		}
		i := direct[m-len(miss)]
		out[i], errs[i] = e.evaluate(ctx, s, path, inputs[i])
	})
	return out, errs
}

// parallel runs f(i) for i in [0,n) on at most GOMAXPROCS goroutines.
func parallel(n int, f func(i int)) {
	workers := min(runtime.GOMAXPROCS(0), n)
	if workers <= 1 {
		for i := 0; i < n; i++ {
			f(i)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				f(i)
			}
		}()
	}
	wg.Wait()
}
