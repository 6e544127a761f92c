package vm

import (
	"fmt"
	"sync/atomic"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/acgs-lite/acgs/internal/readset"
)

// Topdown indexes some comprehensions (ast.Compiler.ComprehensionIndex):
// `c := [y | some y in input.ys; y.k == x]` is evaluated once for every
// value of its key x, with x unbound, and the rows looked up by x. An error
// raised in any row fails the evaluation, where the VM, which evaluates the
// comprehension for the one x it is given, sees only the rows that match.
// A body that can raise an error (a conflict in a function or a rule it
// reads, a nested object comprehension, a `with`, a mocked built-in, a key
// given to a call before it is bound) therefore makes topdown deny where
// the VM would answer, and a key in the comprehension's head takes the
// row's text (1.0) under topdown and the outer value's (1) on the VM. Such
// a query is left to topdown. Built-in errors count only under strict
// built-in errors, which a query learns at evaluation.
//
// The analysis is conservative: any reference that may reach a rule, any
// call of a function and any nested object comprehension counts, whether
// or not it can fail. The constitution's indexed comprehensions call none.

// indexRisk says why the VM cannot answer as topdown does.
type indexRisk struct {
	always string // never
	strict string // under strict built-in errors
}

func (r *indexRisk) add(o indexRisk) {
	if r.always == "" {
		r.always = o.always
	}
	if r.strict == "" {
		r.strict = o.strict
	}
}

// infallible are the operators an indexed body may call without making
// the query strict-sensitive: they raise no error for any operands.
var infallible = map[string]bool{
	ast.Equality.Name: true, ast.Assign.Name: true, ast.Equal.Name: true, ast.NotEqual.Name: true,
	ast.LessThan.Name: true, ast.LessThanEq.Name: true, ast.GreaterThan.Name: true, ast.GreaterThanEq.Name: true,
	ast.Member.Name: true, ast.MemberWithKey.Name: true,
}

// halting are built-ins whose errors end a topdown evaluation even without
// strict built-in errors (topdown.Halt): a request or a lookup that timed
// out, and a template string with more than one output. The others that
// halt do so only when the evaluation is cancelled, which ends it on the
// VM as well.
var halting = map[string]bool{"internal.template_string": true, "http.send": true, "net.lookup_ip_addr": true}

// compilerRisks is what findIndexRisk learns once per compiler: the
// built-ins some `with` replaces, and the rules holding an indexed
// comprehension the VM cannot run as topdown does or a body expression
// that is a comprehension (bareComprehension).
type compilerRisks struct {
	c     *ast.Compiler
	mocks map[string]bool
	rules map[*ast.Rule]indexRisk
}

// lastRisks keeps the analysis of the compiler prepared last: the engine
// prepares every path of a policy with one compiler.
var lastRisks atomic.Pointer[compilerRisks]

// findIndexRisk looks at every comprehension topdown indexes in query and
// in the rules query can reach under c, and at every body expression that
// is a comprehension there (bareComprehension).
func findIndexRisk(c *ast.Compiler, query ast.Body) indexRisk {
	// Topdown builds a query's indices only in its own evaluation mode;
	// Prepare evaluates in that mode.
	c = c.WithEvalMode(ast.EvalModeTopdown)
	qc := c.QueryCompiler()
	compiled, err := qc.Compile(query)
	if err != nil {
		return indexRisk{} // rego reports the error when it prepares the query
	}
	cr := lastRisks.Load()
	if cr == nil || cr.c != c {
		cr = analyseRules(c, nil)
		lastRisks.Store(cr)
	}
	if qm := mocksIn(compiled); len(qm) > 0 {
		// A `with` in the query mocks built-ins for every rule.
		for name := range cr.mocks {
			qm[name] = true
		}
		cr = analyseRules(c, qm)
	}
	r := inspectIndexed(c, cr.mocks, qc.ComprehensionIndex, compiled)
	if why := bareComprehension(compiled); why != "" {
		r.add(indexRisk{always: "the query has " + why})
	}
	if len(cr.rules) > 0 {
		for _, rule := range readset.New(c).Reachable(compiled) {
			r.add(cr.rules[rule])
		}
	}
	return r
}

// analyseRules finds the rules of c holding indexed comprehensions the VM
// cannot run as topdown does, with the built-ins that any `with` of c (or
// mocks, from the query) replaces, and those holding a body expression
// that is a comprehension (bareComprehension).
func analyseRules(c *ast.Compiler, mocks map[string]bool) *compilerRisks {
	cr := &compilerRisks{c: c, mocks: map[string]bool{}, rules: map[*ast.Rule]indexRisk{}}
	for name := range mocks {
		cr.mocks[name] = true
	}
	for _, m := range c.Modules {
		for name := range mocksIn(m) {
			cr.mocks[name] = true
		}
	}
	for _, m := range c.Modules {
		for _, rule := range m.Rules {
			r := indexRisk{}
			if why := bareComprehension(rule); why != "" {
				// A rule's Else branches are walked with it.
				r.always = "rule " + rule.Ref().String() + " has " + why
			}
			r.add(inspectIndexed(c, cr.mocks, c.ComprehensionIndex, rule))
			if r != (indexRisk{}) {
				cr.rules[rule] = r
			}
		}
	}
	return cr
}

// mocksIn returns the built-ins that a `with` under x replaces (with abs
// as f): topdown evaluates every row of an indexed comprehension under the
// mocks in force, so a call of a mocked built-in is a call of the mock.
func mocksIn(x any) map[string]bool {
	out := map[string]bool{}
	ast.WalkExprs(x, func(e *ast.Expr) bool {
		for _, w := range e.With {
			if ref, ok := w.Target.Value.(ast.Ref); ok && !ref.HasPrefix(ast.DefaultRootRef) && !ref.HasPrefix(ast.InputRootRef) {
				out[ref.String()] = true
			}
		}
		return false
	})
	return out
}

// inspectIndexed inspects the comprehensions under x that index says
// topdown indexes.
func inspectIndexed(c *ast.Compiler, mocks map[string]bool, index func(*ast.Term) *ast.ComprehensionIndex, x any) indexRisk {
	var r indexRisk
	ast.WalkTerms(x, func(t *ast.Term) bool {
		if r.always != "" {
			return true
		}
		if !ast.IsComprehension(t.Value) {
			return false
		}
		if idx := index(t); idx != nil {
			r.add(inspectBody(c, mocks, t, idx.Keys))
		}
		return false
	})
	return r
}

// inspectBody says what in the indexed comprehension t, with index keys,
// can make topdown's answer differ from the VM's.
func inspectBody(c *ast.Compiler, mocks map[string]bool, t *ast.Term, keys []*ast.Term) indexRisk {
	var r indexRisk
	at := func(what string, loc *ast.Location) string {
		s := "a comprehension topdown indexes (evaluating every row) " + what
		if loc != nil {
			s += fmt.Sprintf(" at %s:%d", loc.File, loc.Row)
		}
		return s
	}
	if why := keyUse(t, keys); why != "" {
		r.always = at(why, t.Location)
		return r
	}
	call := func(op *ast.Term, loc *ast.Location) {
		ref, ok := op.Value.(ast.Ref)
		if !ok || ref.HasPrefix(ast.DefaultRootRef) {
			return // a function of the policy: a reference, below
		}
		name := ref.String()
		switch {
		case halting[name] || mocks[name]:
			r.always = at("calls "+name, loc)
		case !infallible[name] && r.strict == "":
			r.strict = at("calls "+name, loc)
		}
	}
	var vis *ast.GenericVisitor
	vis = ast.NewGenericVisitor(func(x any) bool {
		if r.always != "" {
			return true
		}
		switch v := x.(type) {
		case *ast.Expr:
			if len(v.With) > 0 {
				r.always = at("has a with", v.Location)
			} else if v.IsCall() {
				call(v.OperatorTerm(), v.Location)
			}
		case *ast.Term:
			switch tv := v.Value.(type) {
			case ast.Call:
				call(tv[0], v.Location)
			case ast.Ref:
				if tv.HasPrefix(ast.DefaultRootRef) {
					if len(c.GetRulesDynamicWithOpts(tv, ast.RulesOptions{IncludeHiddenModules: true})) > 0 {
						r.always = at("reads the rules under "+tv.String(), v.Location)
					}
					// The head is the reference's, not the whole data
					// document: walk the rest.
					for _, e := range tv[1:] {
						vis.Walk(e)
					}
					return true
				}
			case ast.Var:
				if tv.Equal(ast.DefaultRootDocument.Value) && len(c.GetRulesDynamicWithOpts(ast.DefaultRootRef, ast.RulesOptions{IncludeHiddenModules: true})) > 0 {
					r.always = at("reads the whole data document", v.Location)
				}
			case *ast.ObjectComprehension:
				if v != t {
					r.always = at("holds an object comprehension", v.Location)
				}
			}
		}
		return false
	})
	vis.Walk(t)
	return r
}

// keyUse says why the index keys of t are not used only as topdown's
// indexing leaves them harmless: each key must occur once, as an operand of
// an equality in the body. Topdown evaluates the rows with the keys unbound
// and binds them from the row: a key in the head takes the row's value (1.0
// where the VM has the outer 1), and a key given to a call before the
// equality that binds it is an error (an operand that requires evaluation).
func keyUse(t *ast.Term, keys []*ast.Term) string {
	var body ast.Body
	switch x := t.Value.(type) {
	case *ast.ArrayComprehension:
		body = x.Body
	case *ast.SetComprehension:
		body = x.Body
	case *ast.ObjectComprehension:
		body = x.Body
	}
	for _, k := range keys {
		v, ok := k.Value.(ast.Var)
		if !ok {
			return "has a key that is not a variable"
		}
		all, inEquality := 0, 0
		ast.WalkVars(t, func(x ast.Var) bool {
			if x.Equal(v) {
				all++
			}
			return false
		})
		for _, e := range body {
			equality := e.IsEquality() || (e.IsCall() && e.Operator().Equal(ast.Equal.Ref()))
			if !equality || e.Negated || len(e.With) > 0 {
				continue
			}
			for _, o := range e.Operands() {
				if o.Value.Compare(v) == 0 {
					inEquality++
				}
			}
		}
		if all != 1 || inEquality != 1 {
			return "uses its key " + string(v) + " other than in one equality"
		}
	}
	return ""
}
