package engine

import (
	"context"
	"fmt"
	"slices"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// tabulate replaces, in each body of a residual query, the calls whose
// values depend only on a few booleans by one lookup in a table that OPA
// computes when the plan is built, one row per combination of those
// booleans.
//
// Partial evaluation cannot do this: the booleans are tests of input values
// (sandbox_enabled == true, usage < limit). But a score computed from them
// and the bundle's constants (object.get({true: 0.3}, b, 0) + ..., then a
// weight times that) takes at most 2^k values, and OPA's decimal arithmetic
// costs microseconds a call. For the safe request of the built-in
// constitution, three groups of 13 calls (five of them arithmetic) become
// three lookups.
//
// The table is exact by construction: OPA evaluates the very calls it
// replaces, for every combination, with the same built-ins. A combination
// for which a call is undefined (or fails, which OPA treats as undefined
// unless built-in errors are strict, and they are not here) has no row, and
// the lookup is undefined there too, as the calls were. A boolean no row
// depends on is dropped from the key, and the test that made it too when
// nothing else reads it and it reads no reference (a reference may be
// undefined, and then the test fails the body). A group that reads no
// boolean is folded to constants, first, so that the groups reading
// booleans can take them in.
//
// A boolean is the output of equal, neq, lt, gt, lte, gte or is_<type>:
// these give true or false whatever their operands. Only calls to the
// built-ins in tabulable, with every operand a constant, such a boolean or
// the output of another such call of the same body, are grouped, and only
// when nothing between a group's calls reads their outputs: the lookup takes
// the last call's place. Each body is put in evaluation order first
// (bind.go), so that a call's place says what is bound there. The caller
// compiles the result and keeps the query it was given when that fails or
// panics.
func tabulate(ctx context.Context, query ast.Body, keep ast.Var) ast.Body {
	t := &tabulator{ctx: ctx, query: query, keep: keep, declared: declaredVars(query), foldOnly: true}
	// Calls on constants first, each group folded to its values and put in
	// place: a group of calls on booleans may read one.
	t.all = countVars(t.query)
	t.body(&t.query, nil, ast.NewVarSet())
	t.query = simplifyResidual(t.query, keep)
	t.foldOnly = false
	t.all = countVars(t.query)
	t.body(&t.query, nil, ast.NewVarSet())
	return t.query
}

// maxTableKey bounds the booleans of one table (2^4 rows).
const maxTableKey = 4

// tabulable are the built-ins whose calls may be grouped: functions of
// their operands alone (no time, randomness, network or data).
var tabulable = map[string]bool{
	"plus": true, "minus": true, "mul": true, "div": true, "rem": true,
	"round": true, "ceil": true, "floor": true, "abs": true,
	"sum": true, "product": true, "max": true, "min": true, "count": true, "sort": true,
	"equal": true, "neq": true, "lt": true, "gt": true, "lte": true, "gte": true,
	"object.get": true, "object.union": true, "array.concat": true, "concat": true, "sprintf": true,
	"type_name": true, "is_number": true, "is_string": true, "is_boolean": true,
	"is_array": true, "is_object": true, "is_set": true, "is_null": true,
}

// booleans always give true or false, whatever their operands, and have no
// effect: the booleans a table is keyed on, and calls that can be dropped
// when nothing reads their output.
var booleans = map[string]bool{
	"equal": true, "neq": true, "lt": true, "gt": true, "lte": true, "gte": true,
	"is_number": true, "is_string": true, "is_boolean": true, "is_array": true,
	"is_object": true, "is_set": true, "is_null": true,
}

type tabulator struct {
	ctx      context.Context
	query    ast.Body
	keep     ast.Var // read by the caller: always an output of its group
	declared ast.VarSet
	foldOnly bool            // only calls that read no boolean
	all      map[ast.Var]int // occurrences in the whole query, kept up to date
	comp     *ast.Compiler   // compiles the queries that compute tables
}

// member is one grouped call of a body.
type member struct {
	expr  *ast.Expr
	out   ast.Var
	roots []ast.Var // booleans read, directly or through other members
	deps  []ast.Var // outputs of other members read
}

// body tabulates *b, whose owner is the comprehension holding it (nil for
// the query), then the comprehensions nested in it. bound holds the
// variables of enclosing bodies bound when *b runs. *b is put in evaluation
// order first (bind.go), so that an expression's place says what is bound
// there; a body whose order is not known is left as it is, with the
// comprehensions in it.
func (t *tabulator) body(b *ast.Body, owner any, bound ast.VarSet) {
	ordered, binding, ok := evalOrder(*b, bound)
	if !ok {
		return
	}
	*b = ordered
	bound = bound.Copy()
	scope := any(*b)
	if owner != nil {
		scope = owner
	}
	all, local := t.all, countVars(scope)
	seen := ast.NewVarSet()
	roots := ast.NewVarSet()
	members := map[ast.Var]*member{}
	var order []*member
	before := map[*ast.Expr]ast.VarSet{} // bound before each expression holding a closure
	for i, expr := range *b {
		if ast.ContainsClosures(expr) {
			before[expr] = bound.Copy()
		}
		bound.Update(binding[i])
		if name, ops, out, ok := callWithOutput(expr); ok && !seen.Contains(out) && local[out] == all[out] && !t.declared.Contains(out) {
			m := &member{expr: expr, out: out}
			finite := tabulable[name]
			for _, op := range ops {
				if ast.ContainsClosures(op) {
					finite = false
				}
				for v := range op.Vars() {
					switch {
					case v.Equal(out):
						finite = false
					case roots.Contains(v):
						m.roots = append(m.roots, v)
					case members[v] != nil:
						m.deps = append(m.deps, v)
						m.roots = append(m.roots, members[v].roots...)
					default:
						finite = false
					}
				}
			}
			switch {
			case finite && (!t.foldOnly || len(m.roots) == 0):
				slices.SortFunc(m.roots, func(a, b ast.Var) int { return a.Compare(b) })
				m.roots = slices.Compact(m.roots)
				members[out] = m
				order = append(order, m)
			case booleans[name]:
				roots.Add(out)
			}
		}
		seen.Update(expr.Vars(ast.VarVisitorParams{SkipClosures: false}))
	}
	for _, group := range groups(order, members) {
		t.replace(b, group)
	}
	for _, expr := range *b {
		if len(expr.With) > 0 {
			continue // with may replace a built-in for the closures too, and the tables use the real ones
		}
		outer, ok := before[expr]
		if !ok {
			continue // a lookup, or a test dropped: no closure
		}
		eachComprehension(expr, func(body *ast.Body, owner any) { t.body(body, owner, outer) })
	}
}

// callWithOutput returns the built-in name, the input operands and the
// output variable of expr when it is a plain call f(a, ..., out).
func callWithOutput(expr *ast.Expr) (string, []*ast.Term, ast.Var, bool) {
	if expr.Negated || len(expr.With) > 0 || !expr.IsCall() {
		return "", nil, "", false
	}
	name := expr.Operator().String()
	bi, ok := ast.BuiltinMap[name]
	ops := expr.Operands()
	if !ok || bi.Relation || len(ops) != len(bi.Decl.FuncArgs().Args)+1 {
		return "", nil, "", false
	}
	out, ok := ops[len(ops)-1].Value.(ast.Var)
	if !ok {
		return "", nil, "", false
	}
	return name, ops[:len(ops)-1], out, true
}

// groups splits members into sets connected by the values they pass each
// other, in body order, keeping those worth a table: two calls or more, or
// any call that reads no boolean (a constant), with at most maxTableKey
// booleans.
func groups(order []*member, members map[ast.Var]*member) [][]*member {
	parent := map[*member]*member{}
	var find func(m *member) *member
	find = func(m *member) *member {
		if p, ok := parent[m]; ok && p != m {
			r := find(p)
			parent[m] = r
			return r
		}
		return m
	}
	for _, m := range order {
		for _, d := range m.deps {
			if a, b := find(m), find(members[d]); a != b {
				parent[a] = b
			}
		}
	}
	byRoot := map[*member][]*member{}
	var roots []*member
	for _, m := range order {
		r := find(m)
		if byRoot[r] == nil {
			roots = append(roots, r)
		}
		byRoot[r] = append(byRoot[r], m)
	}
	var out [][]*member
	for _, r := range roots {
		g := byRoot[r]
		if k := len(keyOf(g)); k <= maxTableKey && (len(g) > 1 || k == 0) {
			out = append(out, g)
		}
	}
	return out
}

// keyOf returns the booleans group reads, sorted.
func keyOf(group []*member) []ast.Var {
	var key []ast.Var
	for _, m := range group {
		key = append(key, m.roots...)
	}
	slices.SortFunc(key, func(a, b ast.Var) int { return a.Compare(b) })
	return slices.Compact(key)
}

// replace evaluates group for every combination of its booleans and, when
// that succeeds, puts the lookup in its place in *b.
func (t *tabulator) replace(b *ast.Body, group []*member) {
	if interleaved(*b, group) {
		return
	}
	all := t.all
	inGroup := map[ast.Var]int{}
	for _, m := range group {
		for v, n := range countVars(m.expr) {
			inGroup[v] += n
		}
	}
	var sinks []ast.Var // outputs read outside the group
	for _, m := range group {
		if all[m.out] > inGroup[m.out] || m.out.Equal(t.keep) {
			sinks = append(sinks, m.out)
		}
	}
	if len(sinks) == 0 {
		return // nothing reads it; whether it is defined still matters, so leave it
	}
	key := keyOf(group)
	rows, err := t.rows(group, key, sinks)
	if err != nil {
		return
	}
	// Drop the booleans no row depends on.
	for j := len(key) - 1; j >= 0; j-- {
		if irrelevant(rows, len(key), j) {
			rows = project(rows, len(key), j)
			key = slices.Delete(key, j, j+1)
		}
	}
	var lookup []*ast.Expr
	switch {
	case len(key) > 0:
		// A call, not a reference: the compiler orders a call after its
		// operands are bound, but may put tab[[a, b]] before a and b are,
		// where it enumerates the table. A row missing (the calls were
		// undefined there) gives the default null, which no array of
		// outputs unifies with.
		vals, out := rows, several(sinks, ast.NewTerm)
		path := slices.Clone(key) // table nests the last boolean outermost
		slices.Reverse(path)
		if complete := !slices.Contains(rows, nil); !complete && len(sinks) == 1 {
			vals = make([]*ast.Term, len(rows))
			for i, v := range rows {
				if v != nil {
					vals[i] = ast.ArrayTerm(v)
				}
			}
			out = ast.ArrayTerm(out)
		}
		lookup = []*ast.Expr{ast.NewExpr([]*ast.Term{
			ast.RefTerm(ast.VarTerm("object"), ast.StringTerm("get")),
			ast.NewTerm(table(vals, len(key))),
			several(path, ast.NewTerm),
			ast.NullTerm(),
			out,
		})}
	case rows[0] != nil:
		for i, s := range sinks {
			v := rows[0]
			if len(sinks) > 1 {
				v = v.Value.(*ast.Array).Elem(i)
			}
			lookup = append(lookup, ast.Equality.Expr(ast.NewTerm(s), v))
		}
	default:
		return // never defined: leave the calls, which say so
	}
	// The lookup goes where the last call was: every boolean it reads is
	// bound by then. (The compiler orders expressions that read a sink
	// before that for safety, as it orders any body.)
	last := group[len(group)-1].expr
	var nb ast.Body
	for _, e := range *b {
		switch {
		case e == last:
			nb = append(nb, lookup...)
		case slices.ContainsFunc(group, func(m *member) bool { return m.expr == e }):
		default:
			nb = append(nb, e)
		}
	}
	added := map[ast.Var]int{}
	for _, e := range lookup {
		for v, n := range countVars(e) {
			added[v] += n
		}
	}
	*b = dropUnread(nb, t.keep, all, inGroup, added)
	for v, n := range inGroup {
		all[v] -= n
	}
	for v, n := range added {
		all[v] += n
	}
}

// interleaved reports whether an expression between the group's first and
// last calls reads one of their outputs. The lookup takes the last call's
// place, so such an expression would run before the output is bound: it
// could bind it itself (from the input, say, as 1.0 where the call gave 1),
// or be a test the group's key reads, a cycle the compiler refuses.
func interleaved(b ast.Body, group []*member) bool {
	outs := ast.NewVarSet()
	for _, m := range group {
		outs.Add(m.out)
	}
	first := slices.IndexFunc(b, func(e *ast.Expr) bool { return e == group[0].expr })
	last := slices.IndexFunc(b, func(e *ast.Expr) bool { return e == group[len(group)-1].expr })
	if first < 0 || last < 0 {
		return true
	}
	for _, e := range b[first:last] {
		if slices.ContainsFunc(group, func(m *member) bool { return m.expr == e }) {
			continue
		}
		if len(e.Vars(ast.VarVisitorParams{}).Intersect(outs)) > 0 {
			return true
		}
	}
	return false
}

// dropUnread removes from b the tests whose booleans only the removed calls
// read: all counts the query's variables before the change, removed those of
// the calls (to which it adds those of the tests it drops) and added those
// of their lookup. keep, which the caller reads, always stays.
func dropUnread(b ast.Body, keep ast.Var, all, removed, added map[ast.Var]int) ast.Body {
	out := b[:0:0]
	for _, e := range b {
		if name, ops, v, ok := callWithOutput(e); ok && booleans[name] && !v.Equal(keep) && removed[v] > 0 && all[v]-removed[v]+added[v] == 1 && !readsRef(ops) {
			for x, n := range countVars(e) {
				removed[x] += n // the caller takes these from its counts
			}
			continue
		}
		out = append(out, e)
	}
	if len(out) == 0 {
		out = append(out, ast.NewExpr(ast.BooleanTerm(true)))
	}
	for i := range out {
		out[i].Index = i
	}
	return out
}

// readsRef reports whether a term of ts holds a reference, which may be
// undefined (input.n where the input has no n) and then makes the call
// undefined: such a call is a check and stays. Variables are bound
// whenever the call runs.
func readsRef(ts []*ast.Term) bool {
	found := false
	for _, t := range ts {
		ast.WalkRefs(t, func(ast.Ref) bool {
			found = true
			return true
		})
	}
	return found
}

// rows evaluates group for each combination of the booleans in key and
// returns the sinks' values indexed by the combination (bit j set: key[j]
// true), nil where the group is undefined. One value per sink is an array
// when there are several sinks.
func (t *tabulator) rows(group []*member, key, sinks []ast.Var) ([]*ast.Term, error) {
	dom := ast.VarTerm("__localacgsdom__")
	row := ast.VarTerm("__localacgsrow__")
	q := ast.NewBody(ast.Equality.Expr(dom, ast.ArrayTerm(ast.BooleanTerm(false), ast.BooleanTerm(true))))
	for j, k := range key {
		q.Append(ast.Equality.Expr(ast.NewTerm(k), ast.RefTerm(dom, ast.VarTerm(fmt.Sprintf("__localacgsi%d__", j)))))
	}
	for _, m := range group {
		e := m.expr.Copy()
		e.Location = nil
		q.Append(e)
	}
	keyTerms := make([]*ast.Term, len(key))
	for j, k := range key {
		keyTerms[j] = ast.NewTerm(k)
	}
	q.Append(ast.Equality.Expr(row, ast.ArrayTerm(ast.ArrayTerm(keyTerms...), several(sinks, ast.NewTerm))))

	if t.comp == nil {
		t.comp = ast.NewCompiler()
		t.comp.Compile(nil)
	}
	comp := t.comp
	compiled, err := comp.QueryCompiler().Compile(q)
	if err != nil {
		return nil, err
	}
	store := inmem.New()
	txn, err := store.NewTransaction(t.ctx)
	if err != nil {
		return nil, err
	}
	defer store.Abort(t.ctx, txn)
	out := make([]*ast.Term, 1<<len(key))
	err = topdown.NewQuery(compiled).WithCompiler(comp).WithStore(store).WithTransaction(txn).
		Iter(t.ctx, func(qr topdown.QueryResult) error {
			r, ok := qr[row.Value.(ast.Var)].Value.(*ast.Array)
			if !ok || r.Len() != 2 || !r.Elem(0).IsGround() || !r.Elem(1).IsGround() {
				return fmt.Errorf("table row %v is not ground", qr[row.Value.(ast.Var)])
			}
			bits := 0
			for j := 0; j < len(key); j++ {
				if r.Elem(0).Value.(*ast.Array).Elem(j).Value.Compare(ast.Boolean(true)) == 0 {
					bits |= 1 << j
				}
			}
			if out[bits] != nil {
				return fmt.Errorf("two rows for one combination")
			}
			out[bits] = r.Elem(1)
			return nil
		})
	return out, err
}

// irrelevant reports whether no row depends on boolean j of k.
func irrelevant(rows []*ast.Term, k, j int) bool {
	for bits := 0; bits < 1<<k; bits++ {
		if bits&(1<<j) != 0 {
			continue
		}
		a, b := rows[bits], rows[bits|1<<j]
		// Compared as text: Equal holds for 1 and 1.0, which print differently.
		if (a == nil) != (b == nil) || (a != nil && a.String() != b.String()) {
			return false
		}
	}
	return true
}

// project removes boolean j (irrelevant) of k from the rows' index.
func project(rows []*ast.Term, k, j int) []*ast.Term {
	out := make([]*ast.Term, 1<<(k-1))
	for bits := range out {
		low := bits & (1<<j - 1)
		out[bits] = rows[(bits^low)<<1|low]
	}
	return out
}

// table is the object that object.get reads a row from: keyed by the value
// of boolean k-1, then of k-2 and so on down to boolean 0 (object.get takes
// an array key as a path), with no entry where there is no row.
func table(rows []*ast.Term, k int) ast.Object {
	obj := ast.NewObject()
	for _, b := range []bool{false, true} {
		bit := 0
		if b {
			bit = 1
		}
		var v *ast.Term
		if k == 1 {
			v = rows[bit]
		} else {
			half := make([]*ast.Term, len(rows)/2)
			for low := range half {
				half[low] = rows[bit<<(k-1)|low]
			}
			if sub := table(half, k-1); sub.Len() > 0 {
				v = ast.NewTerm(sub)
			}
		}
		if v != nil {
			obj.Insert(ast.BooleanTerm(b), v)
		}
	}
	return obj
}

// several is the term for vs: the only one, or an array of them.
func several(vs []ast.Var, term func(ast.Value) *ast.Term) *ast.Term {
	if len(vs) == 1 {
		return term(vs[0])
	}
	ts := make([]*ast.Term, len(vs))
	for i, v := range vs {
		ts[i] = term(v)
	}
	return ast.ArrayTerm(ts...)
}
