package vm

import (
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/ir"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// builtinImpl is a built-in function as the VM calls it: OPA's own
// implementation (topdown's), or one the caller declared.
type builtinImpl struct {
	name     string
	fn       topdown.BuiltinFunc
	void     bool // no result: defined when the implementation calls iter
	relation bool // every output is collected into an array
	nd       bool // non-deterministic: consults the NDBCache like topdown
	skipBctx bool // needs no BuiltinContext but the call's location
	clock    bool // may read BuiltinContext.Time: not one of pureBuiltins
}

// builtinSite is one call of a built-in in the plan.
type builtinSite struct {
	impl *builtinImpl
	loc  *ast.Location
}

func (c *compiler) builtin(name string) (*builtinImpl, error) {
	if bi, ok := c.bis[name]; ok {
		return bi, nil
	}
	var decl *ast.Builtin
	var fn topdown.BuiltinFunc
	if custom := c.opts.Builtins[name]; custom != nil && custom.Func != nil {
		decl, fn = custom.Decl, custom.Func
	} else {
		fn = topdown.GetBuiltin(name)
		decl = ast.BuiltinMap[name]
	}
	if fn == nil || decl == nil || decl.Decl == nil {
		return nil, unsupported("built-in %s has no implementation the VM can call", name)
	}
	bi := &builtinImpl{
		name:     name,
		fn:       fn,
		void:     decl.Decl.Result() == nil,
		relation: decl.Relation,
		nd:       decl.Nondeterministic,
		skipBctx: decl.CanSkipBctx,
		clock:    c.opts.Builtins[name] != nil || !pureBuiltins[name],
	}
	c.bis[name] = bi
	return bi, nil
}

func (c *compiler) builtinCall(s *ir.CallStmt, args []operand, res int32) (stmt, error) {
	for _, a := range s.Args {
		if l, ok := a.Value.(ir.Local); ok {
			c.read(l)
		}
	}
	if f := c.nativeBuiltin(s.Func, args, res); f != nil {
		return f, nil
	}
	bi, err := c.builtin(s.Func)
	if err != nil {
		return nil, err
	}
	site := &builtinSite{impl: bi, loc: c.location(s.GetLocation())}
	c.prog.builtins = append(c.prog.builtins, site)
	generic := genericCall(site, args, res)
	if fast := c.arithmeticBuiltin(s.Func, args, res, generic); fast != nil {
		return fast, nil
	}
	return generic, nil
}

// genericCall calls the built-in of site with the operands args.
func genericCall(site *builtinSite, args []operand, res int32) stmt {
	n := len(args)
	return func(st *state, l []*ast.Term) ctl {
		buf := st.argBuf(n)
		for i, a := range args {
			t := a.get(l)
			if t == nil {
				return 0
			}
			buf[i] = t
		}
		r, c := st.callBuiltin(site, buf)
		if c != ctlNext {
			return c
		}
		if r != nil {
			l[res] = r
		}
		return ctlNext
	}
}

// arithmeticBuiltin returns a statement computing plus, minus, mul, div,
// round or sum of numbers as topdown does (numeric.go), calling generic
// whenever that is not certain; nil for other built-ins.
func (c *compiler) arithmeticBuiltin(name string, args []operand, res int32, generic stmt) stmt {
	if _, custom := c.opts.Builtins[name]; custom {
		return nil
	}
	var op arith
	switch name {
	case ast.Plus.Name:
		op = opAdd
	case ast.Minus.Name:
		op = opSub
	case ast.Multiply.Name:
		op = opMul
	case ast.Divide.Name:
		op = opQuo
	case ast.Round.Name:
		if len(args) != 1 {
			return nil
		}
		a := args[0]
		return func(st *state, l []*ast.Term) ctl {
			if x := a.get(l); x != nil {
				if n, ok := x.Value.(ast.Number); ok {
					if r, ok := roundNumber(n); ok {
						l[res] = r
						return ctlNext
					}
				}
			}
			return generic(st, l)
		}
	case ast.Max.Name, ast.Min.Name:
		// topdown/aggregates.go on an array: the last greatest (first
		// least ... last of the equal least) element's value in a new term;
		// sets and errors are topdown's.
		if len(args) != 1 {
			return nil
		}
		a, isMax := args[0], name == ast.Max.Name
		return func(st *state, l []*ast.Term) ctl {
			if x := a.get(l); x != nil {
				if arr, ok := x.Value.(*ast.Array); ok && arr.Len() > 0 {
					var m ast.Value
					if isMax {
						m = ast.InternedNullTerm.Value
						arr.Foreach(func(e *ast.Term) {
							if compareValues(m, e.Value) <= 0 {
								m = e.Value
							}
						})
					} else {
						m = arr.Elem(0).Value
						arr.Foreach(func(e *ast.Term) {
							if compareValues(m, e.Value) >= 0 {
								m = e.Value
							}
						})
					}
					l[res] = ast.NewTerm(m)
					return ctlNext
				}
			}
			return generic(st, l)
		}
	case ast.Sum.Name:
		if len(args) != 1 {
			return nil
		}
		a := args[0]
		return func(st *state, l []*ast.Term) ctl {
			if x := a.get(l); x != nil {
				if arr, ok := x.Value.(*ast.Array); ok {
					if r, ok := sumNumbers(arr); ok {
						l[res] = r
						return ctlNext
					}
				}
			}
			return generic(st, l)
		}
	default:
		return nil
	}
	if len(args) != 2 {
		return nil
	}
	a, b := args[0], args[1]
	return func(st *state, l []*ast.Term) ctl {
		if x, y := a.get(l), b.get(l); x != nil && y != nil {
			n1, ok1 := x.Value.(ast.Number)
			n2, ok2 := y.Value.(ast.Number)
			if ok1 && ok2 {
				if r, ok := arithmetic(op, n1, n2); ok {
					l[res] = r
					return ctlNext
				}
			}
		}
		return generic(st, l)
	}
}

// callBuiltin calls a built-in as topdown's evaluator does: the NDBCache
// first for non-deterministic built-ins, a BuiltinContext with the call's
// location, a Halt error always an error, any other error an error under
// strict built-in errors and otherwise an undefined call.
func (st *state) callBuiltin(site *builtinSite, args []*ast.Term) (*ast.Term, ctl) {
	bi := site.impl
	ndb := st.ndbCache()
	useNDB := bi.nd && !bi.skipBctx && ndb != nil
	var key *ast.Array
	if useNDB {
		key = ast.NewArray(append([]*ast.Term(nil), args...)...)
		if v, ok := ndb.Get(bi.name, key); ok {
			return ast.NewTerm(v), ctlNext
		}
	}
	var bctx topdown.BuiltinContext
	if !bi.skipBctx {
		b := st.builtinContext()
		if bi.clock && b.Time == nil {
			// made for the first built-in that may read it (a pure one
			// never does): three allocations the others do not need
			b.Time = st.timeTerm()
		}
		bctx = *b
	}
	bctx.Location = site.loc
	st.out, st.called = nil, false
	st.outs = st.outs[:0]
	var err error
	if bi.relation {
		err = bi.fn(bctx, args, st.collectFn)
	} else {
		err = bi.fn(bctx, args, st.captureFn)
	}
	if err != nil {
		if h, ok := err.(topdown.Halt); ok {
			return nil, st.fail(h.Err)
		}
		if st.strict {
			return nil, st.fail(err)
		}
		return nil, 0
	}
	if !st.called {
		return nil, 0
	}
	var out *ast.Term
	switch {
	case bi.relation:
		out = ast.ArrayTerm(append([]*ast.Term(nil), st.outs...)...)
	case bi.void:
		return nil, ctlNext
	default:
		out = st.out
		if out == nil {
			return nil, 0
		}
	}
	if useNDB && !bi.relation {
		ndb.Put(bi.name, key, out.Value)
	}
	return out, ctlNext
}

// nativeBuiltin returns a statement computing a built-in directly, for the
// built-ins whose topdown implementation it repeats exactly; nil otherwise.
func (c *compiler) nativeBuiltin(name string, args []operand, res int32) stmt {
	if _, custom := c.opts.Builtins[name]; custom {
		return nil
	}
	if len(args) != 2 {
		return nil
	}
	a, b := args[0], args[1]
	// topdown/comparison.go: Equal and Compare on the operands, boolean result.
	var cmp func(x, y *ast.Term) bool
	switch name {
	// (termsEqual and compareValues: the same, without math/big for numbers.)
	case ast.Equal.Name:
		cmp = termsEqual
	case ast.NotEqual.Name:
		cmp = func(x, y *ast.Term) bool { return !termsEqual(x, y) }
	case ast.LessThan.Name:
		cmp = func(x, y *ast.Term) bool { return compareValues(x.Value, y.Value) < 0 }
	case ast.LessThanEq.Name:
		cmp = func(x, y *ast.Term) bool { return compareValues(x.Value, y.Value) <= 0 }
	case ast.GreaterThan.Name:
		cmp = func(x, y *ast.Term) bool { return compareValues(x.Value, y.Value) > 0 }
	case ast.GreaterThanEq.Name:
		cmp = func(x, y *ast.Term) bool { return compareValues(x.Value, y.Value) >= 0 }
	default:
		return nil
	}
	return func(_ *state, l []*ast.Term) ctl {
		x, y := a.get(l), b.get(l)
		if x == nil || y == nil {
			return 0
		}
		l[res] = ast.InternedTerm(cmp(x, y))
		return ctlNext
	}
}
