package server

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
)

// checkWriteBatch fails unless writeBatch writes exactly what writeJSON
// writes for the same batch as a map of raw items.
func checkWriteBatch(t *testing.T, batchID string, ids []string, items [][]byte) {
	t.Helper()
	responses := make(map[string]json.RawMessage, len(ids))
	for i, id := range ids {
		responses[id] = items[i]
	}
	want := httptest.NewRecorder()
	writeJSON(want, http.StatusMultiStatus, map[string]any{"batch_decision_id": batchID, "responses": responses}, false)
	got := httptest.NewRecorder()
	writeBatch(got, http.StatusMultiStatus, batchID, ids, items)
	if got.Code != want.Code || got.Header().Get("Content-Type") != want.Header().Get("Content-Type") || !bytes.Equal(got.Body.Bytes(), want.Body.Bytes()) {
		t.Errorf("writeBatch wrote %d %q\n%s\nwriteJSON wrote %d %q\n%s", got.Code, got.Header().Get("Content-Type"), got.Body.Bytes(),
			want.Code, want.Header().Get("Content-Type"), want.Body.Bytes())
	}
}

// TestWriteBatchMatchesEncoder pins the hand-written batch envelope to
// encoding/json's output byte for byte: key order, string escapes (no HTML
// escaping, U+2028, invalid UTF-8, control characters) and the final newline.
func TestWriteBatchMatchesEncoder(t *testing.T) {
	item := []byte(`{"decision_id":"d1","result":{"allow":true,"reasons":[]}}`)
	for _, tc := range []struct {
		name string
		ids  []string
	}{
		{"none", nil},
		{"one", []string{"a"}},
		{"sorted as bytes", []string{"b", "a", "B", "10", "9", "é", "z"}},
		{"escapes", []string{`q"uote`, `back\slash`, "tab\tnew\nline", "<html>&", "\u2028\u2029", "\x00\x1f\x7f", "bad\xffutf8", "emoji 🙂"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			items := make([][]byte, len(tc.ids))
			for i := range items {
				items[i] = item
			}
			checkWriteBatch(t, "batch-<1>", tc.ids, items)
		})
	}
}

func FuzzWriteBatch(f *testing.F) {
	for _, s := range []string{"a", `"`, "\\", "\u2028", "\xff", "<&>", "\x00"} {
		f.Add(s, s+"x")
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		if a == b {
			return // one map key
		}
		items := [][]byte{[]byte(`{"code":"x","message":"m"}`), []byte(`{"decision_id":"d","result":1}`)}
		checkWriteBatch(t, b, []string{a, b}, items)
	})
}
