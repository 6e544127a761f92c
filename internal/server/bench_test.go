package server_test

import (
	"net/http/httptest"
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
	}
}
