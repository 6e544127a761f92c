package server_test

import (
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// BenchmarkHandler measures one request through the real handler with a
// warm L1 (decode, key, lookup, encode), without the network.
func BenchmarkHandler(b *testing.B) {
	h := mustOpen(b)
	for _, name := range []string{"safe", "dangerous"} {
		body := request(b, name)
		b.Run("acgs/"+name, func(b *testing.B) {
			h.do(b, "POST", "/v1/data/acgs/main/decision", strings.NewReader(body), nil)
			b.ReportAllocs()
			for b.Loop() {
				r := httptest.NewRequest("POST", "/v1/data/acgs/main/decision", strings.NewReader(body))
				w := httptest.NewRecorder()
				h.srv.ServeHTTP(w, r)
				if w.Code != 200 {
					b.Fatal(w.Code)
				}
			}
		})
		b.Run("opa/"+name, func(b *testing.B) {
			ob := `{"input":` + body + `}`
			b.ReportAllocs()
			for b.Loop() {
				r := httptest.NewRequest("POST", "/v1/data/acgs/main/decision", strings.NewReader(ob))
				w := httptest.NewRecorder()
				h.srv.ServeHTTP(w, r)
			}
		})
		// OPA's GET with ?input=: a query string, so no raw-body tier;
		// decoded, keyed and answered from L1.
		b.Run("opa-get/"+name, func(b *testing.B) {
			target := "/v1/data/acgs/main/decision?input=" + url.QueryEscape(body)
			h.do(b, "GET", target, nil, nil)
			b.ReportAllocs()
			for b.Loop() {
				r := httptest.NewRequest("GET", target, nil)
				w := httptest.NewRecorder()
				h.srv.ServeHTTP(w, r)
				if w.Code != 200 {
					b.Fatal(w.Code)
				}
			}
		})
	}
}
