package engine_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/topdown"

	"github.com/acgs-lite/acgs/internal/admission"
	"github.com/acgs-lite/acgs/internal/apierror"
	"github.com/acgs-lite/acgs/internal/cache"
	"github.com/acgs-lite/acgs/internal/engine"
	"github.com/acgs-lite/acgs/internal/jsoneq"
)

// inspectRego has built-in errors where they decide (n, j), where they
// do not (num's else, c's first rule), before a conflict (c) and a note.
const inspectRego = `package t

n := to_number(input.s)

j := json.unmarshal(input.s)

num := x if {
	x := to_number(input.s)
} else := "not a number"

both := [j, n]

c := 1 if to_number(input.s) > 0

c := 2 if input.a

c := 3 if input.b

noted if {
	trace(sprintf("checking %v", [input.s]))
	input.s == "x"
}

f(x) := x + 1
`

func inspectBundle(rev, src string) fstest.MapFS {
	return fstest.MapFS{
		".manifest": {Data: []byte(`{"revision":"` + rev + `","roots":["t"],"metadata":{"constitutional_hash":"` + hash + `"}}`)},
		"t/t.rego":  {Data: []byte(src)},
	}
}

// openInspect is an engine on inspectRego with every fast path on: the
// decision cache, constant plans keyed on input.s and the compiled
// evaluator.
func openInspect(t *testing.T) *engine.Engine {
	t.Helper()
	c, err := cache.New(context.Background(), cache.Config{L1Size: 1000, TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	e, err := engine.New(context.Background(), engine.FSSource{FS: inspectBundle("inspect-1", inspectRego), Name: "inspect"}, engine.Options{
		ConstitutionalHash: hash, EvalTimeout: 10 * time.Second, Logger: quiet, Cache: c,
		Compiled: true, PartialEval: true, PartialEvalKeys: []string{"input.s"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// strictReference evaluates path as OPA's server does with
// ?strict-builtin-errors (or without): a query parsed from the path,
// prepared with rego.StrictBuiltinErrors.
func strictReference(t *testing.T, path string, input map[string]any, strict bool) (any, bool, error) {
	t.Helper()
	c := ast.MustCompileModules(map[string]string{"/t/t.rego": inspectRego}) // the bundle's file name

	pq, err := rego.New(rego.Query("data."+strings.ReplaceAll(path, "/", ".")), rego.Compiler(c),
		rego.Store(inmemStore(nil)), rego.StrictBuiltinErrors(strict)).PrepareForEval(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	rs, err := pq.Eval(context.Background(), rego.EvalInput(input))
	if err != nil || len(rs) == 0 {
		return nil, false, err
	}
	return rs[0].Expressions[0].Value, true, nil
}

// TestInspectStrictBuiltinErrors: Inspect answers as OPA's rego does with
// and without strict built-in errors (the first built-in error, even where
// a conflict follows it), and a strict inspection is answered neither by
// the decision cache, a constant plan or the VM that answer the same
// decision without it, nor stored where they would answer it.
func TestInspectStrictBuiltinErrors(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name, path string
		input      map[string]any
		strictErr  string // the code of the strict evaluation's error; "" none
	}{
		{"to_number decides", "t/n", map[string]any{"s": "x"}, topdown.BuiltinErr},
		{"json.unmarshal decides", "t/j", map[string]any{"s": "{bad"}, topdown.BuiltinErr},
		{"no error", "t/n", map[string]any{"s": "12"}, ""},
		{"an else answers without strict", "t/num", map[string]any{"s": "x"}, topdown.BuiltinErr},
		{"the first of two errors", "t/both", map[string]any{"s": "x"}, topdown.BuiltinErr},
		{"an error before a conflict", "t/c", map[string]any{"s": "x", "a": true, "b": true}, topdown.BuiltinErr},
		{"a conflict without built-in error", "t/c", map[string]any{"s": "2", "b": true}, topdown.ConflictErr},
		{"an operand of the wrong type", "t/n", map[string]any{"s": []any{}}, topdown.TypeErr},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := openInspect(t)
			plain, plainErr := e.Decide(ctx, tc.path, tc.input)
			// Constant plans are built in the background, for inputs whose
			// plan key (input.s) is a scalar.
			kind := ""
			for wait := time.Now().Add(5 * time.Second); kind == "" && time.Now().Before(wait); time.Sleep(time.Millisecond) {
				if kind = e.PlanKind(tc.path, tc.input); !isString(tc.input["s"]) {
					break
				}
			}
			t.Logf("plan %q, decided without inspection from %v: %v %v", kind, plain.Source, plain.Result, plainErr)
			for _, strict := range []bool{true, false, true} {
				want, wantDefined, wantErr := strictReference(t, tc.path, tc.input, strict)
				got, err := e.Inspect(ctx, tc.path, tc.input, engine.Inspection{StrictBuiltinErrors: strict})
				if (err != nil) != (wantErr != nil) {
					t.Fatalf("strict %v: error %v, OPA's %v", strict, err, wantErr)
				}
				if err != nil {
					var te *topdown.Error
					if !errors.As(wantErr, &te) {
						t.Fatalf("OPA's error is no topdown error: %v", wantErr)
					}
					d := apierror.As(err)
					if d.Code != apierror.EvaluationError || len(d.Errors) != 1 || d.Errors[0].Code != te.Code || d.Errors[0].Message != te.Message ||
						d.Errors[0].Location == nil || d.Errors[0].Location.Row != te.Location.Row || d.Errors[0].Location.Col != te.Location.Col {
						t.Fatalf("strict %v: error %+v, OPA's %v", strict, d, te)
					}
					if strict && te.Code != tc.strictErr {
						t.Fatalf("OPA's strict error is %s, the case expects %s", te.Code, tc.strictErr)
					}
					continue
				}
				if strict && tc.strictErr != "" {
					t.Fatalf("OPA's strict evaluation does not fail, the case expects %s", tc.strictErr)
				}
				if got.Defined != wantDefined || !jsoneq.Equal(got.Result, want) || got.Source != engine.SourceFull {
					t.Fatalf("strict %v: %v (defined %v, source %v), OPA's %v (defined %v)", strict, got.Result, got.Defined, got.Source, want, wantDefined)
				}
			}
			// Decide still answers as before, from the cache it filled.
			again, err := e.Decide(ctx, tc.path, tc.input)
			if (err != nil) != (plainErr != nil) || again.Defined != plain.Defined || !jsoneq.Equal(again.Result, plain.Result) {
				t.Fatalf("after the inspections: %v %v, before %v %v", again.Result, err, plain.Result, plainErr)
			}
			if err == nil && again.Source != engine.SourceL1 {
				t.Fatalf("after the inspections the decision came from %v, not the cache", again.Source)
			}
		})
	}
}

// TestInspectionsAreNotCached: inspections on a cold engine leave nothing
// in the decision cache: the first Decide after them is not an L1 hit.
func TestInspectionsAreNotCached(t *testing.T) {
	ctx := context.Background()
	input := map[string]any{"s": "12"}
	for _, in := range []engine.Inspection{{StrictBuiltinErrors: true}, {}, {Instrument: true, Metrics: metrics.New()}, {Tracer: topdown.NewBufferTracer()}} {
		e := openInspect(t)
		for range 2 {
			if _, err := e.Inspect(ctx, "t/n", input, in); err != nil {
				t.Fatal(err)
			}
		}
		d, err := e.Decide(ctx, "t/n", input)
		if err != nil {
			t.Fatal(err)
		}
		if d.Source == engine.SourceL1 || d.Source == engine.SourceL2 {
			t.Fatalf("%+v: the decision after two inspections came from %v", in, d.Source)
		}
	}
}

// TestInspectTraceAndMetrics: a tracer gets topdown's events (the note of
// trace()), Metrics gets OPA's evaluation timer, topdown's instrumentation
// with Instrument, and counter_server_query_cache_hit 0 when the query was
// prepared for this inspection, 1 after, 0 again under a new bundle.
func TestInspectTraceAndMetrics(t *testing.T) {
	ctx := context.Background()
	e := openInspect(t)
	in := map[string]any{"s": "x"}
	for i, wantHit := range []uint64{0, 1, 1} {
		buf := topdown.NewBufferTracer()
		m := metrics.New()
		d, err := e.Inspect(ctx, "t/noted", in, engine.Inspection{Tracer: buf, Metrics: m, Instrument: i > 0})
		if err != nil || d.Result != true {
			t.Fatalf("%v %v", d.Result, err)
		}
		notes := 0
		for _, ev := range *buf {
			if ev.Op == topdown.NoteOp && ev.Message == "checking x" {
				notes++
			}
		}
		if notes != 1 {
			t.Fatalf("%d notes in %d events", notes, len(*buf))
		}
		all := m.All()
		if all["counter_server_query_cache_hit"] != wantHit {
			t.Fatalf("inspection %d: counter_server_query_cache_hit %v (%T), want %d", i, all["counter_server_query_cache_hit"], all["counter_server_query_cache_hit"], wantHit)
		}
		if _, ok := all["timer_rego_query_eval_ns"]; !ok {
			t.Fatalf("no timer_rego_query_eval_ns in %v", all)
		}
		_, instrumented := all["timer_eval_op_plug_ns"]
		if instrumented != (i > 0) {
			t.Fatalf("inspection %d: instrumented %v: %v", i, instrumented, all)
		}
	}
	// A new bundle prepares its own queries, and answers with its policy.
	b, err := engine.FSSource{FS: inspectBundle("inspect-2", strings.Replace(inspectRego, `input.s == "x"`, `input.s == "y"`, 1)), Name: "inspect-2"}.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Activate(ctx, b, "inspect-2"); err != nil {
		t.Fatal(err)
	}
	m := metrics.New()
	d, err := e.Inspect(ctx, "t/noted", in, engine.Inspection{Metrics: m})
	if err != nil || d.Defined || d.Revision != "inspect-2" {
		t.Fatalf("under the new bundle: %v %v %v", d.Result, d.Revision, err)
	}
	if v := m.All()["counter_server_query_cache_hit"]; v != uint64(0) {
		t.Fatalf("under the new bundle counter_server_query_cache_hit %v", v)
	}
}

// TestInspectRefusals: a path naming a function is refused as Decide
// refuses it, and without an active bundle Inspect is unavailable.
func TestInspectRefusals(t *testing.T) {
	ctx := context.Background()
	e := openInspect(t)
	_, want := e.Decide(ctx, "t/f", nil)
	for _, late := range []bool{false, true} {
		_, err := e.Inspect(ctx, "t/f", nil, engine.Inspection{StrictBuiltinErrors: true, TooLate: late})
		if !errors.Is(err, engine.ErrPathNotQueryable) || apierror.CodeOf(err) != apierror.CodeOf(want) {
			t.Fatalf("inspecting a function (too late: %v): %v; Decide: %v", late, err, want)
		}
	}
	empty, err := engine.New(ctx, nil, engine.Options{ConstitutionalHash: hash, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	// Too late or not: a request whose body came too late is told that no
	// policy is active, as DecideCached tells it, not to send sooner.
	for _, late := range []bool{false, true} {
		if _, err := empty.Inspect(ctx, "t/n", nil, engine.Inspection{TooLate: late}); apierror.CodeOf(err) != apierror.Unavailable {
			t.Fatalf("without a bundle (too late: %v): %v", late, err)
		}
	}
	if _, err := e.Inspect(ctx, "t/n", nil, engine.Inspection{TooLate: true}); !errors.Is(err, admission.ErrLate) || apierror.CodeOf(err) != apierror.Overloaded {
		t.Fatalf("too late, with a bundle: %v; want refused as late", err)
	}
}

func isString(v any) bool {
	_, ok := v.(string)
	return ok
}
