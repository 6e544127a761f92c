package vm_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"

	"github.com/acgs-lite/acgs/internal/vm"
)

// TestEqualValuesUnderOneKey: an object comprehension that yields one key
// twice with equal values of different texts (1 and 1.0) keeps the last
// value under topdown, indexed or not; a rule's object keeps the first.
func TestEqualValuesUnderOneKey(t *testing.T) {
	ctx := context.Background()
	// toTopdown: the VM may refuse the evaluation (an error naming topdown),
	// which the engine answers with topdown.
	toTopdown := map[int]bool{5: true}
	rules := []string{
		`p := {k: v | some x in input.xs; k := x.k; v := x.v}`,
		`p := json.marshal({k: v | some x in input.xs; k := x.k; v := x.v})`,
		`p := [{x.k: x.v | some x in input.xs}, {x.k: x.v | some x in input.xs; x.k == "a"}]`,
		`o[k] := v if { some x in input.xs; k := x.k; v := x.v }
p := o`,
		`o.b[k] := v if { some x in input.xs; k := x.k; v := x.v }
p := json.marshal(o)`,
		`o.a[k] := v if { some x in input.xs; k := x.k; v := x.v }
o.a.a := 1.0
p := json.marshal(o)`,
		`s contains x.v if some x in input.xs
s contains 1.0
p := json.marshal(s)`,
		`s contains 1.0
s contains x.v if some x in input.xs
p := [json.marshal(s), json.marshal({x | some x in s})]`,
		`p := json.marshal({x.v | some x in input.xs})`,
		`c := 1.0
c := 1 if input.xs
p := json.marshal(c)`,
		// Indexed by topdown (y is bound outside and an output of the body).
		`p := [c | some y in ["a", "b"]; c := {x.k: x.v | some x in input.xs; x.g == y}]`,
		`p := {y: c | some y in ["a", "b"]; c := {x.k: x.v | some x in input.xs; x.g == y}}`,
		// Nested: the inner comprehension's object is made per outer row.
		`p := [{x.k: x.v | some x in input.xs; x.g == g} | some g in ["a", "b"]]`,
	}
	inputs := []map[string]any{
		{"xs": []any{map[string]any{"k": "a", "v": json.Number("1"), "g": "a"}, map[string]any{"k": "a", "v": json.Number("1.0"), "g": "a"}}},
		{"xs": []any{map[string]any{"k": "a", "v": json.Number("1.0"), "g": "a"}, map[string]any{"k": "a", "v": json.Number("1"), "g": "a"}, map[string]any{"k": "a", "v": json.Number("1e0"), "g": "b"}}},
	}
	for i, r := range rules {
		q, tq := prepare(t, "package x\n"+r, "data.x.p")
		for _, in := range inputs {
			v, err := ast.InterfaceToValue(in)
			if err != nil {
				t.Fatal(err)
			}
			a, aerr := tq.Eval(ctx, rego.EvalParsedInput(v))
			b, berr := q.Eval(ctx, rego.EvalParsedInput(v))
			ja, _ := json.Marshal(a)
			jb, _ := json.Marshal(b)
			if toTopdown[i] && aerr == nil && berr != nil && strings.Contains(berr.Error(), "topdown decides") {
				continue
			}
			if string(ja) != string(jb) || (aerr != nil) != (berr != nil) {
				t.Errorf("%s on %v\ntopdown %s %v\nvm      %s %v", r, v, ja, aerr, jb, berr)
			}
		}
	}
}

// TestIndexedComprehensions: topdown evaluates a comprehension it indexes
// for every row, the VM for the rows that match, so an error in another
// row (a conflict in a function or a rule, a built-in under strict errors)
// fails topdown's evaluation only. Such queries are left to topdown; the
// others keep the VM, and answer as topdown does.
func TestIndexedComprehensions(t *testing.T) {
	const funcs = "f(x) := 1 if x > 0\nf(x) := 2 if x > 1\nr := 1 if input.a\nr := 2 if input.b\nw := 1 if input.c == 2\nw := 2 if input.b\n" +
		"g(a, b) := true if a > 0\ng(a, b) := false if a > 1\n"
	input := map[string]any{"x": "a", "a": true, "b": true, "ys": []any{
		map[string]any{"k": "a", "v": json.Number("1")}, map[string]any{"k": "b", "v": json.Number("2")}, map[string]any{"k": "b", "v": "zz"},
	}}
	for _, tc := range []struct {
		name, body string
		want       string // "vm", "topdown" (refused at preparation), "strict" (refused under strict errors)
		query      string // data.x.p when empty
		input      map[string]any
	}{
		{"keys only (as the constitution's)", `p if { x := input.x; c := [y.v | some y in input.ys; y.k == x]; count(c) > 0 }`, "vm", "", nil},
		{"a function that conflicts in another row", `p if { x := input.x; c := {y.v | some y in input.ys; y.k == x; f(y.v) > 0}; count(c) > 0 }`, "topdown", "", nil},
		{"a rule that conflicts", `p if { x := input.x; c := [y.v | some y in input.ys; y.k == x; y.v == 2; r == 1]; count(c) >= 0 }`, "topdown", "", nil},
		{"a with", `p if { x := input.x; c := [y.v | some y in input.ys; y.k == x; w == 2 with input.c as y.v]; count(c) > 0 }`, "topdown", "", nil},
		{"a nested object comprehension", `p if { x := input.x; c := [o | some y in input.ys; y.k == x; o := {z.k: z.v | some z in input.ys; z.k == y.k}]; count(c) > 0 }`, "topdown", "", nil},
		{"a built-in", `p if { x := input.x; c := [y.v | some y in input.ys; y.k == x; to_number(y.v) > 0]; count(c) > 0 }`, "strict", "", nil},
		{"a built-in mocked by a function", `q if { x := input.x; c := [y.v | some y in input.ys; y.k == x; y.v > 0]; count(c) > 0 }
p if { q with gt as g }`, "topdown", "", nil},
		{"a built-in mocked in the query", `q if { x := input.x; c := [y.v | some y in input.ys; y.k == x; abs(y.v) > 0]; count(c) > 0 }`, "topdown", "data.x.q with abs as data.x.f", nil},
		{"the key given to a call before it is bound", `p := c if { x := input.x; c := [y.v | some y in input.ys; x != "z"; y.k == x] }`, "topdown", "",
			map[string]any{"x": "z", "ys": []any{map[string]any{"k": "z", "v": "a"}, map[string]any{"k": "b", "v": "b"}}}},
		{"the key in the head", `p := json.marshal(c) if { x := input.x; c := [[x, y.v] | some y in input.ys; y.k == x] }`, "topdown", "",
			map[string]any{"x": json.Number("1"), "ys": []any{map[string]any{"k": json.Number("1.0"), "v": "a"}, map[string]any{"k": json.Number("1"), "v": "b"}}}},
		{"base documents only", `p if { x := input.x; c := [y.v | some y in input.ys; y.k == x; y.v in data.lists.banned]; count(c) > 0 }`, "vm", "",
			map[string]any{"x": "a", "ys": []any{map[string]any{"k": "a", "v": "wipe"}, map[string]any{"k": "b", "v": "read"}}}},
		{"not indexed (no key from outside)", `p if { c := [y.v | some y in input.ys; f(y.v) > 0]; count(c) > 0 }`, "vm", "", nil},
		{"indexed, in a rule the query does not reach", `q if { x := input.x; c := {y.v | some y in input.ys; y.k == x; f(y.v) > 0}; count(c) > 0 }
p if input.x == "a"`, "vm", "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			c := ast.MustCompileModules(map[string]string{"m.rego": "package x\n" + funcs + tc.body})
			store := inmem.NewFromObject(map[string]any{"lists": map[string]any{"banned": []any{"wipe"}}})
			query, in := tc.query, tc.input
			if query == "" {
				query = "data.x.p"
			}
			if in == nil {
				in = input
			}
			for _, strict := range []bool{false, true} {
				q, err := vm.Prepare(ctx, c, store, ast.MustParseBody(query), rego.StrictBuiltinErrors(strict))
				if tc.want == "topdown" {
					if !errors.Is(err, vm.ErrUnsupported) || !strings.Contains(err.Error(), "indexes") {
						t.Fatalf("prepared on the VM (%v), want it left to topdown", err)
					}
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				td, err := rego.New(rego.Compiler(c), rego.Store(store), rego.Query(query), rego.StrictBuiltinErrors(strict)).PrepareForEval(ctx)
				if err != nil {
					t.Fatal(err)
				}
				v, err := ast.InterfaceToValue(in)
				if err != nil {
					t.Fatal(err)
				}
				a, aerr := td.Eval(ctx, rego.EvalParsedInput(v))
				b, berr := q.Eval(ctx, rego.EvalParsedInput(v))
				if strict && tc.want == "strict" {
					if !errors.Is(berr, vm.ErrUnsupported) {
						t.Fatalf("strict: vm %v %v (topdown %v %v), want the evaluation refused", b, berr, a, aerr)
					}
					continue
				}
				ja, _ := json.Marshal(a)
				jb, _ := json.Marshal(b)
				if string(ja) != string(jb) || (aerr != nil) != (berr != nil) {
					t.Fatalf("strict=%v\ntopdown %s %v\nvm      %s %v", strict, ja, aerr, jb, berr)
				}
			}
		})
	}
}
