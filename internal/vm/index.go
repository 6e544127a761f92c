package vm

import (
	"fmt"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/acgs-lite/acgs/internal/readset"
)

// Topdown indexes some comprehensions (ast.Compiler.ComprehensionIndex):
// `c := [y | some y in input.ys; y.k == x]` is evaluated once for every
// value of its key x, and the rows looked up by x. An error raised in any
// row fails the evaluation, where the VM, which evaluates the comprehension
// for the one x it is given, sees only the rows that match. A body that can
// raise an error (a conflict in a function or a rule it reads, a nested
// object comprehension, a `with`) therefore makes topdown deny where the VM
// would answer: such a query is left to topdown. Built-in errors count only
// under strict built-in errors, which a query learns at evaluation.
//
// The analysis is conservative: any reference that may reach a rule, any
// call of a function and any nested object comprehension counts, whether
// or not it can fail. The constitution's indexed comprehensions call none.

// indexRisk says why the VM cannot answer as topdown does.
type indexRisk struct {
	always string // never
	strict string // under strict built-in errors
}

// infallible are the operators an indexed body may call without making
// the query strict-sensitive: they raise no error for any operands.
var infallible = map[string]bool{
	ast.Equality.Name: true, ast.Assign.Name: true, ast.Equal.Name: true, ast.NotEqual.Name: true,
	ast.LessThan.Name: true, ast.LessThanEq.Name: true, ast.GreaterThan.Name: true, ast.GreaterThanEq.Name: true,
	ast.Member.Name: true, ast.MemberWithKey.Name: true,
}

// halting are built-ins whose errors end a topdown evaluation even without
// strict built-in errors (topdown.Halt). The others that halt do so only
// when the evaluation is cancelled, which ends it on the VM as well.
var halting = map[string]bool{"internal.template_string": true}

// findIndexRisk looks at every comprehension topdown indexes in query and
// in the rules query can reach under c.
func findIndexRisk(c *ast.Compiler, query ast.Body) indexRisk {
	var r indexRisk
	// Topdown builds a query's indices only in its own evaluation mode;
	// Prepare evaluates in that mode.
	c = c.WithEvalMode(ast.EvalModeTopdown)
	qc := c.QueryCompiler()
	compiled, err := qc.Compile(query)
	if err != nil {
		return r // rego reports the error when it prepares the query
	}
	r.inspectIndexed(c, qc.ComprehensionIndex, compiled)
	for _, rule := range readset.New(c).Reachable(compiled) {
		r.inspectIndexed(c, c.ComprehensionIndex, rule) // its else branches too
	}
	return r
}

// inspectIndexed inspects the comprehensions under x that index says
// topdown indexes.
func (r *indexRisk) inspectIndexed(c *ast.Compiler, index func(*ast.Term) *ast.ComprehensionIndex, x any) {
	ast.WalkTerms(x, func(t *ast.Term) bool {
		if r.always != "" {
			return true
		}
		if ast.IsComprehension(t.Value) && index(t) != nil {
			r.inspectBody(c, t)
		}
		return false
	})
}

// inspectBody records what in the indexed comprehension t can raise an
// error.
func (r *indexRisk) inspectBody(c *ast.Compiler, t *ast.Term) {
	at := func(what string, loc *ast.Location) string {
		s := "a comprehension topdown indexes (evaluating every row) " + what
		if loc != nil {
			s += fmt.Sprintf(" at %s:%d", loc.File, loc.Row)
		}
		return s
	}
	call := func(op *ast.Term, loc *ast.Location) {
		ref, ok := op.Value.(ast.Ref)
		if !ok || ref.HasPrefix(ast.DefaultRootRef) {
			return // a function of the policy: a reference, below
		}
		name := ref.String()
		switch {
		case halting[name]:
			r.always = at("calls "+name, loc)
		case !infallible[name] && r.strict == "":
			r.strict = at("calls "+name, loc)
		}
	}
	ast.NewGenericVisitor(func(x any) bool {
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
				if tv.HasPrefix(ast.DefaultRootRef) && len(c.GetRulesDynamicWithOpts(tv, ast.RulesOptions{IncludeHiddenModules: true})) > 0 {
					r.always = at("reads the rules under "+tv.String(), v.Location)
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
	}).Walk(t)
}
