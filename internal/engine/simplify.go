package engine

import (
	"github.com/open-policy-agent/opa/v1/ast"
)

// simplifyResidual removes from a residual query two kinds of expression
// that OPA's partial evaluation leaves inside comprehensions, where its own
// copy propagation does not go:
//
//   - v = <ground value>: a value known at build time (a threshold, a
//     category, a table from the bundle's data) bound to a local;
//   - v = w: a copy of one local into another (every `x := f(y)` compiles to
//     f(y, t); x = t).
//
// Each is dropped and every other occurrence of v replaced by the value or
// by w. Unification makes this exact: an occurrence of v elsewhere either
// reads v or binds it, and with v replaced it reads or unifies with the same
// value instead. Evaluation then binds fewer variables; OPA keeps a
// comprehension's bindings in its parent's map, and for a residual of the
// built-in constitution this keeps that map under the size at which it
// grows again (measured: a fifth less memory allocated per decision, about
// 15% less time).
//
// OPA's copypropagation package is not used: it also replaces the output
// of a call by the call itself at every use, which would repeat the call.
//
// A replacement is made only where it cannot change scope: every occurrence
// of v lies in the body that holds the expression (or in closures nested
// in it, or the head of its comprehension); neither v nor a variable
// replacing it is declared by `some` or `every` anywhere in the query (a
// declaration is a new scope, and a constant there does not parse); and a
// constant never replaces a variable at the head of a reference. The
// caller still compiles the result, and keeps the unsimplified query when
// that fails or panics.
func simplifyResidual(body ast.Body, keep ast.Var) ast.Body {
	s := simplifier{keep: keep, declared: declaredVars(body)}
	for {
		s.all = countVars(body)
		if !s.step(&body, func() any { return body }) {
			return body
		}
	}
}

type simplifier struct {
	keep     ast.Var         // never replaced: the caller reads its binding
	declared ast.VarSet      // declared by some or every: never replaced nor replacing
	all      map[ast.Var]int // occurrences in the whole query
}

// step makes one replacement in *b or in a comprehension nested in it, and
// reports whether it did. scope returns the node that bounds *b's variables
// (the whole query, or the comprehension whose body *b is).
func (s *simplifier) step(b *ast.Body, scope func() any) bool {
	var local map[ast.Var]int // occurrences in scope(), counted once per step
	for i, expr := range *b {
		v, val, ok := s.candidate(expr)
		if ok && local == nil {
			local = countVars(scope())
		}
		if ok && local[v] == s.all[v] {
			if _, isVar := val.Value.(ast.Var); isVar || !refHead(scope(), v) {
				rest := make(ast.Body, 0, len(*b)-1)
				rest = append(append(rest, (*b)[:i]...), (*b)[i+1:]...)
				if len(rest) == 0 {
					rest = append(rest, ast.NewExpr(ast.BooleanTerm(true))) // a body is never empty
				}
				for j := range rest {
					rest[j].Index = j
				}
				*b = rest
				replaceVar(scope(), v, val)
				return true
			}
		}
		found := false
		ast.WalkClosures(expr, func(x any) bool {
			switch c := x.(type) {
			case *ast.ArrayComprehension:
				found = found || s.step(&c.Body, func() any { return c })
			case *ast.SetComprehension:
				found = found || s.step(&c.Body, func() any { return c })
			case *ast.ObjectComprehension:
				found = found || s.step(&c.Body, func() any { return c })
			}
			return true // nested closures are reached through the recursion
		})
		if found {
			return true
		}
	}
	return false
}

// candidate reports whether expr is v = w or v = <ground>, with v not the
// kept variable, and returns v and the term that replaces it.
func (s *simplifier) candidate(expr *ast.Expr) (ast.Var, *ast.Term, bool) {
	if expr.Negated || len(expr.With) > 0 || !expr.IsEquality() {
		return "", nil, false
	}
	a, b := expr.Operand(0), expr.Operand(1)
	for _, pair := range [2][2]*ast.Term{{a, b}, {b, a}} {
		v, ok := pair[0].Value.(ast.Var)
		if !ok || v.Equal(s.keep) || s.declared.Contains(v) {
			continue
		}
		switch w := pair[1].Value.(type) {
		case ast.Var:
			if !w.Equal(v) && !s.declared.Contains(w) {
				return v, pair[1], true
			}
		default:
			if ast.IsConstant(w) { // no variable, reference, call or comprehension
				return v, pair[1], true
			}
		}
	}
	return "", nil, false
}

// declaredVars returns the variables that `some` and `every` declare under x.
func declaredVars(x any) ast.VarSet {
	out := ast.NewVarSet()
	ast.NewGenericVisitor(func(n any) bool {
		switch d := n.(type) {
		case *ast.SomeDecl:
			for _, t := range d.Symbols {
				out.Update(t.Vars())
			}
		case *ast.Every:
			for _, t := range []*ast.Term{d.Key, d.Value} {
				if t != nil {
					out.Update(t.Vars())
				}
			}
		}
		return false
	}).Walk(x)
	return out
}

// countVars counts the occurrences of each variable under x, closures included.
func countVars(x any) map[ast.Var]int {
	n := map[ast.Var]int{}
	ast.WalkVars(x, func(v ast.Var) bool {
		n[v]++
		return false
	})
	return n
}

// refHead reports whether v is the head of a reference under x.
func refHead(x any, v ast.Var) bool {
	found := false
	ast.WalkRefs(x, func(r ast.Ref) bool {
		found = found || r[0].Value.Compare(v) == 0
		return found
	})
	return found
}

// replaceVar replaces every occurrence of v under x (in place) with a copy of t.
func replaceVar(x any, v ast.Var, t *ast.Term) {
	_, _ = ast.TransformVars(x, func(y ast.Var) (ast.Value, error) {
		if y.Equal(v) {
			return t.Copy().Value, nil
		}
		return y, nil
	})
}
