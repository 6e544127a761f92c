package server

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/acgs-lite/acgs/internal/apierror"
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
// encoding/json's output byte for byte: key order, string escapes (HTML
// escaping as OPA's, U+2028, invalid UTF-8, control characters) and the
// final newline.
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

// TestWriteBatchArrayMatchesEncoder pins the ACGS batch envelope to what
// writeJSON wrote for it (a slice of raw items, HTML-escaped as acgsBody
// writes them) byte for byte.
func TestWriteBatchArrayMatchesEncoder(t *testing.T) {
	item := json.RawMessage(`{"allow":true,"reasons":[],"note":"\u003c\u0026\u003e"}`)
	for _, n := range []int{0, 1, 3} {
		items := make([]json.RawMessage, n)
		for i := range items {
			items[i] = item
		}
		for _, batchID := range []string{"b-1", "batch-<1>\u2028"} {
			want := httptest.NewRecorder()
			writeJSON(want, http.StatusOK, map[string]any{"batch_decision_id": batchID, "responses": items}, false)
			got := httptest.NewRecorder()
			writeBatchArray(got, http.StatusOK, batchID, items)
			if got.Code != want.Code || got.Header().Get("Content-Type") != want.Header().Get("Content-Type") || !bytes.Equal(got.Body.Bytes(), want.Body.Bytes()) {
				t.Errorf("%d items, id %q: writeBatchArray wrote\n%s\nwriteJSON wrote\n%s", n, batchID, got.Body.Bytes(), want.Body.Bytes())
			}
		}
	}
}

// TestErrorItemMatchesMarshal pins the batch error items (with and
// without a decision id and a status) to the json.Marshal of the map they
// were made from, HTML escapes included: the ACGS batch's were written
// unescaped, unlike every other answer (OPA escapes them all).
func TestErrorItemMatchesMarshal(t *testing.T) {
	for _, msg := range []string{"plain", `quote " and \ backslash`, "<html> & co", "\u2028 \x01 bad\xffutf8 🙂"} {
		e := apierror.New(apierror.Overloaded, "%s", msg)
		details := apierror.New(apierror.EvaluationError, "%s", msg)
		details.Errors = []apierror.Detail{{Code: "eval_conflict_error", Message: msg, Location: &apierror.Location{File: "<p>.rego", Row: 3, Col: 1}}}
		for _, id := range []string{"", "d-<1>"} {
			for _, status := range []int{0, http.StatusServiceUnavailable} {
				m := map[string]any{"code": e.Code, "message": e.Message}
				dm := map[string]any{"code": details.Code, "message": details.Message, "errors": details.Errors}
				for _, mm := range []map[string]any{m, dm} {
					if status != 0 {
						mm["http_status_code"] = strconv.Itoa(status)
					}
					if id != "" {
						mm["decision_id"] = id
					}
				}
				wantDetails, _ := json.Marshal(dm)
				if got := appendErrorItem(nil, details, id, status); !bytes.Equal(got, wantDetails) {
					t.Errorf("with details, id %q, status %d: got %s, want %s", id, status, got, wantDetails)
				}
				want, _ := json.Marshal(m)
				if got := appendErrorItem(nil, e, id, status); !bytes.Equal(got, want) {
					t.Errorf("id %q, status %d: got %s, want %s", id, status, got, want)
				}
			}
		}
	}
}
