package server_test

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
)

// FuzzDecisionRequest throws arbitrary bodies at the decision endpoint in
// both dialects: the answer must be a JSON document with a status below 500,
// whatever the bytes.
func FuzzDecisionRequest(f *testing.F) {
	for _, name := range []string{"safe", "complex", "dangerous", "low_trust", "data_access"} {
		b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "requests", name+".json"))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, false)
		f.Add(append(append([]byte(`{"input":`), b...), '}'), false)
	}
	for _, s := range []string{``, `{`, `[]`, `null`, `{"input":null}`, `{"type":1}`, "{\"type\":\"\xff\"}", `{"a":1}{"b":2}`, `[[[[[[[[]]]]]]]]`, `{"type":"x","constitutional_hash":"cdd01ef066bc6cf2","context":"s"}`, `1e999999`, `"\ud800"`} {
		f.Add([]byte(s), false)
	}
	f.Add([]byte{0x1f, 0x8b, 0x08, 0x00}, true)
	h := mustOpen(f)
	f.Fuzz(func(t *testing.T, body []byte, gzipped bool) {
		r := httptest.NewRequest("POST", "/v1/data/acgs/main/decision", bytes.NewReader(body))
		if gzipped {
			r.Header.Set("Content-Encoding", "gzip")
		}
		w := httptest.NewRecorder()
		h.srv.ServeHTTP(w, r)
		if w.Code >= 500 {
			t.Fatalf("status %d for %q: %s", w.Code, body, w.Body.Bytes())
		}
		if !json.Valid(w.Body.Bytes()) {
			t.Fatalf("response is not JSON for %q: %q", body, w.Body.Bytes())
		}
	})
}
