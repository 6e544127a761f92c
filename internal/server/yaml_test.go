package server_test

import (
	"encoding/json"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/acgs-lite/acgs/internal/config"
	"github.com/acgs-lite/acgs/internal/inputgen"
	"github.com/acgs-lite/acgs/internal/jsoneq"
)

// TestYAMLBodiesDecideAsTheirJSON: a body sent as YAML (OPA reads any
// Content-Type naming YAML so) gets the answer its JSON gets, on every
// route that takes a body and in both dialects: generated inputs, written
// as YAML, against the JSON that YAML means, each sent to a server of its
// own so that their caches see the same requests.
func TestYAMLBodiesDecideAsTheirJSON(t *testing.T) {
	hj, hy := mustOpen(t), mustOpen(t)
	types := []string{"application/x-yaml", "application/yaml", "text/yaml; charset=utf-8"}
	n := 0
	for i, in := range inputgen.New(7).Inputs(60) {
		b, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct{ path, body string }{
			{"/v1/data/acgs/main/decision", string(b)},
			{"/v1/data/acgs/main/decision", `{"input":` + string(b) + `}`},
			{"/v0/data/acgs/main/decision", string(b)},
			{"/", string(b)},
			{"/v1/batch/data/acgs/main/decision", `{"inputs":{"a":` + string(b) + `}}`},
		} {
			y, err := yaml.JSONToYAML([]byte(c.body))
			if err != nil {
				t.Fatal(err)
			}
			meant, err := yaml.YAMLToJSON(y)
			if err != nil {
				t.Fatal(err)
			}
			want := hj.do(t, "POST", c.path, strings.NewReader(string(meant)), nil)
			got := hy.do(t, "POST", c.path, strings.NewReader(string(y)), map[string]string{"Content-Type": types[i%len(types)]})
			if got.code != want.code {
				t.Fatalf("%s: status %d for YAML, %d for its JSON\nYAML: %s\ngot: %s\nwant: %s", c.path, got.code, want.code, y, got.body, want.body)
			}
			if d := jsoneq.Diff(withoutIDs(want.obj), withoutIDs(got.obj)); d != "" {
				t.Fatalf("%s: differs at %s\nYAML: %s\nyaml answer: %s\njson answer: %s", c.path, d, y, got.body, want.body)
			}
			n++
		}
	}
	if n < 250 {
		t.Errorf("compared %d answers", n)
	}
}

// TestYAMLBodies: what YAML is refused, and why, and what is read.
func TestYAMLBodies(t *testing.T) {
	h := mustOpen(t)
	safe := request(t, "safe")
	safeYAML, err := yaml.JSONToYAML([]byte(safe))
	if err != nil {
		t.Fatal(err)
	}
	bomb := "a: &a [x,x,x,x,x,x,x,x,x]\n"
	for i, c := range "bcdefghi" {
		prev := string("abcdefghi"[i])
		bomb += string(c) + ": &" + string(c) + " [" + strings.Repeat("*"+prev+",", 8) + "*" + prev + "]\n"
	}
	ya := map[string]string{"Content-Type": "application/x-yaml"}
	rows := []struct {
		name, path, body string
		code             int
		errCode, msg     string
	}{
		{"acgs body", "/v1/data/acgs/main/decision", string(safeYAML), 200, "", ""},
		{"already JSON", "/v1/data/acgs/main/decision", safe, 200, "", ""},
		{"byte order mark then JSON", "/v1/data/acgs/main/decision", "\xef\xbb\xbf" + safe, 200, "", ""},
		{"byte order mark then YAML", "/v1/data/acgs/main/decision", "\xef\xbb\xbf" + string(safeYAML), 200, "", ""},
		{"opa input", "/v1/data/acgs/main/decision", "input:\n  type: data_access\n  constitutional_hash: " + hash + "\n", 200, "", ""},
		{"empty", "/v1/data/acgs/main/decision", "", 400, "invalid_parameter", "empty"},
		{"not YAML", "/v1/data/acgs/main/decision", "a: [1, 2\n", 400, "invalid_parameter", "not valid YAML"},
		{"a key twice", "/v1/data/acgs/main/decision", "input:\n  action: a\n  action: b\n", 400, "invalid_parameter", "not valid YAML"},
		{"aliases that expand", "/v1/data/acgs/main/decision", bomb, 400, "invalid_parameter", "not valid YAML"},
		{"deeper than YAML reads", "/v1/data/acgs/main/decision", strings.Repeat("[", 20000), 400, "invalid_parameter", "not valid YAML"},
		{"deeper than MAX_REQUEST_DEPTH", "/v1/data/acgs/main/decision", "input: " + strings.Repeat("[", 100) + strings.Repeat("]", 100), 400, "invalid_parameter", "MAX_REQUEST_DEPTH"},
		{"invalid UTF-8", "/v1/data/acgs/main/decision", "input: \"\xff\"\n", 400, "invalid_parameter", "UTF-8"},
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			got := h.do(t, "POST", r.path, strings.NewReader(r.body), ya)
			if got.code != r.code {
				t.Fatalf("status %d, want %d: %s", got.code, r.code, got.body)
			}
			if r.errCode != "" && got.obj["code"] != r.errCode {
				t.Errorf("code %v, want %s: %s", got.obj["code"], r.errCode, got.body)
			}
			if msg, _ := got.obj["message"].(string); !strings.Contains(msg, r.msg) {
				t.Errorf("message %q does not name %q", msg, r.msg)
			}
		})
	}
	// Aliases within the body limit can still make JSON larger than it.
	small := mustOpen(t, func(c *config.Config) { c.Server.MaxRequestBytes = 600 })
	grow := "a: &a [" + strings.Repeat("xxxxxxxxxx,", 20) + "x]\nb: [*a, *a, *a, *a, *a]\n"
	if got := small.do(t, "POST", "/v0/data/acgs/main/decision", strings.NewReader(grow), ya); got.code != 413 || got.obj["code"] != "request_too_large" {
		t.Errorf("YAML whose JSON is over the limit: %d %s", got.code, got.body)
	}
}

// withoutIDs drops what differs between two answers to one request: ids
// and timings, at any depth (a batch's items carry their own).
func withoutIDs(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			switch k {
			case "decision_id", "batch_decision_id", "latency_ms":
				continue
			}
			out[k] = withoutIDs(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = withoutIDs(e)
		}
		return out
	}
	return v
}
