package vm

import (
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/ir"
)

// Array construction. The planner builds an array literal as MakeArray
// (with the literal's length as capacity) followed, in the same block, by
// one ArrayAppend per element, each after the statements computing it; and
// a comprehension as MakeArray followed by appends in nested blocks. Done
// naively, every append allocates a new ast.Array. Instead:
//
//   - a literal of constants is built once, at lowering, and shared;
//   - a literal of computed elements is allocated at its final length, and
//     its appends set the element at their (static) position;
//   - a comprehension's array is the shared empty array until its first
//     append, so an empty result allocates nothing.
//
// A literal is only recognised when nothing but its appends refers to its
// local between MakeArray and the last append, and no statement there
// could leave the block early other than by being undefined (which
// abandons the array: nothing after reads it).

var emptyArray = ast.NewTerm(ast.NewArray())

// literal is a recognised array literal of a block.
type literal struct {
	n        int
	constant *ast.Term // the whole array when every element is a constant
}

// scanLiterals records the array literals of a block: for each MakeArray,
// the literal, and for each of its appends, the element position (and
// whether the literal is constant).
func (c *compiler) scanLiterals(b *ir.Block) {
	for i, s := range b.Stmts {
		mk, ok := s.(*ir.MakeArrayStmt)
		if !ok || mk.Capacity <= 0 {
			continue
		}
		n, t := int(mk.Capacity), mk.Target
		var appends []*ir.ArrayAppendStmt
		consts := map[ir.Local]*ast.Term{}
		elems := make([]*ast.Term, 0, n)
		constant := true
		good := true
		for j := i + 1; j < len(b.Stmts) && len(appends) < n && good; j++ {
			switch x := b.Stmts[j].(type) {
			case *ir.ArrayAppendStmt:
				if x.Array == t {
					appends = append(appends, x)
					var e *ast.Term
					switch v := x.Value.Value.(type) {
					case ir.StringIndex:
						e = c.strs[int(v)]
					case ir.Bool:
						e = ast.InternedTerm(bool(v))
					case ir.Local:
						e = consts[v]
					}
					if e == nil {
						constant = false
					}
					elems = append(elems, e)
					continue
				}
				good = !mentions(x, t)
			case *ir.MakeNumberRefStmt:
				consts[x.Target] = c.number(x.Index)
				good = x.Target != t
			case *ir.MakeNumberIntStmt:
				consts[x.Target] = intTerm(x.Value)
				good = x.Target != t
			case *ir.MakeNullStmt:
				consts[x.Target] = ast.InternedNullTerm
				good = x.Target != t
			default:
				locals, simple := stmtLocals(x)
				if !simple {
					good = false
					break
				}
				for _, l := range locals {
					if l == t {
						good = false
					}
					delete(consts, l) // assigned (or read) by something else: not known constant
				}
			}
		}
		if !good || len(appends) != n {
			continue
		}
		lit := &literal{n: n}
		if constant {
			lit.constant = ast.NewTerm(ast.NewArray(elems...))
		}
		c.lits[mk] = lit
		for k, a := range appends {
			c.litPos[a] = k
			c.constAppends[a] = constant
		}
	}
}

func intTerm(v int64) *ast.Term {
	if int64(int(v)) == v {
		return ast.InternedTerm(int(v))
	}
	return ast.NewTerm(ast.Number(itoa(v)))
}

func itoa(v int64) string {
	var b [24]byte
	i := len(b)
	neg := v < 0
	u := uint64(v)
	if neg {
		u = uint64(-v)
	}
	for u >= 10 {
		i--
		b[i] = byte('0' + u%10)
		u /= 10
	}
	i--
	b[i] = byte('0' + u)
	if neg {
		i--
		b[i] = '-'
	}
	return string(b[i:])
}

// mentions reports whether an append statement refers to l.
func mentions(s *ir.ArrayAppendStmt, l ir.Local) bool {
	if v, ok := s.Value.Value.(ir.Local); ok && v == l {
		return true
	}
	return s.Array == l
}

// stmtLocals lists the locals a statement without nested blocks refers
// to; simple is false for statements with blocks or control flow.
func stmtLocals(s ir.Stmt) (locals []ir.Local, simple bool) {
	op := func(o ir.Operand) {
		if l, ok := o.Value.(ir.Local); ok {
			locals = append(locals, l)
		}
	}
	switch x := s.(type) {
	case *ir.CallStmt:
		for _, a := range x.Args {
			op(a)
		}
		locals = append(locals, x.Result)
	case *ir.DotStmt:
		op(x.Source)
		op(x.Key)
		locals = append(locals, x.Target)
	case *ir.LenStmt:
		op(x.Source)
		locals = append(locals, x.Target)
	case *ir.AssignIntStmt:
		locals = append(locals, x.Target)
	case *ir.AssignVarStmt:
		op(x.Source)
		locals = append(locals, x.Target)
	case *ir.AssignVarOnceStmt:
		op(x.Source)
		locals = append(locals, x.Target)
	case *ir.ResetLocalStmt:
		locals = append(locals, x.Target)
	case *ir.MakeArrayStmt:
		locals = append(locals, x.Target)
	case *ir.MakeObjectStmt:
		locals = append(locals, x.Target)
	case *ir.MakeSetStmt:
		locals = append(locals, x.Target)
	case *ir.EqualStmt:
		op(x.A)
		op(x.B)
	case *ir.NotEqualStmt:
		op(x.A)
		op(x.B)
	case *ir.IsArrayStmt:
		op(x.Source)
	case *ir.IsObjectStmt:
		op(x.Source)
	case *ir.IsSetStmt:
		op(x.Source)
	case *ir.IsDefinedStmt:
		locals = append(locals, x.Source)
	case *ir.IsUndefinedStmt:
		locals = append(locals, x.Source)
	case *ir.ObjectInsertStmt:
		op(x.Key)
		op(x.Value)
		locals = append(locals, x.Object)
	case *ir.ObjectInsertOnceStmt:
		op(x.Key)
		op(x.Value)
		locals = append(locals, x.Object)
	case *ir.SetAddStmt:
		op(x.Value)
		locals = append(locals, x.Set)
	case *ir.NopStmt:
	default:
		return nil, false
	}
	return locals, true
}

// makeArray lowers a MakeArray statement.
func (c *compiler) makeArray(s *ir.MakeArrayStmt) stmt {
	t := c.local(s.Target)
	if lit := c.lits[s]; lit != nil {
		if k := lit.constant; k != nil {
			return func(_ *state, l []*ast.Term) ctl {
				l[t] = k
				return ctlNext
			}
		}
		n := lit.n
		return func(_ *state, l []*ast.Term) ctl {
			term, elems := literalTerm(n)
			for i := range elems {
				elems[i] = ast.InternedNullTerm
			}
			term.Value = ast.NewArray(elems...)
			l[t] = term
			return ctlNext
		}
	}
	return func(_ *state, l []*ast.Term) ctl {
		l[t] = emptyArray
		return ctlNext
	}
}

// literalTerm returns a new term and the element slice of an array literal
// of n elements, for the small sizes in one allocation.
func literalTerm(n int) (*ast.Term, []*ast.Term) {
	switch n {
	case 1:
		b := new(struct {
			t ast.Term
			e [1]*ast.Term
		})
		return &b.t, b.e[:]
	case 2:
		b := new(struct {
			t ast.Term
			e [2]*ast.Term
		})
		return &b.t, b.e[:]
	case 3:
		b := new(struct {
			t ast.Term
			e [3]*ast.Term
		})
		return &b.t, b.e[:]
	case 4:
		b := new(struct {
			t ast.Term
			e [4]*ast.Term
		})
		return &b.t, b.e[:]
	case 5, 6:
		b := new(struct {
			t ast.Term
			e [6]*ast.Term
		})
		return &b.t, b.e[:n:n]
	case 7, 8:
		b := new(struct {
			t ast.Term
			e [8]*ast.Term
		})
		return &b.t, b.e[:n:n]
	}
	return new(ast.Term), make([]*ast.Term, n)
}

// arrayAppend lowers an ArrayAppend statement.
func (c *compiler) arrayAppend(s *ir.ArrayAppendStmt) (stmt, error) {
	v, err := c.operand(s.Value)
	if err != nil {
		return nil, err
	}
	arr := c.local(s.Array)
	if i, ok := c.litPos[s]; ok {
		if c.constAppends[s] {
			return nil, nil // the constant literal holds it already
		}
		return func(st *state, l []*ast.Term) ctl {
			a, ok := l[arr].Value.(*ast.Array)
			x := v.get(l)
			if !ok || x == nil || i >= a.Len() {
				return st.fail(internalError(nil, "array literal out of shape"))
			}
			a.Set(i, x)
			return ctlNext
		}, nil
	}
	return func(st *state, l []*ast.Term) ctl {
		t, x := l[arr], v.get(l)
		if x == nil || t == nil {
			return st.fail(internalError(nil, "array append of an undefined value"))
		}
		if t == emptyArray {
			// The comprehension's first element: its own array now.
			t = ast.NewTerm(ast.NewArrayWithCapacity(4))
			l[arr] = t
		}
		a, ok := t.Value.(*ast.Array)
		if !ok {
			return st.fail(internalError(nil, "array append to a non-array"))
		}
		// The array is still being built by this frame (nothing has read
		// it yet): replace it in its term.
		t.Value = a.Append(x)
		return ctlNext
	}, nil
}
