package plan

import (
	"context"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/storage/inmem"

	"github.com/acgs-lite/acgs/internal/jsoneq"
	"github.com/acgs-lite/acgs/internal/readset"
)

// The planner lets go of its compiler once no build has run for keep, and
// the next build compiles again and plans the same.
func TestPlannerDropsItsCompilerWhenIdle(t *testing.T) {
	m, err := ast.ParseModuleWithOpts("p.rego", `package t

decision := {"allow": false, "reasons": ["banned"]} if input.action == "rm"

decision := {"allow": input.trust > 0.5, "reasons": []} if input.action != "rm"
`, ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err != nil {
		t.Fatal(err)
	}
	mods := map[string]*ast.Module{"p.rego": m}
	c := ast.NewCompiler()
	if c.Compile(mods); c.Failed() {
		t.Fatal(c.Errors)
	}
	an := readset.New(c)
	reads := func(string) *readset.Set {
		return an.Analyze(ast.MustParseRef("data.t.decision"))
	}
	p := New(mods, inmem.NewFromObject(map[string]any{}), reads, Options{Keys: []string{"input.action"}, Size: 8})
	p.keep = 20 * time.Millisecond
	ctx := context.Background()
	first := p.Build(ctx, "t/decision", map[string]any{"action": "rm"})
	if first == nil || first.Kind() != Constant {
		t.Fatalf("plan %+v, want a constant", first)
	}
	compiled := func() bool {
		p.sem <- struct{}{}
		defer func() { <-p.sem }()
		return p.comp != nil
	}
	if !compiled() {
		t.Fatal("no compiler right after a build")
	}
	deadline := time.Now().Add(5 * time.Second)
	for compiled() {
		if time.Now().After(deadline) {
			t.Fatal("the compiler is still kept long after the last build")
		}
		time.Sleep(5 * time.Millisecond)
	}
	p.lru.Purge()
	again := p.Build(ctx, "t/decision", map[string]any{"action": "rm"})
	if again == nil || again.Kind() != Constant || !jsoneq.Equal(again.Value, first.Value) {
		t.Fatalf("plan after the compiler was dropped %+v, want %+v", again, first)
	}
}
