// Package readset computes, from a compiled policy, which parts of the input
// an evaluation of one document can read, so that the decision cache can key
// a decision on those parts alone (a request id or a timestamp the policy
// never reads then no longer defeats the cache).
//
// The analysis is sound by construction rather than clever: every reference
// rooted at input, anywhere in a rule or function reachable from the
// document, contributes the whole subtree at its longest constant prefix
// (string keys and non-negative integer indexes). Whatever is then done with
// that value (iteration, a built-in, a function argument, walk, a variable
// or computed key further down) stays inside the subtree, so it needs no
// modelling. Reachability follows every reference into data, including
// dynamic ones (data.pkg[x] reaches every rule under data.pkg), across
// packages. A bare input, or a with modifier that replaces any part of the
// input, widens to the whole input. One narrowing is modelled: a type test
// (is_object, is_string, type_name, ...) applied directly to a constant
// input path reads only the type of the value there, not its contents. It
// never evaluates anything.
package readset

import (
	"crypto/sha256"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
)

// Path is one input path read whole: each element is a string (an object
// key) or an int (an array index).
type Path []any

// String writes p as a reference, e.g. input.context.agent["trust level"][0].
func (p Path) String() string {
	var b strings.Builder
	b.WriteString("input")
	for _, e := range p {
		switch x := e.(type) {
		case string:
			if isIdent(x) {
				b.WriteByte('.')
				b.WriteString(x)
			} else {
				b.WriteByte('[')
				b.WriteString(strconv.Quote(x))
				b.WriteByte(']')
			}
		case int:
			b.WriteByte('[')
			b.WriteString(strconv.Itoa(x))
			b.WriteByte(']')
		}
	}
	return b.String()
}

func isIdent(s string) bool {
	if s == "" || ast.IsKeyword(s) {
		return false
	}
	for i, r := range s {
		if r == '_' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (i > 0 && r >= '0' && r <= '9') {
			continue
		}
		return false
	}
	return true
}

// Set is what an evaluation of one document can read of the input.
type Set struct {
	// Whole is true when the input may be read whole; Paths is then nil.
	Whole bool
	// WholeWhy says what widened the set to the whole input (a location and
	// the construct), for operators; empty when Whole is false.
	WholeWhy string
	// Paths are the subtrees read, each whole: no path is a prefix of
	// another, sorted. Empty (and Whole false) when the input is not read.
	Paths []Path
	// Types are paths of which only the type is read (a type test such as
	// is_object(input.request) applied to the path itself): whether the
	// value is missing, null, a boolean, a number, a string, an array or an
	// object, not what it holds. None lies within a path of Paths; sorted.
	Types []Path
	// Nondeterministic lists the non-deterministic built-ins reachable from
	// the document (time.now_ns, rand.intn, http.send, ...), sorted. A
	// decision that may call one is never cached.
	Nondeterministic []string
	// Rules is the number of rules and functions the document can reach.
	Rules int

	fp [16]byte // Fingerprint, computed by Analyze
}

// Fingerprint identifies what the set reads (Whole, Paths, Types): two
// sets that read differently have different fingerprints. A cache key on a
// projection includes it, so that instances whose analyses differ (two
// versions sharing an L2) never share a key for two inputs that agree only
// on the values their sets project.
func (s *Set) Fingerprint() [16]byte {
	if s.fp != ([16]byte{}) {
		return s.fp
	}
	return s.fingerprint()
}

func (s *Set) fingerprint() [16]byte {
	h := sha256.New()
	if s.Whole {
		h.Write([]byte("whole\n"))
	}
	for _, group := range [...][]Path{s.Paths, s.Types} {
		fmt.Fprintf(h, "%d\n", len(group))
		for _, p := range group {
			h.Write([]byte(p.String()))
			h.Write([]byte{'\n'})
		}
	}
	var fp [16]byte
	copy(fp[:], h.Sum(nil))
	return fp
}

// Cacheable reports whether decisions of the document may be cached at all.
func (s *Set) Cacheable() bool { return len(s.Nondeterministic) == 0 }

// Size is the number of paths (read whole or by type), or -1 for the whole
// input.
func (s *Set) Size() int {
	if s.Whole {
		return -1
	}
	return len(s.Paths) + len(s.Types)
}

// Covers reports whether every path other reads lies within a path s
// reads (a query derived from s's document, a specialisation say, must read
// nothing s does not).
func (s *Set) Covers(other *Set) bool {
	if s.Whole {
		return true
	}
	if other.Whole {
		return false
	}
	for _, p := range other.Paths {
		if !slices.ContainsFunc(s.Paths, func(q Path) bool { return hasPrefix(p, q) }) {
			return false
		}
	}
	for _, p := range other.Types {
		if !slices.ContainsFunc(s.Paths, func(q Path) bool { return hasPrefix(p, q) }) &&
			!slices.ContainsFunc(s.Types, func(q Path) bool { return comparePaths(p, q) == 0 }) {
			return false
		}
	}
	return true
}

// String lists the set one path a line.
func (s *Set) String() string {
	var b strings.Builder
	switch {
	case s.Whole:
		fmt.Fprintf(&b, "input (whole: %s)\n", s.WholeWhy)
	case len(s.Paths) == 0 && len(s.Types) == 0:
		b.WriteString("(no input read)\n")
	default:
		for _, p := range s.Paths {
			b.WriteString(p.String())
			b.WriteByte('\n')
		}
		for _, p := range s.Types {
			fmt.Fprintf(&b, "type of %s\n", p)
		}
	}
	for _, n := range s.Nondeterministic {
		fmt.Fprintf(&b, "non-deterministic built-in: %s (never cached)\n", n)
	}
	return b.String()
}

// Analyzer answers read sets for the documents of one compiled policy.
type Analyzer struct {
	rules []indexedRule
	index *prefixNode // the rules' ground prefixes as a tree, for reachData
}

// prefixNode is one term of the rules' ground prefixes: the rules whose
// prefix ends here, and all those whose prefix passes through it or ends
// here. A child is one text of a term; match descends into every child
// whose term is Equal to the reference's, as a scan comparing every rule's
// prefix with Term.Equal does: Equal is not transitive for numbers (OPA
// compares some as float64, others exactly), so no one child stands for
// the terms Equal to it.
type prefixNode struct {
	term     *ast.Term
	children []*prefixNode
	ends     []int
	all      []int
}

// add records rule i under prefix.
func (n *prefixNode) add(prefix ast.Ref, i int) {
	n.all = append(n.all, i)
	for _, t := range prefix {
		var next *prefixNode
		for _, c := range n.children {
			if c.term.String() == t.String() {
				next = c
				break
			}
		}
		if next == nil {
			next = &prefixNode{term: t}
			n.children = append(n.children, next)
		}
		n = next
		n.all = append(n.all, i)
	}
	n.ends = append(n.ends, i)
}

// match appends to out the rules whose ground prefix and prefix are one a
// prefix of the other (equal term by term over their common length):
// those ending on prefix's way down, and all under where it ends. Each rule
// is on one way down, so none is appended twice.
func (n *prefixNode) match(prefix ast.Ref, out []int) []int {
	if len(prefix) == 0 {
		return append(out, n.all...)
	}
	out = append(out, n.ends...)
	for _, c := range n.children {
		if c.term.Equal(prefix[0]) {
			out = c.match(prefix[1:], out)
		}
	}
	return out
}

type indexedRule struct {
	rule   *ast.Rule
	prefix ast.Ref // ground prefix of the rule's full reference
	// typeOnly: typeOnlyLocals of the rule and of each of its else
	// branches, in order. Made once here: every analysis walks the rules it
	// reaches, and finding these took about a fifth of the CPU of a path's
	// first request (a profile of new paths asked one after another).
	typeOnly []map[ast.Var]bool
}

// New indexes the rules of a compiled policy. c must have compiled
// successfully; its modules are read, never changed.
func New(c *ast.Compiler) *Analyzer {
	a := &Analyzer{index: &prefixNode{}}
	for _, id := range sortedKeys(c.Modules) {
		for _, r := range c.Modules[id].Rules {
			ir := indexedRule{rule: r, prefix: r.Ref().GroundPrefix()}
			for e := r; e != nil; e = e.Else {
				ir.typeOnly = append(ir.typeOnly, typeOnlyLocals(e))
			}
			a.index.add(ir.prefix, len(a.rules))
			a.rules = append(a.rules, ir)
		}
	}
	return a
}

func sortedKeys(m map[string]*ast.Module) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// RulePaths returns the ground reference of every rule that is not a
// function, once each, sorted: the documents a client can ask for by rule.
func (a *Analyzer) RulePaths() []ast.Ref {
	var out []ast.Ref
	seen := map[string]bool{}
	for _, r := range a.rules {
		if len(r.prefix) < 2 || len(r.rule.Head.Args) > 0 {
			continue
		}
		k := r.prefix.String()
		if !seen[k] {
			seen[k] = true
			out = append(out, r.prefix)
		}
	}
	slices.SortFunc(out, func(x, y ast.Ref) int { return strings.Compare(x.String(), y.String()) })
	return out
}

// Analyze returns the read set of the document at ref (data.a.b.c), or of a
// query: extra terms (for example a residual query) are walked as well.
func (a *Analyzer) Analyze(ref ast.Ref, extra ...*ast.Term) *Set {
	w := a.reach(func(w *walker) {
		w.reachData(ref)
		for _, t := range extra {
			w.walk(t)
		}
	})
	s := &Set{Rules: len(w.reached)}
	if w.whole != "" {
		s.Whole, s.WholeWhy = true, w.whole
	} else {
		if w.typeMocked {
			w.paths, w.types = append(w.paths, w.types...), nil
		}
		s.Paths = minimal(w.paths)
		s.Types = typesOutside(w.types, s.Paths)
	}
	for n := range w.nd {
		s.Nondeterministic = append(s.Nondeterministic, n)
	}
	slices.Sort(s.Nondeterministic)
	s.fp = s.fingerprint()
	return s
}

// Reachable returns the rules evaluating query can reach (each rule once,
// its else branches with it): those Analyze walks.
func (a *Analyzer) Reachable(query ast.Body) []*ast.Rule {
	return a.reach(func(w *walker) { w.walk(query) }).reached
}

// reach walks what start reaches, then every rule reached, until no new
// rule is.
func (a *Analyzer) reach(start func(*walker)) *walker {
	w := &walker{a: a, visited: make([]bool, len(a.rules)), nd: map[string]bool{}}
	start(w)
	for len(w.queue) > 0 {
		i := w.queue[len(w.queue)-1]
		w.queue = w.queue[:len(w.queue)-1]
		w.reached = append(w.reached, a.rules[i].rule)
		for j, r := 0, a.rules[i].rule; r != nil; j, r = j+1, r.Else {
			w.typeOnly = a.rules[i].typeOnly[j]
			w.walk(r)
		}
		w.typeOnly = nil
	}
	return w
}

type walker struct {
	a        *Analyzer
	visited  []bool
	queue    []int
	matched  []int // reachData's scratch
	reached  []*ast.Rule
	paths    []Path
	types    []Path           // paths of which only the type is read
	typeOnly map[ast.Var]bool // in the rule being walked: variables only given to a type test
	whole    string           // why the whole input is read; "" if not
	nd       map[string]bool
	// typeMocked: a reachable with replaces a type test (with is_object
	// as f). The mock stays in force in every rule evaluated under that
	// expression and may read all of what a type test is given there, so
	// no read can be narrowed to a type.
	typeMocked bool
}

func (w *walker) widen(why string, loc *ast.Location) {
	if w.whole != "" {
		return
	}
	if loc != nil {
		why = fmt.Sprintf("%s at %s:%d", why, loc.File, loc.Row)
	}
	w.whole = why
}

// reachData queues every rule a reference into data can evaluate: those
// whose ground path and the reference's ground prefix are one a prefix of
// the other (data.a.b reaches data.a.b.c.d and data.a; data.a[x] reaches
// everything under data.a). A nil ref reaches nothing.
func (w *walker) reachData(ref ast.Ref) {
	if len(ref) == 0 {
		return
	}
	// Queued in the rules' order, as a scan of every rule queued them
	// (that scan was most of an analysis's CPU: every reference into data
	// of every rule reached compared every rule's prefix).
	w.matched = w.a.index.match(ref.GroundPrefix(), w.matched[:0])
	slices.Sort(w.matched)
	for _, i := range w.matched {
		if !w.visited[i] {
			w.visited[i] = true
			w.queue = append(w.queue, i)
		}
	}
}

// walk visits every node under x. References are handled as a whole (their
// head decides what they read) and their other elements walked after.
func (w *walker) walk(x any) {
	ast.NewGenericVisitor(func(n any) bool {
		switch v := n.(type) {
		case *ast.Term:
			switch tv := v.Value.(type) {
			case ast.Ref:
				w.ref(tv, v.Location)
				return true
			case ast.Var:
				w.variable(tv, v.Location)
				return true
			case ast.Call:
				w.call(tv)
				if w.typeTest(tv) {
					return true
				}
			}
		case ast.Ref:
			w.ref(v, nil)
			return true
		case ast.Var:
			w.variable(v, nil)
			return true
		case *ast.Expr:
			if w.typeOnlyBinding(v) {
				return true
			}
			if v.IsCall() {
				w.call(v.Terms.([]*ast.Term))
				if len(v.With) == 0 && w.typeTest(v.Terms.([]*ast.Term)) {
					return true
				}
			}
			for _, with := range v.With {
				if ref, ok := with.Target.Value.(ast.Ref); ok && ref.HasPrefix(ast.InputRootRef) {
					w.widen("with "+ref.String(), with.Location)
				}
				if typeTests[with.Target.String()] {
					w.typeMocked = true
				}
				// The target names what is replaced, not something read;
				// the value is an ordinary term (a mock that is a
				// non-deterministic built-in is recorded as its call is).
				w.call([]*ast.Term{with.Value})
				w.walk(with.Value)
			}
			if len(v.With) > 0 {
				// Walk the expression's own terms without its modifiers
				// (and without the type-test narrowing, walked as v is: a
				// mocked call may read all of its operand). The generic
				// visitor does not descend into a bare []*ast.Term (the
				// terms of a call or an equality): walk each.
				if ts, ok := v.Terms.([]*ast.Term); ok {
					for _, t := range ts {
						w.walk(t)
					}
				} else {
					w.walk(v.Terms)
				}
				return true
			}
		}
		return false
	}).Walk(x)
}

// call records a non-deterministic built-in; the operator and the operands
// are walked as ordinary terms.
func (w *walker) call(terms []*ast.Term) {
	if len(terms) == 0 {
		return
	}
	op, ok := terms[0].Value.(ast.Ref)
	if !ok {
		return
	}
	if b, ok := ast.BuiltinMap[op.String()]; ok && (b.Nondeterministic || clockDependent[b.Name]) {
		w.nd[b.Name] = true
	}
}

// clockDependent are built-ins OPA does not mark non-deterministic whose
// result still depends on the time of the call: certificate chains are
// verified against the current time unless the options give one, so a
// cached "valid" would outlive the certificate's expiry.
var clockDependent = map[string]bool{
	"crypto.x509.parse_and_verify_certificates":              true,
	"crypto.x509.parse_and_verify_certificates_with_options": true,
}

// typeTests are the built-ins whose result depends only on the type of
// their operand.
var typeTests = map[string]bool{
	"is_object": true, "is_array": true, "is_string": true, "is_number": true,
	"is_boolean": true, "is_null": true, "is_set": true, "type_name": true,
}

// typeTest handles a call of a type test whose operand is an input
// reference with a constant path: only the type there is read. It walks the
// call's other terms itself and reports whether it did.
func (w *walker) typeTest(terms []*ast.Term) bool {
	if len(terms) < 2 || !typeTests[terms[0].String()] {
		return false
	}
	p, ok := constantInputPath(terms[1])
	if !ok {
		return false // not constant: an ordinary read of the prefix
	}
	w.types = append(w.types, p)
	for _, t := range terms[2:] {
		w.walk(t)
	}
	return true
}

// typeOnlyLocals finds the variables of a rule that occur exactly twice:
// once as the first operand of a type test, and once more. The compiler
// turns is_object(input.r) into x = input.r; is_object(x): for such an x,
// only the type of what it is bound to is read.
//
// Every occurrence counts, those in a rule's head reference too
// (grants[role].admin := true if { role := input.role; is_string(role) }:
// role is a key of the document, its value read), which ast.WalkVars does
// not visit: counted by it alone, such a role was a type-only local and
// the cache answered one role with another's decision.
func typeOnlyLocals(r *ast.Rule) map[ast.Var]bool {
	count := map[ast.Var]int{}
	countVar := func(v ast.Var) bool {
		count[v]++
		return false
	}
	ast.WalkVars(r, countVar)
	for e := r; e != nil; e = e.Else {
		for _, t := range e.Head.Reference {
			ast.WalkVars(t, countVar)
		}
	}
	var out map[ast.Var]bool
	ast.WalkExprs(r, func(e *ast.Expr) bool {
		if !e.IsCall() || len(e.With) > 0 {
			return false
		}
		terms := e.Terms.([]*ast.Term)
		if len(terms) < 2 || !typeTests[terms[0].String()] {
			return false
		}
		if v, ok := terms[1].Value.(ast.Var); ok && count[v] == 2 {
			if out == nil {
				out = map[ast.Var]bool{}
			}
			out[v] = true
		}
		return false
	})
	return out
}

// typeOnlyBinding handles x = input.r (or input.r = x) where x is only
// given to a type test: the type at r is read. It reports whether it did.
func (w *walker) typeOnlyBinding(e *ast.Expr) bool {
	if len(w.typeOnly) == 0 || !e.IsEquality() || len(e.With) > 0 || e.Negated {
		return false
	}
	terms := e.Terms.([]*ast.Term)
	for _, pair := range [][2]*ast.Term{{terms[1], terms[2]}, {terms[2], terms[1]}} {
		v, ok := pair[0].Value.(ast.Var)
		if !ok || !w.typeOnly[v] {
			continue
		}
		if p, ok := constantInputPath(pair[1]); ok {
			w.types = append(w.types, p)
			return true
		}
	}
	return false
}

// constantInputPath returns the path of an input reference whose elements
// are all constant.
func constantInputPath(t *ast.Term) (Path, bool) {
	r, ok := t.Value.(ast.Ref)
	if !ok || len(r) < 2 || !r[0].Equal(ast.InputRootDocument) {
		return nil, false
	}
	p := make(Path, 0, len(r)-1)
	for _, t := range r[1:] {
		e, ok := pathElem(t.Value)
		if !ok {
			return nil, false
		}
		p = append(p, e)
	}
	return p, true
}

func (w *walker) variable(v ast.Var, loc *ast.Location) {
	switch {
	case v.Equal(ast.InputRootDocument.Value):
		w.widen("the whole input", loc)
	case v.Equal(ast.DefaultRootDocument.Value):
		w.reachData(ast.DefaultRootRef)
	}
}

func (w *walker) ref(r ast.Ref, loc *ast.Location) {
	if len(r) == 0 {
		return
	}
	switch {
	case r[0].Equal(ast.InputRootDocument):
		w.inputRef(r, loc)
	case r[0].Equal(ast.DefaultRootDocument):
		w.reachData(r)
	default:
		if _, isVar := r[0].Value.(ast.Var); !isVar {
			w.walk(r[0]) // a composite or call at the head of a reference
		}
	}
	for _, t := range r[1:] {
		w.walk(t)
	}
}

// inputRef records the longest constant prefix of a reference into input.
func (w *walker) inputRef(r ast.Ref, loc *ast.Location) {
	var p Path
	for _, t := range r[1:] {
		e, ok := pathElem(t.Value)
		if !ok {
			break
		}
		p = append(p, e)
	}
	if len(p) == 0 {
		w.widen(r.String(), loc)
		return
	}
	w.paths = append(w.paths, p)
}

// pathElem converts a constant reference element to a path element: a
// string, or a number that indexes an array exactly as topdown does (an
// integer literal). Anything else is not constant for the analysis.
func pathElem(v ast.Value) (any, bool) {
	switch x := v.(type) {
	case ast.String:
		return string(x), true
	case ast.Number:
		i, err := strconv.ParseInt(string(x), 10, 64)
		if err != nil || i < 0 || i > 1<<31 {
			return nil, false
		}
		return int(i), true
	}
	return nil, false
}

// minimal sorts paths and drops every path that has a (not necessarily
// proper) prefix earlier in the set.
func minimal(paths []Path) []Path {
	slices.SortFunc(paths, comparePaths)
	var out []Path
	for _, p := range paths {
		if len(out) > 0 && hasPrefix(p, out[len(out)-1]) {
			continue
		}
		out = append(out, p)
	}
	return out
}

// typesOutside sorts and dedupes type-read paths, dropping those that lie
// within a path read whole (its contents, type included, are read anyway).
func typesOutside(types, whole []Path) []Path {
	slices.SortFunc(types, comparePaths)
	var out []Path
	for _, p := range types {
		if len(out) > 0 && comparePaths(out[len(out)-1], p) == 0 {
			continue
		}
		if slices.ContainsFunc(whole, func(q Path) bool { return hasPrefix(p, q) }) {
			continue
		}
		out = append(out, p)
	}
	return out
}

func hasPrefix(p, prefix Path) bool {
	if len(prefix) > len(p) {
		return false
	}
	for i := range prefix {
		if !sameElem(p[i], prefix[i]) {
			return false
		}
	}
	return true
}

func sameElem(x, y any) bool {
	switch a := x.(type) {
	case string:
		b, ok := y.(string)
		return ok && a == b
	case int:
		b, ok := y.(int)
		return ok && a == b
	}
	return false
}

// comparePaths orders element by element (ints before strings), a prefix
// before its extensions, so that after sorting a path's ancestors in the
// set come right before its subtree.
func comparePaths(x, y Path) int {
	for i := 0; i < min(len(x), len(y)); i++ {
		if c := compareElem(x[i], y[i]); c != 0 {
			return c
		}
	}
	return len(x) - len(y)
}

func compareElem(x, y any) int {
	switch a := x.(type) {
	case int:
		if b, ok := y.(int); ok {
			return a - b
		}
		return -1
	case string:
		if b, ok := y.(string); ok {
			return strings.Compare(a, b)
		}
		return 1
	}
	return 0
}
