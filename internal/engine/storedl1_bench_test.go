package engine

import (
	"context"
	"log/slog"
	"testing"

	"github.com/acgs-lite/acgs/internal/cache"
)

// BenchmarkStoredL1Cold is storedL1 finding a cold entry (stored, never
// read: held as JSON alone), which PeekValue decodes: what a miss pays when
// a flight of its key stored the decision between its lookup and its own
// flight.
func BenchmarkStoredL1Cold(b *testing.B) {
	tc, err := cache.New(context.Background(), cache.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = tc.Close() })
	doc := []byte(`{"allow":true,"compliance_score":0.96,"constitutional_hash":"cdd01ef066bc6cf2","evaluation_details":{"accountability":1,"action_category":"data","autonomy":1.0,"beneficence":0.5,"constitutional":0.9,"fairness":1.0,"non_maleficence":1,"resources":1,"safety":1,"transparency":1,"trust_level":0.9},"policy":"constitutional","reasons":[]}`)
	k := cache.Key{Hi: 1, Lo: 2}
	tc.Set(k, cache.Value{Defined: true, JSON: doc})
	e := &Engine{opts: Options{Cache: tc}}
	s := &snapshot{revision: "r"}
	if d, ok := e.storedL1(s, k); !ok || d.Result == nil {
		b.Fatalf("storedL1 = %+v, %v; want the stored decision decoded", d, ok)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := e.storedL1(s, k); !ok {
			b.Fatal("not found")
		}
	}
}
