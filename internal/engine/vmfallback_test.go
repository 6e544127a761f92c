package engine_test

import (
	"context"
	"testing"
	"testing/fstest"
	"time"

	"github.com/acgs-lite/acgs/internal/engine"
	"github.com/acgs-lite/acgs/internal/jsoneq"
)

// TestVMErrorsAreAnsweredByTopdown: the VM runs OPA's IR without topdown's
// short cuts, so it can evaluate a body topdown never reaches and raise a
// conflict there. Such an error is not the reference's answer: topdown
// answers. Each row errs on the VM alone (found by review).
func TestVMErrorsAreAnsweredByTopdown(t *testing.T) {
	const funcs = "f(x) := 1 if x > 0\nf(x) := 2 if x > 1\n"
	for _, tc := range []struct {
		name, pre, body string // pre: rules before the entry point p
		input           map[string]any
	}{
		{"early exit", "", "p if { some x in input.arr; f(x) == 1 }", map[string]any{"arr": []any{1, 2}}},
		{"rule indexing skips the body", "", "default p := false\np if { f(2) == 1; input.role == \"admin\" }", map[string]any{"role": "user"}},
		{"every stops at its first failure", "", "default p := false\np if { every x in input.arr { f(x) == 2 } }", map[string]any{"arr": []any{1, 2}}},
		{"a partial set looked up by its key", "s contains x if { some x in input.arr; f(x) == 1 }\n", "p if s[1]", map[string]any{"arr": []any{1, 2}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			bundle := fstest.MapFS{
				".manifest": {Data: []byte(`{"revision":"vm-1","roots":["t"],"metadata":{"constitutional_hash":"` + hash + `"}}`)},
				"t/p.rego":  {Data: []byte("package t\n\n" + funcs + tc.pre + "# METADATA\n# entrypoint: true\n# scope: document\n" + tc.body + "\n")},
			}
			e, err := engine.New(ctx, engine.FSSource{FS: bundle, Name: "vm"}, engine.Options{
				ConstitutionalHash: hash, EvalTimeout: 10 * time.Second, Logger: quiet, Compiled: true,
			})
			if err != nil {
				t.Fatal(err)
			}
			if got := e.Evaluators()["t/p"]; got != "vm" {
				t.Fatalf("t/p runs on %q, want the VM (all: %v)", got, e.Evaluators())
			}
			want, err := e.EvaluateFull(ctx, "t/p", tc.input)
			if err != nil {
				t.Fatalf("topdown: %v", err)
			}
			got, err := e.Decide(ctx, "t/p", tc.input)
			if err != nil {
				t.Fatalf("decided with an error where topdown answers %v: %v", want.Result, err)
			}
			if got.Defined != want.Defined || !jsoneq.Equal(got.Result, want.Result) {
				t.Fatalf("decision %v (defined %v), topdown %v (defined %v)", got.Result, got.Defined, want.Result, want.Defined)
			}
		})
	}
}
