package plan

import (
	"context"
	"slices"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"

	"github.com/acgs-lite/acgs/internal/readset"
)

// Why a constant needs this check (review): partial evaluation does not
// keep topdown's errors. It evaluates a body left to right and, when a
// later condition on a plan key fails, drops what it built for an earlier
// expression that reads unknown fields, where topdown evaluates that
// expression and, for some inputs, raises eval_conflict_error (two values
// of a rule or function, or two values of one key of an object). The
// service fails closed on an error, so a constant served there allows or
// denies where the evaluator would have refused to answer.
//
// The check walks every rule and function topdown can evaluate for an
// input with the plan keys' values and refuses the constant when one of
// them may raise such an error. In non-strict mode (the engine's) a
// built-in's error is undefined, not an error; what remains are conflicts:
// complete rules, functions and objects (partial objects, ref heads,
// object comprehensions), a base document merged with a rule's value, and
// with (any with reachable widens: none is modelled). Timeouts (a
// cancelled evaluation) are not modelled: a plan exists to skip the work.
//
// It stays precise enough for entry points written as mutually exclusive
// bodies guarded by key conditions:
//   - a rule that reads only plan keys and data (its read set) has the same
//     value and errors for every such input: it is evaluated once on the
//     known input, and an error refuses the constant;
//   - the expressions of a body that read only keys and data, taken with
//     the variables they share with nothing else, are evaluated on the
//     known input: if they cannot all hold, topdown stops at the first
//     that fails, so what follows is never evaluated and the body yields
//     no value;
//   - a group of definitions conflicts only when two bodies can hold with
//     different values: all the live definitions having one ground value,
//     or one live definition with bodies that cannot iterate, is safe.
//
// Where the analysis is in doubt, it refuses (Fallback).

// checker is one build's analysis; the caller holds sem.
type checker struct {
	ctx   context.Context
	p     *Planner
	keys  [][]string
	known ast.Value

	visited map[*ast.Rule]bool
	queue   []*ast.Rule
	rules   map[string]string // evaluated known-only documents: "" or the error
	cuts    map[*ast.Rule]int // per branch: how many of its expressions topdown can evaluate
	groups  map[*ast.Rule]bool
}

// analysis is what the planner keeps per compiler for the checks: the
// compiler's rules by ground prefix and the read sets of expressions and
// documents (both independent of the known values).
type analysis struct {
	an        *readset.Analyzer
	rules     []*ast.Rule
	prefixes  []ast.Ref
	matched   map[string][]int
	exprReads map[*ast.Expr]*readset.Set
	docReads  map[string]*readset.Set
}

func newAnalysis(c *ast.Compiler) *analysis {
	a := &analysis{an: readset.New(c), matched: map[string][]int{},
		exprReads: map[*ast.Expr]*readset.Set{}, docReads: map[string]*readset.Set{}}
	ids := make([]string, 0, len(c.Modules))
	for id := range c.Modules {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		for _, r := range c.Modules[id].Rules {
			a.rules = append(a.rules, r)
			a.prefixes = append(a.prefixes, r.Ref().GroundPrefix())
		}
	}
	return a
}

// match returns the rules a reference into data can evaluate: those whose
// ground prefix and the reference's are one a prefix of the other (as the
// read-set analysis reaches them).
func (a *analysis) match(ref ast.Ref) []int {
	gp := ref.GroundPrefix()
	k := gp.String()
	if m, ok := a.matched[k]; ok {
		return m
	}
	var out []int
	for i, rp := range a.prefixes {
		if overlap(gp, rp) {
			out = append(out, i)
		}
	}
	a.matched[k] = out
	return out
}

func overlap(x, y ast.Ref) bool {
	for i := 0; i < min(len(x), len(y)); i++ {
		if !x[i].Equal(y[i]) {
			return false
		}
	}
	return true
}

// hazard returns why topdown may raise an error, for some input with the
// known values, that the constant would hide; "" when it cannot.
func (p *Planner) hazard(ctx context.Context, ref ast.Ref, keys [][]string, known ast.Value) string {
	if p.analysis == nil {
		p.analysis = newAnalysis(p.comp)
	}
	c := &checker{ctx: ctx, p: p, keys: keys, known: known, visited: map[*ast.Rule]bool{},
		rules: map[string]string{}, cuts: map[*ast.Rule]int{}, groups: map[*ast.Rule]bool{}}
	c.reach(ref)
	for len(c.queue) > 0 {
		r := c.queue[0]
		c.queue = c.queue[1:]
		if why := c.rule(r); why != "" {
			return why
		}
	}
	return ""
}

func (c *checker) reach(ref ast.Ref) {
	a := c.p.analysis
	for _, i := range a.match(ref) {
		if r := a.rules[i]; !c.visited[r] {
			c.visited[r] = true
			c.queue = append(c.queue, r)
		}
	}
}

// rule checks one rule reached, queueing what it reaches.
func (c *checker) rule(r *ast.Rule) string {
	prefix := r.Ref().GroundPrefix()
	fn := len(r.Head.Args) > 0
	if !fn {
		if why := c.baseOverlap(prefix); why != "" {
			return why
		}
		if c.knownOnly(c.docReads(prefix)) {
			// Its value and its errors are the same for every input with
			// these keys: evaluated here, it need not be walked.
			return c.evalDoc(prefix)
		}
	}
	if !r.Default {
		if !c.groupSafe(r) {
			return "definitions of " + r.Ref().String() + " may conflict (" + loc(r.Location) + ")"
		}
	}
	args := headArgVars(r)
	for b := r; b != nil; b = b.Else {
		n := c.cut(b, args)
		for _, e := range b.Body[:n] {
			if why := c.walk(e, b); why != "" {
				return why
			}
		}
		if n < len(b.Body) {
			continue // the body cannot hold: its head is never evaluated
		}
		for _, t := range []*ast.Term{b.Head.Key, b.Head.Value} {
			if t != nil {
				if why := c.walk(t, b); why != "" {
					return why
				}
			}
		}
	}
	return ""
}

func loc(l *ast.Location) string {
	if l == nil {
		return "no location"
	}
	return l.String()
}

func headArgVars(r *ast.Rule) ast.VarSet {
	vs := ast.NewVarSet()
	for _, a := range r.Head.Args {
		ast.WalkVars(a, func(v ast.Var) bool { vs.Add(v); return false })
	}
	return vs
}

// walk reaches the rules x refers to and checks its object comprehensions
// and with modifiers; in is the rule (branch) holding x.
func (c *checker) walk(x any, in *ast.Rule) string {
	var why string
	var vis *ast.GenericVisitor
	vis = ast.NewGenericVisitor(func(n any) bool {
		if why != "" {
			return true
		}
		switch v := n.(type) {
		case *ast.Expr:
			if len(v.With) > 0 {
				why = "with modifier at " + loc(v.Location)
				return true
			}
		case ast.Ref:
			// A data head is a root, not a variable: data.x reaches
			// data.x's rules only, not every rule as a bare data does.
			switch {
			case v[0].Equal(ast.DefaultRootDocument):
				c.reach(v)
			default:
				vis.Walk(v[0]) // a composite or call at the head: [x | ...][0]
			}
			for _, t := range v[1:] {
				vis.Walk(t)
			}
			return true
		case ast.Var:
			if v.Equal(ast.DefaultRootDocument.Value) {
				c.reach(ast.DefaultRootRef)
			}
		case *ast.ObjectComprehension:
			if !uniqueKeys(v, in) {
				why = "object comprehension may repeat a key at " + loc(v.Key.Location)
				return true
			}
		}
		return false
	})
	vis.Walk(x)
	return why
}

// uniqueKeys reports whether an object comprehension can never give one
// key two values: its value is ground, its body has at most one solution,
// or its key is the key of its only iteration (keys of a collection are
// distinct).
func uniqueKeys(oc *ast.ObjectComprehension, in *ast.Rule) bool {
	if oc.Value.IsGround() {
		return true
	}
	// Variables of the rule's arguments and body outside closures are
	// bound before it is evaluated (captured); anything else is taken as
	// local to it (so, for a comprehension nested in another, possibly
	// free: in doubt, not unique).
	captured := headArgVars(in)
	for _, e := range in.Body {
		vv := ast.NewVarVisitor().WithParams(ast.VarVisitorParams{SkipClosures: true})
		vv.Walk(e)
		captured.Update(vv.Vars())
	}
	its := iterations(oc.Body, captured)
	switch {
	case its == nil:
		return false // a relation
	case len(its) == 0:
		return true
	case len(its) == 1:
		k, ok := oc.Key.Value.(ast.Var)
		last := its[0].ref[len(its[0].ref)-1]
		return ok && len(its[0].free) == 1 && its[0].free.Contains(k) && last.Value.Compare(k) == 0
	}
	return false
}

// iteration is a reference that may enumerate: free are its variables not
// bound before it.
type iteration struct {
	ref  ast.Ref
	free ast.VarSet
}

// iterations lists where body may have several solutions, with bound
// bound beforehand; nil (not empty) when a relation built-in (walk) is
// called, which enumerates without a reference.
func iterations(body ast.Body, bound ast.VarSet) []iteration {
	bound = bound.Copy()
	out := []iteration{}
	relation := false
	for _, e := range body {
		if _, ok := e.Terms.(*ast.SomeDecl); ok {
			continue // a declaration binds nothing
		}
		vis := ast.NewGenericVisitor(func(n any) bool {
			switch v := n.(type) {
			case *ast.ArrayComprehension, *ast.SetComprehension, *ast.ObjectComprehension, *ast.Every, *ast.Not,
				*ast.LogicalAnd, *ast.LogicalOr, *ast.TemplateString:
				return true // closures: one value each
			case *ast.Expr:
				if v.IsCall() {
					if b, ok := ast.BuiltinMap[v.Operator().String()]; ok && b.Relation {
						relation = true
					}
				}
			case *ast.Term:
				if call, ok := v.Value.(ast.Call); ok {
					if b, ok := ast.BuiltinMap[call[0].String()]; ok && b.Relation {
						relation = true
					}
				}
			case ast.Ref:
				free := ast.NewVarSet()
				for _, t := range v[1:] {
					vv := ast.NewVarVisitor().WithParams(ast.VarVisitorParams{SkipRefHead: true, SkipRefCallHead: true, SkipClosures: true})
					vv.Walk(t)
					for x := range vv.Vars() {
						if !bound.Contains(x) {
							free.Add(x)
						}
					}
				}
				if len(free) > 0 {
					out = append(out, iteration{ref: v, free: free})
				}
			}
			return false
		})
		if e.Negated {
			continue // binds nothing, yields no solutions of its own
		}
		vis.Walk(e)
		vv := ast.NewVarVisitor().WithParams(ast.VarVisitorParams{SkipClosures: true})
		vv.Walk(e)
		bound.Update(vv.Vars())
	}
	if relation {
		return nil
	}
	return out
}

// groupSafe reports whether the rules that may define the same value as r
// (the same reference; or any overlapping one, where either has variables
// in its reference) cannot conflict for the known values. Functions group
// by name. Rules of one path at two depths (q[x] := 1 and q[x].r := 1)
// conflict whatever their values, a value at one depth being an object at
// the other, unless the deeper or shallower one cannot hold.
func (c *checker) groupSafe(r *ast.Rule) bool {
	if ok, done := c.groups[r]; done {
		return ok
	}
	a := c.p.analysis
	fn := len(r.Head.Args) > 0
	var group []*ast.Rule
	kinds := false // a single-value and a multi-value rule, or two depths, may make one value
	for i, s := range a.rules {
		if s.Default || (len(s.Head.Args) > 0) != fn {
			continue
		}
		same := s.Ref().Equal(r.Ref())
		if !same && (fn || s.Ref().IsGround() && r.Ref().IsGround() || !overlap(a.prefixes[i], r.Ref().GroundPrefix())) {
			continue
		}
		if s.Head.RuleKind() != r.Head.RuleKind() || len(s.Ref()) != len(r.Ref()) && c.canHold(s) {
			kinds = true
		}
		group = append(group, s)
	}
	ok := !kinds && (r.Head.RuleKind() == ast.MultiValue || c.noConflict(group))
	c.groups[r] = ok
	if !ok {
		// A member's own group can hold rules r's does not: only a
		// refusal carries over.
		for _, s := range group {
			c.groups[s] = false
		}
	}
	return ok
}

// canHold reports whether a body of r (or of its else chain) can hold for
// the known values.
func (c *checker) canHold(r *ast.Rule) bool {
	for b := r; b != nil; b = b.Else {
		if c.cut(b, headArgVars(r)) == len(b.Body) {
			return true
		}
	}
	return false
}

func (c *checker) noConflict(group []*ast.Rule) bool {
	var live [][]*ast.Rule // per definition, its branches that can hold
	for _, s := range group {
		var branches []*ast.Rule
		for b := s; b != nil; b = b.Else {
			if c.cut(b, headArgVars(s)) == len(b.Body) {
				branches = append(branches, b)
			}
		}
		if len(branches) > 0 {
			live = append(live, branches)
		}
	}
	// One ground value everywhere: equal values never conflict.
	var value *ast.Term
	same := true
	for _, bs := range live {
		for _, b := range bs {
			if !b.Head.Value.IsGround() || value != nil && !value.Equal(b.Head.Value) {
				same = false
			}
			value = b.Head.Value
		}
	}
	if same {
		return true
	}
	if len(live) != 1 {
		return false
	}
	// One definition: each branch gives one value when its body (and so
	// its key) has one solution.
	for _, b := range live[0] {
		its := iterations(b.Body, headArgVars(b))
		if !b.Head.Value.IsGround() && (its == nil || len(its) > 0) {
			return false
		}
		if b.Head.Key != nil && !b.Head.Key.IsGround() && (its == nil || len(its) > 0) {
			return false
		}
		if !b.Ref().IsGround() && (its == nil || len(its) > 0) {
			return false
		}
	}
	return true
}

// cut returns how many expressions of b's body topdown can evaluate for an
// input with the known values: all of them, or up to the first expression
// at which the body's known-only expressions (those reading only keys and
// data that share no variable with the others, nor with the arguments)
// can no longer all hold.
func (c *checker) cut(b *ast.Rule, args ast.VarSet) int {
	if n, ok := c.cuts[b]; ok {
		return n
	}
	n := len(b.Body)
	if kept := c.keptExprs(b.Body, args); len(kept) > 0 {
		body := func(k int) ast.Body {
			es := make([]*ast.Expr, 0, k)
			for _, i := range kept[:k] {
				es = append(es, b.Body[i].Copy())
			}
			return ast.NewBody(es...)
		}
		if c.unsatisfiable(body(len(kept))) {
			// The shortest unsatisfiable prefix of kept (adding
			// expressions never makes one satisfiable again).
			lo, hi := 1, len(kept)
			for lo < hi {
				mid := (lo + hi) / 2
				if c.unsatisfiable(body(mid)) {
					hi = mid
				} else {
					lo = mid + 1
				}
			}
			n = kept[lo-1] + 1
		}
	}
	c.cuts[b] = n
	return n
}

// keptExprs are the indexes of body's expressions that read only plan
// keys and data and share no variable with an expression that does not,
// nor with args.
func (c *checker) keptExprs(body ast.Body, args ast.VarSet) []int {
	keep := make([]bool, len(body))
	vars := make([]ast.VarSet, len(body))
	for i, e := range body {
		vars[i] = localVars(e)
		switch e.Terms.(type) {
		case *ast.SomeDecl, *ast.Every:
			continue
		}
		keep[i] = len(e.With) == 0 && c.knownOnly(c.exprReads(e))
	}
	for changed := true; changed; {
		changed = false
		for i := range body {
			if !keep[i] {
				continue
			}
			shared := len(vars[i].Intersect(args)) > 0
			for j := range body {
				if !keep[j] && len(vars[i].Intersect(vars[j])) > 0 {
					shared = true
				}
			}
			if shared {
				keep[i], changed = false, true
			}
		}
	}
	var out []int
	for i, k := range keep {
		if k {
			out = append(out, i)
		}
	}
	return out
}

// localVars are the variables of e, closures included, but the roots input
// and data (which no variable may shadow) and the names of what it calls.
func localVars(e *ast.Expr) ast.VarSet {
	vis := ast.NewVarVisitor().WithParams(ast.VarVisitorParams{SkipRefCallHead: true})
	vis.Walk(e)
	vs := vis.Vars()
	delete(vs, ast.InputRootDocument.Value.(ast.Var))
	delete(vs, ast.DefaultRootDocument.Value.(ast.Var))
	return vs
}

func (c *checker) exprReads(e *ast.Expr) *readset.Set {
	a := c.p.analysis
	if s, ok := a.exprReads[e]; ok {
		return s
	}
	var terms []*ast.Term
	switch t := e.Terms.(type) {
	case *ast.Term:
		terms = []*ast.Term{t}
	case []*ast.Term:
		terms = t
	}
	s := a.an.Analyze(nil, terms...)
	a.exprReads[e] = s
	return s
}

func (c *checker) docReads(ref ast.Ref) *readset.Set {
	a := c.p.analysis
	k := ref.String()
	if s, ok := a.docReads[k]; ok {
		return s
	}
	s := a.an.Analyze(ref)
	a.docReads[k] = s
	return s
}

// knownOnly reports whether what s reads lies within the plan keys: its
// value is then the same for every input with the known values.
func (c *checker) knownOnly(s *readset.Set) bool {
	if s.Whole || !s.Cacheable() {
		return false
	}
	for _, group := range [][]readset.Path{s.Paths, s.Types} {
		for _, p := range group {
			if !slices.ContainsFunc(c.keys, func(k []string) bool { return within(p, k) }) {
				return false
			}
		}
	}
	return true
}

func within(p readset.Path, key []string) bool {
	if len(p) < len(key) {
		return false
	}
	for i, k := range key {
		if s, ok := p[i].(string); !ok || s != k {
			return false
		}
	}
	return true
}

// unsatisfiable reports whether body has no solution for the known input;
// false when that cannot be told (an error, an unsafe variable).
func (c *checker) unsatisfiable(body ast.Body) bool {
	rs, err := c.query(body)
	return err == nil && len(rs) == 0
}

func (c *checker) query(body ast.Body) (rego.ResultSet, error) {
	return rego.New(
		rego.ParsedQuery(body),
		rego.Compiler(c.p.comp),
		rego.Store(c.p.store),
		rego.ParsedInput(c.known),
	).Eval(c.ctx)
}

// evalDoc evaluates a known-only document on the known input: its error is
// every such input's.
func (c *checker) evalDoc(ref ast.Ref) string {
	k := ref.String()
	if why, ok := c.rules[k]; ok {
		return why
	}
	why := ""
	x := ast.VarTerm("__acgs_doc__")
	if _, err := c.query(ast.NewBody(ast.Equality.Expr(x, ast.NewTerm(ref)))); err != nil {
		why = k + " raises an error for these keys: " + err.Error()
	}
	c.rules[k] = why
	return why
}

// baseOverlap refuses a rule whose path also holds base data (or lies
// under a base value that is not an object): topdown merges the two and
// raises a conflict when they disagree.
func (c *checker) baseOverlap(prefix ast.Ref) string {
	var path storage.Path
elems:
	for _, t := range prefix[1:] {
		switch v := t.Value.(type) {
		case ast.String:
			path = append(path, string(v))
		case ast.Number:
			path = append(path, v.String())
		default:
			break elems // no base document has such a key: check the levels above
		}
	}
	for i := 1; i <= len(path); i++ {
		v, err := storage.ReadOne(c.ctx, c.p.store, path[:i])
		if storage.IsNotFound(err) {
			return ""
		}
		if err != nil {
			return "reading " + path[:i].String() + ": " + err.Error()
		}
		if !isObject(v) || i == len(path) {
			return prefix.String() + " is also base data"
		}
	}
	return ""
}

func isObject(v any) bool {
	switch v.(type) {
	case map[string]any, ast.Object:
		return true
	}
	return false
}
