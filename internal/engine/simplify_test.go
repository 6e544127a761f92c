package engine

import (
	"context"
	"encoding/json"
	"io/fs"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"

	"github.com/acgs-lite/acgs/internal/jsoneq"
	"github.com/acgs-lite/acgs/policies"
)

// TestSimplifyResidual checks each rule of simplifyResidual on small
// queries: the text it produces, and that the simplified query binds r to
// what the original binds it to on several inputs.
func TestSimplifyResidual(t *testing.T) {
	for _, tc := range []struct{ name, query, want string }{
		{
			name:  "constant into a comprehension",
			query: `c = 5; r = [y | y = input.xs[_]; y > c]`,
			want:  `r = [y | y = input.xs[_]; y > 5]`,
		},
		{
			name:  "chain of copies ends in the kept variable",
			query: `a = input.x; b = a; c = b; r = c`,
			want:  `r = input.x`,
		},
		{
			name:  "constant object into a call",
			query: `t = {"a": 1}; object.get(t, "a", 0, r)`,
			want:  `object.get({"a": 1}, "a", 0, r)`,
		},
		{
			name:  "copy inside a comprehension",
			query: `r = [z | y = input.xs[_]; z = y]`,
			want:  `r = [y | y = input.xs[_]]`,
		},
		{
			name:  "a constant never becomes the head of a reference",
			query: `t = {"a": 1}; r = t.a`,
			want:  `t = {"a": 1}; r = t.a`,
		},
		{
			name:  "the same name in two comprehensions is not one variable",
			query: `a = [x | x = 1]; b = [x | x = input.x]; r = [a, b]`,
			want:  `a = [x | x = 1]; b = [x | x = input.x]; r = [a, b]`,
		},
		{
			name:  "a copy of an outer variable inside a comprehension",
			query: `v = input.x; r = [w | w = v]`,
			want:  `v = input.x; r = [v | true]`,
		},
		{
			name:  "negated and with-modified expressions are left alone",
			query: `x = input.x; not x = 1; y = 2 with input.x as 4; r = [x, y]`,
			want:  `x = input.x; not x = 1; y = 2 with input.x as 4; r = [x, y]`,
		},
		{
			name:  "a variable also used outside a comprehension is replaced from outside only",
			query: `r = [y | y = input.xs[_]; z = 1]; z = 2`,
			want:  `r = [y | y = input.xs[_]; 2 = 1]`,
		},
		{
			name:  "a variable an every declares is not replaced, nor replaces",
			query: `w = input.x; v = w; r = [1 | every v in input.xs { v > w }]`,
			want:  `w = input.x; v = w; r = [1 | every v in input.xs { v > w }]`,
		},
		{
			name:  "a constant never replaces an every's variable",
			query: `v = 5; r = [1 | every v in input.xs { v > 0 }]`,
			want:  `v = 5; r = [1 | every v in input.xs { v > 0 }]`,
		},
		{
			name:  "a variable some declares is neither replaced nor replacing",
			query: `r = [y | some y; y = input.xs[_]; z = y]`,
			want:  `r = [y | some y; y = input.xs[_]; z = y]`,
		},
		{
			name:  "inside not and with values",
			query: `c = 1; not input.x = c; r = true with input.x as c`,
			want:  `not input.x = 1; r = true with input.x as 1`,
		},
		{
			name:  "the kept variable is never replaced",
			query: `r = 5`,
			want:  `r = 5`,
		},
		{
			name:  "a constant bound after its readers, as partial evaluation leaves it",
			query: `gt(input.x, c, y); r = y; c = 2`,
			want:  `gt(input.x, 2, r)`,
		},
		{
			name:  "a variable bound from the input is not replaced by a constant that checks it, spelt differently",
			query: `input.p = v; v = 1.0; r = v`,
			want:  `input.p = r; r = 1.0`,
		},
		{
			name:  "a copy between two variables bound before is a check, and stays",
			query: `v = input.xs[0]; w = input.xs[1]; v = w; r = w`,
			want:  `v = input.xs[0]; r = input.xs[1]; v = r`,
		},
		{
			name:  "a body with a pattern keeps its order: enumeration order is the result's",
			query: `r = [[a, b] | [a] = input.ps[_]; b = input.xs[_]; a = input.ys[_]]`,
			want:  `r = [[a, b] | [a] = input.ps[_]; b = input.xs[_]; a = input.ys[_]]`,
		},
		{
			name:  "a pattern binds first: the constant after it is a check",
			query: `[1, y] = input.pair; y = 1; r = y`,
			want:  `[1, y] = input.pair; y = 1; r = y`,
		},
		{
			name:  "a constant that unifies with a call output still checks it",
			query: `n = 2; count(input.xs, n); r = n`,
			want:  `count(input.xs, 2); r = 2`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			orig := ast.MustParseBody(tc.query)
			s := newSimplifier(orig.Copy(), ast.Var("r"))
			got := s.run(orig.Copy())
			if want := ast.MustParseBody(tc.want); !got.Equal(want) {
				t.Errorf("got  %v\nwant %v", got, want)
			}
			checkCounts(t, s, got)
			for _, in := range []map[string]any{
				{"x": 3, "xs": []any{1, 7}},
				{"x": 1, "xs": []any{}},
				{"xs": []any{2, 9}},
				{"x": "s"},
				{"x": json.Number("2.0"), "p": 1, "xs": []any{json.Number("1.0"), 1}},
				{"ps": []any{[]any{1}, []any{2}}, "xs": []any{10, 20}, "ys": []any{1, 2}, "pair": []any{1, json.Number("1.0")}},
			} {
				// As JSON text: 1 and 1.0 are one value that prints two ways.
				a, b := evalR(t, orig, in), evalR(t, got, in)
				if !jsoneq.SameText(a, b) {
					t.Errorf("input %v: original gives %v, simplified %v", in, a, b)
				}
			}
		})
	}
}

// TestSimplifyConstitutionResidual simplifies the residual of the safe
// request under the built-in constitution, the query the benchmarks time.
func TestSimplifyConstitutionResidual(t *testing.T) {
	q := constitutionResidual(t)
	s := newSimplifier(q, ast.Var("__acgs_result__"))
	got := s.run(q.Copy())
	checkCounts(t, s, got)
	before, after := len(countVars(q)), len(countVars(got))
	if after >= before {
		t.Errorf("simplification left %d of %d variables", after, before)
	}
	t.Logf("variables: %d -> %d", before, after)
}

// constitutionResidual partially evaluates the built-in constitution for
// the safe request's type, action and hash, as the plan builder does.
func constitutionResidual(t *testing.T) ast.Body {
	t.Helper()
	modules := map[string]string{}
	err := fs.WalkDir(policies.FS, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".rego") || strings.HasSuffix(p, "_test.rego") {
			return err
		}
		b, err := fs.ReadFile(policies.FS, p)
		modules[p] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	var data map[string]any
	raw, err := fs.ReadFile(policies.FS, "acgs/config/data.json")
	if err != nil || json.Unmarshal(raw, &data) != nil {
		t.Fatal("reading the bundle's data:", err)
	}
	opts := []func(*rego.Rego){
		rego.Query("__acgs_result__ = data.acgs.main.decision"),
		rego.Store(inmem.NewFromObject(map[string]any{"acgs": map[string]any{"config": data}})),
		rego.Input(map[string]any{"type": "constitutional_evaluation", "action": "data.read_public", "constitutional_hash": "cdd01ef066bc6cf2"}),
		rego.Unknowns([]string{"input.context", "input.evolution_request", "input.data_request"}),
	}
	for name, src := range modules {
		opts = append(opts, rego.Module(name, src))
	}
	pq, err := rego.New(opts...).Partial(context.Background())
	if err != nil || len(pq.Queries) != 1 || len(pq.Support) != 0 {
		t.Fatalf("partial evaluation: %v (%d queries, %d support modules)", err, len(pq.Queries), len(pq.Support))
	}
	return pq.Queries[0]
}

// checkCounts fails unless the occurrence counts s kept up to date while
// simplifying are the real ones of its result.
func checkCounts(t *testing.T, s *simplifier, got ast.Body) {
	t.Helper()
	real := countVars(got)
	for v, n := range s.all {
		if n != real[v] {
			t.Errorf("%v occurs %d times, the simplifier counted %d", v, real[v], n)
		}
	}
	for v, n := range real {
		if s.all[v] != n {
			t.Errorf("%v occurs %d times, the simplifier counted %d", v, n, s.all[v])
		}
	}
}

// evalR evaluates query on input and returns every binding of r.
func evalR(t *testing.T, query ast.Body, input map[string]any) []any {
	t.Helper()
	rs, err := rego.New(rego.ParsedQuery(query.Copy()), rego.Input(input)).Eval(context.Background())
	if err != nil {
		t.Fatalf("%v: %v", query, err)
	}
	out := []any{}
	for _, r := range rs {
		out = append(out, r.Bindings["r"])
	}
	return out
}
