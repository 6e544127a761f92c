package server

import (
	"bytes"
	"encoding/json"
	"net/http"

	"github.com/acgs-lite/acgs/internal/apierror"
)

// jsonContentType is the Content-Type of every JSON response, one slice
// shared by all of them (net/http never mutates header values, and an Add
// to it would copy), so that setting it allocates nothing.
var jsonContentType = []string{"application/json"}

// writeJSON writes v with status; pretty indents like OPA's ?pretty.
// Strings are HTML-escaped (<, > and & as \u003c, \u003e, \u0026), as
// OPA's server writes every answer (encoding/json's default) and as the
// decisions' cached JSON is: an answer is the same bytes whichever path
// wrote it (the cache, ?pretty, v0, POST /, a batch).
func writeJSON(w http.ResponseWriter, status int, v any, pretty bool) {
	buf := bufPool.Get().(*bytes.Buffer)
	buf.Reset()
	defer putBuf(buf)
	enc := json.NewEncoder(buf)
	if pretty {
		enc.SetIndent("", "  ")
	}
	if err := enc.Encode(v); err != nil {
		buf.Reset()
		status = http.StatusInternalServerError
		_ = json.NewEncoder(buf).Encode(apierror.New(apierror.InternalError, "encoding response: %v", err))
	}
	w.Header()["Content-Type"] = jsonContentType
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// writeError writes OPA's error body with the status of the error's code;
// an overloaded error also gets Retry-After.
func writeError(w http.ResponseWriter, err error) {
	e := apierror.As(err)
	if e.Code == apierror.Overloaded {
		w.Header().Set("Retry-After", retryAfter)
	}
	writeJSON(w, e.Code.Status(), e, false)
}
