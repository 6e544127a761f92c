package server_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// batchFuzzSeeds are ordinary and hostile batch bodies for both endpoints
// (acgs=true: POST /v1/acgs/batch; false: the OPA batch API).
func batchFuzzSeeds(tb testing.TB) []struct {
	body string
	acgs bool
} {
	tb.Helper()
	safe, dangerous, complexReq := request(tb, "safe"), request(tb, "dangerous"), request(tb, "complex")
	lowTrust, dataAccess := request(tb, "low_trust"), request(tb, "data_access")
	many := make([]string, 51) // one over the harness's MAX_BATCH_ITEMS (50)
	for i := range many {
		many[i] = safe
	}
	manyIDs := make([]string, 51)
	for i := range manyIDs {
		manyIDs[i] = fmt.Sprintf(`"%d":%s`, i, safe)
	}
	type seed = struct {
		body string
		acgs bool
	}
	seeds := []seed{
		{`{"requests":[` + safe + `,` + dangerous + `,` + complexReq + `,` + lowTrust + `,` + dataAccess + `]}`, true},
		{`{"requests":[` + safe + `,{"type":1},"x",null,{"type":"t","constitutional_hash":"bad"},[]]}`, true},
		{`{"requests":[]}`, true},
		{`{"requests":{}}`, true},
		{`{"requests":[` + strings.Join(many, ",") + `]}`, true},
		{`{"requests":[{"type":"constitutional_evaluation","constitutional_hash":"cdd01ef066bc6cf2","context":{"agent":{"trust_level":"high"}}}]}`, true},
		{`{"requests":[{"type":"evolution_approval","constitutional_hash":"cdd01ef066bc6cf2","evolution_request":{"changes":[],"performance_analysis":"x"}}]}`, true},
		{`{"requests":[{"type":"data_access","constitutional_hash":"cdd01ef066bc6cf2","data_request":{"fields":{"a":1},"purpose":7}}]}`, true},
		{`{"requests":[` + safe + `],"requests":[]}`, true},
		{`[` + safe + `]`, true},
		{`{"inputs":{"a":` + safe + `,"b":` + dangerous + `,"c":` + complexReq + `}}`, false},
		{`{"inputs":{"a":` + safe + `,"b":1,"c":null,"d":[],"e":"s"}}`, false},
		{`{"inputs":{"a":{"context":{"agent":{"id":"x"}}}},"common_input":` + safe + `}`, false},
		{`{"inputs":{"a":1},"common_input":{"x":[1,2,3]}}`, false},
		{`{"inputs":{}}`, false},
		{`{"inputs":[]}`, false},
		{`{"inputs":{"a":{}},"extra":1}`, false},
		{`{"inputs":{` + strings.Join(manyIDs, ",") + `}}`, false},
		{`{"inputs":{"a":` + safe + `,"a":` + dangerous + `}}`, false},
		{`{"inputs":{"":{"type":"constitutional_evaluation","constitutional_hash":"cdd01ef066bc6cf2","action":1e999}}}`, false},
		{`{"inputs":{"a":{"type":"constitutional_evaluation","constitutional_hash":"cdd01ef066bc6cf2","action":"data.read_public","context":{"agent":{"trust_level":1e400}}}}}`, false},
		{`{"inputs":{"a":` + strings.Repeat(`{"x":`, 60) + `1` + strings.Repeat(`}`, 60) + `}}`, false},
		{`null`, false},
		{``, true},
	}
	return seeds
}

// FuzzBatchBody sends arbitrary bodies to both batch endpoints through the
// real handler. The answer is always one JSON document; the ACGS batch never
// answers 5xx (evaluation failures deny in place); the OPA batch answers 500
// only when every item failed evaluation, each item then carrying
// evaluation_error and http_status_code "500". internal_error never appears.
func FuzzBatchBody(f *testing.F) {
	for _, s := range batchFuzzSeeds(f) {
		f.Add([]byte(s.body), s.acgs)
	}
	h := mustOpen(f)
	f.Fuzz(func(t *testing.T, body []byte, acgs bool) {
		path := "/v1/batch/data/acgs/main/decision"
		if acgs {
			path = "/v1/acgs/batch"
		}
		r := httptest.NewRequest("POST", path, bytes.NewReader(body))
		w := httptest.NewRecorder()
		h.srv.ServeHTTP(w, r)
		checkBatchAnswer(t, acgs, w.Code, w.Body.Bytes(), body)
	})
}

// checkBatchAnswer asserts the batch contract on one answer.
func checkBatchAnswer(t *testing.T, acgs bool, code int, out, in []byte) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(out))
	dec.UseNumber()
	var doc map[string]any
	if err := dec.Decode(&doc); err != nil || dec.More() {
		t.Fatalf("status %d: response is not one JSON object (%v) for %q: %q", code, err, in, out)
	}
	if c, _ := doc["code"].(string); c == "internal_error" {
		t.Fatalf("internal_error for %q: %s", in, out)
	}
	switch {
	case code < 500:
	case acgs:
		t.Fatalf("ACGS batch answered %d for %q: %s", code, in, out)
	case code != 500:
		t.Fatalf("OPA batch answered %d for %q: %s", code, in, out)
	}
	if code >= 400 && code != 500 {
		if _, ok := doc["code"].(string); !ok {
			t.Fatalf("status %d without an error code: %s", code, out)
		}
		return
	}
	if acgs {
		items, ok := doc["responses"].([]any)
		if !ok {
			t.Fatalf("ACGS batch %d without a responses array: %s", code, out)
		}
		for i, it := range items {
			m, ok := it.(map[string]any)
			if !ok {
				t.Fatalf("item %d is not an object: %s", i, out)
			}
			if c, isErr := m["code"].(string); isErr {
				if c == "internal_error" || c == "evaluation_error" {
					t.Fatalf("item %d has %s: %s (evaluation failures must deny in place)", i, c, out)
				}
				continue
			}
			if _, ok := m["allow"].(bool); !ok {
				t.Fatalf("item %d has neither an error code nor a boolean allow: %s", i, out)
			}
		}
		return
	}
	items, ok := doc["responses"].(map[string]any)
	if w, _ := doc["warning"].(map[string]any); !ok && code == 200 && w["code"] == "api_usage_warning" {
		return // no inputs: Enterprise OPA's warning, and no responses
	}
	if !ok {
		t.Fatalf("OPA batch %d without a responses object: %s", code, out)
	}
	if code == 500 && len(items) == 0 {
		t.Fatalf("500 for an empty batch: %s", out)
	}
	for id, it := range items {
		m, ok := it.(map[string]any)
		if !ok {
			t.Fatalf("item %q is not an object: %s", id, out)
		}
		c, isErr := m["code"].(string)
		st, _ := m["http_status_code"].(string)
		switch {
		case isErr && c != "evaluation_error":
			t.Fatalf("item %q failed with %s, not evaluation_error: %s", id, c, out)
		case code == 500 && (!isErr || st != "500"):
			t.Fatalf("500 but item %q did not fail evaluation (status %q): %s", id, st, out)
		case code == 207 && st != "200" && st != "500":
			t.Fatalf("207 but item %q has http_status_code %q: %s", id, st, out)
		case code == 200 && isErr:
			t.Fatalf("200 with failed item %q: %s", id, out)
		}
	}
}

// TestWriteBatchCorpus writes the seeds into testdata/fuzz/FuzzBatchBody in
// Go's corpus format when ACGS_WRITE_FUZZ_SEEDS=1.
func TestWriteBatchCorpus(t *testing.T) {
	if os.Getenv("ACGS_WRITE_FUZZ_SEEDS") != "1" {
		t.Skip("set ACGS_WRITE_FUZZ_SEEDS=1 to rewrite the seed corpus")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzBatchBody")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, s := range batchFuzzSeeds(t) {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\nbool(%v)\n", s.body, s.acgs)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%02d", i)), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
