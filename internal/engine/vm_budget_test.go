package engine_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/acgs-lite/acgs/internal/apierror"
	"github.com/acgs-lite/acgs/internal/engine"
)

// TestVMOutOfTimeLeavesTheRestToTopdown: the VM runs every body the
// planner emits, where topdown stops at the first body of a complete rule
// that holds. A cheap rule that holds beside a costly one is answered by
// topdown in microseconds and took the VM all of EVAL_TIMEOUT, a timeout
// where the reference answers true (review). The VM now has three
// quarters of the budget and topdown the rest; when neither finishes, the
// answer is the EVAL_TIMEOUT error, as before.
func TestVMOutOfTimeLeavesTheRestToTopdown(t *testing.T) {
	const module = `package t
default allow := false
allow if input.user.role == "admin"
allow if {
	some a in input.items
	some b in input.items
	a.id == b.parent
}
`
	b, err := engine.FSSource{FS: bundleFS(hash, module), Name: "t"}.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	e, err := engine.New(context.Background(), nil, engine.Options{ConstitutionalHash: hash, EvalTimeout: 300 * time.Millisecond, Compiled: true, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Activate(context.Background(), b, "t"); err != nil {
		t.Fatal(err)
	}
	items := make([]any, 3000) // 9,000,000 pairs: far past 225 ms for the VM
	for i := range items {
		items[i] = map[string]any{"id": i, "parent": -1}
	}
	input := func(role string) map[string]any {
		return map[string]any{"user": map[string]any{"role": role}, "items": items}
	}

	// A path's first request is topdown's; the VM is prepared for the
	// second. Small inputs the VM answers.
	small := map[string]any{"user": map[string]any{"role": "user"}, "items": []any{map[string]any{"id": 1, "parent": 1}}}
	for range 2 {
		if _, err := e.Decide(context.Background(), "t/allow", small); err != nil {
			t.Fatal(err)
		}
	}
	if d, err := e.Decide(context.Background(), "t/allow", small); err != nil || d.Source != engine.SourceVM || d.Result != true {
		t.Fatalf("a small input: %+v, %v; want true from the VM", d, err)
	}

	d, err := e.Decide(context.Background(), "t/allow", input("admin"))
	if err != nil || d.Result != true {
		t.Fatalf("admin: %+v, %v; want true, as topdown answers", d, err)
	}
	if d.Source != engine.SourceFull {
		t.Errorf("admin: source %s, want %s (the VM ran out of its share)", d.Source, engine.SourceFull)
	}

	_, err = e.Decide(context.Background(), "t/allow", input("user"))
	if apierror.CodeOf(err) != apierror.EvaluationError || !errors.Is(err, engine.ErrEvalTimeout) {
		t.Fatalf("user (neither evaluator finishes): %v; want an evaluation_error for EVAL_TIMEOUT", err)
	}
}
