package engine

import (
	"github.com/open-policy-agent/opa/v1/ast"
)

// The rewrites of a residual (simplify.go, tabulate.go) must know which
// expression gives a variable its value: where two expressions could, the
// first to run binds it and the other checks it, and 1 and 1.0 pass the
// check but print differently. OPA's compiler decides the order
// (reorderBodyForSafety, unexported): pass after pass over the body, it
// appends each expression whose inputs are bound, until none is left. A
// residual is not in that order: partial evaluation appends the constants
// it bound at the end of a body, after the expressions that read them.
//
// evalOrder replays that ordering for the forms of expression it models;
// where a body holds one it does not, it gives up, and the rewrites leave
// that body (and the comprehensions in it) alone. The rewrites then work on
// the body in that order, which the compiler keeps as it is.

// evalOrder returns b's expressions in the order OPA's compiler runs them
// (renumbered), given the variables bound when b starts, with the variables
// each binds there (binds); ok is false when an expression is of a form
// binds does not model (or is never safe), and then the order is unknown
// and b is returned as it is.
func evalOrder(b ast.Body, bound ast.VarSet) (ast.Body, []ast.VarSet, bool) {
	for _, e := range b {
		if patterned(e) {
			return b, nil, false
		}
	}
	bound = bound.Copy()
	body := bodyVars(b)
	placed := make([]bool, len(b))
	order := make(ast.Body, 0, len(b))
	binding := make([]ast.VarSet, 0, len(b))
	for {
		n := len(order)
		for i, e := range b {
			if placed[i] {
				continue
			}
			if outs, safe := binds(e, bound, body); safe {
				placed[i] = true
				order = append(order, e)
				binding = append(binding, outs)
				bound.Update(outs)
			}
		}
		if len(order) == len(b) {
			for i := range order {
				order[i].Index = i
			}
			return order, binding, true
		}
		if len(order) == n {
			return b, nil, false
		}
	}
}

// eachComprehension calls f with the body of each comprehension in expr
// and the comprehension, not those nested in them (f's recursion reaches
// those).
func eachComprehension(expr *ast.Expr, f func(body *ast.Body, owner any)) {
	ast.WalkClosures(expr, func(x any) bool {
		switch c := x.(type) {
		case *ast.ArrayComprehension:
			f(&c.Body, c)
		case *ast.SetComprehension:
			f(&c.Body, c)
		case *ast.ObjectComprehension:
			f(&c.Body, c)
		}
		return true
	})
}

// patterned reports whether expr binds through a form binds does not
// model but OPA does: a pattern ([1, y] = input.pair, {"a": y} = o), a
// variable on both sides of = (input.xs[i] = i), a composite reference
// operand holding a variable (s[[y]]). binds would call such an expression
// unsafe until another one binds its variables, where OPA runs it first.
func patterned(expr *ast.Expr) bool {
	found := false
	ast.WalkRefs(expr, func(r ast.Ref) bool {
		for _, op := range r[1:] {
			if _, isVar := op.Value.(ast.Var); !isVar && len(op.Vars()) > 0 {
				found = true
			}
		}
		return found
	})
	if found || !expr.IsEquality() {
		return found
	}
	a, b := expr.Operand(0), expr.Operand(1)
	for _, p := range [2][2]*ast.Term{{a, b}, {b, a}} {
		if v, ok := p[0].Value.(ast.Var); ok {
			return p[1].Vars().Contains(v)
		}
	}
	// Neither side a variable: only references' heads may be variables.
	for _, t := range []*ast.Term{a, b} {
		heads := ast.NewVarSet()
		ast.WalkRefs(t, func(r ast.Ref) bool {
			if v, ok := r[0].Value.(ast.Var); ok {
				heads.Add(v)
			}
			return false
		})
		for v := range t.Vars() {
			if !heads.Contains(v) && !ast.RootDocumentNames.Contains(ast.NewTerm(v)) {
				return true
			}
		}
	}
	return false
}

// bodyVars returns the variables of b outside its closures, as the
// compiler's safety check counts them: a closure must wait for those of its
// variables that are among them.
func bodyVars(b ast.Body) ast.VarSet {
	vis := ast.NewVarVisitor().WithParams(ast.SafetyCheckVisitorParams)
	vis.Walk(b)
	return vis.Vars()
}

// binds reports whether expr is safe given the variables bound before it,
// and returns those it binds. body holds the variables of the body around
// it (bodyVars). It models =, calls of built-ins (with or without an output
// variable), a term on its own, not and with; anything else (some, every, a
// pattern on both sides of =, a call to a function of the policy, a
// variadic built-in) is reported unsafe, which makes evalOrder give up.
func binds(expr *ast.Expr, bound, body ast.VarSet) (ast.VarSet, bool) {
	outs := ast.NewVarSet()
	for _, w := range expr.With {
		if !readable(w.Value, bound, body, outs) || len(outs) > 0 {
			return nil, false
		}
	}
	switch {
	case expr.IsEquality():
		a, b := expr.Operand(0), expr.Operand(1)
		for _, p := range [2][2]*ast.Term{{a, b}, {b, a}} {
			if v, ok := p[0].Value.(ast.Var); ok && !bound.Contains(v) {
				if !readable(p[1], bound, body, outs) || outs.Contains(v) {
					return nil, false
				}
				outs.Add(v)
				return negated(expr, outs)
			}
		}
		if !readable(a, bound, body, outs) || !readable(b, bound, body, outs) {
			return nil, false
		}
		return negated(expr, outs)
	case expr.IsCall():
		bi, ok := ast.BuiltinMap[expr.Operator().String()]
		if !ok || bi.Relation || bi.Decl.FuncArgs().Variadic != nil {
			return nil, false
		}
		ops, arity := expr.Operands(), len(bi.Decl.FuncArgs().Args)
		if len(ops) != arity && len(ops) != arity+1 {
			return nil, false
		}
		for _, op := range ops[:arity] {
			if !readable(op, bound, body, outs) {
				return nil, false
			}
		}
		if len(ops) == arity+1 {
			out, ok := ops[arity].Value.(ast.Var)
			if !ok || outs.Contains(out) {
				return nil, false // a pattern as the output: not modelled
			}
			if !bound.Contains(out) {
				outs.Add(out)
			}
		}
		return negated(expr, outs)
	}
	if t, ok := expr.Terms.(*ast.Term); ok && readable(t, bound, body, outs) {
		return negated(expr, outs)
	}
	return nil, false
}

// negated returns outs for a plain expression; a negated one is safe only
// when it binds nothing.
func negated(expr *ast.Expr, outs ast.VarSet) (ast.VarSet, bool) {
	if expr.Negated {
		return nil, len(outs) == 0
	}
	return outs, true
}

// readable reports whether t has a value once the variables in bound have
// theirs. A reference may enumerate: an unbound variable among its operands
// (input.xs[i]) is bound by it, and added to outs.
func readable(t *ast.Term, bound, body, outs ast.VarSet) bool {
	switch v := t.Value.(type) {
	case ast.Var:
		return bound.Contains(v) || outs.Contains(v)
	case ast.Ref:
		if !ast.RootDocumentNames.Contains(v[0]) && !readable(v[0], bound, body, outs) {
			return false
		}
		for _, op := range v[1:] {
			if x, ok := op.Value.(ast.Var); ok && !bound.Contains(x) {
				outs.Add(x)
				continue
			}
			if !readable(op, bound, body, outs) {
				return false
			}
		}
		return true
	case *ast.Array:
		return !v.Until(func(e *ast.Term) bool { return !readable(e, bound, body, outs) })
	case ast.Set:
		return !v.Until(func(e *ast.Term) bool { return !readable(e, bound, body, outs) })
	case ast.Object:
		return !v.Until(func(k, e *ast.Term) bool { return !readable(k, bound, body, outs) || !readable(e, bound, body, outs) })
	case *ast.ArrayComprehension, *ast.SetComprehension, *ast.ObjectComprehension:
		// Its variables that the body also has are the body's: bound first.
		vis := ast.NewVarVisitor().WithParams(ast.VarVisitorParams{SkipRefCallHead: true})
		vis.Walk(v)
		for x := range vis.Vars() {
			if body.Contains(x) && !bound.Contains(x) {
				return false
			}
		}
		return true
	case ast.Call:
		return false
	}
	return ast.IsScalar(t.Value)
}
