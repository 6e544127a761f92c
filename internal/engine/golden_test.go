package engine_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/acgs-lite/acgs/internal/engine"
	"github.com/acgs-lite/acgs/internal/inputgen"
	"github.com/acgs-lite/acgs/internal/jsoneq"
	"github.com/acgs-lite/acgs/policies"
)

var update = flag.Bool("update", false, "rewrite the golden decisions from the current policy")

// goldenDecisions is one decision per generated input (inputgen seed 2026,
// in order), as JSON lines, gzipped: 2,000 decisions of every request type.
var goldenDecisions = filepath.Join("testdata", "decisions.golden.jsonl.gz")

// TestDecisionsMatchGolden guards the constitution against unintended
// change: a refactoring of the Rego (for speed, say) must leave every
// decision as it was. Numbers are compared by value (1 and 1.0 are equal;
// OPA itself prints either, depending on which operand a built-in returns).
// When the constitution changes on purpose, rerun with -update and review
// the diff of the decisions.
func TestDecisionsMatchGolden(t *testing.T) {
	ctx := context.Background()
	e, err := engine.New(ctx, engine.FSSource{FS: policies.FS, Name: "embedded"}, engine.Options{
		ConstitutionalHash: hash, EvalTimeout: 10 * time.Second, Logger: quiet,
	})
	if err != nil {
		t.Fatal(err)
	}
	inputs := inputgen.New(2026).Inputs(2000)
	got := make([]any, len(inputs))
	for i, in := range inputs {
		d, err := e.EvaluateFull(ctx, "acgs/main/decision", in)
		if err != nil {
			t.Fatalf("input %d: %v", i, err)
		}
		if !d.Defined {
			t.Fatalf("input %d: no decision\ninput: %v", i, in)
		}
		got[i] = d.Result
	}
	if *update {
		writeGolden(t, got)
		return
	}
	want := readGolden(t)
	if len(want) != len(got) {
		t.Fatalf("%s holds %d decisions, want %d (rerun with -update if inputgen changed)", goldenDecisions, len(want), len(got))
	}
	bad := 0
	for i := range got {
		if diff := jsoneq.Diff(want[i], got[i]); diff != "" {
			if bad++; bad <= 5 {
				t.Errorf("decision %d changed at %s\ninput: %v", i, diff, inputs[i])
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d decisions differ from %s", bad, len(got), goldenDecisions)
	}
}

func writeGolden(t *testing.T, decisions []any) {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	enc := json.NewEncoder(zw)
	for _, d := range decisions {
		if err := enc.Encode(d); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(goldenDecisions, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %d decisions to %s", len(decisions), goldenDecisions)
}

func readGolden(t *testing.T) []any {
	t.Helper()
	f, err := os.Open(goldenDecisions)
	if err != nil {
		t.Fatalf("%v (create it with -update)", err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var out []any
	sc := bufio.NewScanner(zr)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		dec.UseNumber()
		var v any
		if err := dec.Decode(&v); err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
