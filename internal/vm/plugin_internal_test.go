package vm

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
)

// TestPluginRefusesChangedModules: the marker Prepare leaves for the
// plugin names the compiler its check looked at and that compiler's
// modules; a module compiled into it afterwards (as rego does with a
// rego.Module option, which Prepare refuses before that) is refused by the
// plugin too, whatever got past Prepare's own refusal.
func TestPluginRefusesChangedModules(t *testing.T) {
	store := inmem.New()
	prep := func(extra ...func(*rego.Rego)) error {
		c := ast.MustCompileModules(map[string]string{"m.rego": "package x\np := 1"})
		ctx := context.WithValue(context.Background(), envKey{}, env{store: store, checked: &checked{compiler: c, modules: c.Modules}})
		opts := append([]func(*rego.Rego){rego.ParsedQuery(ast.MustParseBody("data.x.p")), rego.Compiler(c), rego.Store(store), rego.Target(Target)}, extra...)
		_, err := rego.New(opts...).PrepareForEval(ctx)
		return err
	}
	if err := prep(); err != nil {
		t.Fatal(err)
	}
	err := prep(rego.Module("y.rego", "package y\ns := 2"))
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "modules changed") {
		t.Fatalf("got %v, want refused: modules changed", err)
	}
}
