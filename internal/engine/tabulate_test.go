package engine

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/acgs-lite/acgs/internal/jsoneq"
)

// TestTabulateResidual checks each rule of tabulate on small queries, as the
// plan builder runs it (between two simplifications): the text it produces,
// and that the result binds r to what the original binds it to on inputs
// that take every boolean both ways.
func TestTabulateResidual(t *testing.T) {
	for _, tc := range []struct{ name, query, want string }{
		{
			name: "points of two booleans, summed and weighted, become one lookup",
			query: `equal(input.a, true, x); lt(input.n, 3, y); object.get({true: 0.3}, x, 0, p);
				object.get({true: 0.2}, y, 0, q); sum([0.5, p, q], s); mul(0.3, s, w); r = [s, w]`,
			want: `equal(input.a, true, x); lt(input.n, 3, y);
				object.get({false: {false: [0.5, 0.15], true: [0.8, 0.24000000000000000001]}, true: {false: [0.7, 0.21000000000000000001], true: [1, 0.3]}}, [y, x], null, [s, w]);
				r = [s, w]`,
		},
		{
			name:  "a boolean no row depends on is dropped, and its comparison with it",
			query: `n = input.n; gte(n, 50, x); object.get({false: true}, false, x, y); object.get({true: 0.2}, y, 0, z); plus(z, 0.1, r)`,
			want:  `n = input.n; r = 0.3`,
		},
		{
			name:  "a comparison that reads a reference stays: it fails where that is undefined",
			query: `gte(input.n, 50, x); object.get({false: true}, false, x, y); object.get({true: 0.2}, y, 0, z); plus(z, 0.1, r)`,
			want:  `gte(input.n, 50, x); r = 0.3`,
		},
		{
			name:  "a comparison something else reads stays",
			query: `gte(input.n, 50, x); object.get({false: true}, false, x, y); object.get({true: 0.2}, y, 0, z); plus(z, 0.1, w); r = [w, x]`,
			want:  `gte(input.n, 50, x); r = [0.3, x]`,
		},
		{
			name:  "1 and 1.0 are different rows: they print differently",
			query: `gt(input.n, 2, x); object.get({true: 1, false: 1.0}, x, 0, p); object.get({"k": p}, "k", 0, r)`,
			want:  `gt(input.n, 2, x); object.get({false: 1.0, true: 1}, x, null, r)`,
		},
		{
			name:  "combinations where a call is undefined have no row",
			query: `equal(input.a, true, x); object.get({true: 0}, x, 2, d); div(1, d, r)`,
			want:  `equal(input.a, true, x); object.get({false: [0.5]}, x, null, [r])`,
		},
		{
			name:  "calls on constants alone fold",
			query: `neq("data.read", "", x); equal([x, input.a], [true, true], r)`,
			want:  `equal([true, input.a], [true, true], r)`,
		},
		{
			name:  "a number from the input is not a boolean",
			query: `mul(0.3, input.n, y); plus(y, 1, r)`,
			want:  `mul(0.3, input.n, y); plus(y, 1, r)`,
		},
		{
			name:  "one call on a boolean is left as it is",
			query: `equal(input.a, true, x); object.get({true: 1}, x, 0, r)`,
			want:  `equal(input.a, true, x); object.get({true: 1}, x, 0, r)`,
		},
		{
			name: "no table for more than four booleans",
			query: `equal(input.a, 1, a); equal(input.a, 2, b); equal(input.a, 3, c); equal(input.a, 4, d); equal(input.a, 5, e);
				sum([1, 0], z); object.get({true: 1}, a, 0, pa); object.get({true: 1}, b, 0, pb); object.get({true: 1}, c, 0, pc);
				object.get({true: 1}, d, 0, pd); object.get({true: 1}, e, 0, pe); sum([pa, pb, pc, pd, pe, z], r)`,
			want: `equal(input.a, 1, a); equal(input.a, 2, b); equal(input.a, 3, c); equal(input.a, 4, d); equal(input.a, 5, e);
				object.get({true: 1}, a, 0, pa); object.get({true: 1}, b, 0, pb); object.get({true: 1}, c, 0, pc);
				object.get({true: 1}, d, 0, pd); object.get({true: 1}, e, 0, pe); sum([pa, pb, pc, pd, pe, 1], r)`,
		},
		{
			name:  "inside a comprehension",
			query: `r = [s | v = input.xs[_]; gt(v, 2, x); object.get({true: 0.3}, x, 0, p); plus(p, 0.1, s)]`,
			want:  `r = [s | v = input.xs[_]; gt(v, 2, x); object.get({false: 0.1, true: 0.4}, x, null, s)]`,
		},
		{
			name:  "an output a nested comprehension reads is still bound",
			query: `gt(input.n, 2, x); object.get({true: 0.3}, x, 0, p); plus(p, 0.1, s); r = [t | t = s]`,
			want:  `gt(input.n, 2, x); object.get({false: 0.1, true: 0.4}, x, null, s); r = [s | true]`,
		},
		{
			name:  "a boolean from an outer body is not a key here",
			query: `gt(input.n, 2, x); r = [s | y = input.xs[_]; object.get({true: 0.3}, x, 0, p); plus(p, y, s)]`,
			want:  `gt(input.n, 2, x); r = [s | y = input.xs[_]; object.get({true: 0.3}, x, 0, p); plus(p, y, s)]`,
		},
		{
			name:  "the result is never dropped, even as a boolean no row depends on",
			query: `n = input.n; gt(n, 2, r); object.get({true: 1, false: 1}, r, 0, p); plus(p, 1, s); input.m = s`,
			want:  `n = input.n; gt(n, 2, r); input.m = 2`,
		},
		{
			name:  "nothing under a with, which may replace a built-in the table would call",
			query: `r = [s | v = input.xs[_]; gt(v, 2, x); object.get({true: 0.3}, x, 0, p); plus(p, 0.1, s)] with plus as minus`,
			want:  `r = [s | v = input.xs[_]; gt(v, 2, x); object.get({true: 0.3}, x, 0, p); plus(p, 0.1, s)] with plus as minus`,
		},
		{
			name:  "no group whose output something between its calls reads: the lookup comes last",
			query: `gt(input.n, 2, x); object.get({true: 1, false: 1.0}, x, 0, p); input.xs[_] = p; plus(p, 0, s); r = [p, s]`,
			want:  `gt(input.n, 2, x); object.get({true: 1, false: 1.0}, x, 0, p); input.xs[_] = p; plus(p, 0, s); r = [p, s]`,
		},
		{
			name:  "no group whose key is a test of its own output",
			query: `gt(input.n, 2, x); object.get({true: 1}, x, 0, p); gt(p, input.m, c); object.get({true: 2}, c, 0, q); plus(p, q, r)`,
			want:  `gt(input.n, 2, x); object.get({true: 1}, x, 0, p); gt(p, input.m, c); object.get({true: 2}, c, 0, q); plus(p, q, r)`,
		},
		{
			name:  "in evaluation order: an output bound before its call is not the group's",
			query: `gt(v, 2, x); object.get({true: 1, false: 1.0}, x, 0, p); plus(p, 0, s); r = [p, s]; p = input.p; v = input.n`,
			want:  `p = input.p; v = input.n; gt(v, 2, x); object.get({true: 1, false: 1.0}, x, 0, p); plus(p, 0, s); r = [p, s]`,
		},
		{
			name:  "in evaluation order: a key test waiting for a later expression runs after it",
			query: `count(w, v); gt(v, 1, x); object.get({true: 1}, x, 0, p); object.get({"k": p}, "k", 0, s); input.xs[_] = p; r = [p, s]; w = input.xs`,
			want:  `input.xs[_] = p; w = input.xs; count(w, v); gt(v, 1, x); object.get({true: 1}, x, 0, p); object.get({"k": p}, "k", 0, s); r = [p, s]`,
		},
		{
			name:  "a body holding a form whose order is not modelled is left alone",
			query: `some v; gt(v, 0, x); object.get({true: 1}, x, 0, p); object.get({"k": p}, "k", 0, s); input.xs[_] = p; r = [p, s]; v = input.n`,
			want:  `some v; gt(v, 0, x); object.get({true: 1}, x, 0, p); object.get({"k": p}, "k", 0, s); input.xs[_] = p; r = [p, s]; v = input.n`,
		},
		{
			name:  "negated and with-modified calls are left alone",
			query: `gt(input.n, 2, x); not object.get({true: 0.3}, x, 0, 0.3); object.get({true: 0.3}, x, 0, p) with input.n as 1; plus(p, 1, r)`,
			want:  `gt(input.n, 2, x); not object.get({true: 0.3}, x, 0, 0.3); object.get({true: 0.3}, x, 0, p) with input.n as 1; plus(p, 1, r)`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			orig := ast.MustParseBody(tc.query)
			keep := ast.Var("r")
			got := simplifyResidual(tabulate(context.Background(), simplifyResidual(orig.Copy(), keep), keep), keep)
			if want := ast.MustParseBody(tc.want); !got.Equal(want) {
				t.Errorf("got  %v\nwant %v", got, want)
			}
			for _, in := range []map[string]any{
				{"a": true, "n": 1, "xs": []any{1, 7}, "m": 2, "p": 1},
				{"a": false, "n": 60, "xs": []any{3}, "m": 0, "p": json.Number("1.0")},
				{"a": "x", "n": 3, "xs": []any{}, "m": 1},
				{"a": 3, "n": "s", "xs": []any{json.Number("1.0"), 1}},
				{},
			} {
				// Compared as JSON text: 1 and 1.0 are equal values that a
				// client sees differently.
				a, b := evalR(t, orig, in), evalR(t, got, in)
				if !jsoneq.SameText(a, b) {
					t.Errorf("input %v: original gives %v, tabulated %v", in, a, b)
				}
			}
		})
	}
}

// TestTabulateConstitutionResidual runs the plan builder's rewriting on the
// residual of the safe request under the built-in constitution: the scores
// of safety, accountability and transparency become lookups, so arithmetic
// calls go. (That its decisions equal full evaluation is
// TestPlansEqualFullEvaluation's part.)
func TestTabulateConstitutionResidual(t *testing.T) {
	keep := ast.Var("__acgs_result__")
	simplified := simplifyResidual(constitutionResidual(t), keep)
	got := tabulate(context.Background(), simplified.Copy(), keep)
	before, after := arithmeticCalls(simplified), arithmeticCalls(got)
	if after >= before {
		t.Errorf("tabulation left %d of %d arithmetic calls", after, before)
	}
	t.Logf("arithmetic calls: %d -> %d", before, after)
}

// arithmeticCalls counts the calls to arithmetic built-ins under x.
func arithmeticCalls(x any) int {
	n := 0
	ast.WalkExprs(x, func(e *ast.Expr) bool {
		if e.IsCall() {
			switch e.Operator().String() {
			case "plus", "minus", "mul", "div", "sum", "round":
				n++
			}
		}
		return false
	})
	return n
}
