package vm

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/ir"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/types"
)

// TestFindShared: which rules findShared marks as functions of the data
// only, shared across evaluations. Only rules of data and pure built-ins,
// whose callees are the same, with no with; anything reading the input
// (directly, through a callee, or handed to a function or built-in), or
// reaching a built-in that is not pure (the clock, randomness, print, a
// custom one), is not.
func TestFindShared(t *testing.T) {
	pure := rego.Function1(&rego.Function{Name: "acme.id", Decl: types.NewFunction(types.Args(types.A), types.A)},
		func(_ rego.BuiltinContext, a *ast.Term) (*ast.Term, error) { return a, nil })
	caps := ast.CapabilitiesForThisVersion()
	caps.Builtins = append(caps.Builtins, &ast.Builtin{Name: "acme.id", Decl: types.NewFunction(types.Args(types.A), types.A)})
	cases := []struct {
		name, rules string
		want        []string // rules of package x shared
	}{
		{"data", "a := data.cfg.n + 1", []string{"a"}},
		{"partial set of data", "s contains k if { some k, v in data.cfg.m; v > 1 }", []string{"s"}},
		{"constant", "c := [1, 2]", []string{"c"}},
		{"input", "a := input.n", nil},
		{"input through a callee", "i := input.n\na := i + data.cfg.n", nil},
		{"data-only callee", "d := data.cfg.n\na := d + input.n\nb := d * 2", []string{"b", "d"}},
		{"input to a function", "f(x) := x\na := f(input)", nil},
		{"data to a function", "f(x) := x + 1\na := f(data.cfg.n)", []string{"a"}},
		{"function reading input", "f(x) := x + input.n\na := f(data.cfg.n)", nil},
		{"input to a built-in", "a := count(input)", nil},
		{"clock", "a := time.now_ns()", nil},
		{"randomness", `a := rand.intn("k", 100)`, nil},
		{"callee on the clock", "t := time.now_ns()\na := t + data.cfg.n", nil},
		{"print", `a := data.cfg.n if print("x")`, nil},
		{"trace", `a := data.cfg.n if trace("x")`, nil},
		{"custom built-in", "a := acme.id(data.cfg.n)", nil},
		{"with", "i := input.n\na := x if { x := i with input.n as data.cfg.n }", nil},
		{"with data", "d := data.cfg.n\na := x if { x := d with data.cfg.n as 2 }", []string{"d"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := ast.NewCompiler().WithEnablePrintStatements(true).WithCapabilities(caps)
			mod := "package x\n" + tc.rules
			if c.Compile(map[string]*ast.Module{"m.rego": ast.MustParseModuleWithOpts(mod, ast.ParserOptions{AllFutureKeywords: true})}); c.Failed() {
				t.Fatal(c.Errors)
			}
			store := inmem.NewFromObjectWithOpts(map[string]any{"cfg": map[string]any{"n": 1, "m": map[string]any{"a": 1, "b": 2}}}, inmem.OptReturnASTValuesOnRead(true))
			q, err := PrepareQuery(context.Background(), c, store, ast.MustParseRef("data.x"), pure)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, fn := range q.p.prog.funcs {
				if fn.shared >= 0 {
					got = append(got, strings.TrimPrefix(fn.name, "g0.data.x."))
				}
			}
			slices.Sort(got)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("shared %v, want %v", got, tc.want)
			}
			if len(tc.want) > 0 && q.p.memo == nil {
				t.Fatal("no shared memo armed on an inmem store")
			}
		})
	}
}

// TestSharedNotArmedOffInmem: on a store that is not OPA's inmem store
// (how it changes data is not known), nothing is shared.
func TestSharedNotArmedOffInmem(t *testing.T) {
	c := ast.MustCompileModules(map[string]string{"m.rego": "package x\na := data.cfg.n + 1"})
	store := otherStore{inmem.NewFromObjectWithOpts(map[string]any{"cfg": map[string]any{"n": 1}}, inmem.OptReturnASTValuesOnRead(true))}
	q, err := PrepareQuery(context.Background(), c, store, ast.MustParseRef("data.x.a"))
	if err != nil {
		t.Fatal(err)
	}
	if q.p.prog.nshared != 1 || q.p.memo != nil {
		t.Fatalf("shared %d, armed %v: want 1 shared function, not armed", q.p.prog.nshared, q.p.memo != nil)
	}
}

// otherStore is an inmem store behind another type.
type otherStore struct{ storage.Store }

// TestReadTxn: the shared values serve evaluations in the inmem store's
// read transactions (those rego opens) and in nothing else.
func TestReadTxn(t *testing.T) {
	ctx := context.Background()
	store := inmem.New()
	r := storage.NewTransactionOrDie(ctx, store)
	if !readTxn(r) {
		t.Error("a read transaction is not one")
	}
	store.Abort(ctx, r)
	w := storage.NewTransactionOrDie(ctx, store, storage.WriteParams)
	if readTxn(w) {
		t.Error("a write transaction is a read transaction")
	}
	store.Abort(ctx, w)
	if readTxn(nil) || readTxn(otherTxn{}) {
		t.Error("a transaction of another type is a read transaction")
	}
}

// BenchmarkReadTxn: what telling an inmem read transaction costs an
// evaluation that shares data-only values.
func BenchmarkReadTxn(b *testing.B) {
	ctx := context.Background()
	store := inmem.New()
	txn := storage.NewTransactionOrDie(ctx, store)
	defer store.Abort(ctx, txn)
	b.ReportAllocs()
	for b.Loop() {
		if !readTxn(txn) {
			b.Fatal("a read transaction is not one")
		}
	}
}

type otherTxn struct{}

func (otherTxn) ID() uint64 { return 0 }

// TestMutatesCallResults: a function may change in place only a value a
// Make of its own frame assigned on every path to the change. The planner
// produces none of the refused shapes today; the analysis must refuse them
// on its own terms (a value that is not the frame's may be a shared one).
func TestMutatesCallResults(t *testing.T) {
	const (
		in, data         ir.Local = 0, 1
		r, x, o, y, k, v ir.Local = 2, 3, 4, 5, 6, 7
	)
	op := func(l ir.Local) ir.Operand { return ir.Operand{Value: l} }
	key := ir.Operand{Value: ir.StringIndex(0)}
	call := &ir.CallStmt{Func: "g", Args: []ir.Operand{op(in), op(data)}, Result: r} // r: a call's result
	blk := func(s ...ir.Stmt) *ir.Block { return &ir.Block{Stmts: s} }
	cases := []struct {
		name   string
		blocks []*ir.Block
		want   bool
	}{
		{"made then appended", []*ir.Block{blk(&ir.MakeArrayStmt{Target: x}, &ir.ArrayAppendStmt{Array: x, Value: op(data)})}, false},
		{"made, appended in a loop", []*ir.Block{blk(call, &ir.MakeArrayStmt{Target: x},
			&ir.ScanStmt{Source: r, Key: k, Value: v, Block: blk(&ir.ArrayAppendStmt{Array: x, Value: op(v)})})}, false},
		{"made in a block that cannot stop before, changed in the next", []*ir.Block{
			blk(&ir.MakeSetStmt{Target: x}), blk(call, &ir.SetAddStmt{Set: x, Value: op(r)})}, false},
		{"a call's result appended to", []*ir.Block{blk(call, &ir.ArrayAppendStmt{Array: r, Value: op(data)})}, true},
		{"a parameter inserted into", []*ir.Block{blk(&ir.ObjectInsertStmt{Object: data, Key: key, Value: op(in)})}, true},
		{"through a container and back", []*ir.Block{blk(call, &ir.MakeObjectStmt{Target: o},
			&ir.ObjectInsertStmt{Object: o, Key: key, Value: op(r)},
			&ir.DotStmt{Source: op(o), Key: key, Target: y},
			&ir.ArrayAppendStmt{Array: y, Value: op(data)})}, true},
		{"through a container, scanned back", []*ir.Block{blk(call, &ir.MakeArrayStmt{Target: o},
			&ir.ArrayAppendStmt{Array: o, Value: op(r)},
			&ir.ScanStmt{Source: o, Key: k, Value: v, Block: blk(&ir.SetAddStmt{Set: v, Value: op(data)})})}, true},
		{"an object merge's result", []*ir.Block{blk(call, &ir.MakeObjectStmt{Target: o},
			&ir.ObjectMergeStmt{A: r, B: o, Target: y},
			&ir.ObjectInsertStmt{Object: y, Key: key, Value: op(data)})}, true},
		{"made, then reassigned later in a loop body", []*ir.Block{blk(call, &ir.MakeArrayStmt{Target: x},
			&ir.ScanStmt{Source: r, Key: k, Value: v, Block: blk(
				&ir.ArrayAppendStmt{Array: x, Value: op(v)},
				&ir.AssignVarStmt{Source: op(r), Target: x})})}, true},
		{"made after a statement that can stop, changed in the next block", []*ir.Block{
			blk(call, &ir.AssignVarStmt{Source: op(r), Target: x}, &ir.IsObjectStmt{Source: op(r)}, &ir.MakeArrayStmt{Target: x}),
			blk(&ir.ArrayAppendStmt{Array: x, Value: op(data)})}, true},
		{"made after a break out of a nested block", []*ir.Block{
			blk(&ir.MakeArrayStmt{Target: x}, &ir.BlockStmt{Blocks: []*ir.Block{blk(&ir.AssignVarStmt{Source: op(in), Target: x}, &ir.BreakStmt{Index: 1})}},
				&ir.MakeArrayStmt{Target: x}),
			blk(&ir.ArrayAppendStmt{Array: x, Value: op(data)})}, true},
		{"made only in a nested block", []*ir.Block{blk(call,
			&ir.BlockStmt{Blocks: []*ir.Block{blk(&ir.AssignVarStmt{Source: op(r), Target: x}, &ir.IsObjectStmt{Source: op(r)}, &ir.MakeArrayStmt{Target: x})}},
			&ir.ArrayAppendStmt{Array: x, Value: op(data)})}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pol := &ir.Policy{Funcs: &ir.Funcs{Funcs: []*ir.Func{{Name: "f", Params: []ir.Local{in, data}, Return: x, Blocks: tc.blocks}}}}
			if got := mutatesCallResults(pol); got != tc.want {
				t.Fatalf("mutatesCallResults %v, want %v", got, tc.want)
			}
		})
	}
}
