package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/topdown/builtins"

	"github.com/acgs-lite/acgs/internal/cache"
	"github.com/acgs-lite/acgs/internal/readset"
)

// Plan kinds, also the labels of the partial-evaluation metrics.
const (
	PlanConstant = "constant" // the decision is known from the specialisation fields alone
	PlanResidual = "residual" // a smaller query, prepared once, decides
	PlanFallback = "fallback" // partial evaluation failed or did not pay: use full evaluation
)

const planNamespace = "acgs_plan"

// plan is the result of partially evaluating one path for one combination of
// the specialisation fields. kind moves from residual to fallback at most once:
// when its first real input shows the residual is not faster, or not equal.
type plan struct {
	kind     atomic.Value // string
	value    any          // constant: the decision (decoded JSON); nil+!defined = undefined
	json     []byte       // constant: value encoded
	defined  bool
	residual atomic.Pointer[rego.PreparedEvalQuery] // nil once demoted: its compiler is freed
	measured atomic.Bool
	counted  atomic.Bool // counts against the planner's residual budget
	// Sampled verification (Engine.checkResidual, judgeSample): decisions
	// answered, and the summed timings of the sampled ones.
	uses       atomic.Uint64
	samples    atomic.Int64
	residualNS atomic.Int64
	fullNS     atomic.Int64
}

func (p *plan) Kind() string { return p.kind.Load().(string) }

// planner builds and keeps the plans of one snapshot.
type planner struct {
	s        *snapshot
	keys     [][]string  // specialisation fields as paths under input
	unknowns []*ast.Term // every input.X the policy reads, except the specialisation fields
	disabled string      // why no plan can be built for this snapshot ("" = plans on)
	modules  map[string]*ast.Module
	lru      *lru.Cache[string, *plan]
	sem      chan struct{} // holds a token while a build runs: one at a time
	// residuals counts the residual plans in lru; maxResidual bounds it.
	residuals   atomic.Int64
	maxResidual int64
	warnedFull  atomic.Bool
	log         func(msg string, args ...any)

	// comp is the planner's own compiler, compiled from the same modules as
	// the snapshot's but used by nothing else. OPA's partial evaluation
	// rewrites terms it shares with its compiler (copy propagation), so a
	// build on the serving compiler would race with evaluations; on this
	// one, builds (one at a time, under sem) are its only users.
	comp *ast.Compiler
}

// buildTimeout bounds one partial evaluation started by a request.
const buildTimeout = 10 * time.Second

// newPlanner prepares partial evaluation for a snapshot. It refuses (disabled)
// policies that read input as a whole or through a computed key, whose
// unknowns cannot be listed, and policies that call non-deterministic
// built-ins, which partial evaluation would freeze into constants.
func newPlanner(s *snapshot, keys []string, size, maxResidual int, parsed map[string]*ast.Module) *planner {
	p := &planner{s: s, modules: parsed, sem: make(chan struct{}, 1), maxResidual: int64(maxResidual)}
	p.lru, _ = lru.NewWithEvict[string, *plan](max(size, 1), func(_ string, pl *plan) { p.uncount(pl) })
	known := map[string]bool{}
	for _, k := range keys {
		parts := strings.Split(strings.TrimPrefix(k, "input."), ".")
		p.keys = append(p.keys, parts)
		if len(parts) == 1 {
			known[parts[0]] = true
		}
	}
	fields := map[string]bool{}
	for name, m := range parsed {
		if strings.HasSuffix(name, "_test.rego") {
			continue
		}
		ast.WalkRefs(m, func(r ast.Ref) bool {
			if !r[0].Equal(ast.InputRootDocument) {
				return false
			}
			if len(r) == 1 {
				p.disabled = "the policy reads input as a whole"
				return false
			}
			if s, ok := r[1].Value.(ast.String); ok {
				fields[string(s)] = true
			} else {
				p.disabled = "the policy reads input through a computed key"
			}
			return false
		})
		ast.WalkTerms(m, func(t *ast.Term) bool {
			if call, ok := t.Value.(ast.Call); ok {
				if bi := ast.BuiltinMap[call[0].String()]; bi != nil && bi.Nondeterministic {
					p.disabled = "the policy calls the non-deterministic built-in " + bi.Name
				}
			}
			return false
		})
	}
	names := make([]string, 0, len(fields))
	for f := range fields {
		if !known[f] {
			names = append(names, f)
		}
	}
	sort.Strings(names)
	for _, f := range names {
		p.unknowns = append(p.unknowns, ast.NewTerm(ast.InputRootRef.Append(ast.StringTerm(f))))
	}
	return p
}

// key returns the plan key of input at path; with withKnown it also returns
// the known part of input (only needed to build a plan). ok is false when a
// specialisation field holds an object or array (such inputs are evaluated
// in full).
func (p *planner) key(path string, input any, withKnown bool) (string, map[string]any, bool) {
	obj, isObj := input.(map[string]any)
	if !isObj {
		return "", nil, false
	}
	var scratch [128]byte
	buf := append(scratch[:0], path...)
	buf = append(buf, 0)
	var known map[string]any
	if withKnown {
		known = make(map[string]any, len(p.keys))
	}
	for _, parts := range p.keys {
		var v any = obj
		present := true
		for _, part := range parts {
			m, ok := v.(map[string]any)
			if !ok {
				present = false
				break
			}
			if v, ok = m[part]; !ok {
				present = false
				break
			}
		}
		if !present {
			buf = append(buf, 'u')
			continue
		}
		switch v.(type) {
		case map[string]any, []any:
			return "", nil, false
		}
		var err error
		buf = append(buf, 'k')
		if buf, err = cache.AppendCanonical(buf, v); err != nil {
			return "", nil, false
		}
		if withKnown {
			setPath(known, parts, v)
		}
	}
	return string(buf), known, true
}

func setPath(m map[string]any, parts []string, v any) {
	for _, part := range parts[:len(parts)-1] {
		next, ok := m[part].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[part] = next
		}
		m = next
	}
	m[parts[len(parts)-1]] = v
}

// get returns the plan for input, or nil when there is none yet; a missing
// plan is built in the background (one build at a time; while one runs,
// other misses are simply evaluated in full) so this request is not
// delayed by it.
func (p *planner) get(path string, input any) *plan {
	if p.disabled != "" {
		return nil
	}
	k, _, ok := p.key(path, input, false)
	if !ok {
		return nil
	}
	if pl, ok := p.lru.Get(k); ok {
		return pl
	}
	p.buildLater(k, path, input)
	return nil
}

// buildLater starts a background build of the plan for key k unless one is
// already running (the caller is answered by full evaluation meanwhile).
func (p *planner) buildLater(k, path string, input any) {
	select {
	case p.sem <- struct{}{}:
	default:
		return // a build is running; a later request for k will ask again
	}
	_, known, _ := p.key(path, input, true) // ok: get computed k from the same input
	go func() {
		defer func() { <-p.sem }()
		ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
		defer cancel()
		if _, done := p.lru.Peek(k); !done {
			p.lru.Add(k, p.build(ctx, path, known))
		}
	}()
}

// buildNow builds and stores the plan for a known input (activation time).
func (p *planner) buildNow(ctx context.Context, path string, known map[string]any) *plan {
	if p.disabled != "" {
		return nil
	}
	k, kn, ok := p.key(path, known, true)
	if !ok {
		return nil
	}
	// OPA's partial evaluation rewrites shared terms (copy propagation), so
	// two builds on the planner's compiler must never run at once: take the
	// builder's token.
	p.sem <- struct{}{}
	defer func() { <-p.sem }()
	if pl, ok := p.lru.Peek(k); ok {
		return pl // a list named the action twice
	}
	pl := p.build(ctx, path, kn)
	p.lru.Add(k, pl)
	return pl
}

// build partially evaluates path with the known fields and every other input
// field unknown, on the planner's own compiler. The caller holds sem.
func (p *planner) build(ctx context.Context, path string, known map[string]any) *plan {
	pl := &plan{}
	pl.kind.Store(PlanFallback)
	if p.comp == nil {
		comp := ast.NewCompiler().WithEnablePrintStatements(false)
		comp.Compile(p.modules) // Compile copies the modules: nothing is shared with the snapshot
		if comp.Failed() {
			p.log("compiling the planner's copy of the policy failed; full evaluation will be used", "error", comp.Errors)
			return pl
		}
		p.comp = comp
	}
	ref, err := ParsePath(path)
	if err != nil {
		return pl
	}
	knownVal, err := ast.InterfaceToValue(known)
	if err != nil {
		return pl
	}
	x := ast.VarTerm("__acgs_result__")
	query := ast.NewBody(ast.Equality.Expr(x, ast.NewTerm(ref)))
	pq, err := rego.New(
		rego.ParsedQuery(query),
		rego.Compiler(p.comp),
		rego.Store(p.s.store),
		rego.ParsedInput(knownVal),
		rego.ParsedUnknowns(p.unknowns),
		rego.PartialNamespace(planNamespace),
	).Partial(ctx)
	if err != nil {
		p.log("partial evaluation failed; full evaluation will be used", "path", path, "error", err)
		return pl
	}
	switch {
	case len(pq.Queries) == 0:
		pl.kind.Store(PlanConstant) // undefined whatever the unknowns
		return pl
	case len(pq.Queries) > 1:
		return pl // a disjunction: full evaluation detects conflicts for us
	}
	// Copies: later builds may rewrite terms the results share with p.comp.
	body := pq.Queries[0].Copy()
	if len(body) == 1 && len(pq.Support) == 0 {
		if terms, ok := body[0].Terms.([]*ast.Term); ok && len(terms) == 3 && body[0].IsEquality() {
			for _, t := range terms[1:] {
				if t.Equal(x) {
					continue
				}
				if t.IsGround() {
					v, err := ast.JSON(t.Value)
					if err == nil {
						pl.value, pl.defined = normalise(v), true
						pl.json, _ = json.Marshal(pl.value)
						pl.kind.Store(PlanConstant)
						return pl
					}
				}
			}
		}
	}
	if p.residuals.Load() >= p.maxResidual {
		if p.warnedFull.CompareAndSwap(false, true) {
			p.log("residual plan budget reached (PLAN_MAX_RESIDUAL); further combinations use full evaluation", "max", p.maxResidual)
		}
		return pl
	}
	support := make(map[string]*ast.Module, len(pq.Support))
	for i, m := range pq.Support {
		support[fmt.Sprintf("%s/support_%d.rego", planNamespace, i)] = m // Compile copies it
	}
	// Only the modules the residual can reach: each residual holds its own
	// compiler, and compiling every module made one about 3.6 MB.
	mods := reachable(p.modules, body, support)
	comp := ast.NewCompiler().WithEnablePrintStatements(false)
	comp.Compile(mods)
	if comp.Failed() {
		p.log("compiling a residual plan failed; full evaluation will be used", "path", path, "error", comp.Errors)
		return pl
	}
	// A residual is the document specialised on a few input fields, so it
	// can read nothing the document cannot: if the read-set analysis says it
	// does, the analysis or partial evaluation is wrong, and neither the plan
	// nor cache keys on the document's read set should be trusted with it.
	if full := p.s.reads.get(path); full != nil {
		if rs := readset.New(comp).AnalyzeBody(body); !full.Covers(rs) {
			p.log("a residual plan reads input outside its document's read set; full evaluation will be used", "path", path, "residual_reads", rs.String())
			return pl
		}
	}
	// rego copies each top-level expression's source text into every result
	// (ExpressionValue.Text). A residual's expressions carry the location of
	// the policy rule they came from, whose text can be kilobytes long.
	for _, expr := range body {
		expr.Location = nil
	}
	prepare := func(q ast.Body) (rego.PreparedEvalQuery, error) {
		return rego.New(rego.ParsedQuery(q), rego.Compiler(comp), rego.Store(p.s.store)).PrepareForEval(ctx)
	}
	// Simplified, with calls on booleans tabulated, then simplified again
	// (tabulate.go, simplify.go); failing that, simplified only (a folded
	// constant can meet a type check that the call it replaced did not);
	// failing that, as partial evaluation gave it.
	keep := x.Value.(ast.Var)
	rewrite := func(tab bool) (q rego.PreparedEvalQuery, err error) {
		defer func() { // OPA's compiler panics on some malformed queries; never let it take the process
			if r := recover(); r != nil {
				err = fmt.Errorf("simplifying or compiling the residual panicked: %v", r)
			}
		}()
		rewritten := simplifyResidual(body.Copy(), keep)
		if tab {
			rewritten = simplifyResidual(tabulate(ctx, rewritten, keep), keep)
		}
		return prepare(rewritten)
	}
	prepared, err := rewrite(true)
	if err != nil {
		p.log("the simplified and tabulated residual did not compile; trying it simplified only", "path", path, "error", err)
		prepared, err = rewrite(false)
	}
	if err != nil {
		p.log("the simplified residual did not compile; using it as partial evaluation gave it", "path", path, "error", err)
		prepared, err = prepare(body)
	}
	if err != nil {
		p.log("preparing a residual plan failed; full evaluation will be used", "path", path, "error", err)
		return pl
	}
	pl.residual.Store(&prepared)
	pl.kind.Store(PlanResidual)
	pl.counted.Store(true) // the caller stores pl; eviction or demotion uncounts it
	p.residuals.Add(1)
	return pl
}

// demote turns a residual plan into a fallback (it disagreed with, or was
// not faster than, full evaluation), dropping its prepared query and its
// place in the budget.
func (p *planner) demote(pl *plan) {
	pl.kind.Store(PlanFallback)
	pl.residual.Store(nil)
	p.uncount(pl)
}

// uncount takes pl out of the residual budget, once.
func (p *planner) uncount(pl *plan) {
	if pl.counted.CompareAndSwap(true, false) {
		p.residuals.Add(-1)
	}
}

// normalise turns the numbers of ast.JSON output into json.Number, like
// every other decision the engine returns.
func normalise(v any) any {
	b, err := json.Marshal(v)
	if err != nil {
		return v
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.UseNumber()
	var out any
	if dec.Decode(&out) != nil {
		return v
	}
	return out
}

// evalResidual evaluates a residual plan. ok is false when the residual
// cannot decide alone (several answers: full evaluation reports the conflict).
func evalResidual(ctx context.Context, pl *plan, in ast.Value, ndb builtins.NDBCache) (any, bool, bool, error) {
	q := pl.residual.Load()
	if q == nil {
		return nil, false, false, nil // demoted meanwhile: full evaluation answers
	}
	rs, err := q.Eval(ctx, rego.EvalParsedInput(in), rego.EvalNDBuiltinCache(ndb))
	if err != nil {
		return nil, false, false, err
	}
	switch len(rs) {
	case 0:
		return nil, false, true, nil
	case 1:
		return rs[0].Bindings["__acgs_result__"], true, true, nil
	}
	return nil, false, false, nil
}

// buildActivationPlans builds, before the snapshot serves, the plans for the
// action lists of the bundle's data (data.acgs.config.prohibited_actions and
// common_actions) under the constitutional request types, so that even the
// first request for those actions is answered by a plan.
func (e *Engine) buildActivationPlans(ctx context.Context, s *snapshot, data map[string]any) {
	cfg := lookup(data, "acgs", "config")
	var actions []string
	for _, list := range []string{"prohibited_actions", "common_actions"} {
		if arr, ok := lookup(cfg, list).([]any); ok {
			for _, a := range arr {
				if str, ok := a.(string); ok {
					actions = append(actions, str)
				}
			}
		}
	}
	start := time.Now()
	counts := map[string]int{}
	for _, typ := range []string{"constitutional_evaluation", "action_authorization"} {
		for _, a := range actions {
			pl := s.plans.buildNow(ctx, "acgs/main/decision", map[string]any{
				"type": typ, "action": a, "constitutional_hash": s.hash,
			})
			if pl != nil {
				counts[pl.Kind()]++
			}
		}
	}
	if s.plans.disabled != "" {
		e.log.Info("partial evaluation is off for this bundle", "reason", s.plans.disabled)
		return
	}
	e.log.Info("partial-evaluation plans built", "constant", counts[PlanConstant], "residual", counts[PlanResidual],
		"fallback", counts[PlanFallback], "took", time.Since(start).Round(time.Millisecond))
}

func lookup(v any, path ...string) any {
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[p]
	}
	return v
}

// reachable returns the support modules plus every policy module the query
// or a module already included can refer to: a module is included when a
// data reference (or an import) points into its package or the package lies
// under the reference. Anything left out is unreachable from the residual,
// so compiling without it cannot change a decision (and the first input of
// every residual plan is checked against full evaluation anyway).
func reachable(all map[string]*ast.Module, query ast.Body, support map[string]*ast.Module) map[string]*ast.Module {
	out := make(map[string]*ast.Module, len(support)+len(all))
	seen := map[string]bool{}
	var refs []ast.Ref
	add := func(r ast.Ref) {
		if !r[0].Equal(ast.DefaultRootDocument) {
			return
		}
		r = r.ConstantPrefix()
		if k := r.String(); !seen[k] {
			seen[k] = true
			refs = append(refs, r)
		}
	}
	// Rules and imports only: a module's own package ref says nothing about
	// what it reads.
	collect := func(m *ast.Module) {
		for _, imp := range m.Imports {
			if r, ok := imp.Path.Value.(ast.Ref); ok {
				add(r)
			}
		}
		for _, rule := range m.Rules {
			ast.WalkRefs(rule, func(r ast.Ref) bool { add(r); return false })
		}
	}
	ast.WalkRefs(query, func(r ast.Ref) bool { add(r); return false })
	for name, m := range support {
		out[name] = m
		collect(m)
	}
	for len(refs) > 0 {
		r := refs[len(refs)-1]
		refs = refs[:len(refs)-1]
		for name, m := range all {
			if _, done := out[name]; done {
				continue
			}
			if pkg := m.Package.Path; pkg.HasPrefix(r) || r.HasPrefix(pkg) {
				out[name] = m
				collect(m)
			}
		}
	}
	return out
}
