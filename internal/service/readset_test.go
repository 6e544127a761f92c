package service_test

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/acgs-lite/acgs/internal/jsoneq"
	"github.com/acgs-lite/acgs/internal/service/servicetest"
	"github.com/acgs-lite/acgs/internal/testenv"
)

// TestRequestIDsDoNotDefeatTheCache: two requests that differ only in
// fields the constitution does not read (a request id, a trace id, metadata
// beside the agent's fields) share one cached decision, in both dialects and
// in batches; the answer equals the uncached one; the metrics and the health
// document say what the keys cover.
func TestRequestIDsDoNotDefeatTheCache(t *testing.T) {
	svc := servicetest.Start(t)
	raw, err := os.ReadFile(filepath.Join(testenv.ModuleRoot(t), "testdata", "requests", "safe.json"))
	if err != nil {
		t.Fatal(err)
	}
	with := func(id string) map[string]any {
		var m map[string]any
		d := json.NewDecoder(strings.NewReader(string(raw)))
		d.UseNumber()
		if err := d.Decode(&m); err != nil {
			t.Fatal(err)
		}
		m["request_id"] = id
		ctx := m["context"].(map[string]any)
		ctx["trace_id"] = "trace-" + id
		ctx["agent"].(map[string]any)["session_started_at"] = json.Number("1764900000" + id[len(id)-1:])
		ctx["metadata"] = map[string]any{"sdk": "py", "seq": id}
		return m
	}
	client := &http.Client{}
	code, first, err := servicetest.Post(client, svc.URL+"/v1/data/acgs/main/decision", with("r-1"))
	if err != nil || code != 200 {
		t.Fatalf("first: %d %v", code, err)
	}
	code, second, err := servicetest.Post(client, svc.URL+"/v1/data/acgs/main/decision", with("r-2"))
	if err != nil || code != 200 {
		t.Fatalf("second: %d %v", code, err)
	}
	if first["cache_hit"] != false || second["cache_hit"] != true || second["cache_tier"] != "l1" {
		t.Fatalf("cache_hit: first %v, second %v (%v)", first["cache_hit"], second["cache_hit"], second["cache_tier"])
	}
	for _, f := range []string{"allow", "compliance_score", "reasons", "evaluation_details"} {
		if d := jsoneq.Diff(first[f], second[f]); d != "" {
			t.Errorf("%s differs at %s", f, d)
		}
	}
	// OPA dialect and a batch: still the same decision, from the cache.
	code, opa, err := servicetest.Post(client, svc.URL+"/v1/data/acgs/main/decision", map[string]any{"input": with("r-3")})
	if err != nil || code != 200 {
		t.Fatalf("OPA dialect: %d %v", code, err)
	}
	if d := jsoneq.Diff(opa["result"].(map[string]any)["allow"], first["allow"]); d != "" {
		t.Errorf("OPA dialect allow differs: %s", d)
	}
	code, batch, err := servicetest.Post(client, svc.URL+"/v1/batch/data/acgs/main/decision", map[string]any{"inputs": map[string]any{"a": with("r-4"), "b": with("r-5")}})
	if err != nil || code != 200 {
		t.Fatalf("batch: %d %v %v", code, err, batch)
	}

	metrics := get(t, svc.URL+"/metrics")
	if !strings.Contains(metrics, `acgs_cache_keys_total{kind="read_set"} 5`) {
		t.Errorf("acgs_cache_keys_total{kind=\"read_set\"} is not 5:\n%s", grepLines(metrics, "acgs_cache_keys_total"))
	}
	// Three lookups: the second request, the OPA one, and the batch's two
	// items, which share one key and so one lookup (identical items of a
	// batch are one decision).
	if !strings.Contains(metrics, `acgs_cache_hits_total{tier="l1"} 3`) {
		t.Errorf("expected 3 L1 hits:\n%s", grepLines(metrics, "acgs_cache_hits_total"))
	}

	var health struct {
		ReadSets map[string]struct {
			InputPaths int  `json:"input_paths"`
			Whole      bool `json:"whole_input"`
			Cached     bool `json:"cached"`
		} `json:"read_sets"`
	}
	if err := json.Unmarshal([]byte(get(t, svc.URL+"/v1/data/acgs/main/health")), &health); err != nil {
		t.Fatal(err)
	}
	rs, ok := health.ReadSets["acgs/main/decision"]
	if !ok || rs.Whole || !rs.Cached || rs.InputPaths < 5 {
		t.Errorf("health read_sets: %+v", health.ReadSets)
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
