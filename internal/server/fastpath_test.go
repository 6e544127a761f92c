package server_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/acgs-lite/acgs/internal/inputgen"
	"github.com/acgs-lite/acgs/internal/jsoneq"
)

// TestFastPathEqualsGeneralPath: responses to the second, cached request
// (answered by the raw-body tier from the decision's cached JSON) equal
// those to a ?pretty request (no raw tier: decoded, keyed, and in the OPA
// dialect built field by field), for generated inputs in both dialects.
// TestACGSBodyPathsAgree compares the ACGS document's hand-written and
// general encodings directly.
func TestFastPathEqualsGeneralPath(t *testing.T) {
	h := mustOpen(t)
	inputs := inputgen.New(5).Inputs(300)
	compared := 0
	for _, in := range inputs {
		body, _ := json.Marshal(in)
		for _, dialect := range []string{"acgs", "opa"} {
			b := string(body)
			if dialect == "opa" {
				b = `{"input":` + b + `}`
			}
			h.do(t, "POST", "/v1/data/acgs/main/decision", strings.NewReader(b), nil) // fills the cache
			fast := h.do(t, "POST", "/v1/data/acgs/main/decision", strings.NewReader(b), nil)
			general := h.do(t, "POST", "/v1/data/acgs/main/decision?pretty", strings.NewReader(b), nil)
			if fast.code != general.code {
				t.Fatalf("%s: status %d vs %d for %s", dialect, fast.code, general.code, b)
			}
			if fast.code != 200 {
				continue
			}
			if !json.Valid(fast.body) || bytes.Count(fast.body, []byte("\n")) != 1 {
				t.Fatalf("fast response is not one JSON line: %q", fast.body)
			}
			keys := []string{"decision_id"}
			if dialect == "acgs" {
				keys = append(keys, "latency_ms")
			}
			for _, k := range keys {
				if _, ok := fast.obj[k]; !ok {
					t.Fatalf("fast response lacks %s", k)
				}
				delete(fast.obj, k)
				delete(general.obj, k)
			}
			if d := jsoneq.Diff(general.obj, fast.obj); d != "" {
				t.Fatalf("%s: fast path differs at %s\nfast:    %s\ngeneral: %s", dialect, d, fast.body, general.body)
			}
			compared++
		}
	}
	if compared < 200 {
		t.Errorf("only %d responses compared", compared)
	}
}
