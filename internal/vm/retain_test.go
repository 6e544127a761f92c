package vm_test

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/ir"

	"github.com/acgs-lite/acgs/internal/vm"
)

// TestCompileKeepsNoIR: a Program needs nothing of the ir.Policy it was
// lowered from once Compile returns (doc.go), so the policy must become
// garbage while the program lives. The program's pool of evaluation
// states once had a New closure over the lowering's state, which holds
// the policy: for the constitution, the IR kept that way was more heap
// than the programs themselves, marked on every collection.
func TestCompileKeepsNoIR(t *testing.T) {
	prog, freed := compileWatched(t)
	// A finalizer runs on its own goroutine after the collection that
	// finds its object unreachable: collect until it has run, within a
	// bound far above the one or two collections it takes.
	kept := true
	for i := 0; i < 100 && kept; i++ {
		runtime.GC()
		select {
		case <-freed:
			kept = false
		case <-time.After(10 * time.Millisecond):
		}
	}
	if kept {
		t.Fatal("the ir.Policy is still reachable while its Program lives: something the program keeps refers to the lowering's state")
	}
	// The program still evaluates (its pool makes new states).
	rs, err := prog.Eval(context.Background(), nil, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := ast.NewSet(ast.ObjectTerm(ast.Item(ast.StringTerm("ok"), ast.BooleanTerm(true))))
	if rs.Compare(want) != 0 {
		t.Fatalf("result set %v, want %v", rs, want)
	}
}

// compileWatched compiles a small policy and returns its program with a
// channel closed once the policy has been collected: nothing but the
// program is left referring to it when compileWatched returns.
func compileWatched(t *testing.T) (*vm.Program, chan struct{}) {
	t.Helper()
	pol := &ir.Policy{
		Static: &ir.Static{Strings: []*ir.StringConst{{Value: "ok"}}},
		Plans: &ir.Plans{Plans: []*ir.Plan{{Name: "eval", Blocks: []*ir.Block{{Stmts: []ir.Stmt{
			&ir.MakeObjectStmt{Target: 2},
			&ir.ObjectInsertStmt{Key: ir.Operand{Value: ir.StringIndex(0)}, Value: ir.Operand{Value: ir.Bool(true)}, Object: 2},
			&ir.ResultSetAddStmt{Value: 2},
		}}}}}},
	}
	prog, err := vm.Compile(pol, vm.Options{})
	if err != nil {
		t.Fatal(err)
	}
	freed := make(chan struct{})
	runtime.SetFinalizer(pol, func(*ir.Policy) { close(freed) })
	return prog, freed
}
