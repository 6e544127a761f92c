package plan_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"

	"github.com/acgs-lite/acgs/internal/jsoneq"
	"github.com/acgs-lite/acgs/internal/plan"
	"github.com/acgs-lite/acgs/internal/readset"
)

type fixture struct {
	compiler *ast.Compiler
	modules  map[string]*ast.Module
	data     map[string]any
}

func compile(t *testing.T, src string, data map[string]any) fixture {
	t.Helper()
	m, err := ast.ParseModuleWithOpts("p.rego", src, ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err != nil {
		t.Fatal(err)
	}
	mods := map[string]*ast.Module{"p.rego": m}
	c := ast.NewCompiler()
	c.Compile(mods)
	if c.Failed() {
		t.Fatal(c.Errors)
	}
	if data == nil {
		data = map[string]any{}
	}
	return fixture{compiler: c, modules: mods, data: data}
}

func (f fixture) planner(keys []string) *plan.Planner {
	an := readset.New(f.compiler)
	reads := func(path string) *readset.Set {
		ref := ast.Ref{ast.DefaultRootDocument}
		for _, s := range strings.Split(path, "/") {
			ref = append(ref, ast.StringTerm(s))
		}
		return an.Analyze(ref)
	}
	return plan.New(f.modules, inmem.NewFromObject(f.data), reads, plan.Options{Keys: keys, Size: 64})
}

// full is topdown's answer for input at path: the reference.
func (f fixture) full(t *testing.T, path string, input any) (any, bool) {
	t.Helper()
	rs, err := rego.New(rego.Query("data."+strings.ReplaceAll(path, "/", ".")), rego.Compiler(f.compiler),
		rego.Store(inmem.NewFromObject(f.data)), rego.Input(input)).Eval(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) == 0 {
		return nil, false
	}
	return rs[0].Expressions[0].Value, true
}

const routing = `package t

banned := {"rm", "shutdown"}

decision := {"allow": false, "reasons": ["banned"], "score": 0.5} if input.action in banned

decision := {"allow": input.user.trust > 0.5, "reasons": []} if not input.action in banned

only_one if input.a == 1
`

// TestBuild: what partial evaluation settles is a constant equal to
// topdown's answer; what it does not is a fallback; what cannot be
// specialised says why.
func TestBuild(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name, src, path string
		keys            []string
		known           map[string]any
		want            string // plan kind; "" for no plan (Build returns nil)
		disabled        string // substring of Disabled
	}{
		{"banned action is a constant", routing, "t/decision", []string{"input.action"}, map[string]any{"action": "rm"}, plan.Constant, ""},
		{"allowed action depends on the user", routing, "t/decision", []string{"input.action"}, map[string]any{"action": "ls"}, plan.Fallback, ""},
		{"undefined whatever the rest", routing, "t/only_one", []string{"input.a"}, map[string]any{"a": 2}, plan.Constant, ""},
		{"defined constant", routing, "t/only_one", []string{"input.a"}, map[string]any{"a": 1}, plan.Constant, ""},
		// Without an action neither body holds (topdown agrees: `not
		// input.action in banned` is not true of a missing action).
		{"missing key", routing, "t/decision", []string{"input.action"}, map[string]any{}, plan.Constant, ""},
		{"nested key under a field read elsewhere", "package t\n\nd := input.a.c if input.a.b == 1\n", "t/d", []string{"input.a.b"}, map[string]any{"a": map[string]any{"b": 1}}, plan.Fallback, ""},
		// Conservative: a nested key's top-level field stays unknown when the
		// document reads anything else under it, so no constant is claimed.
		{"nested key under a field also read", "package t\n\nd := 7 if input.a.b == 1\n\nd := input.a.c if input.a.b != 1\n", "t/d", []string{"input.a.b"}, map[string]any{"a": map[string]any{"b": 1}}, plan.Fallback, ""},
		{"nested key alone", "package t\n\nd := 7 if input.a.b == 1\n\nd := input.c if input.a.b != 1\n", "t/d", []string{"input.a.b"}, map[string]any{"a": map[string]any{"b": 1}}, plan.Fallback, ""},
		{"whole input", "package t\n\nd := count(input)\n", "t/d", []string{"input.a"}, map[string]any{"a": 1}, plan.Fallback, "whole"},
		{"non-deterministic", "package t\n\nd := time.now_ns() if input.a == 1\n", "t/d", []string{"input.a"}, map[string]any{"a": 1}, plan.Fallback, "non-deterministic"},
		{"no keys", routing, "t/decision", nil, map[string]any{"action": "rm"}, "", "no plan keys"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := compile(t, tc.src, nil)
			p := f.planner(tc.keys)
			if got := p.Disabled(tc.path); !strings.Contains(got, tc.disabled) || (tc.disabled == "") != (got == "") {
				t.Errorf("Disabled = %q, want it to say %q", got, tc.disabled)
			}
			pl := p.Build(ctx, tc.path, tc.known)
			if tc.want == "" {
				if pl != nil {
					t.Fatalf("a plan was built: %s", pl.Kind())
				}
				return
			}
			if pl == nil || pl.Kind() != tc.want {
				t.Fatalf("plan %v, want %s", pl, tc.want)
			}
			if pl.Kind() != plan.Constant {
				return
			}
			want, defined := f.full(t, tc.path, tc.known)
			if pl.Defined != defined || !jsoneq.Equal(pl.Value, want) {
				t.Errorf("constant %v (defined %v), topdown %v (defined %v)", pl.Value, pl.Defined, want, defined)
			}
			var back any
			if pl.Defined && (json.Unmarshal(pl.JSON, &back) != nil || !jsoneq.Equal(back, pl.Value)) {
				t.Errorf("JSON %s does not encode %v", pl.JSON, pl.Value)
			}
			// Get answers the same plan for any input with the key values.
			noisy := map[string]any{"user": map[string]any{"trust": 0.9}, "other": 1}
			for k, v := range tc.known {
				noisy[k] = v
			}
			if got := p.Get(tc.path, noisy); got != pl {
				t.Errorf("Get with the same key values: %v", got)
			}
		})
	}
}

// TestConstantsEqualTopdown is the differential test of the package: for
// generated inputs, wherever a plan is a constant it is topdown's answer.
func TestConstantsEqualTopdown(t *testing.T) {
	f := compile(t, routing, nil)
	p := f.planner([]string{"input.action"})
	r := rand.New(rand.NewPCG(1, 2))
	actions := []any{"rm", "shutdown", "ls", "cat", 7, nil, true}
	constants := 0
	for i := range 500 {
		in := map[string]any{"user": map[string]any{"trust": r.Float64()}, "request_id": fmt.Sprint(i)}
		if a := actions[r.IntN(len(actions)+1)%len(actions)]; r.IntN(8) > 0 {
			in["action"] = a
		}
		var pl *plan.Plan
		deadline := time.Now().Add(10 * time.Second)
		for pl = p.Get("t/decision", in); pl == nil && time.Now().Before(deadline); pl = p.Get("t/decision", in) {
			time.Sleep(time.Millisecond) // built in the background
		}
		if pl == nil {
			t.Fatalf("no plan for %v", in)
		}
		if pl.Kind() != plan.Constant {
			continue
		}
		constants++
		want, defined := f.full(t, "t/decision", in)
		if pl.Defined != defined || !jsoneq.Equal(pl.Value, want) {
			t.Fatalf("input %v: constant %v, topdown %v", in, pl.Value, want)
		}
	}
	if constants == 0 {
		t.Error("no input was answered by a constant")
	}
}

// TestKeysOfObjectsAreNotPlanned: a plan key holding an object or array
// names no single combination; such inputs are evaluated.
func TestKeysOfObjectsAreNotPlanned(t *testing.T) {
	p := compile(t, routing, nil).planner([]string{"input.action"})
	for _, in := range []any{map[string]any{"action": []any{"rm"}}, map[string]any{"action": map[string]any{}}, "not an object", nil} {
		if pl := p.Get("t/decision", in); pl != nil {
			t.Errorf("%v: plan %s", in, pl.Kind())
		}
	}
}

// TestDeclareOverridesDefaultKeys: an entry point's own keys replace the
// default ones for its path only.
func TestDeclareOverridesDefaultKeys(t *testing.T) {
	p := compile(t, routing, nil).planner(nil)
	p.Declare("t/decision", []string{"input.action"})
	if why := p.Disabled("t/decision"); why != "" {
		t.Fatalf("declared path disabled: %s", why)
	}
	if why := p.Disabled("t/only_one"); why == "" {
		t.Fatal("an undeclared path without default keys has plans")
	}
	if pl := p.Build(context.Background(), "t/decision", map[string]any{"action": "shutdown"}); pl == nil || pl.Kind() != plan.Constant {
		t.Fatalf("declared key gave %v", pl)
	}
}

// TestRootDocumentIsNotPlanned: the root document (data: path "" or "/")
// has no plan; a plan of it queried data[""] and answered undefined where
// topdown answers the whole document.
func TestRootDocumentIsNotPlanned(t *testing.T) {
	p := compile(t, routing, nil).planner([]string{"input.action"})
	for _, path := range []string{"", "/"} {
		if why := p.Disabled(path); why == "" {
			t.Errorf("path %q may be planned", path)
		}
		if pl := p.Build(context.Background(), path, map[string]any{"action": "rm"}); pl != nil && pl.Kind() == plan.Constant {
			t.Errorf("path %q: a constant plan", path)
		}
	}
}

// TestPlanKeysNameTheirPath: a path holding a NUL byte and plan-key values
// never read as another path's key and values, whichever is planned first.
func TestPlanKeysNameTheirPath(t *testing.T) {
	f := compile(t, routing, nil)
	p := f.planner([]string{"input.action"})
	// With a NUL separator and no length, path "t/decision" with action
	// "a\x00u" and the path "t/decision\x00ks\x03a" with no action made
	// the same bytes; with the length first they cannot.
	odd := "t/decision\x00ks\x03a"
	wait := func(path string, in map[string]any) *plan.Plan {
		deadline := time.Now().Add(10 * time.Second)
		for {
			if pl := p.Get(path, in); pl != nil {
				return pl
			}
			if time.Now().After(deadline) {
				t.Fatalf("no plan for %q after 10s", path)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	pl := wait("t/decision", map[string]any{"action": "a\x00u"})
	if other := p.Get(odd, map[string]any{}); other == pl {
		t.Fatalf("path %q got the plan of t/decision", odd)
	}
}
