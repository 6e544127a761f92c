package cache

import (
	"context"
	"encoding/json"
	"runtime"
	"runtime/metrics"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/rego"

	"github.com/acgs-lite/acgs/internal/inputgen"
	"github.com/acgs-lite/acgs/policies"
)

// l1MemoryEntries is the L1 size of the memory target (performance.md:
// resident memory with 10,000 distinct decisions in L1).
const l1MemoryEntries = 10000

// constitutionQuery is the embedded constitution's decision, prepared for
// OPA's topdown. The engine's evaluators (the VM and topdown) both hand over
// their result through rego's conversion to Go values, as this one does.
func constitutionQuery(tb testing.TB) rego.PreparedEvalQuery {
	tb.Helper()
	loader, err := bundle.NewFSLoader(policies.FS)
	if err != nil {
		tb.Fatal(err)
	}
	b, err := bundle.NewCustomReader(loader).Read()
	if err != nil {
		tb.Fatal(err)
	}
	pq, err := rego.New(rego.ParsedBundle("embedded", &b), rego.Query("data.acgs.main.decision")).PrepareForEval(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	return pq
}

// decide evaluates one input and returns the Value the engine stores for
// it: the result as rego hands it over and its JSON (json.Marshal of the
// result, as the engine encodes it once per miss).
func decide(tb testing.TB, pq rego.PreparedEvalQuery, in map[string]any) Value {
	rs, err := pq.Eval(context.Background(), rego.EvalInput(in))
	if err != nil {
		tb.Fatal(err)
	}
	if len(rs) != 1 || len(rs[0].Expressions) != 1 {
		return Value{}
	}
	r := rs[0].Expressions[0].Value
	j, err := json.Marshal(r)
	if err != nil {
		tb.Fatal(err)
	}
	return Value{Result: r, Defined: true, JSON: j}
}

// memInUse is the memory in use after a full collection: live heap objects
// plus the runtime's other metadata (where, for example, the records of weak
// pointers live).
func memInUse() int64 {
	runtime.GC()
	runtime.GC() // the second pass also frees what the first one's cleanups released
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/metadata/other:bytes"}}
	metrics.Read(s)
	return int64(s[0].Value.Uint64() + s[1].Value.Uint64())
}

// BenchmarkL1BytesPerEntry reports the memory an L1 full of the
// constitution's real decisions takes per entry (B/entry; target ≤ 1.5 KB,
// issue 18): the decisions of 10,000 generated inputs of every request type
// (inputgen seed 2026, as the engine's golden decisions; a repeated input is
// skipped), each evaluated and stored as on a cache miss, so every value is
// in its own memory as the engine's are. It counts the whole cache (otter's
// nodes, sketch and tables, the shared values) after a full collection;
// ns/op is the time to evaluate and store them all.
func BenchmarkL1BytesPerEntry(b *testing.B) {
	pq := constitutionQuery(b)
	inputs := inputgen.New(2026).Inputs(l1MemoryEntries)
	var keys []Key
	var distinct []map[string]any
	seen := map[Key]bool{}
	for _, in := range inputs {
		k, err := NewKey("rev", benchPath, in)
		if err != nil {
			b.Fatal(err)
		}
		if !seen[k] {
			seen[k] = true
			keys, distinct = append(keys, k), append(distinct, in)
		}
	}
	var perEntry, jsonBytes float64
	var results int
	b.ReportAllocs()
	for b.Loop() {
		before := memInUse()
		c, err := New(context.Background(), Config{L1Size: l1MemoryEntries, TTL: time.Hour, Logger: testLogger()})
		if err != nil {
			b.Fatal(err)
		}
		jsonBytes = 0
		for i, in := range distinct {
			v := decide(b, pq, in)
			jsonBytes += float64(len(v.JSON))
			c.Set(keys[i], v)
		}
		after := memInUse()
		if n := c.Stats().L1Entries; n != len(keys) {
			b.Fatalf("L1 holds %d entries, want %d", n, len(keys))
		}
		perEntry = float64(after-before) / float64(len(keys))
		results = c.values.size()
		c.Close()
	}
	b.ReportMetric(perEntry, "B/entry")
	b.ReportMetric(float64(len(keys)), "entries")
	b.ReportMetric(float64(results), "stored-values")
	b.ReportMetric(jsonBytes/float64(len(keys)), "json-B/entry")
}
