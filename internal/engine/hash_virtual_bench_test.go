package engine

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/acgs-lite/acgs/internal/readset"
	"github.com/acgs-lite/acgs/policies"
)

// BenchmarkHashCheckEmbedded measures what virtualHashes adds to the
// activation of the built-in constitution (BenchmarkActivateEmbedded is
// the whole activation, the check included).
func BenchmarkHashCheckEmbedded(b *testing.B) {
	bu, err := FSSource{FS: policies.Served, Name: "embedded"}.Load(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	s, err := activate(context.Background(), bu, fuzzHash, "embedded", "")
	if err != nil {
		b.Fatal(err)
	}
	an := readset.New(s.compiler)
	b.ResetTimer()
	for b.Loop() {
		if err := virtualHashes(context.Background(), s.compiler, s.store, an, fuzzHash); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkActivateEmbedded(b *testing.B) {
	bu, err := FSSource{FS: policies.Served, Name: "embedded"}.Load(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := activate(context.Background(), bu, fuzzHash, "embedded", ""); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEngineActivateEmbedded is Engine.Activate of the constitution
// as a service configured with the VM and plans activates it.
func BenchmarkEngineActivateEmbedded(b *testing.B) {
	bu, err := FSSource{FS: policies.Served, Name: "embedded"}.Load(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		e, err := New(context.Background(), nil, Options{ConstitutionalHash: fuzzHash, EvalTimeout: 10 * time.Second, Compiled: true, PartialEval: true, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		if err := e.Activate(context.Background(), bu, "embedded"); err != nil {
			b.Fatal(err)
		}
	}
}
