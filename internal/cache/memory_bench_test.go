package cache

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
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

// trustDecision is the constitution's decision for the safe request with
// agent trust level tl, which it echoes: every trust level is its own
// decision, as in scripts/memcheck.py --vary trust (the worst case for L1).
func trustDecision(tb testing.TB, tl string) Value {
	tb.Helper()
	doc := `{"allow":true,"compliance_score":0.96,"constitutional_hash":"cdd01ef066bc6cf2","evaluation_details":{"accountability":1,"action_category":"data","autonomy":1.0,"beneficence":0.5,"constitutional":0.9,"fairness":1.0,"non_maleficence":1,"resources":1,"safety":1,"transparency":1,"trust_level":` + tl + `},"policy":"constitutional","reasons":[]}`
	return Value{Result: decodeJSON(tb, doc), Defined: true, JSON: []byte(doc)}
}

// BenchmarkL1BytesPerEntryAllDifferent is BenchmarkL1BytesPerEntry for
// 10,000 decisions that all differ (in the trust level they echo), each
// stored once and never read: what memcheck.py --vary trust puts in L1.
func BenchmarkL1BytesPerEntryAllDifferent(b *testing.B) {
	vals := make([]Value, l1MemoryEntries)
	for i := range vals {
		vals[i] = trustDecision(b, fmt.Sprintf("%.7f", 0.9+float64(i)*1e-7))
	}
	var perEntry float64
	for b.Loop() {
		before := memInUse()
		c, err := New(context.Background(), Config{L1Size: l1MemoryEntries, TTL: time.Hour, Logger: testLogger()})
		if err != nil {
			b.Fatal(err)
		}
		for i, v := range vals {
			c.Set(key(b, i), v)
		}
		after := memInUse()
		if n := c.Stats().L1Entries; n != len(vals) {
			b.Fatalf("L1 holds %d entries, want %d", n, len(vals))
		}
		perEntry = float64(after-before) / float64(len(vals))
		c.Close()
	}
	b.ReportMetric(perEntry, "B/entry")
}

// BenchmarkL1HitCold is an L1 hit on a decision that is not in the set of
// decoded values: its JSON is put together again and decoded (then kept
// decoded until the CLOCK drops it). Reads go round 4 × hotMax different
// decisions, so that every one is cold.
func BenchmarkL1HitCold(b *testing.B) {
	ctx := context.Background()
	c := newCache(b, "", func(cfg *Config) { cfg.L1Size = 4 * hotMax })
	keys := make([]Key, 4*hotMax)
	for i := range keys {
		keys[i] = key(b, i)
		c.Set(keys[i], trustDecision(b, fmt.Sprintf("%.7f", 0.9+float64(i)*1e-7)))
	}
	b.ReportAllocs()
	cpu, ok := processCPU()
	i := 0
	for b.Loop() {
		if _, _, ok := c.Lookup(ctx, keys[i]); !ok {
			b.Fatal("miss")
		}
		i = (i + 1) % len(keys)
	}
	reportCPU(b, cpu, ok)
}

// BenchmarkIntern is the interner's part of storing a decision in L1: one
// alike to a decision already stored (the common case), and one never seen.
func BenchmarkIntern(b *testing.B) {
	const doc = `{"allow":true,"compliance_score":0.96,"constitutional_hash":"cdd01ef066bc6cf2","evaluation_details":{"trust_level":0.9,"checks":["hash","trust","sandbox"]},"reasons":[]}`
	for _, tc := range []struct {
		name string
		next func(i int) []byte
	}{
		{"stored", func(int) []byte { return []byte(doc) }},
		{"new", func(i int) []byte {
			return []byte(strings.Replace(doc, "0.96", strconv.Itoa(i), 1))
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			in := newInterner()
			keep := in.intern(Value{Defined: true, JSON: []byte(doc)})
			docs := make([][]byte, b.N)
			for i := range docs {
				docs[i] = tc.next(i)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				_ = in.intern(Value{Defined: true, JSON: docs[i]})
			}
			b.StopTimer()
			runtime.KeepAlive(keep)
		})
	}
}
