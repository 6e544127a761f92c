package readset_test

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

	"github.com/acgs-lite/acgs/internal/engine"
	"github.com/acgs-lite/acgs/internal/inputgen"
	"github.com/acgs-lite/acgs/internal/jsoneq"
	"github.com/acgs-lite/acgs/internal/readset"
	"github.com/acgs-lite/acgs/policies"
)

// The property the cache relies on: changing the input anywhere outside a
// document's read set never changes what full evaluation of the document
// gives (value, definedness, or an error).

// outside reports whether path p (an input location about to be changed,
// added or removed) is outside every read path: neither inside a read
// subtree nor an ancestor of one.
func outside(p []any, rs *readset.Set) bool {
	if rs.Whole {
		return false
	}
	prefix := func(a, b []any) bool { // a is a prefix of b, or b of a
		for i := 0; i < min(len(a), len(b)); i++ {
			if fmt.Sprint(a[i]) != fmt.Sprint(b[i]) || fmt.Sprintf("%T", a[i]) != fmt.Sprintf("%T", b[i]) {
				return false
			}
		}
		return true
	}
	for _, r := range rs.Paths {
		if prefix(p, r) {
			return false
		}
	}
	// A path whose type is read may change below it (a member added or
	// removed keeps an object an object), not at it or above it.
	for _, r := range rs.Types {
		if len(p) <= len(r) && prefix(p, r) {
			return false
		}
	}
	return true
}

// typeOnly reports whether only the type of the value at p is read: p is a
// path of rs.Types and no read path is at, above or below it. Its value may
// change to another of the same type.
func typeOnly(p []any, rs *readset.Set) bool {
	if rs.Whole || len(p) == 0 {
		return false
	}
	same := func(a, b []any) bool {
		if len(a) != len(b) {
			return false
		}
		for i := range a {
			if fmt.Sprint(a[i]) != fmt.Sprint(b[i]) || fmt.Sprintf("%T", a[i]) != fmt.Sprintf("%T", b[i]) {
				return false
			}
		}
		return true
	}
	for _, r := range rs.Paths {
		n := min(len(p), len(r))
		if same(p[:n], r[:n]) {
			return false
		}
	}
	for _, r := range rs.Types {
		if same(p, r) {
			return true
		}
	}
	return false
}

// sameType returns another value of v's JSON type (v itself for null).
func (m *mutator) sameType(v any) any {
	switch x := v.(type) {
	case bool:
		return !x
	case string:
		return x + "_" + m.keys[m.r.IntN(len(m.keys))]
	case json.Number:
		return json.Number(fmt.Sprint(m.r.IntN(200) - 50))
	}
	return v
}

// mutator changes an input at random places outside a read set.
type mutator struct {
	r    *rand.Rand
	keys []string // keys to try, besides those already present
}

// mutate changes up to n places of a deep copy of v that are outside rs:
// a value replaced, a member added or a member removed, at any depth.
func (m *mutator) mutate(v any, rs *readset.Set, n int) (any, int) {
	out := inputgen.DeepCopy(v)
	done := 0
	for try := 0; try < 20*n && done < n; try++ {
		if m.once(&out, nil, rs) {
			done++
		}
	}
	return out, done
}

// once walks down from *v at random and changes one place outside rs.
func (m *mutator) once(v *any, at []any, rs *readset.Set) bool {
	switch x := (*v).(type) {
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		switch op := m.r.IntN(4); {
		case op == 0 || len(keys) == 0: // add a member
			k := m.keys[m.r.IntN(len(m.keys))]
			if m.r.IntN(3) == 0 {
				k = fmt.Sprintf("noise_%d", m.r.IntN(1000))
			}
			p := append(append([]any(nil), at...), k)
			if _, taken := x[k]; taken || !outside(p, rs) {
				return false
			}
			x[k] = m.value(2)
			return true
		case op == 1: // remove a member
			k := keys[m.r.IntN(len(keys))]
			if !outside(append(append([]any(nil), at...), k), rs) {
				return false
			}
			delete(x, k)
			return true
		default: // go down
			k := keys[m.r.IntN(len(keys))]
			child := x[k]
			p := append(append([]any(nil), at...), k)
			if outside(p, rs) && m.r.IntN(3) == 0 {
				x[k] = m.value(2)
				return true
			}
			if m.once(&child, p, rs) {
				x[k] = child
				return true
			}
			return false
		}
	case []any:
		if len(x) == 0 {
			return false
		}
		i := m.r.IntN(len(x))
		child := x[i]
		p := append(append([]any(nil), at...), i)
		if outside(p, rs) && m.r.IntN(3) == 0 {
			x[i] = m.value(2)
			return true
		}
		if m.once(&child, p, rs) {
			x[i] = child
			return true
		}
		return false
	default:
		if len(at) > 0 && outside(at, rs) {
			*v = m.value(2)
			return true
		}
		// Where only the type is read, the value may change within it
		// (a type-only local that was really a key of the document: the
		// analysis must have read its value).
		if typeOnly(at, rs) && *v != nil {
			*v = m.sameType(*v)
			return true
		}
		return false
	}
}

func (m *mutator) value(depth int) any {
	switch m.r.IntN(7) {
	case 0:
		return nil
	case 1:
		return m.r.IntN(2) == 0
	case 2:
		return json.Number(fmt.Sprint(m.r.IntN(200) - 50))
	case 3:
		return json.Number(fmt.Sprintf("%d.%d", m.r.IntN(3), m.r.IntN(100)))
	case 4:
		return m.keys[m.r.IntN(len(m.keys))]
	case 5:
		if depth > 0 {
			a := []any{}
			for i := m.r.IntN(3); i > 0; i-- {
				a = append(a, m.value(depth-1))
			}
			return a
		}
		return "leaf"
	default:
		if depth > 0 {
			o := map[string]any{}
			for i := m.r.IntN(4); i > 0; i-- {
				o[m.keys[m.r.IntN(len(m.keys))]] = m.value(depth - 1)
			}
			return o
		}
		return json.Number("7")
	}
}

// outcome is a full evaluation's result, comparable across inputs.
type outcome struct {
	defined bool
	value   any
	err     string
}

func (o outcome) same(p outcome) bool {
	if (o.err != "") != (p.err != "") {
		return false
	}
	return o.defined == p.defined && jsoneq.SameText(o.value, p.value)
}

// TestConstitutionOutsideReadSetNeverMatters: for every document of the
// constitution, generated inputs (with noise fields at every level) changed
// only outside the read set evaluate exactly as before.
func TestConstitutionOutsideReadSetNeverMatters(t *testing.T) {
	perPath := 150
	if testing.Short() {
		perPath = 30
	}
	e, err := engine.New(context.Background(), engine.FSSource{FS: policies.FS, Name: "embedded"}, engine.Options{ConstitutionalHash: inputgen.Hash, EvalTimeout: time.Minute}) // a loaded machine must not turn a slow evaluation into an error here
	if err != nil {
		t.Fatal(err)
	}
	paths := documentPaths(t)
	if len(paths) < 20 {
		t.Fatalf("only %d documents found in the constitution", len(paths))
	}
	gen := inputgen.New(42)
	m := &mutator{r: rand.New(rand.NewPCG(7, 9)), keys: append([]string{"type", "action", "context", "agent", "environment", "trust_level", "evolution_request", "data_request", "id", "timestamp"}, inputgen.NoiseKeys...)}
	ctx := context.Background()
	eval := func(path string, in any) outcome {
		d, err := e.EvaluateFull(ctx, path, in)
		if err != nil {
			return outcome{err: err.Error()}
		}
		return outcome{defined: d.Defined, value: d.Result}
	}
	changes := 0
	for _, path := range paths {
		rs, ok := e.ReadSet(path)
		if !ok {
			t.Fatalf("%s: no read set", path)
		}
		if rs.Whole {
			continue
		}
		for i := 0; i < perPath; i++ {
			in := gen.WithNoise(gen.Input())
			mut, n := m.mutate(in, rs, 4)
			changes += n
			if a, b := eval(path, in), eval(path, mut); !a.same(b) {
				ja, _ := json.Marshal(in)
				jb, _ := json.Marshal(mut)
				t.Fatalf("%s: a change outside the read set changed the result\nread set:\n%s\nbefore: %s\n  -> %+v\nafter:  %s\n  -> %+v", path, rs, ja, a, jb, b)
			}
		}
	}
	if changes < len(paths)*perPath {
		t.Errorf("only %d changes made over %d documents", changes, len(paths))
	}
	t.Logf("%d documents, %d changes outside their read sets, no result changed", len(paths), changes)
}

// documentPaths lists the constitution's documents (rules that are not
// functions, outside test packages) as API paths.
func documentPaths(tb testing.TB) []string {
	tb.Helper()
	b, err := (engine.FSSource{FS: policies.FS, Name: "embedded"}).Load(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	mods := map[string]*ast.Module{}
	for _, mf := range b.Modules {
		mods[mf.Path] = mf.Parsed
	}
	c := ast.NewCompiler()
	c.Compile(mods)
	if c.Failed() {
		tb.Fatal(c.Errors)
	}
	var out []string
	for _, ref := range readset.New(c).RulePaths() {
		s := strings.TrimPrefix(ref.String(), "data.")
		if strings.Contains(s, "_test.") {
			continue
		}
		out = append(out, strings.ReplaceAll(s, ".", "/"))
	}
	return append(out, "acgs/main", "acgs/constitutional")
}

// TestSmallPoliciesOutsideReadSetNeverMatters: the same property for the
// small policies of the unit table, which exercise every widening case, on
// random inputs built from the names those policies read.
func TestSmallPoliciesOutsideReadSetNeverMatters(t *testing.T) {
	n := 400
	if testing.Short() {
		n = 80
	}
	keys := []string{"a", "b", "c", "x", "y", "v", "z", "n", "k", "ab", "user", "role", "action", "items", "xs", "ys", "m", "tree",
		"doc", "obj", "ctx", "lib_field", "locale", "name", "list", "key", "context", "agent", "level", "roles", "odd key", "deadline", "admin", "read", "en", "noise"}
	for ci, tc := range smallPolicies {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ast.CompileModules(tc.modules)
			if err != nil {
				t.Fatal(err)
			}
			rs := readset.New(c).Analyze(ast.MustParseRef("data." + tc.path))
			if !rs.Cacheable() {
				t.Skip("non-deterministic: never cached, the property does not apply")
			}
			pq, err := rego.New(rego.Query("data."+tc.path), rego.Compiler(c), rego.Store(storeFor(t, tc.data))).PrepareForEval(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			eval := func(in any) outcome {
				r, err := pq.Eval(context.Background(), rego.EvalInput(in))
				if err != nil {
					return outcome{err: err.Error()}
				}
				if len(r) == 0 {
					return outcome{}
				}
				return outcome{defined: true, value: r[0].Expressions[0].Value}
			}
			r := rand.New(rand.NewPCG(uint64(ci), 3))
			m := &mutator{r: r, keys: keys}
			changes, defined := 0, 0
			for i := 0; i < n; i++ {
				in := m.value(4)
				if _, ok := in.(map[string]any); !ok {
					in = map[string]any{"a": in}
				}
				seed(in.(map[string]any), m, tc.seed)
				mut, k := m.mutate(in, rs, 3)
				changes += k
				a, b := eval(in), eval(mut)
				if a.defined {
					defined++
				}
				if !a.same(b) {
					ja, _ := json.Marshal(in)
					jb, _ := json.Marshal(mut)
					t.Fatalf("a change outside the read set changed the result\nread set:\n%s\nbefore: %s -> %+v\nafter:  %s -> %+v", rs, ja, a, jb, b)
				}
			}
			if !rs.Whole && changes == 0 {
				t.Errorf("no change made outside the read set")
			}
			t.Logf("%d inputs (%d defined), %d changes", n, defined, changes)
		})
	}
}

// seed puts the values a policy looks for into part of the inputs, so that
// its rules are also defined, not only undefined.
func seed(in map[string]any, m *mutator, fields map[string]any) {
	if m.r.IntN(2) == 0 {
		return
	}
	for k, v := range fields {
		in[k] = inputgen.DeepCopy(v)
	}
}

// BenchmarkAnalyzeNewPath: what a path's first request costs the engine to
// key its decisions (engine.readSets computes it once per path): the read
// set of data.acgs.main.decision.reasons[3] in the embedded constitution.
func BenchmarkAnalyzeNewPath(b *testing.B) {
	bundle, err := (engine.FSSource{FS: policies.FS, Name: "embedded"}).Load(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	mods := map[string]*ast.Module{}
	for _, mf := range bundle.Modules {
		mods[mf.Path] = mf.Parsed
	}
	c := ast.NewCompiler()
	if c.Compile(mods); c.Failed() {
		b.Fatal(c.Errors)
	}
	an := readset.New(c)
	ref := ast.MustParseRef("data.acgs.main.decision.reasons[3]")
	b.ReportAllocs()
	for b.Loop() {
		if rs := an.Analyze(ref); rs.Whole {
			b.Fatal("whole input")
		}
	}
}
