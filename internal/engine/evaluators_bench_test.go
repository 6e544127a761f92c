package engine_test

import (
	"context"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	_ "github.com/open-policy-agent/opa/v1/features/wasm" // OPA's wasm target, in process
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/topdown/builtins"

	"github.com/acgs-lite/acgs/internal/cache"
	"github.com/acgs-lite/acgs/internal/engine"
	"github.com/acgs-lite/acgs/internal/inputgen"
	"github.com/acgs-lite/acgs/internal/jsoneq"
	"github.com/acgs-lite/acgs/policies"
)

// evaluatorRequests are the constitution's decision types, each one of the
// repository's example requests.
var evaluatorRequests = []struct{ name, file string }{
	{"safe", "safe"},
	{"evolution", "complex"},
	{"data_access", "data_access"},
	{"prohibited", "dangerous"},
}

// BenchmarkEvaluators measures one cold decision (no decision cache) of
// acgs/main/decision per decision type on every evaluator the engine could
// adopt, in one run so that the ratios share the machine's load:
//
//   - topdown: engine.Decide with full topdown evaluation;
//   - vm: engine.Decide on the compiled evaluator (internal/vm);
//   - adopted: what the service runs by default, the VM behind constant
//     plans (internal/plan), so a prohibited action is a constant;
//   - wasm: OPA's wasm target in process (rego.Target("wasm")).
//
// Until 2026-12-05 there was a fifth, topdown running partial-evaluation
// residuals; this benchmark showed the VM 2.6-8x faster than it for every
// decision type (docs/performance.md), and the residual machinery was
// deleted. Every variant must give topdown's decision, checked first.
func BenchmarkEvaluators(b *testing.B) {
	ctx := context.Background()
	open := func(o engine.Options) *engine.Engine {
		o.ConstitutionalHash, o.EvalTimeout, o.Logger = hash, 10*time.Second, quiet
		e, err := engine.New(ctx, engine.FSSource{FS: policies.FS, Name: "embedded"}, o)
		if err != nil {
			b.Fatal(err)
		}
		return e
	}
	topdown := open(engine.Options{})
	vm := open(engine.Options{Compiled: true})
	adopted := open(engine.Options{Compiled: true, PartialEval: true, PlanCacheSize: 1024})

	bnd, err := engine.FSSource{FS: policies.FS, Name: "embedded"}.Load(ctx)
	if err != nil {
		b.Fatal(err)
	}
	opts := []func(*rego.Rego){rego.Query("data.acgs.main.decision"), rego.Target("wasm"), rego.Store(inmemStore(bnd.Data))}
	for _, m := range bnd.Modules {
		opts = append(opts, rego.ParsedModule(m.Parsed))
	}
	wasm, werr := rego.New(opts...).PrepareForEval(ctx)
	if werr != nil {
		b.Logf("wasm target unavailable: %v", werr)
	}

	for _, r := range evaluatorRequests {
		in := loadRequest(b, r.file)
		want, err := topdown.EvaluateFull(ctx, "acgs/main/decision", in)
		if err != nil {
			b.Fatal(err)
		}
		kind := waitPlan(b, adopted, in)
		decide := map[string]*engine.Engine{"topdown": topdown, "vm": vm, "adopted": adopted}
		for _, name := range []string{"topdown", "vm", "adopted"} {
			e := decide[name]
			d, err := e.Decide(ctx, "acgs/main/decision", in)
			if err != nil || !jsoneq.SameText(d.Result, want.Result) {
				b.Fatalf("%s %s: %v (%v), topdown %v", r.name, name, d.Result, err, want.Result)
			}
			label := name
			if name == "adopted" {
				label = "adopted_plan_" + kind
			}
			b.Run(r.name+"/"+label, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if _, err := e.Decide(ctx, "acgs/main/decision", in); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
		if werr != nil {
			continue
		}
		v, err := ast.InterfaceToValue(in)
		if err != nil {
			b.Fatal(err)
		}
		rs, err := wasm.Eval(ctx, rego.EvalParsedInput(v))
		if err != nil || len(rs) != 1 || !jsoneq.Equal(rs[0].Expressions[0].Value, want.Result) {
			b.Fatalf("%s wasm: %v (%v), topdown %v", r.name, rs, err, want.Result)
		}
		b.Run(r.name+"/wasm", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := wasm.Eval(ctx, rego.EvalParsedInput(v), rego.EvalNDBuiltinCache(builtins.NDBCache{})); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// missCache is the service's decision cache (L1 only) except that lookups
// never answer: every Decide takes the miss path (key, single flight,
// evaluation, JSON encoding of the result, Set into L1), as a request whose
// decision-relevant fields are all new does in the service.
type missCache struct{ *cache.Tiered }

func (missCache) Lookup(context.Context, cache.Key) (cache.Value, cache.Tier, bool) {
	return cache.Value{}, 0, false
}

func (missCache) LookupMany(_ context.Context, _ []cache.Key, _ []cache.Value, tiers []cache.Tier, found []bool) {
	clear(tiers)
	clear(found)
}

// Peek and PeekValue miss too: the look a miss takes again before it
// evaluates would otherwise answer an input seen before from L1.
func (missCache) Peek(cache.Key) (cache.Value, bool)      { return cache.Value{}, false }
func (missCache) PeekValue(cache.Key) (cache.Value, bool) { return cache.Value{}, false }

// missEngine is the service's evaluator (the VM behind constant plans) over
// missCache, with the varied inputs of internal/inputgen it is to decide.
// Plans are built in the background on first sight: it waits until no more
// appear (some inputs have none), as in a service after its warm-up.
func missEngine(b *testing.B) (*engine.Engine, []map[string]any) {
	b.Helper()
	ctx := context.Background()
	l1, err := cache.New(ctx, cache.Config{Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l1.Close() })
	e, err := engine.New(ctx, engine.FSSource{FS: policies.FS, Name: "embedded"}, engine.Options{
		ConstitutionalHash: hash, EvalTimeout: 10 * time.Second, Logger: quiet,
		Compiled: true, PartialEval: true, PlanCacheSize: 1024, Cache: missCache{l1},
	})
	if err != nil {
		b.Fatal(err)
	}
	ins := inputgen.New(17).Inputs(4096)
	for last, stable := -1, 0; stable < 3; {
		n := 0
		for _, in := range ins {
			if e.PlanKind("acgs/main/decision", in) != "" {
				n++
			}
		}
		if n == last {
			stable++
		} else {
			last, stable = n, 0
		}
		time.Sleep(50 * time.Millisecond)
	}
	return e, ins
}

// BenchmarkDecideMiss measures engine.Decide on the service's evaluator
// (the VM behind constant plans) when no cache can answer: the varied
// inputs of internal/inputgen, each decided as a cache miss (missEngine).
//
//	go test ./internal/engine -run '^$' -bench DecideMiss -benchmem -count 5
func BenchmarkDecideMiss(b *testing.B) {
	ctx := context.Background()
	e, ins := missEngine(b)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := e.Decide(ctx, "acgs/main/decision", ins[i%len(ins)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkDecideBatchMiss is BenchmarkDecideMiss for DecideBatch: batches
// of 64 of the same varied inputs, every item a miss (missCache), which a
// constant plan settles or a worker decides through its own flight.
//
//	go test ./internal/engine -run '^$' -bench DecideBatchMiss -benchmem -count 5
func BenchmarkDecideBatchMiss(b *testing.B) {
	ctx := context.Background()
	e, ins := missEngine(b)
	const size = 64
	batches := make([][]any, len(ins)/size)
	for j := range batches {
		for _, in := range ins[j*size:][:size] {
			batches[j] = append(batches[j], in)
		}
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		_, errs := e.DecideBatch(ctx, "acgs/main/decision", batches[i%len(batches)])
		for _, err := range errs {
			if err != nil {
				b.Fatal(err)
			}
		}
		i++
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*size), "ns/item")
}
