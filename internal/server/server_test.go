package server_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/bundle"

	"github.com/acgs-lite/acgs/internal/cache"
	"github.com/acgs-lite/acgs/internal/config"
	"github.com/acgs-lite/acgs/internal/engine"
	"github.com/acgs-lite/acgs/internal/server"
	"github.com/acgs-lite/acgs/internal/telemetry"
	"github.com/acgs-lite/acgs/policies"
)

const (
	hash       = "cdd01ef066bc6cf2"
	adminToken = "test-admin-token-0123456789"
)

type harness struct {
	srv   *server.Server
	eng   *engine.Engine
	cache *cache.Tiered
}

// mustOpen builds the real server on the embedded constitution with an L1 cache.
func mustOpen(tb testing.TB, mutate ...func(*config.Config)) *harness {
	tb.Helper()
	cfg := config.Default()
	cfg.AdminTok = []string{adminToken}
	cfg.Server.MaxBatchItems = 50
	for _, m := range mutate {
		m(&cfg)
	}
	c, err := cache.New(context.Background(), cache.Config{L1Size: 1000, TTL: time.Minute})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	e, err := engine.New(context.Background(), engine.FSSource{FS: policies.FS, Name: "embedded"}, engine.Options{
		ConstitutionalHash: cfg.Policy.ConstitutionalHash, EvalTimeout: time.Second, Cache: c,
	})
	if err != nil {
		tb.Fatal(err)
	}
	var dlog *telemetry.DecisionLog
	if cfg.Log.DecisionLog != "off" {
		if dlog, err = telemetry.NewDecisionLog(telemetry.DecisionLogConfig{Sink: cfg.Log.DecisionLog}); err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { _ = dlog.Close(context.Background()) })
	}
	s, err := server.New(server.Deps{
		Config: cfg, Engine: e, Cache: c, Metrics: telemetry.NewMetrics(telemetry.BuildInfo{}),
		Window: telemetry.NewWindow(time.Minute), DecisionLog: dlog,
		Reload: func(ctx context.Context) error {
			return e.Activate(ctx, mustBundle(tb), "reload")
		},
	})
	if err != nil {
		tb.Fatal(err)
	}
	return &harness{srv: s, eng: e, cache: c}
}

func mustBundle(tb testing.TB) *bundle.Bundle {
	b, err := engine.FSSource{FS: policies.FS, Name: "embedded"}.Load(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func request(tb testing.TB, name string) string {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "requests", name+".json"))
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

type resp struct {
	code int
	hdr  http.Header
	body []byte
	obj  map[string]any
}

func (h *harness) do(tb testing.TB, method, path string, body io.Reader, hdr map[string]string) resp {
	tb.Helper()
	r := httptest.NewRequest(method, path, body)
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.srv.ServeHTTP(w, r)
	out := resp{code: w.Code, hdr: w.Header(), body: w.Body.Bytes()}
	dec := json.NewDecoder(bytes.NewReader(out.body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err == nil {
		out.obj, _ = v.(map[string]any)
	}
	return out
}

func gz(s string) io.Reader {
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	_, _ = w.Write([]byte(s))
	_ = w.Close()
	return &b
}

func gzipBomb(n int) io.Reader {
	var b bytes.Buffer
	w, _ := gzip.NewWriterLevel(&b, gzip.BestCompression)
	_, _ = w.Write([]byte(`{"input":"`))
	chunk := bytes.Repeat([]byte("a"), 1<<16)
	for written := 0; written < n; written += len(chunk) {
		_, _ = w.Write(chunk)
	}
	_, _ = w.Write([]byte(`"}`))
	_ = w.Close()
	return &b
}

func TestEndpoints(t *testing.T) {
	h := mustOpen(t)
	auth := map[string]string{"Authorization": "Bearer " + adminToken}
	safe, dangerous, complexReq := request(t, "safe"), request(t, "dangerous"), request(t, "complex")
	deep := strings.Repeat("[", 100) + strings.Repeat("]", 100)
	big := `{"input":"` + strings.Repeat("x", 2<<20) + `"}`
	type row struct {
		name, method, path string
		body               io.Reader
		hdr                map[string]string
		code               int
		errCode            string
		check              func(t *testing.T, r resp)
	}
	str := strings.NewReader
	rows := []row{
		{"acgs safe allows", "POST", "/v1/data/acgs/main/decision", str(safe), nil, 200, "", func(t *testing.T, r resp) {
			if r.obj["allow"] != true || r.obj["compliance_score"].(json.Number).String() != "0.96" {
				t.Errorf("got %s", r.body)
			}
			for _, f := range []string{"decision_id", "policy_revision", "cache_hit", "cache_tier", "partial_evaluation", "latency_ms", "reasons", "evaluation_details", "constitutional_hash"} {
				if _, ok := r.obj[f]; !ok {
					t.Errorf("missing %s in %s", f, r.body)
				}
			}
		}},
		{"acgs complex allows", "POST", "/v1/data/acgs/main/decision", str(complexReq), nil, 200, "", func(t *testing.T, r resp) {
			if r.obj["allow"] != true {
				t.Errorf("got %s", r.body)
			}
		}},
		{"acgs dangerous denies", "POST", "/v1/data/acgs/main/decision", str(dangerous), nil, 200, "", func(t *testing.T, r resp) {
			reasons, _ := r.obj["reasons"].([]any)
			if r.obj["allow"] != false || len(reasons) == 0 || !strings.Contains(reasons[0].(string), "prohibited") {
				t.Errorf("got %s", r.body)
			}
		}},
		{"opa dialect same decision", "POST", "/v1/data/acgs/main/decision", str(`{"input":` + safe + `}`), nil, 200, "", func(t *testing.T, r resp) {
			res, _ := r.obj["result"].(map[string]any)
			if res["allow"] != true || r.obj["decision_id"] == nil {
				t.Errorf("got %s", r.body)
			}
		}},
		{"gzip body", "POST", "/v1/data/acgs/main/decision", gz(safe), map[string]string{"Content-Encoding": "gzip"}, 200, "", nil},
		{"wrong hash", "POST", "/v1/data/acgs/main/decision", str(strings.Replace(safe, hash, "0000000000000000", 1)), nil, 400, "constitutional_hash_mismatch", func(t *testing.T, r resp) {
			if r.obj["message"] != "Invalid constitutional hash. Expected: "+hash {
				t.Errorf("message %v", r.obj["message"])
			}
		}},
		{"missing type", "POST", "/v1/data/acgs/main/decision", str(`{"constitutional_hash":"` + hash + `"}`), nil, 400, "invalid_parameter", msgHas("type")},
		{"type not a string", "POST", "/v1/data/acgs/main/decision", str(`{"type":1,"constitutional_hash":"` + hash + `"}`), nil, 400, "invalid_parameter", msgHas("type")},
		{"missing hash", "POST", "/v1/data/acgs/main/decision", str(`{"type":"data_access"}`), nil, 400, "invalid_parameter", msgHas("constitutional_hash")},
		{"context not an object", "POST", "/v1/data/acgs/main/decision", str(`{"type":"x","constitutional_hash":"` + hash + `","context":[]}`), nil, 400, "invalid_parameter", msgHas("context")},
		{"unknown type denies", "POST", "/v1/data/acgs/main/decision", str(`{"type":"teleport","constitutional_hash":"` + hash + `"}`), nil, 200, "", func(t *testing.T, r resp) {
			if r.obj["allow"] != false || !strings.Contains(string(r.body), "Unknown request type: teleport") {
				t.Errorf("got %s", r.body)
			}
		}},
		{"malformed json", "POST", "/v1/data/acgs/main/decision", str(`{"type":`), nil, 400, "invalid_parameter", msgHas("JSON")},
		{"trailing data", "POST", "/v1/data/acgs/main/decision", str(safe + ` {}`), nil, 400, "invalid_parameter", msgHas("after the JSON value")},
		{"empty body", "POST", "/v1/data/acgs/main/decision", str(""), nil, 400, "invalid_parameter", msgHas("empty")},
		{"array body", "POST", "/v1/data/acgs/main/decision", str(`[1]`), nil, 400, "invalid_parameter", msgHas("object")},
		{"deep nesting", "POST", "/v1/data/acgs/main/decision", str(deep), nil, 400, "invalid_parameter", msgHas("MAX_REQUEST_DEPTH")},
		{"oversize", "POST", "/v1/data/acgs/main/decision", str(big), nil, 413, "request_too_large", msgHas("MAX_REQUEST_BYTES")},
		{"gzip bomb", "POST", "/v1/data/acgs/main/decision", gzipBomb(64 << 20), map[string]string{"Content-Encoding": "gzip"}, 413, "request_too_large", nil},
		{"corrupt gzip", "POST", "/v1/data/acgs/main/decision", str("not gzip"), map[string]string{"Content-Encoding": "gzip"}, 400, "invalid_parameter", msgHas("gzip")},
		{"unknown encoding", "POST", "/v1/data/acgs/main/decision", str(safe), map[string]string{"Content-Encoding": "br"}, 415, "unsupported_media_type", nil},
		{"xml content type", "POST", "/v1/data/acgs/main/decision", str(safe), map[string]string{"Content-Type": "application/xml"}, 415, "unsupported_media_type", nil},
		{"invalid utf-8", "POST", "/v1/data/acgs/main/decision", str("{\"type\":\"\xff\",\"constitutional_hash\":\"" + hash + "\"}"), nil, 400, "invalid_parameter", msgHas("UTF-8")},
		{"wrong method", "PUT", "/v1/data/acgs/main/decision", str(safe), nil, 405, "method_not_allowed", nil},
		{"unknown path", "GET", "/nope", nil, nil, 404, "resource_not_found", nil},
		{"acgs allow get", "GET", "/v1/data/acgs/main/allow?type=constitutional_evaluation&constitutional_hash=" + hash + "&action=data.read_public", nil, nil, 200, "", func(t *testing.T, r resp) {
			if _, ok := r.obj["allow"].(bool); !ok {
				t.Errorf("got %s", r.body)
			}
		}},
		{"acgs allow wrong hash", "GET", "/v1/data/acgs/main/allow?type=constitutional_evaluation&constitutional_hash=bad", nil, nil, 200, "", func(t *testing.T, r resp) {
			if r.obj["allow"] != false {
				t.Errorf("got %s", r.body)
			}
		}},
		{"acgs health", "GET", "/v1/data/acgs/main/health", nil, nil, 200, "", func(t *testing.T, r resp) {
			if r.obj["status"] != "healthy" || r.obj["performance"] == nil || r.obj["cache_stats"] == nil || r.obj["policy_revision"] != "constitution-1.0.0" {
				t.Errorf("got %s", r.body)
			}
		}},
		{"metrics json", "GET", "/v1/metrics", nil, nil, 200, "", func(t *testing.T, r resp) {
			for _, f := range []string{"request_count", "avg_latency_ms", "percentiles", "cache_hit_rate", "l1_hit_rate", "l2_hit_rate", "partial_eval_rate", "batch_stats", "targets_met"} {
				if _, ok := r.obj[f]; !ok {
					t.Errorf("missing %s in %s", f, r.body)
				}
			}
		}},
		{"metrics prometheus via v1", "GET", "/v1/metrics?format=prometheus", nil, nil, 200, "", func(t *testing.T, r resp) {
			if !strings.Contains(string(r.body), "acgs_http_requests_total") {
				t.Errorf("no acgs metrics in exposition")
			}
		}},
		{"prometheus", "GET", "/metrics", nil, nil, 200, "", nil},
		{"cache warm", "POST", "/v1/cache/warm", nil, nil, 200, "", func(t *testing.T, r resp) {
			if r.obj["warmed_scenarios"] == nil || r.obj["warmed_scenarios"].(json.Number).String() != r.obj["total_scenarios"].(json.Number).String() {
				t.Errorf("got %s", r.body)
			}
		}},
		{"opa get with input", "GET", "/v1/data/acgs/main/allow?input=" + urlq(`{"type":"x"}`), nil, nil, 200, "", func(t *testing.T, r resp) {
			if r.obj["result"] != false {
				t.Errorf("got %s", r.body)
			}
		}},
		{"opa get bad input", "GET", "/v1/data/acgs/main/allow?input=" + urlq(`{`), nil, nil, 400, "invalid_parameter", nil},
		{"opa missing input warns", "POST", "/v1/data/acgs/main/allow", str(`{}`), nil, 200, "", func(t *testing.T, r resp) {
			w, _ := r.obj["warning"].(map[string]any)
			if w["code"] != "api_usage_warning" || w["message"] != "'input' key missing from the request" {
				t.Errorf("got %s", r.body)
			}
		}},
		{"opa undefined", "POST", "/v1/data/acgs/nothing/here", str(`{"input":{}}`), nil, 200, "", func(t *testing.T, r resp) {
			if _, ok := r.obj["result"]; ok {
				t.Errorf("got %s", r.body)
			}
		}},
		{"opa metrics and provenance", "POST", "/v1/data/acgs/main/decision?metrics&provenance", str(`{"input":` + safe + `}`), nil, 200, "", func(t *testing.T, r resp) {
			m, _ := r.obj["metrics"].(map[string]any)
			if m["timer_server_handler_ns"] == nil || m["timer_rego_query_eval_ns"] == nil || r.obj["provenance"] == nil {
				t.Errorf("got %s", r.body)
			}
		}},
		{"opa flags set to false", "POST", "/v1/data/acgs/main/decision?pretty=false&metrics=false&provenance=FALSE", str(`{"input":` + safe + `}`), nil, 200, "", func(t *testing.T, r resp) {
			if r.obj["metrics"] != nil || r.obj["provenance"] != nil || bytes.Contains(r.body, []byte("\n  ")) {
				t.Errorf("?x=false read as set (OPA reads only an empty value or true): %s", r.body)
			}
		}},
		{"opa flags set to true", "POST", "/v1/data/acgs/main/decision?pretty=TRUE&metrics=true", str(`{"input":` + safe + `}`), nil, 200, "", func(t *testing.T, r resp) {
			if r.obj["metrics"] == nil || !bytes.Contains(r.body, []byte("\n  ")) {
				t.Errorf("?x=true not read as set: %s", r.body)
			}
		}},
		{"opa get without input does not warn", "GET", "/v1/data/acgs/main/decision", nil, nil, 200, "", func(t *testing.T, r resp) {
			if r.obj["warning"] != nil || r.obj["result"] == nil {
				t.Errorf("OPA warns of a missing input only on POST: %s", r.body)
			}
		}},
		{"opa empty segment", "POST", "/v1/data/acgs//main", str(`{"input":{}}`), nil, 307, "", func(t *testing.T, r resp) {
			if l := r.hdr.Get("Location"); l != "/v1/data/acgs/main" {
				t.Errorf("Location %q: OPA's router redirects to the clean path", l)
			}
		}},
		{"opa function path", "POST", "/v1/data/acgs/main/truncate", str(`{"input":{}}`), nil, 400, "invalid_parameter", msgHas("cannot be queried")},
		{"opa get function path", "GET", "/v1/data/acgs/main/truncate", nil, nil, 400, "invalid_parameter", msgHas("cannot be queried")},
		{"v0 function path", "POST", "/v0/data/acgs/data/within_clearance", str(`{}`), nil, 400, "invalid_parameter", msgHas("cannot be queried")},
		{"batch function path", "POST", "/v1/batch/data/acgs/main/truncate", str(`{"inputs":{"a":{},"b":{}}}`), nil, 400, "invalid_parameter", msgHas("cannot be queried")},
		{"v0 data", "POST", "/v0/data/acgs/main/decision", str(safe), nil, 200, "", func(t *testing.T, r resp) {
			if r.obj["allow"] != true {
				t.Errorf("got %s", r.body)
			}
		}},
		{"v0 undefined", "POST", "/v0/data/acgs/none", str(`{}`), nil, 404, "undefined_document", nil},
		{"default decision", "POST", "/", str(dangerous), nil, 200, "", func(t *testing.T, r resp) {
			if r.obj["allow"] != false {
				t.Errorf("got %s", r.body)
			}
		}},
		{"health", "GET", "/health", nil, nil, 200, "", nil},
		{"health live", "GET", "/health/live", nil, nil, 200, "", nil},
		{"health ready", "GET", "/health/ready", nil, nil, 200, "", nil},
		{"policies", "GET", "/v1/policies", nil, nil, 200, "", func(t *testing.T, r resp) {
			if list, _ := r.obj["result"].([]any); len(list) == 0 {
				t.Errorf("no policies")
			}
		}},
		{"policy by id", "GET", "/v1/policies/acgs/main.rego", nil, nil, 200, "", nil},
		{"policy missing", "GET", "/v1/policies/nope.rego", nil, nil, 404, "resource_not_found", nil},
		{"policies read-only", "PUT", "/v1/policies/x", str("package x"), nil, 405, "method_not_allowed", nil},
		{"batch mixed", "POST", "/v1/batch/data/acgs/main/decision", str(`{"inputs":{"a":` + safe + `,"b":` + dangerous + `}}`), nil, 200, "", func(t *testing.T, r resp) {
			rs, _ := r.obj["responses"].(map[string]any)
			if len(rs) != 2 || r.obj["batch_decision_id"] == nil {
				t.Errorf("got %s", r.body)
			}
		}},
		{"batch malformed", "POST", "/v1/batch/data/acgs/main/decision", str(`{"inputs":[1]}`), nil, 400, "invalid_parameter", nil},
		{"batch unknown field", "POST", "/v1/batch/data/acgs/main/decision", str(`{"inputs":{},"x":1}`), nil, 200, "", nil}, // ignored, as by Enterprise OPA
		{"batch too many", "POST", "/v1/batch/data/acgs/main/decision", str(manyInputs(51)), nil, 413, "request_too_large", msgHas("MAX_BATCH_ITEMS")},
		{"acgs batch", "POST", "/v1/acgs/batch", str(`{"requests":[` + safe + `,{"type":1},` + dangerous + `]}`), nil, 200, "", func(t *testing.T, r resp) {
			rs, _ := r.obj["responses"].([]any)
			if len(rs) != 3 || rs[0].(map[string]any)["allow"] != true || rs[1].(map[string]any)["code"] != "invalid_parameter" || rs[2].(map[string]any)["allow"] != false {
				t.Errorf("got %s", r.body)
			}
		}},
		{"acgs batch not array", "POST", "/v1/acgs/batch", str(`{"requests":{}}`), nil, 400, "invalid_parameter", nil},
		{"admin reload no token", "POST", "/v1/admin/reload", nil, nil, 401, "unauthorized", nil},
		{"admin reload wrong token", "POST", "/v1/admin/reload", nil, map[string]string{"Authorization": "Bearer wrong"}, 401, "unauthorized", nil},
		{"admin reload", "POST", "/v1/admin/reload", nil, auth, 200, "", nil},
		{"cache flush", "DELETE", "/v1/cache", nil, auth, 200, "", nil},
		{"cache flush no token", "DELETE", "/v1/cache", nil, nil, 401, "unauthorized", nil},
		{"pprof needs token", "GET", "/debug/pprof/", nil, nil, 401, "unauthorized", nil},
		{"pprof with token", "GET", "/debug/pprof/", nil, auth, 200, "", nil},
	}
	for _, tc := range rows {
		t.Run(tc.name, func(t *testing.T) {
			r := h.do(t, tc.method, tc.path, tc.body, tc.hdr)
			if r.code != tc.code {
				t.Fatalf("status %d, want %d: %s", r.code, tc.code, r.body)
			}
			if r.hdr.Get("X-Constitutional-Hash") != hash {
				t.Errorf("missing X-Constitutional-Hash")
			}
			if r.code >= 500 {
				t.Errorf("5xx for %s", tc.name)
			}
			if tc.errCode != "" && r.obj["code"] != tc.errCode {
				t.Errorf("code %v, want %s: %s", r.obj["code"], tc.errCode, r.body)
			}
			if tc.check != nil {
				tc.check(t, r)
			}
		})
	}
}

func TestAdminEndpointsAbsentWithoutToken(t *testing.T) {
	h := mustOpen(t, func(c *config.Config) { c.AdminTok = nil })
	// Whatever the method or spelling: a 405 naming the method an admin
	// endpoint takes, or a redirect to its clean path, would tell that
	// it exists.
	for _, p := range [][2]string{
		{"POST", "/v1/admin/reload"}, {"DELETE", "/v1/cache"}, {"GET", "/debug/pprof/"},
		{"GET", "/v1/admin/reload"}, {"POST", "/v1/admin/reload/"}, {"GET", "/v1/cache"},
		{"PUT", "/debug/pprof/heap"}, {"GET", "/v1/cache?x=%ZZ"},
	} {
		r := h.do(t, p[0], p[1], nil, map[string]string{"Authorization": "Bearer x"})
		if r.code != 404 || r.obj["code"] != "resource_not_found" || r.hdr.Get("Allow") != "" || r.hdr.Get("Location") != "" {
			t.Errorf("%s %s: %d Allow=%q Location=%q %s", p[0], p[1], r.code, r.hdr.Get("Allow"), r.hdr.Get("Location"), r.body)
		}
	}
}

func TestCacheFieldsAreTrue(t *testing.T) {
	h := mustOpen(t)
	safe := request(t, "safe")
	first := h.do(t, "POST", "/v1/data/acgs/main/decision", strings.NewReader(safe), nil)
	second := h.do(t, "POST", "/v1/data/acgs/main/decision", strings.NewReader(safe), nil)
	if first.obj["cache_hit"] != false || first.obj["cache_tier"] != "none" {
		t.Errorf("first: %s", first.body)
	}
	if second.obj["cache_hit"] != true || second.obj["cache_tier"] != "l1" {
		t.Errorf("second: %s", second.body)
	}
	if first.obj["decision_id"] == second.obj["decision_id"] {
		t.Errorf("decision ids repeat")
	}
}

func manyInputs(n int) string {
	var b strings.Builder
	b.WriteString(`{"inputs":{`)
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`"` + string(rune('a'+i%26)) + strings.Repeat("x", i/26) + `":{}`)
	}
	b.WriteString(`}}`)
	return b.String()
}

func msgHas(s string) func(t *testing.T, r resp) {
	return func(t *testing.T, r resp) {
		if m, _ := r.obj["message"].(string); !strings.Contains(m, s) {
			t.Errorf("message %q does not name %q", m, s)
		}
	}
}

func urlq(s string) string {
	r := strings.NewReplacer("{", "%7B", "}", "%7D", `"`, "%22", ":", "%3A", ",", "%2C", " ", "%20")
	return r.Replace(s)
}
