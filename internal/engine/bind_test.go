package engine

import (
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
)

// TestEvalOrder checks the replayed order against the compiler's own: the
// query compiler's safety stage reorders the same body, and the order of
// its expressions (matched by their text) must be the one evalOrder gives.
func TestEvalOrder(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		known      bool
	}{
		{"already in order", `x = input.a; y = x; gt(y, 1, z)`, true},
		{"a constant appended after its readers", `gt(input.n, c, x); r = x; c = 2`, true},
		{"a reference enumerates its unbound operand", `y = input.xs[i]; z = i`, true},
		{"a call waits for its operand", `plus(a, 1, b); a = input.n`, true},
		{"a closure waits for the body's variables it reads", `r = [y | y = v]; v = input.v`, true},
		{"not waits for its variables", `not x = 1; x = input.x`, true},
		{"with waits for its value", `y = true with input.x as v; v = input.v`, true},
		{"some is not modelled", `some v; v = input.n`, false},
		{"a pattern is not modelled", `[a, b] = input.pair`, false},
		{"a pattern is not modelled, even when a later expression binds its variable", `[1, y] = input.pair; y = 1; r = y`, false},
		{"an object pattern", `{"a": y} = input.o; y = 1; r = y`, false},
		{"a composite reference operand", `s = {[1.0]}; s[[y]]; y = 1; r = y`, false},
		{"a variable on both sides", `input.xs[i] = i; i = 0; r = i`, false},
		{"never safe", `plus(a, 1, b); plus(b, 1, a)`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := ast.MustParseBody(tc.body)
			order, _, ok := evalOrder(body.Copy(), ast.NewVarSet())
			if ok != tc.known {
				t.Fatalf("known = %v, want %v", ok, tc.known)
			}
			if !ok {
				return
			}
			var compiled ast.Body
			qc := ast.NewCompiler().QueryCompiler().WithStageAfter("CheckSafety", ast.QueryCompilerStageDefinition{
				Name: "capture", MetricName: "capture",
				Stage: func(_ ast.QueryCompiler, q ast.Body) (ast.Body, error) {
					compiled = q.Copy()
					return q, nil
				},
			})
			if _, err := qc.Compile(body.Copy()); err != nil {
				t.Fatal(err)
			}
			if len(compiled) != len(order) {
				t.Fatalf("compiler: %v\nreplayed: %v", compiled, order)
			}
			for i := range order {
				// The compiler renames nothing in these bodies but may
				// rewrite an expression's form; compare what each binds.
				if compiled[i].String() != order[i].String() {
					t.Errorf("position %d: compiler %v, replayed %v", i, compiled[i], order[i])
				}
			}
		})
	}
}
