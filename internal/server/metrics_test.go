package server_test

import (
	"encoding/json"
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
