package engine_test

import (
	"context"
	"encoding/json"
	"strings"
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
		// Two rules give one key equal values (1 and 1.0): topdown keeps
		// the value of the rule it evaluates first, which the VM cannot tell.
		{"two rules' equal values under one key", "o.a[k] := v if { some x in input.xs; k := x.k; v := x.v }\no.a.a := 1.0\n", "p := json.marshal(o)",
			map[string]any{"xs": []any{map[string]any{"k": "a", "v": json.Number("1")}}}},
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

// TestIndexedComprehensionRunsOnTopdown: topdown evaluates a comprehension
// it indexes for every row, and a conflict in a row the VM never evaluates
// fails topdown's evaluation (a deny). A path with such a comprehension is
// prepared for topdown, and decides as topdown does.
func TestIndexedComprehensionRunsOnTopdown(t *testing.T) {
	ctx := context.Background()
	policy := "package t\n\nf(x) := 1 if x > 0\nf(x) := 2 if x > 1\n" +
		"# METADATA\n# entrypoint: true\n# scope: document\n" +
		"p if { x := input.x; c := {y.v | some y in input.ys; y.k == x; f(y.v) > 0}; count(c) > 0 }\n"
	bundle := fstest.MapFS{
		".manifest": {Data: []byte(`{"revision":"vm-2","roots":["t"],"metadata":{"constitutional_hash":"` + hash + `"}}`)},
		"t/p.rego":  {Data: []byte(policy)},
	}
	e, err := engine.New(ctx, engine.FSSource{FS: bundle, Name: "vm"}, engine.Options{
		ConstitutionalHash: hash, EvalTimeout: 10 * time.Second, Logger: quiet, Compiled: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := e.Evaluators()["t/p"]; !strings.HasPrefix(got, "topdown: unsupported: a comprehension topdown indexes") {
		t.Fatalf("t/p runs on %q, want topdown (all: %v)", got, e.Evaluators())
	}
	input := map[string]any{"x": "a", "ys": []any{map[string]any{"k": "a", "v": 1}, map[string]any{"k": "b", "v": 2}}}
	_, werr := e.EvaluateFull(ctx, "t/p", input)
	_, gerr := e.Decide(ctx, "t/p", input)
	if werr == nil || gerr == nil {
		t.Fatalf("topdown: %v, decision: %v; want the conflict from both", werr, gerr)
	}
}
