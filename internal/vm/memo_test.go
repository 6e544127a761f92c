package vm_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/topdown/builtins"

	"github.com/acgs-lite/acgs/internal/vm"
)

// memoPolicy mixes rules of the data only (shared across evaluations by
// the VM) with rules of the input that call them, and evaluates some of
// them under with, in rules and in queries.
const memoPolicy = `package m

limits contains name if {
	some name, v in data.cfg.limits
	is_number(v)
}

problems contains sprintf("%s: a number", [name]) if {
	some name, v in data.cfg.limits
	not is_number(v)
}

names := sort([k | some k, _ in data.cfg.limits])

threshold := object.get(data.cfg, "threshold", 10)

over contains name if {
	some name in limits
	input.values[name] > data.cfg.limits[name]
}

default score := 0

score := sum([input.values[n] | some n in names; is_number(input.values[n])])

decision := {
	"allow": count(over) == 0,
	"over": over,
	"problems": problems,
	"names": names,
	"threshold": threshold,
	"score": score,
}

# The decision for another input, in a rule: the data-only rules keep
# their values there.
alt := d if {
	d := decision with input.values as {"a": 1000, "b": 0}
}
`

// memoDataPolicy replaces data with with (the data-only rules must be
// evaluated on the replaced document there, not taken from the memo).
const memoDataPolicy = `package d

names := sort([k | some k, _ in data.cfg.limits])

bad := [k | some k, v in data.cfg.limits; not is_number(v)]

replaced := [n, b] if {
	n := names with data.cfg.limits as {"z": 1, "y": "q"}
	b := bad with data.cfg.limits as {"z": 1, "y": "q"}
}

view := {"names": names, "bad": bad, "replaced": replaced, "n": input.n}
`

var memoData = map[string]any{"cfg": map[string]any{
	"limits":    map[string]any{"a": 10, "b": 5, "c": "x", "d": 2.5},
	"threshold": 7,
}}

// memoInput is a random input for memoPolicy and memoDataPolicy.
func memoInput(r *rand.Rand) map[string]any {
	vals := map[string]any{}
	for _, k := range []string{"a", "b", "c", "d", "e"} {
		switch r.IntN(4) {
		case 0:
		case 1:
			vals[k] = r.IntN(20)
		case 2:
			vals[k] = fmt.Sprint(r.IntN(20))
		case 3:
			vals[k] = r.Float64() * 20
		}
	}
	in := map[string]any{"values": vals, "n": r.IntN(3)}
	if r.IntN(10) == 0 {
		in["values"] = "not an object"
	}
	return in
}

type memoQuery struct {
	name string
	td   rego.PreparedEvalQuery
	vm   rego.PreparedEvalQuery
	q    *vm.Query // nil for a query that is not one reference
}

func prepareMemoQueries(t *testing.T, c *ast.Compiler, store storage.Store, queries []string) []memoQuery {
	t.Helper()
	ctx := context.Background()
	var out []memoQuery
	for _, src := range queries {
		body := ast.MustParseBody(src)
		td, err := rego.New(rego.ParsedQuery(body), rego.Compiler(c), rego.Store(store)).PrepareForEval(ctx)
		if err != nil {
			t.Fatal(err)
		}
		mq := memoQuery{name: src, td: td}
		if ref, ok := body[0].Terms.(*ast.Term); ok && len(body) == 1 && len(body[0].With) == 0 {
			q, err := vm.PrepareQuery(ctx, c, store, ref.Value.(ast.Ref))
			if err != nil {
				t.Fatalf("%s: %v", src, err)
			}
			mq.q, mq.vm = q, q.PreparedEvalQuery
		} else if mq.vm, err = vm.Prepare(ctx, c, store, body); err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		out = append(out, mq)
	}
	return out
}

// TestMemoDifferential evaluates generated inputs, many times on each
// prepared query from several goroutines (so that the values of the
// data-only rules are computed once and reused), with the VM (through rego
// and directly) and with topdown: the results must be the same, under with
// in rules and in queries included.
func TestMemoDifferential(t *testing.T) {
	c := ast.MustCompileModules(map[string]string{"m.rego": memoPolicy, "d.rego": memoDataPolicy})
	store := inmem.NewFromObjectWithOpts(memoData, inmem.OptRoundTripOnWrite(false), inmem.OptReturnASTValuesOnRead(true))
	queries := prepareMemoQueries(t, c, store, []string{
		"data.m.decision", "data.m.alt", "data.m.names", "data.m.limits", "data.d.view",
		`x := data.m.decision with input.values as {"a": 11, "c": 1}`,
		`x := data.d.view with data.cfg.limits as {"q": 1, "r": "s"}`,
		`x := data.m.names with data.cfg.limits as {"q": 1}`,
	})
	for _, q := range queries[:5] {
		names, armed := vm.SharedFuncs(q.q)
		if !armed || len(names) == 0 {
			t.Fatalf("%s: shared %v, armed %v: the memo is not exercised", q.name, names, armed)
		}
	}
	n := 3000
	if testing.Short() {
		n = 300
	}
	r := rand.New(rand.NewPCG(23, 5))
	inputs := make([]ast.Value, n)
	for i := range inputs {
		inputs[i] = ast.MustInterfaceToValue(memoInput(r))
	}
	var diffs atomic.Int64
	var next atomic.Int64
	var wg sync.WaitGroup
	for range max(2, runtime.GOMAXPROCS(0)) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(inputs) {
					return
				}
				in := inputs[i]
				for _, q := range queries {
					want, _ := evalText(context.Background(), q.td, in)
					got, _ := evalText(context.Background(), q.vm, in)
					direct := got
					if q.q != nil {
						direct = directText(t, q.q, in)
					}
					if got != want || direct != want {
						if diffs.Add(1) <= 5 {
							t.Errorf("%s, input %v:\ntopdown %s\nvm      %s\ndirect  %s", q.name, in, want, got, direct)
						}
					}
				}
			}
		})
	}
	wg.Wait()
	if d := diffs.Load(); d > 0 {
		t.Fatalf("%d differences", d)
	}
}

// directText is evalText for the VM's direct path (Query.Eval).
func directText(t *testing.T, q *vm.Query, in ast.Value) string {
	v, defined, ok, err := q.Eval(context.Background(), in, builtins.NDBCache{})
	switch {
	case err != nil:
		return "error: " + err.Error()
	case !ok:
		t.Error("the direct path could not answer")
		return "not ok"
	case !defined:
		return "undefined"
	}
	x, err := ast.JSON(v)
	if err != nil {
		return "unencodable: " + err.Error()
	}
	s, err := jsonText(x)
	if err != nil {
		return "unencodable: " + err.Error()
	}
	return s
}

// TestMemoReusesValue: a data-only rule is computed by the first
// evaluation and the next ones get the same value (the same object, not
// an equal one), through rego and directly.
func TestMemoReusesValue(t *testing.T) {
	c := ast.MustCompileModules(map[string]string{"m.rego": memoPolicy})
	store := inmem.NewFromObjectWithOpts(memoData, inmem.OptRoundTripOnWrite(false), inmem.OptReturnASTValuesOnRead(true))
	q, err := vm.PrepareQuery(context.Background(), c, store, ast.MustParseRef("data.m.names"))
	if err != nil {
		t.Fatal(err)
	}
	in := ast.MustInterfaceToValue(map[string]any{})
	first, _, _, err := q.Eval(context.Background(), in, nil)
	if err != nil {
		t.Fatal(err)
	}
	second, _, _, err := q.Eval(context.Background(), in, nil)
	if err != nil {
		t.Fatal(err)
	}
	if first.Compare(ast.MustParseTerm(`["a", "b", "c", "d"]`).Value) != 0 {
		t.Fatalf("names %v", first)
	}
	if first.(*ast.Array) != second.(*ast.Array) {
		t.Fatal("the second evaluation computed names again: not shared")
	}
}

// TestMemoSeesStoreWrites: a write to the store (the inmem store changes
// its documents in place, so the data document read after it is the same
// object) makes the data-only rules be computed again.
func TestMemoSeesStoreWrites(t *testing.T) {
	ctx := context.Background()
	c := ast.MustCompileModules(map[string]string{"m.rego": memoPolicy})
	store := inmem.NewFromObjectWithOpts(memoData, inmem.OptRoundTripOnWrite(false), inmem.OptReturnASTValuesOnRead(true))
	queries := prepareMemoQueries(t, c, store, []string{"data.m.names", "data.m.threshold"})
	in := ast.MustInterfaceToValue(map[string]any{})
	check := func(want ...string) {
		t.Helper()
		for i, q := range queries {
			if got := directText(t, q.q, in); got != want[i] {
				t.Fatalf("%s: %s, want %s", q.name, got, want[i])
			}
			if got, _ := evalText(ctx, q.vm, in); got != want[i] {
				t.Fatalf("%s through rego: %s, want %s", q.name, got, want[i])
			}
		}
	}
	check(`["a","b","c","d"]`, "7")
	if err := storage.WriteOne(ctx, store, storage.AddOp, storage.MustParsePath("/cfg/limits/e"), ast.Number("1")); err != nil {
		t.Fatal(err)
	}
	if err := storage.WriteOne(ctx, store, storage.ReplaceOp, storage.MustParsePath("/cfg/threshold"), ast.Number("8")); err != nil {
		t.Fatal(err)
	}
	check(`["a","b","c","d","e"]`, "8")
}

// TestMemoNotForNondeterministic: rules on the clock or random numbers,
// and rules of the data that call them, are computed by every evaluation.
func TestMemoNotForNondeterministic(t *testing.T) {
	c := ast.MustCompileModules(map[string]string{"m.rego": `package m
now := time.now_ns()
later := now + data.cfg.threshold
r := rand.intn("k", 1000000000)
r2 := r + data.cfg.threshold
v := {"now": now, "later": later, "r": r, "r2": r2, "t": data.cfg.threshold}
`})
	store := inmem.NewFromObjectWithOpts(memoData, inmem.OptRoundTripOnWrite(false), inmem.OptReturnASTValuesOnRead(true))
	q, err := vm.PrepareQuery(context.Background(), c, store, ast.MustParseRef("data.m.v"))
	if err != nil {
		t.Fatal(err)
	}
	if names, _ := vm.SharedFuncs(q); len(names) != 0 {
		t.Fatalf("shared %v: none may be", names)
	}
	seen := map[string]map[string]bool{"now": {}, "later": {}, "r": {}, "r2": {}}
	in := ast.MustInterfaceToValue(map[string]any{})
	for range 5 {
		v, _, _, err := q.Eval(context.Background(), in, builtins.NDBCache{})
		if err != nil {
			t.Fatal(err)
		}
		for k := range seen {
			seen[k][v.(ast.Object).Get(ast.StringTerm(k)).String()] = true
		}
		time.Sleep(time.Millisecond) // the clock moves between two evaluations
	}
	for k, vals := range seen {
		if len(vals) < 2 {
			t.Errorf("%s: one value in 5 evaluations %v: memoised", k, vals)
		}
	}
}

// TestMemoNotForErrors: a data-only rule that fails (a conflict, a
// built-in's error under strict errors) fails every evaluation, and one
// undefined (the built-in's error without strict errors) stays undefined.
func TestMemoNotForErrors(t *testing.T) {
	ctx := context.Background()
	c := ast.MustCompileModules(map[string]string{"m.rego": `package m
conflict := x if { some x in [1, 2]; data.cfg.threshold > 0 }
num := to_number(data.cfg.limits.c)
`})
	store := inmem.NewFromObjectWithOpts(memoData, inmem.OptRoundTripOnWrite(false), inmem.OptReturnASTValuesOnRead(true))
	in := ast.MustInterfaceToValue(map[string]any{})
	for _, tc := range []struct {
		query  string
		strict bool
		err    bool
	}{
		{"data.m.conflict", false, true},
		{"data.m.num", true, true},
		{"data.m.num", false, false},
	} {
		var extra []func(*rego.Rego)
		if tc.strict {
			extra = append(extra, rego.StrictBuiltinErrors(true))
		}
		q, err := vm.PrepareQuery(ctx, c, store, ast.MustParseRef(tc.query), extra...)
		if errors.Is(err, vm.ErrUnsupported) {
			t.Fatalf("%s: %v", tc.query, err)
		}
		if names, armed := vm.SharedFuncs(q); len(names) == 0 || !armed {
			t.Fatalf("%s: shared %v, armed %v", tc.query, names, armed)
		}
		// through rego: the direct path has no strict built-in errors
		for i := range 3 {
			got, _ := evalText(ctx, q.PreparedEvalQuery, in)
			if strings.HasPrefix(got, "error") != tc.err || (!tc.err && got != "undefined") {
				t.Fatalf("%s strict=%v, evaluation %d: %s", tc.query, tc.strict, i, got)
			}
		}
	}
}

// TestMemoRegexMatch: regex.match is a function of its operands (the
// regex cache only saves compiling a pattern again), so a data-only rule
// calling it is shared; one on an invalid pattern fails every evaluation
// under strict built-in errors (an error is never stored) and is undefined
// in every one without, as topdown, before and after a write that makes
// the pattern valid.
func TestMemoRegexMatch(t *testing.T) {
	ctx := context.Background()
	c := ast.MustCompileModules(map[string]string{"m.rego": `package m
ok := regex.match(data.re.valid, data.re.text)
bad := regex.match(data.re.invalid, data.re.text)
default either := "neither"
either := "bad" if bad
either := "ok" if { not bad; ok }
`})
	store := inmem.NewFromObjectWithOpts(map[string]any{"re": map[string]any{
		"valid": "^a[0-9]+$", "invalid": "a(", "text": "a12",
	}}, inmem.OptRoundTripOnWrite(false), inmem.OptReturnASTValuesOnRead(true))
	in := ast.MustInterfaceToValue(map[string]any{})
	type pair struct {
		query  string
		strict bool
		q      *vm.Query
		td     rego.PreparedEvalQuery
	}
	var pairs []pair
	for _, query := range []string{"data.m.ok", "data.m.bad", "data.m.either"} {
		for _, strict := range []bool{false, true} {
			extra := []func(*rego.Rego){rego.StrictBuiltinErrors(strict)}
			q, err := vm.PrepareQuery(ctx, c, store, ast.MustParseRef(query), extra...)
			if err != nil {
				t.Fatalf("%s: %v", query, err)
			}
			if names, armed := vm.SharedFuncs(q); len(names) == 0 || !armed {
				t.Fatalf("%s strict=%v: shared %v, armed %v: regex.match is not shared", query, strict, names, armed)
			}
			td, err := rego.New(append(extra, rego.ParsedQuery(ast.MustParseBody(query)), rego.Compiler(c), rego.Store(store))...).PrepareForEval(ctx)
			if err != nil {
				t.Fatal(err)
			}
			pairs = append(pairs, pair{query, strict, q, td})
		}
	}
	check := func(stage string, want map[string]string) {
		t.Helper()
		for _, p := range pairs {
			for i := range 3 {
				tdText, _ := evalText(ctx, p.td, in)
				got, _ := evalText(ctx, p.q.PreparedEvalQuery, in)
				if got != tdText {
					t.Fatalf("%s, %s strict=%v, evaluation %d: vm %s, topdown %s", stage, p.query, p.strict, i, got, tdText)
				}
				key := fmt.Sprintf("%s %v", p.query, p.strict)
				if w := want[key]; w == "error" && !strings.HasPrefix(got, "error") || w != "error" && got != w {
					t.Fatalf("%s, %s, evaluation %d: %s, want %s", stage, key, i, got, w)
				}
			}
		}
	}
	check("invalid pattern", map[string]string{
		"data.m.ok false": "true", "data.m.ok true": "true",
		"data.m.bad false": "undefined", "data.m.bad true": "error",
		"data.m.either false": `"ok"`, "data.m.either true": "error",
	})
	if err := storage.WriteOne(ctx, store, storage.ReplaceOp, storage.MustParsePath("/re/invalid"), ast.String("^a")); err != nil {
		t.Fatal(err)
	}
	check("pattern made valid", map[string]string{
		"data.m.ok false": "true", "data.m.ok true": "true",
		"data.m.bad false": "true", "data.m.bad true": "true",
		"data.m.either false": `"bad"`, "data.m.either true": `"bad"`,
	})
}

// BenchmarkSharedMemoPaired alternates, within every iteration, the
// constitution's decision on the VM with the values of the data-only rules
// shared and without (directly, as the engine evaluates), on the same
// input: on a shared, noisy machine both see the same load.
//
//	go test ./internal/vm -run '^$' -bench SharedMemoPaired -benchmem
func BenchmarkSharedMemoPaired(b *testing.B) {
	f := loadConstitution(b)
	ctx := context.Background()
	ref := ast.MustParseRef("data.acgs.main.decision")
	shared, err := vm.PrepareQuery(ctx, f.compiler, f.store, ref)
	if err != nil {
		b.Fatal(err)
	}
	plain, err := vm.PrepareQuery(ctx, f.compiler, f.store, ref)
	if err != nil {
		b.Fatal(err)
	}
	vm.Disarm(plain)
	type request struct {
		name  string
		input ast.Value
	}
	var requests []request
	for _, r := range benchRequests {
		raw, err := os.ReadFile(filepath.Join("..", "..", "testdata", "requests", r.file))
		if err != nil {
			b.Fatal(err)
		}
		var in any
		if err := json.Unmarshal(raw, &in); err != nil {
			b.Fatal(err)
		}
		requests = append(requests, request{r.name, ast.MustInterfaceToValue(in)})
	}
	// The gateway's decision type, which has no example request of its
	// own: an allowed call with a path, a URL and text among its arguments.
	requests = append(requests, request{"tool_call", ast.MustParseTerm(`{
		"type": "tool_call", "constitutional_hash": "cdd01ef066bc6cf2",
		"tool_call": {
			"name": "files__read_file", "tool": "read_file", "upstream": "files",
			"arguments": {"path": "/workspace/notes.txt", "url": "https://api.github.com/repos", "text": "summarise this"},
			"agent": {"id": "agent-1", "session": "session-1"},
			"context": {"calls_last_minute": 3}
		}
	}`).Value})
	for _, r := range requests {
		input := r.input
		b.Run(r.name, func(b *testing.B) {
			var on, off time.Duration
			eval := func(q *vm.Query) time.Duration {
				start := time.Now()
				_, defined, ok, err := q.Eval(ctx, input, builtins.NDBCache{})
				d := time.Since(start)
				if err != nil || !defined || !ok {
					b.Fatal(defined, ok, err)
				}
				return d
			}
			n := 0
			for b.Loop() {
				if n%2 == 0 {
					on += eval(shared)
					off += eval(plain)
				} else {
					off += eval(plain)
					on += eval(shared)
				}
				n++
			}
			b.ReportMetric(float64(on.Nanoseconds())/float64(n), "shared-ns/op")
			b.ReportMetric(float64(off.Nanoseconds())/float64(n), "unshared-ns/op")
			b.ReportMetric(float64(off)/float64(on), "speedup")
		})
	}
}

// TestMemoCallerTransaction: an evaluation in a transaction the caller
// gives (rego.EvalTransaction) agrees with topdown after writes in that
// transaction. In a write transaction that replaced the root, inmem reads
// return that update's value, and a later write under the root changes it
// in place with no commit: a value shared on it would be stale.
func TestMemoCallerTransaction(t *testing.T) {
	ctx := context.Background()
	c := ast.MustCompileModules(map[string]string{"m.rego": `package m
t := data.cfg.threshold + 0
n := count(data.cfg.l)
both := [n, t, input.k]
`})
	type write struct {
		op   storage.PatchOp
		path string
		val  string
	}
	cases := []struct {
		name   string
		query  string
		writes []write // in one write transaction, each followed by an evaluation
	}{
		{"root replaced then a path under it", "data.m.t", []write{
			{storage.AddOp, "/", `{"cfg": {"threshold": 1, "l": [1]}}`},
			{storage.ReplaceOp, "/cfg/threshold", "2"},
			{storage.ReplaceOp, "/cfg/threshold", "3"},
		}},
		{"root replaced then a list under it", "data.m.both", []write{
			{storage.AddOp, "/", `{"cfg": {"threshold": 1, "l": [1]}}`},
			{storage.AddOp, "/cfg/l/-", "2"},
			{storage.ReplaceOp, "/cfg/threshold", "5"},
		}},
		{"paths only", "data.m.both", []write{
			{storage.ReplaceOp, "/cfg/threshold", "2"},
			{storage.AddOp, "/cfg/l/-", "3"},
		}},
	}
	in := ast.MustParseTerm(`{"k": 1}`).Value
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			store := inmem.NewFromObjectWithOpts(map[string]any{"cfg": map[string]any{"threshold": 7, "l": []any{1, 2}}},
				inmem.OptRoundTripOnWrite(false), inmem.OptReturnASTValuesOnRead(true))
			q := prepareMemoQueries(t, c, store, []string{tc.query})[0]
			if names, armed := vm.SharedFuncs(q.q); len(names) == 0 || !armed {
				t.Fatalf("shared %v, armed %v: the memo is not exercised", names, armed)
			}
			txn := storage.NewTransactionOrDie(ctx, store, storage.WriteParams)
			defer store.Abort(ctx, txn)
			ev := func(pq rego.PreparedEvalQuery) string {
				rs, err := pq.Eval(ctx, rego.EvalTransaction(txn), rego.EvalParsedInput(in))
				switch {
				case err != nil:
					return "error: " + err.Error()
				case len(rs) == 0:
					return "undefined"
				}
				s, err := jsonText(rs[0].Expressions[0].Value)
				if err != nil {
					return "unencodable: " + err.Error()
				}
				return s
			}
			check := func(when string) {
				t.Helper()
				// twice: the second evaluation is the one a shared value serves
				for range 2 {
					if want, got := ev(q.td), ev(q.vm); got != want {
						t.Fatalf("%s: vm %s, topdown %s", when, got, want)
					}
				}
			}
			check("before the writes")
			for _, w := range tc.writes {
				if err := store.Write(ctx, txn, w.op, storage.MustParsePath(w.path), ast.MustParseTerm(w.val).Value); err != nil {
					t.Fatal(err)
				}
				check(fmt.Sprintf("after %v %s", w.op, w.path))
			}
		})
	}
}

// TestMemoConstitutionShares: the constitution's decision shares its
// data-only rules (the analysis that refuses in-place changes of values a
// function did not make must not refuse the planner's plans).
func TestMemoConstitutionShares(t *testing.T) {
	f := loadConstitution(t)
	q, err := vm.PrepareQuery(context.Background(), f.compiler, f.store, ast.MustParseRef("data.acgs.main.decision"))
	if err != nil {
		t.Fatal(err)
	}
	names, armed := vm.SharedFuncs(q)
	if len(names) == 0 || !armed {
		t.Fatalf("shared %v, armed %v", names, armed)
	}
	t.Logf("%d shared functions: %v", len(names), names)
	// The data-only configuration problems of the packages whose
	// configuration_problems every decision reads are split out to be
	// shared: a rule among them that reads the input, or a built-in that
	// is not pure, would silently make every decision compute them again.
	for _, want := range []string{
		"g0.data.acgs.evolution.data_configuration_problems",
		"g0.data.acgs.data.data_configuration_problems",
		"g0.data.acgs.tool_call.data_configuration_problems",
		"g0.data.acgs.tool_call.data_upstream_configuration_problems",
	} {
		if !slices.Contains(names, want) {
			t.Errorf("%s is not shared", want)
		}
	}
}
