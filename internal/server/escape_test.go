package server_test

import (
	"strings"
	"testing"

	"github.com/acgs-lite/acgs/internal/config"
)

// TestHTMLEscapedOnEveryPath: every answer HTML-escapes its strings as
// OPA's server does (encoding/json's default: <a&b> is
// \u003ca\u0026b\u003e), whichever path wrote it. Answers from the
// decisions' cached JSON were escaped and those encoded by writeJSON
// (?pretty, ?metrics, v0, POST /, an uncached result, errors) were not.
func TestHTMLEscapedOnEveryPath(t *testing.T) {
	h := mustOpen(t, func(c *config.Config) { c.Policy.DefaultDecision = "t/echo" })
	withTestPolicy(t, h)
	const in = `{"s":"<a&b>"}`
	const escaped = `\u003ca\u0026b\u003e`
	for _, tc := range []struct {
		name, method, path, body string
	}{
		{"evaluated", "POST", "/v1/data/t/echo", `{"input":` + in + `}`},
		{"cached", "POST", "/v1/data/t/echo", `{"input":` + in + `}`},
		{"pretty", "POST", "/v1/data/t/echo?pretty", `{"input":` + in + `}`},
		{"metrics", "POST", "/v1/data/t/echo?metrics", `{"input":` + in + `}`},
		{"provenance", "POST", "/v1/data/t/echo?provenance", `{"input":` + in + `}`},
		{"explain", "POST", "/v1/data/t/echo?explain=notes", `{"input":` + in + `}`},
		{"GET input", "GET", "/v1/data/t/echo?input=%7B%22s%22%3A%22%3Ca%26b%3E%22%7D", ""},
		{"v0", "POST", "/v0/data/t/echo", in},
		{"v0 pretty", "POST", "/v0/data/t/echo?pretty", in},
		{"default decision", "POST", "/", in},
		{"batch", "POST", "/v1/batch/data/t/echo", `{"inputs":{"<id>":` + in + `}}`},
		{"batch pretty", "POST", "/v1/batch/data/t/echo?pretty", `{"inputs":{"<id>":` + in + `}}`},
		{"error", "POST", "/v1/data/t/echo", `<a&b>`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := h.do(t, tc.method, tc.path, strings.NewReader(tc.body), nil)
			if r.code >= 500 {
				t.Fatalf("status %d: %s", r.code, r.body)
			}
			if strings.ContainsAny(string(r.body), "<&>") {
				t.Fatalf("not HTML-escaped: %s", r.body)
			}
			if !strings.Contains(tc.name, "error") && !strings.Contains(string(r.body), escaped) {
				t.Fatalf("no %s in %s", escaped, r.body)
			}
		})
	}
}
