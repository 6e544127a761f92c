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
	"github.com/open-policy-agent/opa/v1/topdown"

	"github.com/acgs-lite/acgs/internal/vm"
)

// TestTargetRequiresPrepare: the plugin refuses a query prepared with
// rego.Target(vm.Target) but not through vm.Prepare, which checks the
// query against the compiler (comprehensions topdown indexes): without the
// check the VM may answer where topdown fails. vm.Prepare on the same
// query and compiler prepares it, or refuses it for a reason of its own.
func TestTargetRequiresPrepare(t *testing.T) {
	ctx := context.Background()
	// f conflicts for 2: topdown evaluates the indexed comprehension in q
	// for every row, so q fails; the VM would evaluate the row of "a" only.
	mod := `package x
f(x) := 1 if x > 0
f(x) := 2 if x > 1
p := count(input.ys)
q if { x := input.x; c := {y.v | some y in input.ys; y.k == x; f(y.v) > 0}; count(c) > 0 }
`
	input := rego.EvalInput(map[string]any{"x": "a", "ys": []any{
		map[string]any{"k": "a", "v": 1}, map[string]any{"k": "b", "v": 2},
	}})
	store := inmem.New()
	c := ast.MustCompileModules(map[string]string{"m.rego": mod})
	for _, tc := range []struct {
		query string
		why   string // why vm.Prepare refuses it; "" if it does not
	}{
		{"data.x.p", ""},
		{"data.x.q", "a comprehension topdown indexes"},
	} {
		// The rego.Target route, with the documented store, from source or
		// on the compiled compiler.
		for name, opts := range map[string][]func(*rego.Rego){
			"modules":  {rego.Module("m.rego", mod)},
			"compiler": {rego.Compiler(c)},
		} {
			opts = append(opts, rego.Query(tc.query), rego.Store(store), rego.Target(vm.Target))
			_, err := rego.New(opts...).PrepareForEval(ctx)
			if !errors.Is(err, vm.ErrUnsupported) || !strings.Contains(err.Error(), "vm.Prepare") {
				t.Fatalf("%s with rego.Target(vm.Target) and %s: %v, want refused naming vm.Prepare", tc.query, name, err)
			}
		}
		td, err := rego.New(rego.Query(tc.query), rego.Compiler(c), rego.Store(store)).PrepareForEval(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want, terr := td.Eval(ctx, input)
		pq, err := vm.Prepare(ctx, c, store, ast.MustParseBody(tc.query))
		if tc.why != "" {
			var te *topdown.Error
			if !errors.As(terr, &te) || te.Code != topdown.ConflictErr {
				t.Fatalf("%s on topdown: %v %v, want a conflict", tc.query, want, terr)
			}
			if !errors.Is(err, vm.ErrUnsupported) || !strings.Contains(err.Error(), tc.why) {
				t.Fatalf("vm.Prepare(%s): %v, want refused: %s", tc.query, err, tc.why)
			}
			continue
		}
		if err != nil || terr != nil {
			t.Fatalf("%s: vm.Prepare %v, topdown %v", tc.query, err, terr)
		}
		got, err := pq.Eval(ctx, input)
		if err != nil {
			t.Fatal(err)
		}
		jw, _ := json.Marshal(want)
		jg, _ := json.Marshal(got)
		if string(jw) != string(jg) || len(got) != 1 {
			t.Fatalf("%s: vm %s, topdown %s", tc.query, jg, jw)
		}
	}
}

// TestPrepareRefusesWhatItCannotCheck: vm.Prepare checks the query against
// the compiler it is given, so it refuses no compiler (rego would compile
// its own from modules the check never saw) and options that change the
// policy or the query's meaning after the check: modules, a package or
// imports for the query. Options that only configure the evaluation are
// taken.
func TestPrepareRefusesWhatItCannotCheck(t *testing.T) {
	ctx := context.Background()
	store := inmem.New()
	c := ast.MustCompileModules(map[string]string{"m.rego": "package x\np := 1\nr := 2"})
	refused := func(what string, err error, why string) {
		t.Helper()
		if !errors.Is(err, vm.ErrUnsupported) || !strings.Contains(err.Error(), why) {
			t.Fatalf("%s: %v, want refused: %s", what, err, why)
		}
	}
	_, err := vm.Prepare(ctx, nil, store, ast.MustParseBody("data.x.p"))
	refused("no compiler", err, "no compiler")
	_, err = vm.Prepare(ctx, c, store, ast.MustParseBody("data.y.s"), rego.Module("y.rego", "package y\ns := 3"))
	refused("a module among the options", err, "modules")
	// With package x, p is data.x.p; without, a local the query binds.
	_, err = vm.Prepare(ctx, c, store, ast.MustParseBody("p = 1"), rego.Package("x"))
	refused("a package among the options", err, "pkg")
	_, err = vm.Prepare(ctx, c, store, ast.MustParseBody("p = 1"), rego.Imports([]string{"data.x.p"}))
	refused("imports among the options", err, "imports")
	_, err = vm.Prepare(ctx, c, store, ast.MustParseBody("data.x.p"), rego.CompilerHook(func(*ast.Compiler) {}))
	refused("a compiler hook among the options", err, "compilerHook")
	// What was checked is Prepare's, whatever the options say: the query,
	// and the target (PrepareQuery fails unless the VM prepared it).
	q, err := vm.PrepareQuery(ctx, c, store, ast.MustParseRef("data.x.p"),
		rego.Query("data.x.r"), rego.Target("rego"), rego.StrictBuiltinErrors(true), rego.EnablePrintStatements(true))
	if err != nil {
		t.Fatal(err)
	}
	v, defined, ok, err := q.Eval(ctx, nil, nil)
	if err != nil || !defined || !ok || v.Compare(ast.Number("1")) != 0 {
		t.Fatalf("got %v (defined %v, ok %v, %v), want data.x.p (1)", v, defined, ok, err)
	}
}
