package server_test

import (
	"encoding/json"
	"io"
	"strings"
	"testing"
)

// TestMetricsLikeOPA: ?metrics gives OPA's keys on every path, the two it
// left out included: timer_rego_input_parse_ns (reading and decoding the
// input) and counter_server_query_cache_hit, 1 when no query had to be
// prepared for the decision (the path's query was prepared before, as
// OPA's prepared-query cache hit, or a cache answered) and 0 on a path's
// first request. The rows run in order: each path's first request
// prepares its query.
func TestMetricsLikeOPA(t *testing.T) {
	h := mustOpen(t)
	withTestPolicy(t, h)
	for _, tc := range []struct {
		name, method, path, body string
		hit                      int64
	}{
		{"first request of a path", "POST", "/v1/data/t/echo?metrics", `{"input":{"n":1}}`, 0},
		{"prepared before", "POST", "/v1/data/t/echo?metrics", `{"input":{"n":2}}`, 1},
		{"cached", "POST", "/v1/data/t/echo?metrics", `{"input":{"n":2}}`, 1},
		{"GET, first", "GET", "/v1/data/t/arr/0?metrics&input=%7B%7D", "", 0},
		{"GET, prepared", "GET", "/v1/data/t/arr/0?metrics&input=%7B%22a%22%3A1%7D", "", 1},
		{"no input, first", "POST", "/v1/data/t/obj?metrics", ``, 0},
		{"entry point, prepared at activation", "POST", "/v1/data/acgs/main/allow?metrics", `{"input":{"type":"x"}}`, 1},
		{"the decision route's OPA dialect", "POST", "/v1/data/acgs/main/decision?metrics", `{"input":{"type":"y"}}`, 1},
		// An inspection has a query of its own, prepared on its first use.
		{"instrumented, first", "POST", "/v1/data/t/echo?instrument", `{"input":{"n":3}}`, 0},
		{"instrumented, prepared", "POST", "/v1/data/t/echo?instrument&metrics", `{"input":{"n":4}}`, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := h.do(t, tc.method, tc.path, strings.NewReader(tc.body), nil)
			m, _ := r.obj["metrics"].(map[string]any)
			if r.code != 200 || m == nil {
				t.Fatalf("status %d: %s", r.code, r.body)
			}
			for _, k := range []string{"timer_server_handler_ns", "timer_rego_query_eval_ns", "timer_rego_input_parse_ns", "counter_server_query_cache_hit"} {
				if _, ok := m[k].(json.Number); !ok {
					t.Errorf("no %s in %s", k, r.body)
				}
			}
			parse, _ := m["timer_rego_input_parse_ns"].(json.Number).Int64()
			handler, _ := m["timer_server_handler_ns"].(json.Number).Int64()
			if parse <= 0 || parse > handler {
				t.Errorf("timer_rego_input_parse_ns %d, handler %d", parse, handler)
			}
			if hit, _ := m["counter_server_query_cache_hit"].(json.Number).Int64(); hit != tc.hit {
				t.Errorf("counter_server_query_cache_hit %d, want %d", hit, tc.hit)
			}
		})
	}
}

// TestWindowCountsFailedAndEmptyRequests: /v1/metrics' window counts a
// failed evaluation in either dialect as a decision (the ACGS dialect and
// batch items did; OPA's single requests were left out, so timeouts, the
// slowest answers, vanished from the percentiles), and an empty batch as a
// batch, not as an uncached decision.
func TestWindowCountsFailedAndEmptyRequests(t *testing.T) {
	conflict := `{"input":{"a":true,"b":true}}`
	rows := []struct {
		name, method, path, body string
		code                     int
		requests, batches        float64
	}{
		{"v1 evaluation error", "POST", "/v1/data/t/x", conflict, 500, 1, 0},
		{"v0 evaluation error", "POST", "/v0/data/t/x", `{"a":true,"b":true}`, 500, 1, 0},
		{"GET evaluation error", "GET", "/v1/data/t/x?input=%7B%22a%22:true,%22b%22:true%7D", "", 500, 1, 0},
		{"empty ACGS batch", "POST", "/v1/acgs/batch", `{"requests":[]}`, 200, 0, 1},
		{"empty OPA batch", "POST", "/v1/batch/data/t/x", `{"inputs":{}}`, 200, 0, 1},
	}
	for _, c := range rows {
		t.Run(c.name, func(t *testing.T) {
			h := mustOpenBatch(t)
			withTestPolicy(t, h)
			var body io.Reader
			if c.body != "" {
				body = strings.NewReader(c.body)
			}
			if r := h.do(t, c.method, c.path, body, nil); r.code != c.code {
				t.Fatalf("%s %s: %d %s", c.method, c.path, r.code, r.body)
			}
			m := h.do(t, "GET", "/v1/metrics", nil, nil)
			if got := num(t, m.obj["request_count"]); got != c.requests {
				t.Errorf("request_count %v, want %v: %s", got, c.requests, m.body)
			}
			bs, _ := m.obj["batch_stats"].(map[string]any)
			if got := num(t, bs["batch_count"]); got != c.batches {
				t.Errorf("batch_count %v, want %v: %s", got, c.batches, m.body)
			}
		})
	}
}

func num(tb testing.TB, v any) float64 {
	tb.Helper()
	n, ok := v.(json.Number)
	if !ok {
		tb.Fatalf("%v (%T) is not a number", v, v)
	}
	f, err := n.Float64()
	if err != nil {
		tb.Fatal(err)
	}
	return f
}
