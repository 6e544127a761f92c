package vm_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	_ "github.com/open-policy-agent/opa/v1/features/wasm" // OPA's wasm target, in process
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/topdown/builtins"

	"github.com/acgs-lite/acgs/internal/vm"
)

// benchRequests are the decision types of the constitution, each one of the
// repository's example requests.
var benchRequests = []struct{ name, file string }{
	{"safe", "safe.json"},
	{"evolution", "complex.json"},
	{"data_access", "data_access.json"},
	{"prohibited", "dangerous.json"},
	{"low_trust", "low_trust.json"},
}

// BenchmarkDecision measures one cold decision (no cache in front) of the
// constitution's data.acgs.main.decision per decision type: topdown (rego's
// PreparedEvalQuery, as the engine evaluates today), the VM, and OPA's wasm
// target in process. Every evaluation gets a fresh NDBCache, as the
// engine's. Compare with benchstat, grouping by the last name element.
func BenchmarkDecision(b *testing.B) {
	f := loadConstitution(b)
	const path = "data.acgs.main.decision"
	body := ast.MustParseBody(path)
	ctx := context.Background()
	vmq, tdq := f.prepare(b, path)
	variants := []struct {
		name string
		pq   rego.PreparedEvalQuery
	}{{"topdown", tdq}, {"vm", vmq}}
	// The VM through rego with no shared data-only values (vm.Disarm): what
	// an evaluation without a memo pays for the sharing machinery.
	uq, err := vm.PrepareQuery(ctx, f.compiler, f.store, ast.MustParseRef(path))
	if err != nil {
		b.Fatal(err)
	}
	vm.Disarm(uq)
	variants = append(variants, struct {
		name string
		pq   rego.PreparedEvalQuery
	}{"vm-unshared", uq.PreparedEvalQuery})
	// The wasm target reads the data as JSON when it is prepared.
	wq, err := rego.New(rego.ParsedQuery(body), rego.Compiler(f.compiler), rego.Target("wasm"),
		rego.Store(inmem.NewFromObject(f.data))).PrepareForEval(ctx)
	if err != nil {
		b.Logf("wasm target unavailable: %v", err)
	} else {
		variants = append(variants, struct {
			name string
			pq   rego.PreparedEvalQuery
		}{"wasm", wq})
	}
	for _, r := range benchRequests {
		raw, err := os.ReadFile(filepath.Join("..", "..", "testdata", "requests", r.file))
		if err != nil {
			b.Fatal(err)
		}
		var in any
		if err := json.Unmarshal(raw, &in); err != nil {
			b.Fatal(err)
		}
		input, err := ast.InterfaceToValue(in)
		if err != nil {
			b.Fatal(err)
		}
		want, _ := evalText(context.Background(), tdq, input)
		for _, v := range variants {
			if got, _ := evalText(context.Background(), v.pq, input); got != want {
				b.Fatalf("%s %s: %s, topdown %s", r.name, v.name, got, want)
			}
			b.Run(r.name+"/"+v.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					rs, err := v.pq.Eval(ctx, rego.EvalParsedInput(input), rego.EvalNDBuiltinCache(builtins.NDBCache{}))
					if err != nil || len(rs) != 1 {
						b.Fatal(rs, err)
					}
				}
			})
		}
	}
}

// BenchmarkDecisionPaired alternates topdown and the VM on the same input
// within every iteration and reports each one's mean time and the ratio:
// on a shared, noisy machine the two see the same load, which separate
// benchmarks run one after the other do not.
func BenchmarkDecisionPaired(b *testing.B) {
	f := loadConstitution(b)
	vmq, tdq := f.prepare(b, "data.acgs.main.decision")
	ctx := context.Background()
	for _, r := range benchRequests {
		raw, err := os.ReadFile(filepath.Join("..", "..", "testdata", "requests", r.file))
		if err != nil {
			b.Fatal(err)
		}
		var in any
		if err := json.Unmarshal(raw, &in); err != nil {
			b.Fatal(err)
		}
		input, err := ast.InterfaceToValue(in)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(r.name, func(b *testing.B) {
			var td, v time.Duration
			eval := func(pq rego.PreparedEvalQuery) time.Duration {
				start := time.Now()
				rs, err := pq.Eval(ctx, rego.EvalParsedInput(input), rego.EvalNDBuiltinCache(builtins.NDBCache{}))
				d := time.Since(start)
				if err != nil || len(rs) != 1 {
					b.Fatal(rs, err)
				}
				return d
			}
			n := 0
			for b.Loop() {
				if n%2 == 0 {
					td += eval(tdq)
					v += eval(vmq)
				} else {
					v += eval(vmq)
					td += eval(tdq)
				}
				n++
			}
			b.ReportMetric(float64(td.Nanoseconds())/float64(n), "topdown-ns/op")
			b.ReportMetric(float64(v.Nanoseconds())/float64(n), "vm-ns/op")
			b.ReportMetric(float64(td)/float64(v), "speedup")
		})
	}
}
