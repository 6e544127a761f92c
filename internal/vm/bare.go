package vm

import (
	"fmt"

	"github.com/open-policy-agent/opa/v1/ast"
)

// OPA's planner takes a term used as a body expression on its own (`[y |
// y := f(1)]`, or `not {k: v | ...}`) as defined without planning it
// unless it is a reference, a variable or false: for a comprehension it
// emits nothing (under `not`, an empty NotStmt block). Topdown evaluates
// the comprehension, and fails on an error in it (a conflict in a function
// or a rule it reads, an object comprehension giving one key two values, a
// built-in under strict errors): the VM would answer where topdown fails.
// A query whose own body or a rule it reaches holds such an expression is
// left to topdown, wherever the expression is (a rule's body or else
// branch, a function, a comprehension's body, an `every` or a `not`).
//
// The check is wider than the planner's gap: a bare term holding a
// comprehension anywhere, or of a kind other than a scalar, a reference, a
// variable or a collection, counts too. The compiler hoists the dynamic
// parts of a bare collection into equalities before, so neither should
// occur in a compiled policy.

// bareComprehension says where under x (a compiled rule or query body) a
// body expression is a term holding a comprehension, or "" if none is.
func bareComprehension(x any) string {
	why := ""
	ast.WalkExprs(x, func(e *ast.Expr) bool {
		if why != "" {
			return true
		}
		t, ok := e.Terms.(*ast.Term)
		if !ok {
			return false
		}
		what := ""
		switch t.Value.(type) {
		case ast.Null, ast.Boolean, ast.Number, ast.String, ast.Ref, ast.Var, *ast.Array, ast.Object, ast.Set:
			ast.WalkTerms(t, func(u *ast.Term) bool {
				if what == "" && ast.IsComprehension(u.Value) {
					what = "a term holding a comprehension"
				}
				return what != ""
			})
		case *ast.ArrayComprehension, *ast.SetComprehension, *ast.ObjectComprehension:
			what = "a comprehension"
		default:
			what = "a " + ast.ValueName(t.Value)
		}
		if what == "" {
			return false // its nested bodies are walked on
		}
		negated := ""
		if e.Negated {
			negated = "negated "
		}
		why = fmt.Sprintf("%s as a %sbody expression: OPA's plan skips it, topdown evaluates it", what, negated)
		loc := e.Location
		if loc == nil {
			loc = t.Location
		}
		switch {
		case loc != nil && loc.File != "":
			why += fmt.Sprintf(" at %s:%d", loc.File, loc.Row)
		case loc != nil:
			why += fmt.Sprintf(" at row %d", loc.Row)
		}
		return true
	})
	return why
}
