package vm_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/topdown/builtins"

	"github.com/acgs-lite/acgs/internal/inputgen"
	"github.com/acgs-lite/acgs/internal/vm"
)

// TestQueryEvalEqualsPreparedEval: a query evaluated directly (Query.Eval,
// then ast.JSON) gives what the same query gives through rego
// (PreparedEvalQuery.Eval): the same JSON text, definedness and error, on
// every decision document of the constitution for generated inputs, on an
// undefined document, without input, and with non-deterministic built-ins
// recorded in the NDBCache as rego records them.
func TestQueryEvalEqualsPreparedEval(t *testing.T) {
	n := 5000
	if testing.Short() {
		n = 500
	}
	f := loadConstitution(t)
	ctx := context.Background()
	paths := append(f.decisionPaths(), "data.acgs.main", "data.acgs.no_such_document")
	inputs := inputgen.New(41).Inputs(n)
	for _, p := range paths {
		ref := ast.MustParseRef(p)
		q, err := vm.PrepareQuery(ctx, f.compiler, f.store, ref)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		for i := 0; i <= len(inputs); i++ {
			var in ast.Value // the last round: no input
			if i < len(inputs) {
				if in, err = ast.InterfaceToValue(inputs[i]); err != nil {
					t.Fatal(err)
				}
			}
			want := throughRego(q.PreparedEvalQuery, in, nil)
			if got := direct(q, in, nil); got != want {
				t.Fatalf("%s, input %d:\n direct %s\n   rego %s", p, i, got, want)
			}
		}
	}

	// Non-deterministic built-ins: the same cache entries as rego's.
	c := ast.NewCompiler()
	c.Compile(map[string]*ast.Module{"x.rego": ast.MustParseModule("package x\np := [t, r] if { t := time.now_ns(); r := rand.intn(\"k\", 1000) }")})
	if c.Failed() {
		t.Fatal(c.Errors)
	}
	store := inmem.NewFromObjectWithOpts(map[string]any{}, inmem.OptReturnASTValuesOnRead(true))
	q, err := vm.PrepareQuery(ctx, c, store, ast.MustParseRef("data.x.p"))
	if err != nil {
		t.Fatal(err)
	}
	ndb := builtins.NDBCache{}
	first := direct(q, nil, ndb)
	if len(ndb) != 2 {
		t.Fatalf("NDBCache holds %v, want time.now_ns and rand.intn", ndb)
	}
	if again := throughRego(q.PreparedEvalQuery, nil, ndb); again != first {
		t.Fatalf("rego with the direct evaluation's NDBCache: %s, direct %s", again, first)
	}
}

func throughRego(pq rego.PreparedEvalQuery, in ast.Value, ndb builtins.NDBCache) string {
	opts := []rego.EvalOption{rego.EvalNDBuiltinCache(ndbOr(ndb))}
	if in != nil {
		opts = append(opts, rego.EvalParsedInput(in))
	}
	rs, err := pq.Eval(context.Background(), opts...)
	switch {
	case err != nil:
		return "error: " + err.Error()
	case len(rs) == 0 || len(rs[0].Expressions) == 0:
		return "undefined"
	}
	return text(rs[0].Expressions[0].Value)
}

func direct(q *vm.Query, in ast.Value, ndb builtins.NDBCache) string {
	v, defined, ok, err := q.Eval(context.Background(), in, ndbOr(ndb))
	switch {
	case err != nil:
		return "error: " + err.Error()
	case !ok:
		return "not one value"
	case !defined:
		return "undefined"
	}
	x, err := ast.JSON(v)
	if err != nil {
		return "error: " + err.Error()
	}
	return text(x)
}

func ndbOr(ndb builtins.NDBCache) builtins.NDBCache {
	if ndb == nil {
		return builtins.NDBCache{}
	}
	return ndb
}

func text(v any) string {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	if err := enc.Encode(v); err != nil {
		return fmt.Sprintf("unencodable %v", err)
	}
	return b.String()
}
