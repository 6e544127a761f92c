package server

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/acgs-lite/acgs/internal/apierror"
)

var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// readBody reads the request body within the size limit, which applies after
// gzip decompression, and refuses media types that are not JSON. The caller
// returns the buffer to bufPool.
func readBody(r *http.Request, limit int64) (*bytes.Buffer, error) {
	if err := checkContentType(r.Header.Get("Content-Type")); err != nil {
		return nil, err
	}
	var body io.Reader = http.MaxBytesReader(nil, r.Body, limit+1)
	switch enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding"))); enc {
	case "", "identity":
	case "gzip", "x-gzip":
		zr, err := gzip.NewReader(body)
		if err != nil {
			return nil, apierror.New(apierror.InvalidParameter, "request body is not valid gzip: %v", err)
		}
		defer zr.Close()
		body = zr
	default:
		return nil, apierror.New(apierror.UnsupportedMediaType, "unsupported Content-Encoding %q (accepted: gzip, identity)", enc)
	}
	buf := bufPool.Get().(*bytes.Buffer)
	buf.Reset()
	_, err := buf.ReadFrom(io.LimitReader(body, limit+1))
	if err == nil && int64(buf.Len()) > limit {
		err = &http.MaxBytesError{Limit: limit}
	}
	if err != nil {
		bufPool.Put(buf)
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, apierror.New(apierror.RequestTooLarge, "request body exceeds MAX_REQUEST_BYTES (%d bytes)", limit)
		}
		if errors.Is(err, gzip.ErrChecksum) || errors.Is(err, gzip.ErrHeader) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, apierror.New(apierror.InvalidParameter, "request body is not valid gzip or was cut short: %v", err)
		}
		return nil, apierror.New(apierror.InvalidParameter, "reading request body: %v", err)
	}
	return buf, nil
}

func putBuf(b *bytes.Buffer) {
	if b != nil && b.Cap() <= 1<<20 {
		bufPool.Put(b)
	}
}

// checkContentType accepts JSON and the types common HTTP clients send by
// default (curl's form type, text/plain), and refuses anything else by name.
func checkContentType(ct string) error {
	if ct == "" {
		return nil
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return apierror.New(apierror.UnsupportedMediaType, "malformed Content-Type %q", ct)
	}
	switch {
	case mt == "application/json", mt == "text/json", mt == "text/plain",
		mt == "application/x-www-form-urlencoded", mt == "application/octet-stream",
		strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json"):
		return nil
	}
	return apierror.New(apierror.UnsupportedMediaType, "unsupported Content-Type %q (accepted: application/json)", mt)
}

var errEmptyBody = apierror.New(apierror.InvalidParameter, "request body is empty")

// decodeJSON decodes exactly one JSON value, with numbers as json.Number so
// that no precision is lost before the policy sees them. It refuses invalid
// UTF-8, nesting deeper than maxDepth, and anything after the value.
func decodeJSON(b []byte, maxDepth int) (any, error) {
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, errEmptyBody
	}
	if !utf8.Valid(b) {
		return nil, apierror.New(apierror.InvalidParameter, "request body is not valid UTF-8")
	}
	if err := checkDepth(b, maxDepth); err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, apierror.New(apierror.InvalidParameter, "request body is not valid JSON: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, apierror.New(apierror.InvalidParameter, "request body has data after the JSON value")
	}
	return v, nil
}

// checkDepth scans b for nesting deeper than max without building anything,
// so a depth bomb is refused before the decoder allocates for it.
func checkDepth(b []byte, max int) error {
	depth, inStr, esc := 0, false, false
	for _, c := range b {
		if inStr {
			switch {
			case esc:
				esc = false
			case c == '\\':
				esc = true
			case c == '"':
				inStr = false
			}
			continue
		}
		switch c {
		case '"':
			inStr = true
		case '{', '[':
			depth++
			if depth > max {
				return apierror.New(apierror.InvalidParameter, "request body nests deeper than MAX_REQUEST_DEPTH (%d)", max)
			}
		case '}', ']':
			depth--
		}
	}
	return nil
}
