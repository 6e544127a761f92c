// Package engine embeds OPA: it activates a policy bundle into an immutable
// snapshot (revision, compiler, store, prepared queries, read sets, constant
// plans) swapped atomically, and answers Decide through the decision cache,
// single flight, constant plans and evaluation (the compiled evaluator,
// topdown for what it cannot run), failing closed. It knows nothing of HTTP
// and no policy: what it prepares at activation comes from the bundle's
// entry-point annotations.
package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/open-policy-agent/opa/v1/topdown/builtins"

	"github.com/acgs-lite/acgs/internal/admission"
	"github.com/acgs-lite/acgs/internal/apierror"
	"github.com/acgs-lite/acgs/internal/cache"
	"github.com/acgs-lite/acgs/internal/parallel"
	"github.com/acgs-lite/acgs/internal/plan"
	"github.com/acgs-lite/acgs/internal/vm"
)

// Cache is what the engine needs of the decision cache (*cache.Tiered).
// The engine counts L1 lookups itself (CountL1), once per request (a
// batch: per distinct key) when its decision is known: a hit exactly when
// the decision's Source is SourceL1, a miss otherwise.
type Cache interface {
	Lookup(ctx context.Context, k cache.Key) (cache.Value, cache.Tier, bool)
	LookupMany(ctx context.Context, keys []cache.Key, vals []cache.Value, tiers []cache.Tier, found []bool)
	Peek(k cache.Key) (cache.Value, bool)
	PeekValue(k cache.Key) (cache.Value, bool)
	CountL1(hits, misses uint64)
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
func (s Source) Partial() bool { return s == SourcePlanConstant }

// Decision is the answer for one input.
type Decision struct {
	Result   any // decoded JSON value of the policy; nil when undefined, and from Lookup unless L1 holds it decoded; shared, never mutate
	Defined  bool
	Revision string
	Source   Source
	EvalNS   int64  // time in OPA evaluation; 0 when a cache or a constant plan answered
	JSON     []byte // Result encoded as JSON when known (cached and constant decisions); nil otherwise
	ref      Ref    // the cache entry the decision was looked up under, when it was
}

// Options configure an engine.
type Options struct {
	ConstitutionalHash string
	EvalTimeout        time.Duration
	Cache              Cache // nil: no decision cache
	Logger             *slog.Logger
	// PartialEval turns on constant plans (internal/plan): decisions that
	// the plan keys alone settle are answered without evaluating. Plan keys
	// are what an entry point's annotation declares (custom.plans), else
	// PartialEvalKeys (refs such as input.type); at most PlanCacheSize kept.
	PartialEval     bool
	PartialEvalKeys []string
	PlanCacheSize   int
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

	// Admit, when set, runs every evaluation that neither the cache nor a
	// constant plan answered (fn) on an evaluation slot, in the caller's
	// goroutine or another (admission.Controller.Do). When fn did not
	// start, err (an *apierror.Error with code Overloaded) means no slot
	// was free in time: the decision is not made and the caller must not
	// present it as a denial. The wait is bounded by ctx; when ctx is done
	// after fn started, Admit may return (started, with an error) while fn
	// runs on.
	Admit func(ctx context.Context, fn func()) (started bool, err error)
	// OnReload is told the result of every activation attempt ("success" or
	// "failure"), and of remote bundle downloads that failed
	// ("download_failure"); active is the policy active after it (zero
	// before the first activation).
	OnReload func(result string, active Info, err error)
}

// Engine answers policy decisions from the active snapshot.
type Engine struct {
	opts   Options
	source BundleSource
	cur    atomic.Pointer[snapshot]
	// flights holds the evaluation in progress for each cache key, so
	// that concurrent misses of one key evaluate once. Not
	// golang.org/x/sync/singleflight: its DoChan starts a goroutine per
	// evaluation, which then waits for admission, and the evaluation must
	// be able to run on an admission slot's goroutine and end the flight
	// there (admission.Controller.Do).
	fmu     sync.Mutex
	flights map[cache.Key]*flight
	reload  sync.Mutex
	reloads sync.Mutex // orders Reload calls, load and activation together
	log     *slog.Logger

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
//
// Reloads run one at a time from load to activation: two at once (a
// SIGHUP and POST /v1/admin/reload around a swap of the bundle directory)
// could otherwise activate the older load last.
func (e *Engine) Reload(ctx context.Context) error {
	if e.source == nil {
		return errors.New("no bundle source configured")
	}
	e.reloads.Lock()
	defer e.reloads.Unlock()
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
//
// The caller's cancellation does not reach the activation: an admin
// reload whose client gave up would otherwise fail, or activate with
// the plans its cancelled builds left as fallbacks for the revision's
// life (review).
func (e *Engine) Activate(ctx context.Context, b *bundle.Bundle, source string) error {
	return e.activateBundle(ctx, b, source, true)
}

// TryActivate is Activate for a bundle the caller has a stand-in for (a
// remote bundle persisted by OPA, with the last accepted copy to load in
// its place): a refusal is returned but neither logged, shown as the last
// reload error nor told to OnReload as a failure, since the stand-in then
// serves and no reload failed. The caller reports it with RecordFailure
// if it stands.
func (e *Engine) TryActivate(ctx context.Context, b *bundle.Bundle, source string) error {
	return e.activateBundle(ctx, b, source, false)
}

// activateBundle is Activate; report says whether a refusal is reported (failed).
func (e *Engine) activateBundle(ctx context.Context, b *bundle.Bundle, source string, report bool) error {
	ctx = context.WithoutCancel(ctx)
	e.reload.Lock()
	defer e.reload.Unlock()
	active := ""
	cur := e.cur.Load()
	if cur != nil {
		active = cur.scope
	}
	s, err := activate(ctx, b, e.opts.ConstitutionalHash, source, active)
	if errors.Is(err, errUnchanged) {
		// The same modules, data and manifest (a SIGHUP with nothing
		// changed, a bundle server's new ETag for the same bytes): the
		// active snapshot stays, with its prepared queries, plans and
		// cached decisions, which a swap would purge; nothing is compiled.
		e.lastErr.Store(nil)
		e.log.Info("policy bundle unchanged; the active one stays", "revision", cur.revision, "source", source)
		if e.opts.OnReload != nil {
			e.opts.OnReload("success", cur.info(), nil)
		}
		return nil
	}
	var eps []entryPoint
	if err == nil {
		eps, err = entryPoints(s.compiler, b.Data)
	}
	if err == nil {
		err = s.prepareEntryPoints(ctx, eps)
	}
	if err == nil && e.opts.Compiled {
		for _, p := range s.entryPoints {
			s.compiled(ctx, p, e.log)
		}
	}
	if err == nil && e.opts.PartialEval {
		s.plans = plan.New(s.parsed, s.store, s.reads.get, plan.Options{
			Keys: e.opts.PartialEvalKeys, Size: e.opts.PlanCacheSize,
			Log: func(msg string, args ...any) { e.log.Warn(msg, args...) },
		})
		// Built before the swap so that even the first requests of the new
		// revision for the seeded values are answered by plans.
		e.buildSeedPlans(ctx, s, eps)
	}
	if err != nil {
		if report {
			e.failed(err)
		}
		return err
	}
	e.lastErr.Store(nil) // before the swap: whoever sees the new revision sees no stale error
	old := e.cur.Swap(s)
	if e.opts.Cache != nil {
		e.opts.Cache.Purge()
	}
	oldRev, oldDigest := "", ""
	if old != nil {
		oldRev, oldDigest = old.revision, old.digest
	}
	e.log.Info("policy bundle activated", "revision", s.revision, "previous_revision", oldRev, "source", source, "modules", len(s.modules),
		"content_digest", s.digest, "previous_content_digest", oldDigest)
	if old != nil && oldRev == s.revision {
		// Responses, decision logs and metrics name the revision only:
		// the two policies are one to them (the cache is not: its scope
		// has the digest).
		e.log.Warn("policy bundle activated with the revision of the previous one but other content; "+
			"give each bundle its own manifest revision", "revision", s.revision, "content_digest", s.digest,
			"previous_content_digest", oldDigest, "source", source)
	}
	e.logReadSets(s)
	if e.opts.OnReload != nil {
		e.opts.OnReload("success", s.info(), nil)
	}
	return nil
}

func (e *Engine) failed(err error) {
	e.lastErr.Store(&reloadError{err: err, at: time.Now()})
	if e.cur.Load() == nil {
		e.log.Error("policy bundle refused; no policy is active", "error", err)
	} else {
		e.log.Error("policy bundle refused; the previous one stays active", "error", err)
	}
	if e.opts.OnReload != nil {
		e.opts.OnReload("failure", e.cur.Load().info(), err)
	}
}

// prepareEntryPoints prepares the bundle's entry points and computes their
// read sets, so that their first requests pay for neither.
func (s *snapshot) prepareEntryPoints(ctx context.Context, eps []entryPoint) error {
	for _, ep := range eps {
		s.entryPoints = append(s.entryPoints, ep.path)
		if _, err := s.query(ctx, ep.path); err != nil {
			return err
		}
		s.reads.get(ep.path)
	}
	return nil
}

// buildSeedPlans declares each entry point's plan keys and builds the
// plans of its seed values.
func (e *Engine) buildSeedPlans(ctx context.Context, s *snapshot, eps []entryPoint) {
	start := time.Now()
	counts := map[string]int{}
	for _, ep := range eps {
		if ep.keys != nil {
			s.plans.Declare(ep.path, ep.keys)
		}
		if why := s.plans.Disabled(ep.path); why != "" {
			if ep.keys != nil || len(e.opts.PartialEvalKeys) > 0 {
				e.log.Info("no constant plans for this entry point", "path", ep.path, "why", why)
			}
			continue
		}
		inputs, truncated := ep.seedInputs()
		if truncated {
			e.log.Warn("the entry point's seed lists make too many plans; building the first ones only", "path", ep.path, "built", len(inputs))
		}
		for _, in := range inputs {
			if pl := s.plans.Build(ctx, ep.path, in); pl != nil {
				counts[pl.Kind()]++
			}
		}
	}
	if len(counts) > 0 {
		e.log.Info("constant plans built from the entry points' seeds", "constant", counts[plan.Constant],
			"fallback", counts[plan.Fallback], "took", time.Since(start).Round(time.Millisecond))
	}
}

// Info describes the active policy.
type Info struct {
	Revision string
	// ContentDigest tells apart two bundles of one revision (modules,
	// data and manifest): responses and the decision log name the
	// revision only.
	ContentDigest      string
	Scope              string
	ConstitutionalHash string
	Activated          time.Time
	Source             string
	Roots              []string
	LastError          error
	LastErrorAt        time.Time
}

// Info returns what is active; ok is false before the first activation.
func (e *Engine) Info() (Info, bool) { return e.Active().Info() }

// Active is the active policy as read once: what its methods report is of
// one revision, however many reloads happen while a caller reads them
// (Engine.Info, ReadSets and Evaluators each read the active policy anew,
// so a document built from several of them during a hot reload could
// describe two revisions).
type Active struct {
	e *Engine
	s *snapshot // nil: no policy active
}

// Active returns the active policy, read once.
func (e *Engine) Active() Active { return Active{e: e, s: e.cur.Load()} }

// Info returns what a describes; ok is false when no policy was active.
// The last reload error is the engine's as it is now.
func (a Active) Info() (Info, bool) {
	e, s := a.e, a.s
	var inf Info
	if le := e.lastErr.Load(); le != nil {
		inf.LastError, inf.LastErrorAt = le.err, le.at
	}
	if s == nil {
		return inf, false
	}
	le := inf
	inf = s.info()
	inf.LastError, inf.LastErrorAt = le.LastError, le.LastErrorAt
	return inf, true
}

// info describes s (the zero Info for nil), without the engine's last
// reload error.
func (s *snapshot) info() Info {
	if s == nil {
		return Info{}
	}
	return Info{Revision: s.revision, ContentDigest: s.digest, Scope: s.scope, ConstitutionalHash: s.hash,
		Activated: s.activated, Source: s.source, Roots: s.roots}
}

// Prepared reports whether the active policy's query of path is prepared
// (for topdown, or for the compiled evaluator), so that evaluating it now
// prepares nothing: what OPA's server counts as a hit of its prepared-query
// cache (counter_server_query_cache_hit). Entry points are prepared at
// activation, other paths on first use.
func (e *Engine) Prepared(path string) bool {
	s := e.cur.Load()
	if s == nil {
		return false
	}
	if _, ok := s.queries.GetIfPresent(path); ok {
		return true
	}
	c, ok := s.compiles.GetIfPresent(path)
	return ok && c.q != nil
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
		return e.evaluate(ctx, s, path, input, false)
	}
	key, kind, ok := s.key(path, input)
	e.onKey(kind)
	if !ok {
		return e.evaluate(ctx, s, path, input, false)
	}
	ref := Ref{key: key, kind: kind, scope: s.scope}
	if v, tier, ok := c.Lookup(ctx, key); ok {
		src := SourceL1
		if tier == cache.TierL2 {
			src = SourceL2
		}
		countL1(c, src, nil)
		return Decision{Result: v.Result, Defined: v.Defined, Revision: s.revision, Source: src, JSON: v.JSON, ref: ref}, nil
	}
	d, err := e.decideMiss(ctx, s, key, path, input, false)
	countL1(c, d.Source, err)
	d.ref = ref
	return d, err
}

// countL1 counts a request's one L1 lookup by what answered it: a hit when
// L1 did (its first lookup, or the look a miss takes again before it
// evaluates, storedL1), as its Source tells the caller; a miss otherwise.
func countL1(c Cache, src Source, err error) {
	if err == nil && src == SourceL1 {
		c.CountL1(1, 0)
	} else {
		c.CountL1(0, 1)
	}
}

// flight is one evaluation shared by the concurrent misses of a key.
type flight struct {
	done chan struct{} // closed when d, err and retry are set
	d    Decision
	err  error
	// retry: the flight was refused before it started because its first
	// request's own context ended (its client left, or its deadline came
	// first); the others were not refused and start a flight of their own.
	retry bool
}

// decideMiss evaluates once per key however many requests miss at the same
// time. The first request starts the evaluation; it and the others wait for
// it or for their own deadline. The shared evaluation is detached from any
// one caller's cancellation and bounded by EVAL_TIMEOUT instead (the first
// request's deadline bounds only its wait for an admission slot; when that
// ends the wait, the others are not refused for it but start again).
// planned: the input's plan was looked up already (a batch's constants)
// and settled nothing; it is not looked up again.
func (e *Engine) decideMiss(ctx context.Context, s *snapshot, key cache.Key, path string, input any, planned bool) (Decision, error) {
	for {
		e.fmu.Lock()
		f := e.flights[key]
		lead := f == nil
		if lead {
			f = &flight{done: make(chan struct{})}
			if e.flights == nil {
				e.flights = make(map[cache.Key]*flight)
			}
			e.flights[key] = f
		}
		e.fmu.Unlock()
		if lead {
			e.fly(ctx, f, s, key, path, input, planned)
		}
		select {
		case <-f.done: // first: a decision made after the deadline is still the decision
		default:
			select {
			case <-f.done:
			case <-ctx.Done():
				// The request's deadline passed (or it was cancelled) while the
				// shared evaluation was still waiting for an admission slot or
				// running: nothing was decided for it, so it is overloaded (503,
				// Retry-After), never a denial.
				return Decision{}, undecided(ctx, "the request's deadline: the shared evaluation was still queued or running")
			}
		}
		if f.retry && !lead {
			// The leader's own wait ended the flight (its deadline, or its
			// client gone): that reason is the leader's, not this request's.
			if expired(ctx) {
				return Decision{}, undecided(ctx, "the request's deadline: the shared evaluation it waited for ended undecided")
			}
			continue
		}
		return f.d, f.err
	}
}

// fly makes the decision of flight f and ends it: from a constant plan, or
// by an evaluation on an admission slot, which ends the flight on the
// slot's goroutine (where it stores the decision in the cache). planned:
// the plan was looked up already (decideMiss).
//
// The flight ends exactly once whatever panics: evalNow turns a panic of
// the evaluation into a failed evaluation, store loses only the cache entry
// to a panic of the cache, and a panic anywhere else here (a plan, the
// admission control) fails the decision. A flight left open would keep every
// later miss of its key waiting until its deadline, and a panic on an
// admission slot's goroutine would end the process.
func (e *Engine) fly(ctx context.Context, f *flight, s *snapshot, key cache.Key, path string, input any, planned bool) {
	var ended atomic.Bool
	end := func(d Decision, cacheable bool, err error) {
		if !ended.CompareAndSwap(false, true) {
			return
		}
		if err == nil && cacheable && e.cur.Load() == s {
			e.store(key, &d)
		}
		f.d, f.err = d, err
		e.fmu.Lock()
		delete(e.flights, key)
		e.fmu.Unlock()
		close(f.done)
	}
	defer func() {
		if r := recover(); r != nil {
			e.log.Error("deciding a cache miss panicked", "path", path, "panic", r)
			end(Decision{}, false, apierror.New(apierror.EvaluationError, "policy evaluation failed: internal error (%v)", r))
		}
	}()
	if d, ok := e.storedL1(s, key); ok {
		end(d, false, nil)
		return
	}
	if !planned {
		if d, ok := e.constant(s, path, input); ok {
			end(d, true, nil)
			return
		}
	}
	if err := s.function(path); err != nil {
		end(Decision{}, false, err)
		return
	}
	started, err := e.admit(ctx, func() { end(e.evalNow(context.WithoutCancel(ctx), s, path, input)) })
	if !started {
		// The others in the flight were refused nothing when it was this
		// request's own context that ended: they start again (decideMiss).
		f.retry = expired(ctx)
		end(Decision{}, false, err)
	}
}

// storedL1 is key's decision when L1 holds it now, for a miss about to
// start a flight: a flight of the same key that ended between this
// request's miss and the start of its own stored it there (the flight
// stores before it leaves e.flights), and evaluating again would cost a
// slot, or be shed when none is free, for a decision the cache has. L1
// alone: an L2 round trip per flight would double the misses' L2 reads.
// It counts nothing: the request already looked key up, and its caller
// counts that one lookup by its outcome (countL1), a hit when this finds it.
func (e *Engine) storedL1(s *snapshot, key cache.Key) (Decision, bool) {
	// PeekValue, not Peek: Decide's callers read the value (the allow
	// metric, the ACGS answer's checks), which a cold entry holds encoded.
	// What L1 holds answers, as Lookup and LookupMany answer it.
	v, ok := e.opts.Cache.PeekValue(key)
	if !ok {
		return Decision{}, false
	}
	return Decision{Result: v.Result, Defined: v.Defined, Revision: s.revision, Source: SourceL1, JSON: v.JSON}, true
}

// expired reports whether ctx is done or its deadline has passed. Admission
// reads the deadline from the clock, and refuses a request at it before
// the context's own timer has cancelled it (about half of the time in a
// test of 400 queued requests).
func expired(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	dl, ok := ctx.Deadline()
	return ok && !time.Now().Before(dl)
}

// store puts a decision in the cache, with its JSON encoded once per miss
// so that every hit is written without encoding. A panic in the cache loses
// the entry, not the decision.
func (e *Engine) store(key cache.Key, d *Decision) {
	defer func() {
		if r := recover(); r != nil {
			e.log.Error("storing a decision in the cache panicked; it is answered uncached", "panic", r)
		}
	}()
	if d.JSON == nil && d.Defined {
		d.JSON, _ = encodeResult(d.Result)
	}
	e.opts.Cache.Set(key, cache.Value{Result: d.Result, Defined: d.Defined, JSON: d.JSON})
}

// evaluate runs the policy without the cache; planned as for decideMiss.
func (e *Engine) evaluate(ctx context.Context, s *snapshot, path string, input any, planned bool) (Decision, error) {
	if !planned {
		if d, ok := e.constant(s, path, input); ok {
			return d, nil
		}
	}
	if err := s.function(path); err != nil {
		return Decision{}, err
	}
	// Unlike a shared flight, this evaluation is its caller's alone: ctx
	// bounds it, wherever it runs.
	var d Decision
	var err error
	if _, aerr := e.admit(ctx, func() { d, _, err = e.evalNow(ctx, s, path, input) }); aerr != nil {
		// Not started, or started and ctx is done: fn may still be
		// running, so d and err are not read.
		return Decision{}, aerr
	}
	return d, err
}

// admit runs fn through Options.Admit, or at once when there is no
// admission control.
func (e *Engine) admit(ctx context.Context, fn func()) (started bool, err error) {
	if e.opts.Admit == nil {
		fn()
		return true, nil
	}
	return e.opts.Admit(ctx, fn)
}

// constant answers from a constant plan, when one settles the decision.
func (e *Engine) constant(s *snapshot, path string, input any) (Decision, bool) {
	if s.plans == nil {
		return Decision{}, false
	}
	pl := s.plans.Get(path, input)
	if pl == nil {
		return Decision{}, false
	}
	e.onPlan(pl.Kind())
	if pl.Kind() != plan.Constant {
		return Decision{}, false
	}
	return Decision{Result: pl.Value, Defined: pl.Defined, Revision: s.revision, Source: SourcePlanConstant, JSON: pl.JSON}, true
}

// evalNow evaluates a decision that no cache or constant plan answered,
// with EVAL_TIMEOUT and the fail-closed error mapping; the caller holds
// an admission slot when there is admission control. cacheable is false
// when a non-deterministic built-in ran.
//
// A panic becomes a failed evaluation (which denies): left to unwind, it
// would leave a flight open with every later miss of its key waiting on
// it, or end the process on an admission slot's own goroutine.
func (e *Engine) evalNow(ctx context.Context, s *snapshot, path string, input any) (d Decision, cacheable bool, err error) {
	defer func() {
		if r := recover(); r != nil {
			e.log.Error("policy evaluation panicked", "path", path, "panic", r)
			d, cacheable, err = Decision{}, false, apierror.New(apierror.EvaluationError, "policy evaluation failed: internal error (%v)", r)
		}
	}()
	var in ast.Value
	if input != nil {
		v, err := s.inputValue(input) // ast.InterfaceToValue's value, with shared strings
		if err != nil {
			return Decision{}, false, apierror.Wrap(apierror.InvalidParameter, err, "input is not a JSON value: %v", err)
		}
		in = v
	}
	start := time.Now()
	ctx, cancel := context.WithDeadlineCause(ctx, start.Add(e.opts.EvalTimeout), ErrEvalTimeout)
	defer cancel()
	// One cache of non-deterministic built-ins' answers for both
	// evaluators: topdown after a VM that failed answers as the VM's calls
	// did, without calling them (http.send...) again; not after one that
	// ran out of time.
	ndb := builtins.NDBCache{}
	if e.opts.Compiled {
		if q := s.compiled(ctx, path, e.log); q != nil {
			e.onEvaluator("vm")
			// The VM runs the planner's IR, without topdown's short cuts
			// (early exit, rule indexing, a partial document looked up by
			// its key): it can reach a body topdown never evaluates, and
			// raise a conflict there, or spend EVAL_TIMEOUT on one (a
			// costly rule beside a cheap one that holds, which topdown
			// answers in microseconds). Its error is not the reference's
			// answer; topdown's is. So the VM has three quarters of the
			// budget (from the start, its preparation included), and
			// topdown the rest when the VM fails: a decision the VM needs
			// more for, and topdown cannot finish in the rest, times out.
			vctx, vcancel := context.WithDeadlineCause(ctx, start.Add(e.opts.EvalTimeout*3/4), errVMBudget)
			d, cacheable, err = e.evalVM(vctx, s, q, in, ndb)
			vmOut := errors.Is(context.Cause(vctx), errVMBudget)
			vcancel()
			switch {
			case err == nil:
				return d, cacheable, nil
			case ctx.Err() != nil:
				if vmOut { // the VM's share ran out, then the rest: mapped by what ended the rest
					err = evalError(err, ctx, e.opts.EvalTimeout)
				}
				return d, cacheable, err
			}
			e.log.Debug("the VM failed; topdown answers", "path", path, "error", err, "vm_out_of_time", vmOut)
			if vmOut {
				// A call the VM's deadline cut (http.send with
				// raise_error false answers an error then) is not the
				// built-in's answer: topdown calls again.
				ndb = builtins.NDBCache{}
			}
		}
	}
	e.onEvaluator("topdown")
	return e.evalFull(ctx, s, path, in, ndb)
}

// evalFull evaluates the prepared topdown query of path with ndb (empty,
// or what the VM's evaluation of the same decision filled).
func (e *Engine) evalFull(ctx context.Context, s *snapshot, path string, in ast.Value, ndb builtins.NDBCache) (Decision, bool, error) {
	pq, err := s.query(ctx, path)
	if err != nil {
		if ctx.Err() != nil {
			// Ended while the path was prepared on its first use: by
			// EVAL_TIMEOUT (a timeout) or by its caller (nothing decided,
			// overloaded), told apart as for an evaluation cut short, and
			// as Inspect does; not a failed evaluation (review).
			return Decision{}, false, evalError(err, ctx, e.opts.EvalTimeout)
		}
		return Decision{}, false, err
	}
	return e.evalPrepared(ctx, s, pq, in, SourceFull, ndb)
}

// evalVM evaluates a query on the VM directly (vm.Query.Eval: no rego
// evaluation context, transaction wrapper or result set around it), with
// the decision evalPrepared gives for its PreparedEvalQuery; a result set
// that is not one value goes through evalPrepared.
func (e *Engine) evalVM(ctx context.Context, s *snapshot, q *vm.Query, in ast.Value, ndb builtins.NDBCache) (Decision, bool, error) {
	start := time.Now()
	v, defined, ok, err := q.Eval(ctx, in, ndb)
	if err == nil && !ok {
		// Through rego with the same NDBCache: a non-deterministic
		// built-in the VM already called answers as it did, not again.
		return e.evalPrepared(ctx, s, &q.PreparedEvalQuery, in, SourceVM, ndb)
	}
	if err == nil && defined {
		var r any
		if r, err = ast.JSON(v); err == nil { // as rego converts its result
			took := time.Since(start)
			return Decision{Result: r, Defined: true, Revision: s.revision, Source: SourceVM, EvalNS: took.Nanoseconds()}, len(ndb) == 0, nil
		}
	}
	took := time.Since(start)
	if err != nil {
		return Decision{}, false, evalError(err, ctx, e.opts.EvalTimeout)
	}
	return Decision{Revision: s.revision, Source: SourceVM, EvalNS: took.Nanoseconds()}, len(ndb) == 0, nil
}

// evalPrepared evaluates a prepared query of the whole document (topdown's
// or the VM's) on in with ndb (empty, or what an evaluation of the same
// decision already filled), failing closed.
func (e *Engine) evalPrepared(ctx context.Context, s *snapshot, pq *rego.PreparedEvalQuery, in ast.Value, src Source, ndb builtins.NDBCache) (Decision, bool, error) {
	var err error
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

// errVMBudget ends the VM's share of EVAL_TIMEOUT (evalNow): topdown then
// answers with the rest.
var errVMBudget = errors.New("the compiled evaluator used its share of EVAL_TIMEOUT")

// ErrPathNotQueryable is wrapped by the error (InvalidParameter) of a
// decision whose path a query cannot name (a function, which must be
// called): the same for every input, so a batch answers it once.
var ErrPathNotQueryable = errors.New("the path cannot be queried")

func evalError(err error, ctx context.Context, timeout time.Duration) error {
	var e *apierror.Error
	switch {
	case errors.Is(context.Cause(ctx), ErrEvalTimeout):
		e = apierror.Wrap(apierror.EvaluationError, fmt.Errorf("%w: %w", ErrEvalTimeout, err), "policy evaluation exceeded EVAL_TIMEOUT (%s)", timeout)
	case ctx.Err() != nil:
		// The caller's own context ended first (a client that left, its
		// deadline): nothing was decided, as when a shared evaluation
		// outlives its waiter; not an EVAL_TIMEOUT, which counts and
		// alerts as the policy's (review).
		return undecided(ctx, "the request ended")
	default:
		e = apierror.Wrap(apierror.EvaluationError, err, "policy evaluation failed: %v", err)
	}
	e.Errors = evalDetails(err)
	return e
}

// undecided is the error of a request whose context ended (when: at what)
// before anything was decided for it: overloaded (503, Retry-After), never
// a denial or an evaluation error.
func undecided(ctx context.Context, when string) error {
	cause := ctx.Err()
	if cause == nil { // past its deadline before its timer fired (expired)
		cause = context.DeadlineExceeded
	}
	return apierror.Wrap(apierror.Overloaded, cause, "no decision before %s (%v); retry later", when, cause)
}

// evalDetails is the "errors" list OPA's server answers an evaluation
// error with: topdown's code (eval_conflict_error, ...), message and
// location, which OPA clients read.
func evalDetails(err error) []apierror.Detail {
	var te *topdown.Error
	if !errors.As(err, &te) {
		return nil
	}
	d := apierror.Detail{Code: te.Code, Message: te.Message}
	if te.Location != nil {
		d.Location = &apierror.Location{File: te.Location.File, Row: te.Location.Row, Col: te.Location.Col}
	}
	return []apierror.Detail{d}
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
		v, err := toValue(input)
		if err != nil {
			return Decision{}, apierror.Wrap(apierror.InvalidParameter, err, "input is not a JSON value: %v", err)
		}
		in = v
	}
	ctx, cancel := context.WithTimeoutCause(ctx, e.opts.EvalTimeout, ErrEvalTimeout)
	defer cancel()
	d, _, err := e.evalFull(ctx, s, path, in, builtins.NDBCache{})
	return d, err
}

// PlanKind returns the kind of the plan that input at path would use now
// ("constant" or "fallback"), or "" when it has none yet (looking starts a
// build in the background).
func (e *Engine) PlanKind(path string, input any) string {
	s := e.cur.Load()
	if s == nil || s.plans == nil {
		return ""
	}
	if pl := s.plans.Get(path, input); pl != nil {
		return pl.Kind()
	}
	return ""
}

// DecideBatch answers many inputs for one path: one L2 round trip for all
// the L1 misses, then the misses a constant plan settles (constants), then
// the remaining misses evaluated in parallel (single flight) on GOMAXPROCS
// workers. Results and errors are in input order. Items with one key are
// one decision (review: decided apart, they shared a flight only when in
// flight together, and one batch could answer an input and shed its twin).
// When ctx ends first (a batch's bound before WRITE_TIMEOUT), the items not
// yet decided are overloaded at once: an evaluation a worker runs itself is
// detached from ctx and would hold the batch past it. Cache hits and
// constant plans are settled before, and never shed. A path that names a
// function is refused for every item before anything is looked up or
// counted (400, not shed even when ctx has ended); Decide refuses it too,
// after its cache lookup.
func (e *Engine) DecideBatch(ctx context.Context, path string, inputs []any) ([]Decision, []error) {
	return e.decideBatch(ctx, ctx, path, inputs, true)
}

// DecideCached answers inputs for one path as DecideBatch does from the
// caches (L1, and one L2 round trip for its misses) and constant plans,
// and evaluates nothing: every other item is refused as too late
// (TooLate), admission not asked. A path that names a function is refused
// for every item (400), as DecideBatch refuses it; no active policy is
// unavailable.
//
// It is for a request whose body came too late for its decisions to be
// made and answered in time (internal/server's too-late requests, whose
// deadline passed before they were asked anything): admission refuses a
// passed deadline even with a free slot and counts the refusal as a
// deadline's in acgs_admission_refused_total, a sign of overload that no
// load caused, while a cache hit or a constant plan is never refused. Its
// cache lookups run until lookupUntil, detached from ctx's deadline, which
// has passed (under it an L2 read gives up at once and misses, and a
// decision only L2 held was refused); each L2 read is bounded by
// L2_TIMEOUT too. ctx gives them its values only.
func (e *Engine) DecideCached(ctx context.Context, path string, inputs []any, lookupUntil time.Time) ([]Decision, []error) {
	lookup, cancel := context.WithDeadline(context.WithoutCancel(ctx), lookupUntil)
	defer cancel()
	return e.decideBatch(ctx, lookup, path, inputs, false)
}

// TooLate is the error of a decision DecideCached could not answer from
// the caches or a constant plan: overloaded (503, Retry-After; clients
// retry it), for admission.ErrLate, which says why and makes it shed for
// reason "late", not "deadline": no load refused it, and adding instances
// does not make a client send sooner (ACGSShedding does not page on it).
// A new error each time, so that no caller can change another's.
func TooLate() error {
	return apierror.Wrap(apierror.Overloaded, admission.ErrLate, "not decided: %s; send the body sooner or retry", admission.ErrLate)
}

// decideBatch is DecideBatch with its cache lookups made under lookup, and
// DecideCached's when not evaluate: the items no cache or constant plan
// answers are then refused as too late (TooLate) instead of decided under
// ctx (their evaluation and its admission).
func (e *Engine) decideBatch(ctx, lookup context.Context, path string, inputs []any, evaluate bool) ([]Decision, []error) {
	out := make([]Decision, len(inputs))
	errs := make([]error, len(inputs))
	s := e.cur.Load()
	if s == nil {
		for i := range errs {
			errs[i] = apierror.New(apierror.Unavailable, "no policy bundle is active")
		}
		return out, errs
	}
	// The same path for every item: a function is refused once, here,
	// not per item in decideMiss's flight, which a batch past its
	// deadline never reaches (its items were refused as overloaded).
	if err := s.function(path); err != nil {
		for i := range errs {
			errs[i] = err
		}
		return out, errs
	}
	c := e.opts.Cache
	if c == nil {
		all := make([]int, len(inputs))
		for i := range all {
			all[i] = i
		}
		todo := e.constants(s, path, inputs, all, out, errs, nil)
		if !evaluate {
			refuseLate(errs, todo)
			return out, errs
		}
		e.decideEach(ctx, out, errs, todo, func(i int) (Decision, error) { return e.evaluate(ctx, s, path, inputs[i], true) })
		return out, errs
	}
	var keys []cache.Key             // one per distinct key
	var first []int                  // per distinct key, its first item
	twin := make([]int, len(inputs)) // per item, its key's index in keys; -1 without a key
	at := make(map[cache.Key]int, len(inputs))
	var direct []int
	for i, in := range inputs {
		k, kind, ok := s.key(path, in)
		e.onKey(kind)
		if !ok {
			twin[i] = -1
			direct = append(direct, i)
			continue
		}
		j, seen := at[k]
		if !seen {
			j = len(keys)
			at[k] = j
			keys = append(keys, k)
			first = append(first, i)
		}
		twin[i] = j
	}
	vals := make([]cache.Value, len(keys))
	tiers := make([]cache.Tier, len(keys))
	found := make([]bool, len(keys))
	c.LookupMany(lookup, keys, vals, tiers, found)
	todo := direct
	for j, ok := range found {
		if !ok {
			todo = append(todo, first[j])
			continue
		}
		src := SourceL1
		if tiers[j] == cache.TierL2 {
			src = SourceL2
		}
		out[first[j]] = Decision{Result: vals[j].Result, Defined: vals[j].Defined, Revision: s.revision, Source: src, JSON: vals[j].JSON}
	}
	todo = e.constants(s, path, inputs, todo, out, errs, func(i int) (cache.Key, bool) {
		if twin[i] < 0 {
			return cache.Key{}, false
		}
		return keys[twin[i]], true
	})
	if evaluate {
		e.decideEach(ctx, out, errs, todo, func(i int) (Decision, error) {
			if twin[i] < 0 {
				return e.evaluate(ctx, s, path, inputs[i], true)
			}
			return e.decideMiss(ctx, s, keys[twin[i]], path, inputs[i], true)
		})
	} else {
		refuseLate(errs, todo)
	}
	// One L1 lookup per distinct key, counted as Decide counts it: its
	// twins were answered by the same lookup.
	var hits uint64
	for _, i := range first {
		if errs[i] == nil && out[i].Source == SourceL1 {
			hits++
		}
	}
	c.CountL1(hits, uint64(len(first))-hits)
	for i, j := range twin {
		if j >= 0 && first[j] != i {
			out[i], errs[i] = out[first[j]], errs[first[j]]
		}
	}
	return out, errs
}

// refuseLate refuses the items todo as too late (TooLate): DecideCached's
// items that no cache or constant plan answered.
func refuseLate(errs []error, todo []int) {
	for _, i := range todo {
		errs[i] = TooLate()
	}
}

// constants answers into out the items of todo that a constant plan
// settles, as each would be answered alone (fly: stored in the cache under
// keyOf's key when it has one, a panic a failed evaluation), and returns
// the others, whose plans it looked up: their workers do not look again
// (planned), so each item's plan is counted once.
//
// A batch settles them before its workers take the rest: a worker takes
// its items in order and may wait for an admission slot on each, so an
// item behind cold ones was reached only after the batch's bound and shed
// with them, when a cache hit or a constant plan is never refused as
// overloaded (review).
func (e *Engine) constants(s *snapshot, path string, inputs []any, todo []int, out []Decision, errs []error, keyOf func(i int) (cache.Key, bool)) []int {
	if s.plans == nil {
		return todo
	}
	settle := func(i int) (settled bool) {
		defer func() {
			if r := recover(); r != nil {
				e.log.Error("looking up a constant plan panicked", "path", path, "panic", r)
				errs[i], settled = apierror.New(apierror.EvaluationError, "policy evaluation failed: internal error (%v)", r), true
			}
		}()
		d, ok := e.constant(s, path, inputs[i])
		if !ok {
			return false
		}
		if keyOf != nil {
			if k, keyed := keyOf(i); keyed && e.cur.Load() == s {
				e.store(k, &d)
			}
		}
		out[i] = d
		return true
	}
	rest := make([]int, 0, len(todo))
	for _, i := range todo {
		if !settle(i) {
			rest = append(rest, i)
		}
	}
	return rest
}

// decideEach decides the items todo on GOMAXPROCS workers into out and
// errs, and returns when all are decided or ctx ends: then the items not
// decided yet are overloaded, and what their workers decide later is
// dropped. Past ctx's deadline the workers decide nothing more: each item
// left would only be refused by admission and counted as refused there
// (500 refusals for a batch of 500 items of which 2 were waiting, review);
// they are overloaded as the items the deadline left undecided are.
func (e *Engine) decideEach(ctx context.Context, out []Decision, errs []error, todo []int, decide func(i int) (Decision, error)) {
	if len(todo) == 0 {
		return
	}
	var mu sync.Mutex
	closed := false
	decided := make([]bool, len(todo))
	done := make(chan struct{})
	go func() {
		defer close(done)
		parallel.For(len(todo), func(m int) {
			var d Decision
			var err error
			if expired(ctx) {
				err = undecided(ctx, "the batch's deadline")
			} else {
				d, err = decide(todo[m])
			}
			mu.Lock()
			if !closed {
				out[todo[m]], errs[todo[m]], decided[m] = d, err, true
			}
			mu.Unlock()
		})
	}()
	select {
	case <-done:
		return
	case <-ctx.Done():
	}
	mu.Lock()
	defer mu.Unlock()
	closed = true
	for m, ok := range decided {
		if !ok {
			errs[todo[m]] = undecided(ctx, "the batch's deadline")
		}
	}
}
