package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/acgs-lite/acgs/internal/cache"
	"github.com/acgs-lite/acgs/internal/config"
	"github.com/acgs-lite/acgs/internal/engine"
	"github.com/acgs-lite/acgs/internal/inputgen"
	"github.com/acgs-lite/acgs/internal/jsoneq"
	"github.com/acgs-lite/acgs/internal/server"
	"github.com/acgs-lite/acgs/internal/telemetry"
	"github.com/acgs-lite/acgs/internal/testenv"
	"github.com/acgs-lite/acgs/policies"
)

// testRego is added next to the constitution for the batch tests: echo shows
// the input a batch item was evaluated with (after the common_input merge),
// and x raises a conflict error (evaluation_error) when both a and b are true.
const testRego = `package t

echo := input

x := 1 if input.a
x := 2 if input.b

arr := [10, 20]

obj := {"1": "string key", "a/b": "slash", "a": {"b": "nested"}}
`

// mustOpenBatch is mustOpen (the same harness) with a long evaluation
// deadline: these tests compare answers, and on a loaded shared 2-core
// machine a (correctly) fail-closed timeout would be a false difference.
func mustOpenBatch(tb testing.TB, mutate ...func(*config.Config)) *harness {
	tb.Helper()
	cfg := config.Default()
	cfg.Server.MaxBatchItems = 50
	for _, m := range mutate {
		m(&cfg)
	}
	c, err := cache.New(context.Background(), cache.Config{L1Size: 10000, TTL: time.Minute})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	e, err := engine.New(context.Background(), engine.FSSource{FS: policies.FS, Name: "embedded"}, engine.Options{
		ConstitutionalHash: cfg.Policy.ConstitutionalHash, EvalTimeout: 30 * time.Second, Cache: c,
	})
	if err != nil {
		tb.Fatal(err)
	}
	s, err := server.New(server.Deps{Config: cfg, Engine: e, Cache: c, Window: telemetry.NewWindow(time.Minute)})
	if err != nil {
		tb.Fatal(err)
	}
	return &harness{srv: s, eng: e, cache: c}
}

// withTestPolicy activates the embedded constitution plus package t in h.
func withTestPolicy(tb testing.TB, h *harness) {
	tb.Helper()
	fsys := fstest.MapFS{}
	for p, b := range testenv.ConstitutionFiles(tb, func(m map[string]any) {
		m["roots"] = []string{"acgs", "t"}
		m["revision"] = "constitution-batch-test"
	}) {
		fsys[p] = &fstest.MapFile{Data: b}
	}
	fsys["t/batch.rego"] = &fstest.MapFile{Data: []byte(testRego)}
	b, err := engine.FSSource{FS: fsys, Name: "batch-test"}.Load(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	if err := h.eng.Activate(context.Background(), b, "batch-test"); err != nil {
		tb.Fatal(err)
	}
}

// decodeJSONValue decodes s the way the server does (numbers as json.Number).
func decodeJSONValue(tb testing.TB, s string) any {
	tb.Helper()
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		tb.Fatalf("decoding %q: %v", s, err)
	}
	return v
}

func mustJSON(tb testing.TB, v any) string {
	tb.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

func batchBody(tb testing.TB, inputs map[string]any, common any, hasCommon bool) string {
	body := map[string]any{"inputs": inputs}
	if hasCommon {
		body["common_input"] = common
	}
	return mustJSON(tb, body)
}

func responsesOf(tb testing.TB, r resp) map[string]any {
	tb.Helper()
	rs, ok := r.obj["responses"].(map[string]any)
	if !ok {
		tb.Fatalf("no responses object in %s", r.body)
	}
	if id, _ := r.obj["batch_decision_id"].(string); id == "" {
		tb.Errorf("no batch_decision_id in %s", r.body)
	}
	return rs
}

// TestBatchStatusCodes: 200 when every item succeeds (no http_status_code),
// 207 when some fail (every item carries "200" or "500" as a string), 500 when
// all fail (items without http_status_code, as Enterprise OPA answers); failed
// items carry the evaluation error and no result.
func TestBatchStatusCodes(t *testing.T) {
	h := mustOpen(t)
	withTestPolicy(t, h)
	conflict := map[string]any{"a": true, "b": true}
	type item struct {
		result  any  // expected result when ok and defined
		defined bool // result expected
		fails   bool
	}
	for _, tc := range []struct {
		name   string
		inputs map[string]any
		common map[string]any
		code   int
		want   map[string]item
	}{
		{"all succeed", map[string]any{"one": map[string]any{"a": true}, "two": map[string]any{"b": true}, "undef": map[string]any{}}, nil, 200,
			map[string]item{"one": {result: 1, defined: true}, "two": {result: 2, defined: true}, "undef": {}}},
		{"mixed", map[string]any{"one": map[string]any{"a": true}, "two": map[string]any{"b": true}, "undef": map[string]any{}, "bad": conflict}, nil, 207,
			map[string]item{"one": {result: 1, defined: true}, "two": {result: 2, defined: true}, "undef": {}, "bad": {fails: true}}},
		{"mixed one of fifty", func() map[string]any {
			m := map[string]any{"bad": conflict}
			for i := range 49 {
				m[fmt.Sprint("ok-", i)] = map[string]any{"a": true, "n": i}
			}
			return m
		}(), nil, 207, func() map[string]item {
			m := map[string]item{"bad": {fails: true}}
			for i := range 49 {
				m[fmt.Sprint("ok-", i)] = item{result: 1, defined: true}
			}
			return m
		}()},
		{"all fail", map[string]any{"x": conflict, "y": map[string]any{"a": true, "b": true, "c": 1}}, nil, 500,
			map[string]item{"x": {fails: true}, "y": {fails: true}}},
		{"single item fails", map[string]any{"only": conflict}, nil, 500, map[string]item{"only": {fails: true}}},
		{"failure made by common_input", map[string]any{"ok": map[string]any{}, "bad": map[string]any{"b": true}}, map[string]any{"a": true}, 207,
			map[string]item{"ok": {result: 1, defined: true}, "bad": {fails: true}}},
		{"all fail through common_input", map[string]any{"p": map[string]any{"b": true}, "q": map[string]any{"b": true, "z": 0}}, map[string]any{"a": true}, 500,
			map[string]item{"p": {fails: true}, "q": {fails: true}}},
		{"input wins over the failing common_input", map[string]any{"p": map[string]any{"b": false}}, map[string]any{"a": true, "b": true}, 200,
			map[string]item{"p": {result: 1, defined: true}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := h.do(t, "POST", "/v1/batch/data/t/x", strings.NewReader(batchBody(t, tc.inputs, tc.common, tc.common != nil)), nil)
			if r.code != tc.code {
				t.Fatalf("status %d, want %d: %s", r.code, tc.code, r.body)
			}
			rs := responsesOf(t, r)
			if len(rs) != len(tc.want) {
				t.Fatalf("%d responses for %d inputs: %s", len(rs), len(tc.want), r.body)
			}
			for id, w := range tc.want {
				got, ok := rs[id].(map[string]any)
				if !ok {
					t.Fatalf("no response object for %q: %s", id, r.body)
				}
				status, hasStatus := got["http_status_code"]
				switch {
				case tc.code == 207 && w.fails && status != "500",
					tc.code == 207 && !w.fails && status != "200":
					t.Errorf("%s: http_status_code %#v in a 207 response", id, status)
				case tc.code == 200 && hasStatus:
					t.Errorf("%s: http_status_code %#v in a 200 response", id, status)
				case tc.code == 500 && hasStatus:
					t.Errorf("%s: http_status_code %#v in a 500 response", id, status)
				}
				if w.fails {
					msg, _ := got["message"].(string)
					if got["code"] != "evaluation_error" || msg == "" {
						t.Errorf("%s: want an evaluation_error with a message, got %v", id, got)
					}
					if _, has := got["result"]; has {
						t.Errorf("%s: a failed item has a result: %v", id, got)
					}
					continue
				}
				if _, has := got["code"]; has {
					t.Errorf("%s: a successful item has an error code: %v", id, got)
				}
				if did, _ := got["decision_id"].(string); did == "" {
					t.Errorf("%s: no decision_id: %v", id, got)
				}
				res, has := got["result"]
				if has != w.defined || (w.defined && !jsoneq.Equal(res, w.result)) {
					t.Errorf("%s: result %v (present %v), want %v (present %v)", id, res, has, w.result, w.defined)
				}
			}
		})
	}
}

// TestBatchMalformed: bodies that are not a batch request get 400 naming the
// problem (413 for size), and nothing is evaluated. (Bodies without inputs
// and unknown members are answered as Enterprise OPA answers them:
// TestBatchBodiesAsEnterpriseOPA.)
func TestBatchMalformed(t *testing.T) {
	h := mustOpen(t, func(c *config.Config) { c.Server.MaxRequestBytes = 4096 })
	safe := request(t, "safe")
	for _, tc := range []struct {
		name, path, body string
		hdr              map[string]string
		code             int
		errCode, msg     string
	}{
		{"not json", "", `{"inputs":`, nil, 400, "invalid_parameter", "JSON"},
		{"garbage", "", `inputs`, nil, 400, "invalid_parameter", "JSON"},
		{"array body", "", `[{"inputs":{}}]`, nil, 400, "invalid_parameter", "object"},
		{"string body", "", `"inputs"`, nil, 400, "invalid_parameter", "object"},
		{"inputs array", "", `{"inputs":[` + safe + `]}`, nil, 400, "invalid_parameter", "inputs"},
		{"inputs string", "", `{"inputs":"a"}`, nil, 400, "invalid_parameter", "inputs"},
		{"inputs number", "", `{"inputs":1}`, nil, 400, "invalid_parameter", "inputs"},
		{"trailing data", "", `{"inputs":{"a":` + safe + `}} {}`, nil, 400, "invalid_parameter", "after the JSON value"},
		{"trailing garbage", "", `{"inputs":{}}x`, nil, 400, "invalid_parameter", "after the JSON value"},
		{"two bodies", "", `{"inputs":{}}{"inputs":{}}`, nil, 400, "invalid_parameter", "after the JSON value"},
		{"invalid utf-8", "", "{\"inputs\":{\"a\":\"\xff\"}}", nil, 400, "invalid_parameter", "UTF-8"},
		{"too deep", "", `{"inputs":{"a":` + strings.Repeat("[", 80) + strings.Repeat("]", 80) + `}}`, nil, 400, "invalid_parameter", "MAX_REQUEST_DEPTH"},
		{"xml", "", `{"inputs":{}}`, map[string]string{"Content-Type": "application/xml"}, 415, "unsupported_media_type", ""},
		{"over MAX_REQUEST_BYTES", "", `{"inputs":{"a":"` + strings.Repeat("x", 5000) + `"}}`, nil, 413, "request_too_large", "MAX_REQUEST_BYTES"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := tc.path
			if path == "" {
				path = "/v1/batch/data/acgs/main/decision"
			}
			r := h.do(t, "POST", path, strings.NewReader(tc.body), tc.hdr)
			if r.code != tc.code {
				t.Fatalf("status %d, want %d: %s", r.code, tc.code, r.body)
			}
			if r.obj["code"] != tc.errCode {
				t.Errorf("code %v, want %s: %s", r.obj["code"], tc.errCode, r.body)
			}
			if m, _ := r.obj["message"].(string); !strings.Contains(m, tc.msg) {
				t.Errorf("message %q does not name %q", m, tc.msg)
			}
			if _, ok := r.obj["responses"]; ok {
				t.Errorf("a refused batch has responses: %s", r.body)
			}
		})
	}
	if r := h.do(t, "GET", "/v1/batch/data/acgs/main/decision", nil, nil); r.code != 405 {
		t.Errorf("GET on the batch API: %d %s", r.code, r.body)
	}
}

// TestBatchBodiesAsEnterpriseOPA: the batch API reads its body as
// Enterprise OPA decodes it. A body without inputs (none, null, {},
// {"inputs": null}, only other members) is 200 with OPA's api_usage_warning
// and no responses; members other than inputs and common_input are
// ignored; a common_input that is not an object is not merged; the data
// root is served (/v1/batch/data); every item carries a decision_id,
// failed ones too. All of these were 400 (the root 404), and failed items
// had no decision_id.
func TestBatchBodiesAsEnterpriseOPA(t *testing.T) {
	h := mustOpen(t)
	withTestPolicy(t, h)
	warned := func(t *testing.T, r resp) {
		w, _ := r.obj["warning"].(map[string]any)
		if w["code"] != "api_usage_warning" || w["message"] != "'inputs' key missing from the request" {
			t.Errorf("warning %v: %s", r.obj["warning"], r.body)
		}
		if _, has := r.obj["responses"]; has {
			t.Errorf("responses without inputs: %s", r.body)
		}
		if id, _ := r.obj["batch_decision_id"].(string); id == "" {
			t.Errorf("no batch_decision_id: %s", r.body)
		}
	}
	results := func(want map[string]string) func(*testing.T, resp) { // id -> result JSON, "" undefined, "error" failed
		return func(t *testing.T, r resp) {
			if _, has := r.obj["warning"]; has {
				t.Errorf("warning with inputs: %s", r.body)
			}
			rs := responsesOf(t, r)
			if len(rs) != len(want) {
				t.Fatalf("%d responses, want %d: %s", len(rs), len(want), r.body)
			}
			for id, w := range want {
				item, _ := rs[id].(map[string]any)
				if did, _ := item["decision_id"].(string); did == "" {
					t.Errorf("%s: no decision_id: %v", id, item)
				}
				got := ""
				if res, ok := item["result"]; ok {
					got = mustJSON(t, res)
				}
				if w == "error" {
					if item["code"] != "evaluation_error" {
						t.Errorf("%s: want an evaluation_error, got %v", id, item)
					}
					continue
				}
				if got != w {
					t.Errorf("%s: result %s, want %s", id, got, w)
				}
			}
		}
	}
	for _, tc := range []struct {
		name, path, body string
		code             int
		check            func(*testing.T, resp)
	}{
		{"empty body", "/v1/batch/data/t/x", ``, 200, warned},
		{"whitespace body", "/v1/batch/data/t/x", " \n\t", 200, warned},
		{"null body", "/v1/batch/data/t/x", `null`, 200, warned},
		{"inputs missing", "/v1/batch/data/t/x", `{}`, 200, warned},
		{"only common_input", "/v1/batch/data/t/x", `{"common_input":{"a":true}}`, 200, warned},
		{"inputs null", "/v1/batch/data/t/x", `{"inputs":null,"common_input":{"a":true}}`, 200, warned},
		{"unknown member only", "/v1/batch/data/t/x", `{"foo":1}`, 200, warned},
		{"unknown member ignored", "/v1/batch/data/t/x", `{"inputs":{"a":{"a":true}},"input":{"b":true},"x":1}`, 200, results(map[string]string{"a": "1"})},
		{"string common_input not merged", "/v1/batch/data/t/echo", `{"inputs":{"a":{"i":1},"b":2},"common_input":"c"}`, 200, results(map[string]string{"a": `{"i":1}`, "b": "2"})},
		{"array common_input not merged", "/v1/batch/data/t/echo", `{"inputs":{"a":{"i":1}},"common_input":[{"c":1}]}`, 200, results(map[string]string{"a": `{"i":1}`})},
		{"number common_input not merged", "/v1/batch/data/t/echo", `{"inputs":{"a":{"i":1}},"common_input":5}`, 200, results(map[string]string{"a": `{"i":1}`})},
		{"failed items have a decision_id", "/v1/batch/data/t/x", `{"inputs":{"ok":{"a":true},"bad":{"a":true,"b":true}}}`, 207, results(map[string]string{"ok": "1", "bad": "error"})},
		{"all failed have a decision_id", "/v1/batch/data/t/x", `{"inputs":{"bad":{"a":true,"b":true}}}`, 500, results(map[string]string{"bad": "error"})},
		{"data root", "/v1/batch/data", `{"inputs":{"a":{"i":1}}}`, 200, func(t *testing.T, r resp) {
			item, _ := responsesOf(t, r)["a"].(map[string]any)
			root, _ := item["result"].(map[string]any)
			tdoc, _ := root["t"].(map[string]any)
			if mustJSON(t, tdoc["echo"]) != `{"i":1}` || root["acgs"] == nil {
				t.Errorf("not the data root: %.300s", r.body)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := h.do(t, "POST", tc.path, strings.NewReader(tc.body), nil)
			if r.code != tc.code {
				t.Fatalf("status %d, want %d: %s", r.code, tc.code, r.body)
			}
			tc.check(t, r)
		})
	}
}

// TestBatchQueryParameters: the batch API answers ?provenance and
// ?metrics as Enterprise OPA does: each successful item carries what a
// single request asking for them gets (the same provenance, at least the
// same metrics keys; with ?instrument topdown's detailed metrics too), the
// batch its own metrics (timer_server_handler_ns, timer_rego_input_parse_ns,
// counter_server_query_cache_hit, with ?metrics); failed items carry
// neither. ?explain is refused (400), not ignored. All of them were
// ignored.
func TestBatchQueryParameters(t *testing.T) {
	h := mustOpen(t)
	withTestPolicy(t, h)
	keys := func(m any) []string {
		mm, _ := m.(map[string]any)
		return slices.Sorted(maps.Keys(mm))
	}
	single := func(t *testing.T, query string) map[string]any {
		r := h.do(t, "POST", "/v1/data/t/x?"+query, strings.NewReader(`{"input":{"a":true}}`), nil)
		if r.code != 200 {
			t.Fatalf("single request: %d %s", r.code, r.body)
		}
		return r.obj
	}
	batchKeys := []string{"counter_server_query_cache_hit", "timer_rego_input_parse_ns", "timer_server_handler_ns"}
	for _, tc := range []struct {
		name, query, body string
		code              int
		metrics, prov     bool // per item and, for metrics, the batch's
	}{
		{"provenance", "provenance", `{"inputs":{"a":{"a":true},"b":{"b":true}}}`, 200, false, true},
		{"metrics", "metrics", `{"inputs":{"a":{"a":true},"b":{"b":true}}}`, 200, true, false},
		{"metrics from the cache", "metrics", `{"inputs":{"a":{"a":true},"b":{"b":true}}}`, 200, true, false},
		{"both, pretty", "metrics&provenance&pretty", `{"inputs":{"a":{"a":true},"b":{"b":true}}}`, 200, true, true},
		{"instrument", "instrument", `{"inputs":{"a":{"a":true}}}`, 200, true, false},
		{"strict and metrics", "strict-builtin-errors&metrics", `{"inputs":{"a":{"a":true}}}`, 200, true, false},
		{"mixed", "metrics&provenance", `{"inputs":{"a":{"a":true},"bad":{"a":true,"b":true}}}`, 207, true, true},
		{"no inputs", "metrics", `{}`, 200, true, false},
		{"explain", "explain=full", `{"inputs":{"a":{"a":true}}}`, 400, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := h.do(t, "POST", "/v1/batch/data/t/x?"+tc.query, strings.NewReader(tc.body), nil)
			if r.code != tc.code {
				t.Fatalf("status %d, want %d: %s", r.code, tc.code, r.body)
			}
			if tc.code == 400 {
				if m, _ := r.obj["message"].(string); r.obj["code"] != "invalid_parameter" || !strings.Contains(m, "explain") {
					t.Errorf("%s", r.body)
				}
				return
			}
			batchWants := strings.Contains(tc.query, "metrics") // ?instrument alone gives the items' only
			if got := keys(r.obj["metrics"]); batchWants && !slices.Equal(got, batchKeys) || !batchWants && r.obj["metrics"] != nil {
				t.Errorf("batch metrics %v: %s", got, r.body)
			}
			if tc.body == `{}` {
				return
			}
			want := single(t, strings.TrimSuffix(tc.query, "&pretty"))
			for id, item := range responsesOf(t, r) {
				item := item.(map[string]any)
				if id == "bad" {
					if item["metrics"] != nil || item["provenance"] != nil || item["decision_id"] == nil {
						t.Errorf("failed item %v", item)
					}
					continue
				}
				if mustJSON(t, item["result"]) != map[string]string{"a": "1", "b": "2"}[id] {
					t.Errorf("%s: %v", id, item)
				}
				if got := keys(item["metrics"]); tc.metrics && !slices.Equal(got, keys(want["metrics"])) || !tc.metrics && item["metrics"] != nil {
					t.Errorf("%s: metrics %v, a single request's %v", id, got, keys(want["metrics"]))
				}
				if got := mustJSON(t, item["provenance"]); tc.prov && got != mustJSON(t, want["provenance"]) || !tc.prov && item["provenance"] != nil {
					t.Errorf("%s: provenance %s, a single request's %s", id, got, mustJSON(t, want["provenance"]))
				}
			}
		})
	}
}

// refMerge is the test's own statement of the common_input rule: objects
// merge recursively, the input wins on every other conflict, and a
// non-object input replaces common_input entirely.
func refMerge(common, input any) any {
	c, ok1 := common.(map[string]any)
	in, ok2 := input.(map[string]any)
	if !ok1 || !ok2 {
		return input
	}
	out := maps.Clone(c)
	for k, v := range in {
		if cv, ok := c[k]; ok {
			out[k] = refMerge(cv, v)
			continue
		}
		out[k] = v
	}
	return out
}

// TestBatchCommonInputMerge checks the merged input each item is evaluated
// with, through the echo rule, including several items sharing one
// common_input (none may see another's overrides).
func TestBatchCommonInputMerge(t *testing.T) {
	h := mustOpen(t)
	withTestPolicy(t, h)
	for _, tc := range []struct {
		name   string
		common string // JSON; "" for no common_input
		inputs string // JSON object of id -> input
		want   string // JSON object of id -> merged input; an id missing here must have no result
	}{
		{"enterprise opa example", `{"user":{"company":"Acme Corp","type":"user"},"action":"read","object":"id1234"}`,
			`{"A":{"user":{"name":"alice","type":"admin"},"action":"write"},"B":{"user":{"name":"bob","type":"employee"}},"C":{"user":{"name":"eve"}}}`,
			`{"A":{"user":{"name":"alice","company":"Acme Corp","type":"admin"},"action":"write","object":"id1234"},
			  "B":{"user":{"name":"bob","company":"Acme Corp","type":"employee"},"action":"read","object":"id1234"},
			  "C":{"user":{"name":"eve","company":"Acme Corp","type":"user"},"action":"read","object":"id1234"}}`},
		{"disjoint keys are unioned", `{"c":1}`, `{"a":{"i":2}}`, `{"a":{"c":1,"i":2}}`},
		{"input scalar wins over common object", `{"k":{"deep":true}}`, `{"a":{"k":5}}`, `{"a":{"k":5}}`},
		{"input object wins over common scalar", `{"k":"s"}`, `{"a":{"k":{"x":1}}}`, `{"a":{"k":{"x":1}}}`},
		{"input null wins", `{"k":{"x":1},"j":2}`, `{"a":{"k":null}}`, `{"a":{"k":null,"j":2}}`},
		{"input false wins", `{"k":true}`, `{"a":{"k":false}}`, `{"a":{"k":false}}`},
		{"arrays are replaced, not merged", `{"l":[1,2,3]}`, `{"a":{"l":[9]}}`, `{"a":{"l":[9]}}`},
		{"three levels deep", `{"a":{"b":{"c":1,"d":2},"e":3}}`, `{"i":{"a":{"b":{"d":20,"f":4}}}}`, `{"i":{"a":{"b":{"c":1,"d":20,"f":4},"e":3}}}`},
		{"empty input gets common", `{"x":1,"y":{"z":2}}`, `{"a":{}}`, `{"a":{"x":1,"y":{"z":2}}}`},
		{"empty common", `{}`, `{"a":{"x":1}}`, `{"a":{"x":1}}`},
		{"null common", `null`, `{"a":{"x":1}}`, `{"a":{"x":1}}`},
		{"no common", ``, `{"a":{"x":{"y":1}}}`, `{"a":{"x":{"y":1}}}`},
		{"non-object inputs replace common", `{"x":1}`, `{"s":"str","n":7,"l":[1],"b":true,"z":null}`, `{"s":"str","n":7,"l":[1],"b":true}`},
		{"numbers keep their precision", `{"big":12345678901234567890123,"f":0.1}`, `{"a":{"g":1e-7}}`, `{"a":{"big":12345678901234567890123,"f":0.1,"g":1e-7}}`},
		{"siblings do not leak into each other", `{"u":{"type":"user","org":"acme"}}`,
			`{"p":{"u":{"type":"admin"}},"q":{"u":{"org":"other"}},"r":{},"s":{"u":{"extra":{"x":1}}}}`,
			`{"p":{"u":{"type":"admin","org":"acme"}},"q":{"u":{"type":"user","org":"other"}},"r":{"u":{"type":"user","org":"acme"}},"s":{"u":{"type":"user","org":"acme","extra":{"x":1}}}}`},
		{"common_input alone with empty inputs", `{"x":1}`, `{}`, `{}`},
		{"empty inputs", ``, `{}`, `{}`},
		{"odd ids", `{"c":true}`, `{"":{"i":0},"with space":{"i":1},"a/b":{"i":2},"ключ":{"i":3},"\"q\"":{"i":4}}`,
			`{"":{"c":true,"i":0},"with space":{"c":true,"i":1},"a/b":{"c":true,"i":2},"ключ":{"c":true,"i":3},"\"q\"":{"c":true,"i":4}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := `{"inputs":` + tc.inputs
			if tc.common != "" {
				body += `,"common_input":` + tc.common
			}
			body += `}`
			r := h.do(t, "POST", "/v1/batch/data/t/echo", strings.NewReader(body), nil)
			if r.code != 200 {
				t.Fatalf("status %d: %s", r.code, r.body)
			}
			rs := responsesOf(t, r)
			want := decodeJSONValue(t, tc.want).(map[string]any)
			inputs := decodeJSONValue(t, tc.inputs).(map[string]any)
			if len(rs) != len(inputs) {
				t.Fatalf("%d responses for %d inputs: %s", len(rs), len(inputs), r.body)
			}
			var common any
			if tc.common != "" {
				common = decodeJSONValue(t, tc.common)
			}
			for id := range inputs {
				if _, ok := want[id]; ok {
					continue
				}
				if got, _ := rs[id].(map[string]any); got["decision_id"] == nil || got["result"] != nil {
					t.Errorf("%q: want a decision without a result, got %v", id, got)
				}
			}
			for id, w := range want {
				got, _ := rs[id].(map[string]any)
				res, ok := got["result"]
				if !ok {
					t.Errorf("%q: no result: %v", id, got)
					continue
				}
				if d := jsoneq.Diff(w, res); d != "" {
					t.Errorf("%q: merged input differs from the expected one at %s", id, d)
				}
				// The test's reference merge agrees with the table.
				if tc.common != "" {
					if d := jsoneq.Diff(w, refMerge(common, inputs[id])); d != "" {
						t.Errorf("%q: table and reference merge disagree at %s", id, d)
					}
				}
			}
		})
	}
}

// TestBatchItemLimit: MAX_BATCH_ITEMS items are answered, one more is 413.
func TestBatchItemLimit(t *testing.T) {
	const limit = 25
	h := mustOpen(t, func(c *config.Config) { c.Server.MaxBatchItems = limit })
	safe := decodeJSONValue(t, request(t, "safe"))
	for _, tc := range []struct {
		n    int
		code int
	}{{0, 200}, {1, 200}, {limit - 1, 200}, {limit, 200}, {limit + 1, 413}, {10 * limit, 413}} {
		t.Run(fmt.Sprint(tc.n), func(t *testing.T) {
			inputs := map[string]any{}
			reqs := make([]any, tc.n)
			for i := range tc.n {
				inputs[fmt.Sprint("i", i)] = safe
				reqs[i] = safe
			}
			for _, ep := range []struct{ path, body string }{
				{"/v1/batch/data/acgs/main/decision", mustJSON(t, map[string]any{"inputs": inputs})},
				{"/v1/acgs/batch", mustJSON(t, map[string]any{"requests": reqs})},
			} {
				r := h.do(t, "POST", ep.path, strings.NewReader(ep.body), nil)
				if r.code != tc.code {
					t.Fatalf("%s: status %d, want %d: %.300s", ep.path, r.code, tc.code, r.body)
				}
				if tc.code == 413 {
					if m, _ := r.obj["message"].(string); r.obj["code"] != "request_too_large" || !strings.Contains(m, "MAX_BATCH_ITEMS") {
						t.Errorf("%s: %s", ep.path, r.body)
					}
					continue
				}
				var n int
				switch rs := r.obj["responses"].(type) {
				case map[string]any:
					n = len(rs)
				case []any:
					n = len(rs)
				default:
					t.Fatalf("%s: responses %T: %.300s", ep.path, r.obj["responses"], r.body)
				}
				if n != tc.n {
					t.Errorf("%s: %d responses for %d items", ep.path, n, tc.n)
				}
			}
		})
	}
}

// TestBatchEqualsSingleDecisions: every id is answered once, and each result
// equals the single-request decision (POST /v1/data/acgs/main/decision,
// OPA dialect) of the same merged input, for generated inputs of every
// request type and action class, with and without common_input.
func TestBatchEqualsSingleDecisions(t *testing.T) {
	n := 600
	if testing.Short() {
		n = 200
	}
	h := mustOpenBatch(t, func(c *config.Config) { c.Server.MaxBatchItems = 1000 })
	gen := inputgen.New(41)
	var inputs []any
	for _, in := range gen.Inputs(n) {
		inputs = append(inputs, in)
	}
	for _, name := range []string{"safe", "complex", "dangerous", "low_trust", "data_access"} {
		inputs = append(inputs, decodeJSONValue(t, request(t, name)))
	}
	inputs = append(inputs, nil, "x", json.Number("1"), []any{}, true, map[string]any{})
	// Generated inputs carry numbers as json.Number; round-trip them through
	// JSON so that what the test compares is exactly what the server decoded.
	inputs = decodeJSONValue(t, mustJSON(t, inputs)).([]any)

	commons := []struct {
		name   string
		common any // nil: no common_input
	}{
		{"no common_input", nil},
		{"envelope in common_input", map[string]any{
			"type": "constitutional_evaluation", "constitutional_hash": hash, "action": "data.read_public",
			"context": map[string]any{
				"environment":       map[string]any{"sandbox_enabled": true, "audit_enabled": true},
				"agent":             map[string]any{"id": "common-agent", "trust_level": json.Number("0.9")},
				"responsible_party": "batch-test",
				"explanation":       "A common explanation long enough for the rules that ask for one",
			},
		}},
	}
	for _, cm := range commons {
		t.Run(cm.name, func(t *testing.T) {
			// Chunks of 100 so that batches exercise both the parallel path and map order.
			for start := 0; start < len(inputs); start += 100 {
				chunk := inputs[start:min(start+100, len(inputs))]
				batch := make(map[string]any, len(chunk))
				for i, in := range chunk {
					batch[fmt.Sprintf("item-%04d", start+i)] = in
				}
				r := h.do(t, "POST", "/v1/batch/data/acgs/main/decision", strings.NewReader(batchBody(t, batch, cm.common, cm.common != nil)), nil)
				rs := responsesOf(t, r)
				if r.code != 200 {
					for id, v := range rs {
						if _, failed := v.(map[string]any)["code"]; failed {
							t.Errorf("%s failed: %v\ninput: %s", id, v, mustJSON(t, batch[id]))
						}
					}
					t.Fatalf("batch status %d", r.code)
				}
				if len(rs) != len(batch) {
					t.Fatalf("%d responses for %d inputs", len(rs), len(batch))
				}
				ids := map[string]bool{}
				for id, in := range batch {
					got, ok := rs[id].(map[string]any)
					if !ok {
						t.Fatalf("no response for %s", id)
					}
					did, _ := got["decision_id"].(string)
					if did == "" || ids[did] {
						t.Errorf("%s: missing or repeated decision_id %q", id, did)
					}
					ids[did] = true
					merged := in
					if cm.common != nil {
						merged = refMerge(cm.common, in)
					}
					single := h.do(t, "POST", "/v1/data/acgs/main/decision", strings.NewReader(mustJSON(t, map[string]any{"input": merged})), nil)
					if single.code != 200 {
						t.Fatalf("%s: single request status %d: %s", id, single.code, single.body)
					}
					want, wantOK := single.obj["result"]
					res, ok := got["result"]
					if ok != wantOK || !jsoneq.Equal(want, res) {
						t.Fatalf("%s: batch result differs from the single decision at %s\ninput: %s", id, jsoneq.Diff(want, res), mustJSON(t, merged))
					}
				}
			}
		})
	}
}

// acgsVolatile are the ACGS response fields that differ between two requests
// for the same decision.
var acgsVolatile = []string{"decision_id", "latency_ms", "cache_hit", "cache_tier", "partial_evaluation"}

// TestACGSBatchOrderAndIdentity: responses come in request order, a bad item
// gets the same error object a single request would get (in place), and a
// good one equals the single /v1/data/acgs/main/decision answer apart from
// the per-request fields.
func TestACGSBatchOrderAndIdentity(t *testing.T) {
	n := 300
	if testing.Short() {
		n = 100
	}
	h := mustOpenBatch(t, func(c *config.Config) { c.Server.MaxBatchItems = 1000 })
	var reqs []string
	for _, name := range []string{"safe", "complex", "dangerous", "low_trust", "data_access"} {
		reqs = append(reqs, request(t, name))
	}
	safe := request(t, "safe")
	reqs = append(reqs,
		`{"type":1,"constitutional_hash":"`+hash+`"}`,
		`{"type":"constitutional_evaluation"}`,
		strings.Replace(safe, hash, "0000000000000000", 1),
		`{"type":"x","constitutional_hash":"`+hash+`","context":[]}`,
		`{"type":"x","constitutional_hash":"`+hash+`","action":7}`,
		`{"input":`+safe+`}`,
		`5`, `"str"`, `null`, `[]`, `{}`,
		`{"type":"teleport","constitutional_hash":"`+hash+`"}`,
	)
	fixed := len(reqs)
	// Generated requests: valid envelopes, wrong hashes, missing and wrongly typed fields.
	for _, in := range inputgen.New(43).Inputs(n) {
		reqs = append(reqs, mustJSON(t, in))
	}
	// Repeat the fixed ones after the generated ones so that order errors show.
	reqs = append(reqs, reqs[:fixed]...)
	body := `{"requests":[` + strings.Join(reqs, ",") + `]}`
	r := h.do(t, "POST", "/v1/acgs/batch", strings.NewReader(body), nil)
	if r.code != 200 {
		t.Fatalf("status %d: %.500s", r.code, r.body)
	}
	rs, _ := r.obj["responses"].([]any)
	if len(rs) != len(reqs) {
		t.Fatalf("%d responses for %d requests", len(rs), len(reqs))
	}
	var good, bad int
	for i, req := range reqs {
		got, ok := rs[i].(map[string]any)
		if !ok {
			t.Fatalf("response %d is %T", i, rs[i])
		}
		single := h.do(t, "POST", "/v1/data/acgs/main/decision", strings.NewReader(req), nil)
		if single.code != 200 {
			bad++
			want := map[string]any{"code": single.obj["code"], "message": single.obj["message"]}
			if d := jsoneq.Diff(want, got); d != "" {
				t.Errorf("item %d (%.80s): error in place differs from the single request's %d error at %s: %v", i, req, single.code, d, got)
			}
			continue
		}
		if _, isOPA := single.obj["result"]; isOPA {
			// An OPA-dialect body is not an ACGS request: the batch refuses it in place.
			if got["code"] != "invalid_parameter" {
				t.Errorf("item %d (%.80s): %v", i, req, got)
			}
			bad++
			continue
		}
		good++
		if did, _ := got["decision_id"].(string); did == "" || did == single.obj["decision_id"] {
			t.Errorf("item %d: decision_id %q", i, did)
		}
		for _, f := range acgsVolatile {
			if _, ok := got[f]; !ok {
				t.Errorf("item %d: no %s", i, f)
			}
		}
		want := maps.Clone(single.obj)
		gotCmp := maps.Clone(got)
		for _, f := range acgsVolatile {
			delete(want, f)
			delete(gotCmp, f)
		}
		if d := jsoneq.Diff(want, gotCmp); d != "" {
			t.Fatalf("item %d (%.120s): batch answer differs from the single one at %s", i, req, d)
		}
	}
	if good < 10 || bad < 10 {
		t.Errorf("too one-sided a mix: %d good, %d bad", good, bad)
	}
	t.Logf("%d good and %d bad items in order", good, bad)
}

// TestDecideBatchEqualsFullEvaluation is the engine-level differential:
// DecideBatch over generated inputs, cold (plans and full evaluation), warm
// (L1), and cold again once the plans are built, equals EvaluateFull of each
// input.
func TestDecideBatchEqualsFullEvaluation(t *testing.T) {
	// Building the activation plans costs seconds of CPU: -short keeps the
	// cache and full evaluation and leaves plans to the full run.
	n, plans := 2000, true
	if testing.Short() {
		n, plans = 500, false
	}
	cfg := config.Default()
	c, err := cache.New(context.Background(), cache.Config{L1Size: 4 * n, TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	e, err := engine.New(context.Background(), engine.FSSource{FS: policies.FS, Name: "embedded"}, engine.Options{
		ConstitutionalHash: hash, EvalTimeout: 10 * time.Second, Cache: c,
		PartialEval: plans, PartialEvalKeys: cfg.Policy.PartialEvalKeys, PlanCacheSize: 1024,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const path = "acgs/main/decision"
	var inputs []any
	for _, in := range inputgen.New(47).Inputs(n) {
		inputs = append(inputs, in)
	}
	inputs = append(inputs, nil, "x", json.Number("1"), []any{}, true, map[string]any{})
	want := make([]engine.Decision, len(inputs))
	for i, in := range inputs {
		d, err := e.EvaluateFull(ctx, path, in)
		if err != nil {
			t.Fatalf("input %d: %v", i, err)
		}
		want[i] = d
	}
	check := func(stage string, batch int) map[engine.Source]int {
		counts := map[engine.Source]int{}
		for start := 0; start < len(inputs); start += batch {
			chunk := inputs[start:min(start+batch, len(inputs))]
			ds, errs := e.DecideBatch(ctx, path, chunk)
			if len(ds) != len(chunk) || len(errs) != len(chunk) {
				t.Fatalf("%s: %d decisions and %d errors for %d inputs", stage, len(ds), len(errs), len(chunk))
			}
			for j, d := range ds {
				i := start + j
				if errs[j] != nil {
					t.Fatalf("%s: input %d: %v", stage, i, errs[j])
				}
				counts[d.Source]++
				if d.Defined != want[i].Defined || !jsoneq.Equal(d.Result, want[i].Result) {
					t.Fatalf("%s: input %d via %v differs from full evaluation at %s\ninput: %s", stage, i, d.Source, jsoneq.Diff(want[i].Result, d.Result), mustJSON(t, inputs[i]))
				}
			}
		}
		t.Logf("%s: %v", stage, counts)
		return counts
	}
	check("cold", 100)
	warm := check("warm", 250)
	if warm[engine.SourceL1] != len(inputs) {
		t.Errorf("warm pass: %d of %d from L1", warm[engine.SourceL1], len(inputs))
	}
	if plans {
		// Cold again with the plans built by now: constants answer more.
		c.Purge()
		check("cold with plans", 100)
	}
	// One batch holding every input, in reverse order: positions must still line up.
	rev := slices.Clone(inputs)
	slices.Reverse(rev)
	ds, errs := e.DecideBatch(ctx, path, rev)
	for j, d := range ds {
		i := len(inputs) - 1 - j
		if errs[j] != nil || !jsoneq.Equal(d.Result, want[i].Result) {
			t.Fatalf("reversed: position %d (input %d) differs: %v", j, i, errs[j])
		}
	}
}
