package workload

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The embedded copy must stay identical to the spec's workload; the spec is
// beside the repository (../shared) on developer machines and in CI.
func TestEmbeddedWorkloadMatchesSpec(t *testing.T) {
	spec := filepath.Join("..", "..", "..", "shared", "spec", "workloads", "acgs-mixed.json")
	want, err := os.ReadFile(spec)
	if err != nil {
		t.Skipf("spec not available: %v", err)
	}
	if !bytes.Equal(DefaultJSON(), want) {
		t.Fatalf("internal/workload/workloads/acgs-mixed.json differs from %s: copy it again", spec)
	}
}

func TestDefaultWorkload(t *testing.T) {
	w, err := Default()
	if err != nil {
		t.Fatal(err)
	}
	if w.Name != "acgs-mixed" || len(w.Scenarios) != 3 || w.Method != "POST" || w.Path != "/v1/data/acgs/main/decision" {
		t.Fatalf("unexpected workload: %+v", w)
	}
	for _, tc := range []struct {
		name     string
		weight   float64
		allow    bool
		keySpace int64
	}{
		{"safe_action", 70, true, 1000},
		{"complex_action", 20, true, 200},
		{"dangerous_action", 10, false, 100},
	} {
		s := w.Scenario(tc.name)
		if s == nil {
			t.Fatalf("no scenario %s", tc.name)
		}
		if s.Weight != tc.weight || *s.Expect.Allow != tc.allow || s.KeySpace() != tc.keySpace {
			t.Errorf("%s: weight %v allow %v keyspace %d", tc.name, s.Weight, *s.Expect.Allow, s.KeySpace())
		}
	}
}

const validWorkload = `{
  "name": "w", "path": "/p",
  "scenarios": [{"name": "s", "weight": 1, "expect": {"allow": true},
    "vary": {"a.id": {"format": "id-%d", "cardinality": 3}},
    "request": {"a": {"id": "x", "n": 12345678901234567890}, "b": [1, 2]}}]
}`

func TestParseWorkloadErrors(t *testing.T) {
	mutate := func(old, new string) string {
		if !strings.Contains(validWorkload, old) {
			t.Fatalf("fixture lacks %q", old)
		}
		return strings.Replace(validWorkload, old, new, 1)
	}
	for _, tc := range []struct {
		name, input, want string
	}{
		{"bad JSON", `{"name": "w",`, "invalid JSON"},
		{"trailing data", validWorkload + `{}`, "trailing data"},
		{"unknown top-level field", mutate(`"path": "/p",`, `"path": "/p", "rate": 5,`), `unknown field "rate"`},
		{"unknown scenario field", mutate(`"weight": 1,`, `"weight": 1, "wieght": 2,`), `unknown field "wieght"`},
		{"unknown vary field", mutate(`"cardinality": 3`, `"cardinality": 3, "kind": "x"`), `unknown field "kind"`},
		{"missing name", mutate(`"name": "w", `, ``), "missing name"},
		{"bad path", mutate(`"path": "/p"`, `"path": "p"`), "must start with /"},
		{"GET method", mutate(`"path": "/p",`, `"path": "/p", "method": "GET",`), "only POST and PUT"},
		{"no scenarios", `{"name": "w", "path": "/p", "scenarios": []}`, "no scenarios"},
		{"zero weight", mutate(`"weight": 1`, `"weight": 0`), "weight must be > 0"},
		{"negative weight", mutate(`"weight": 1`, `"weight": -2`), "weight must be > 0"},
		{"missing scenario name", mutate(`"name": "s", `, ``), "scenario 0: missing name"},
		{"missing request", mutate(`"request": {"a": {"id": "x", "n": 12345678901234567890}, "b": [1, 2]}`, `"request": null`), "missing request"},
		{"request not object", mutate(`"request": {"a": {"id": "x", "n": 12345678901234567890}, "b": [1, 2]}`, `"request": [1]`), "request must be a JSON object"},
		{"vary path not found", mutate(`"a.id"`, `"a.idd"`), `key "a.idd" not found`},
		{"vary path through scalar", mutate(`"a.id"`, `"a.id.x"`), `"a.id" is not an object`},
		{"vary path empty segment", mutate(`"a.id"`, `"a..id"`), "empty segment"},
		{"vary path to array", mutate(`"a.id"`, `"b"`), "not a string or number"},
		{"format without verb", mutate(`"id-%d"`, `"id"`), "exactly one %d verb"},
		{"format with two verbs", mutate(`"id-%d"`, `"id-%d-%d"`), "exactly one %d verb"},
		{"format with other verb", mutate(`"id-%d"`, `"id-%d-%s"`), "only one %d verb"},
		{"zero cardinality", mutate(`"cardinality": 3`, `"cardinality": 0`), "cardinality must be > 0"},
		{"negative cardinality", mutate(`"cardinality": 3`, `"cardinality": -1`), "cardinality must be > 0"},
		{"duplicate scenario", strings.Replace(validWorkload, `"scenarios": [{`, `"scenarios": [{"name": "s", "weight": 1, "request": {}}, {`, 1), "duplicate name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.input))
			if err == nil {
				t.Fatalf("no error, want one containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not contain %q", err, tc.want)
			}
		})
	}
	if _, err := Parse([]byte(validWorkload)); err != nil {
		t.Fatalf("valid workload rejected: %v", err)
	}
}

func TestAppendBody(t *testing.T) {
	w, err := Parse([]byte(validWorkload))
	if err != nil {
		t.Fatal(err)
	}
	s := &w.Scenarios[0]
	for _, tc := range []struct {
		idx    int64
		suffix string
		want   string
	}{
		{0, "", "id-0"},
		{2, "", "id-2"},
		{3, "", "id-0"}, // wraps at the cardinality
		{4, "-cold-n1", "id-1-cold-n1"},
		{1, `-q"\`, `id-1-q"\`}, // escaped, still valid JSON
	} {
		body := s.AppendBody(nil, tc.idx, tc.suffix)
		var got struct {
			A struct {
				ID string      `json:"id"`
				N  json.Number `json:"n"`
			} `json:"a"`
			B []int `json:"b"`
		}
		if err := json.Unmarshal(body, &got); err != nil {
			t.Fatalf("idx %d: invalid JSON %s: %v", tc.idx, body, err)
		}
		if got.A.ID != tc.want {
			t.Errorf("idx %d suffix %q: id %q, want %q", tc.idx, tc.suffix, got.A.ID, tc.want)
		}
		// Large integers survive exactly (no float64 round trip).
		if got.A.N != "12345678901234567890" || len(got.B) != 2 {
			t.Errorf("idx %d: other fields changed: %s", tc.idx, body)
		}
	}
}

func TestPickFollowsWeights(t *testing.T) {
	w, err := Default()
	if err != nil {
		t.Fatal(err)
	}
	assertMix(t, w, 0.70, 0.20, 0.10)
}

// assertMix draws 100,000 scenarios from w with a fixed seed and checks
// each scenario's share is its wanted one within 0.01.
func assertMix(t *testing.T, w *Workload, shares ...float64) {
	t.Helper()
	if len(shares) != len(w.Scenarios) {
		t.Fatalf("%d scenarios, want %d", len(w.Scenarios), len(shares))
	}
	rng := rand.New(rand.NewPCG(42, 7))
	counts := make([]int, len(w.Scenarios))
	const n = 100000
	for range n {
		counts[w.Pick(rng)]++
	}
	for i, want := range shares {
		if got := float64(counts[i]) / n; got < want-0.01 || got > want+0.01 {
			t.Errorf("scenario %s: share %.3f, want %.2f±0.01", w.Scenarios[i].Name, got, want)
		}
	}
}

// Weights are relative (shared/spec/performance.md: the requests "in their
// weights"; the spec's 70/20/10 reads as percentages only because it adds up
// to 100): a mix is the same whatever its weights add up to, and a weight
// that is not > 0, or a sum that overflows, is refused naming the file.
func TestWeightsAreRelative(t *testing.T) {
	doc := func(weights ...string) string {
		var sc []string
		for i, w := range weights {
			sc = append(sc, fmt.Sprintf(`{"name": "s%d", "weight": %s, "request": {}}`, i, w))
		}
		return `{"name": "w", "path": "/p", "scenarios": [` + strings.Join(sc, ", ") + `]}`
	}
	for _, tc := range []struct {
		name    string
		weights []string
		want    string // error; "" for accepted, drawing 70/20/10
	}{
		{"percentages", []string{"70", "20", "10"}, ""},
		{"fractions of 1", []string{"0.7", "0.2", "0.1"}, ""},
		{"summing to 10", []string{"7", "2", "1"}, ""},
		{"summing to 500", []string{"350", "100", "50"}, ""},
		{"one zero", []string{"70", "0", "10"}, `scenario "s1": weight must be > 0 (got 0)`},
		{"all zero", []string{"0", "0", "0"}, `scenario "s0": weight must be > 0 (got 0)`},
		{"negative", []string{"70", "20", "-10"}, `scenario "s2": weight must be > 0 (got -10)`},
		{"NaN (not JSON)", []string{"70", "NaN", "10"}, "invalid JSON"},
		{"out of float64's range", []string{"70", "1e400", "10"}, "invalid JSON"},
		{"sum overflows", []string{"1e308", "1e308", "1"}, "the weights add up to more than"},
		{"string", []string{"70", `"20"`, "10"}, "invalid JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "mix.json")
			if err := os.WriteFile(path, []byte(doc(tc.weights...)), 0o644); err != nil {
				t.Fatal(err)
			}
			w, err := Load(path)
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
					t.Fatalf("error %v, want one naming %s and %q", err, path, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			assertMix(t, w, 0.70, 0.20, 0.10)
		})
	}
}
