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

	"sigs.k8s.io/yaml"

	"github.com/acgs-lite/acgs/internal/apierror"
)

var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// readJSON reads the request body within readBody's limits and decodes it
// with decodeJSON's, writing the error response itself: ok is false when it
// did. With allowEmpty an empty or all-space body is (nil, true, true). The
// pooled body buffer is released before it returns (decoded values do not
// point into it).
func (s *Server) readJSON(w http.ResponseWriter, r *http.Request, allowEmpty bool) (v any, empty, ok bool) {
	buf, ok := s.readRaw(w, r)
	if !ok {
		return nil, false, false
	}
	defer putBuf(buf)
	if allowEmpty && len(bytes.TrimSpace(buf.Bytes())) == 0 {
		return nil, true, true
	}
	v, err := decodeJSON(buf.Bytes(), s.cfg.Server.MaxDepth)
	if err != nil {
		writeError(w, err)
		return nil, false, false
	}
	return v, false, true
}

// readRaw reads the request body within readBody's limits, writing the
// error response itself: ok is false when it did. The caller returns the
// buffer to bufPool.
func (s *Server) readRaw(w http.ResponseWriter, r *http.Request) (*bytes.Buffer, bool) {
	buf, err := readBody(r, s.cfg.Server.MaxRequestBytes)
	if err != nil {
		writeError(w, err)
		return nil, false
	}
	return buf, true
}

// gzipSentBound is the most a gzip body decompressing within limit may be
// sent as (readBody): the decompressed bound, a 64th of it for the blocks'
// headers, and 4 KiB for the member's header, trailer and a name or
// comment in it.
func gzipSentBound(limit int64) int64 { return limit + limit/64 + 4096 }

// readBody reads the request body within the size limit, which applies to
// the body as it decompresses (as sent without Content-Encoding); a gzip
// body as sent is bounded too, a little more loosely (gzipSentBound), so
// that a long stream of padding that decompresses to little is not read
// past it. It refuses media types that are neither JSON nor YAML (a YAML
// body is returned as its JSON: yamlToJSON). The caller returns the buffer
// to bufPool.
//
// Every body, YAML too, is decoded before admission control is asked for
// an evaluation slot, and is never shed for want of CPU to decode it: the
// cache key is made of the decoded input, and a cache hit is never shed
// (shared/spec/api.md), which cannot be known before decoding. YAML costs
// about ten times its JSON (BenchmarkYAMLBody: 71 against 8.6 µs for the
// safe request); it is bounded, like JSON, by MAX_REQUEST_BYTES. A bound
// on YAML bodies parsed at once, shedding the rest unparsed, was tried
// (9a7206c..43dbd97) and reverted: it shed cached decisions.
func readBody(r *http.Request, limit int64) (*bytes.Buffer, error) {
	isYAML, err := checkContentType(r.Header.Get("Content-Type"))
	if err != nil {
		return nil, err
	}
	var body io.Reader = r.Body
	var sent *io.LimitedReader // the compressed body, when there is one
	switch enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding"))); enc {
	case "", "identity":
	case "gzip", "x-gzip":
		// MAX_REQUEST_BYTES bounds the decompressed body (readLimited
		// below). The compressed one is bounded too, so a client cannot
		// stream an endless gzip of nothing, but more loosely: a body
		// that does not compress (stored blocks) is a little larger
		// sent than decompressed, 5 bytes a 64 KiB block and a header
		// and trailer of 18 or more (a file name, a comment), and must
		// not be refused for it.
		sent = &io.LimitedReader{R: r.Body, N: gzipSentBound(limit)}
		zr, err := gzip.NewReader(sent)
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
	err = readLimited(buf, body, limit)
	if err == nil && sent != nil && sent.N == 0 {
		err = errTooLarge
	}
	if err != nil {
		bufPool.Put(buf)
		if errors.Is(err, errTooLarge) || (sent != nil && sent.N == 0) {
			return nil, apierror.New(apierror.RequestTooLarge, "request body exceeds MAX_REQUEST_BYTES (%d bytes)", limit)
		}
		if errors.Is(err, gzip.ErrChecksum) || errors.Is(err, gzip.ErrHeader) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, apierror.New(apierror.InvalidParameter, "request body is not valid gzip or was cut short: %v", err)
		}
		return nil, apierror.New(apierror.InvalidParameter, "reading request body: %v", err)
	}
	if isYAML {
		if err := yamlToJSON(buf, limit); err != nil {
			bufPool.Put(buf)
			return nil, err
		}
	}
	return buf, nil
}

// yamlToJSON replaces a YAML body with its JSON, as OPA reads a body whose
// Content-Type names YAML (a body that is already JSON is left as it is,
// as OPA's util.Unmarshal leaves it). Everything after it sees JSON, so
// every refusal decodeJSON makes (depth, number bounds, UTF-8) applies to
// YAML input too; the JSON is held to the body limit as well, since
// aliases can make it larger than the YAML. A key given twice in one
// mapping is refused (the strict conversion), as it is in JSON, where OPA
// would keep the last.
func yamlToJSON(buf *bytes.Buffer, limit int64) error {
	b := buf.Bytes()
	if bom := []byte("\xef\xbb\xbf"); bytes.HasPrefix(b, bom) { // as OPA strips it
		b = b[len(bom):]
	}
	if len(bytes.TrimSpace(b)) == 0 || json.Valid(b) {
		buf.Next(len(buf.Bytes()) - len(b))
		return nil
	}
	if !utf8.Valid(b) {
		return apierror.New(apierror.InvalidParameter, "request body is not valid UTF-8")
	}
	out, err := yaml.YAMLToJSONStrict(b)
	if err != nil {
		return apierror.New(apierror.InvalidParameter, "request body is not valid YAML: %v", err)
	}
	if int64(len(out)) > limit {
		return apierror.New(apierror.RequestTooLarge, "request body exceeds MAX_REQUEST_BYTES (%d bytes) once its YAML is read as JSON", limit)
	}
	buf.Reset()
	buf.Write(out)
	return nil
}

var errTooLarge = errors.New("body over the limit")

// readLimited reads body into buf until EOF, failing with errTooLarge as
// soon as it holds more than limit bytes, without allocating a reader per
// request as http.MaxBytesReader and io.LimitReader did (readBody bounds a
// compressed body itself); a body left unread past the limit is net/http's
// to discard or to close the connection on.
func readLimited(buf *bytes.Buffer, body io.Reader, limit int64) error {
	for {
		if int64(buf.Len()) > limit {
			return errTooLarge
		}
		buf.Grow(512)
		free := buf.AvailableBuffer()[:buf.Available()]
		if room := limit + 1 - int64(buf.Len()); int64(len(free)) > room {
			free = free[:room]
		}
		n, err := body.Read(free)
		buf.Write(free[:n]) // no copy: free is buf's own unused capacity
		if err == io.EOF {
			if int64(buf.Len()) > limit {
				return errTooLarge
			}
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func putBuf(b *bytes.Buffer) {
	if b != nil && b.Cap() <= 1<<20 {
		bufPool.Put(b)
	}
}

// checkContentType accepts JSON, the types common HTTP clients send by
// default (curl's form type, text/plain), and YAML (any type naming it, as
// OPA reads it: application/yaml, application/x-yaml, text/yaml), and
// refuses anything else by name. isYAML says the body is to be read as
// YAML.
func checkContentType(ct string) (isYAML bool, err error) {
	if ct == "" || ct == "application/json" {
		return false, nil // the common cases, without parsing
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false, apierror.New(apierror.UnsupportedMediaType, "malformed Content-Type %q", ct)
	}
	switch {
	case mt == "application/json", mt == "text/json", mt == "text/plain",
		mt == "application/x-www-form-urlencoded", mt == "application/octet-stream",
		strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json"):
		return false, nil
	case strings.Contains(mt, "yaml"):
		return true, nil
	}
	return false, apierror.New(apierror.UnsupportedMediaType, "unsupported Content-Type %q (accepted: application/json, application/yaml)", mt)
}

var errEmptyBody = apierror.New(apierror.InvalidParameter, "request body is empty")

// decodeJSON decodes exactly one JSON value, with numbers as json.Number so
// that no precision is lost before the policy sees them. It refuses invalid
// UTF-8, nesting deeper than maxDepth, duplicate object keys, and anything
// after the value.
//
// Duplicate keys are refused because parsers disagree on them (first wins,
// last wins, error): a proxy or audit log that reads {"action":"a",
// "action":"b"} differently from us would see a different request from the
// one we authorize. Detecting them costs one counter in the depth scan (every
// ':' outside a string follows a key) and a walk of the decoded value that
// sums object sizes: fewer entries than keys means a duplicate, and only
// then is the body scanned again to name it.
func decodeJSON(b []byte, maxDepth int) (any, error) {
	v, _, err := decodeJSONSized(b, maxDepth)
	return v, err
}

// decodeJSONSized is decodeJSON with the value's size as the decision log
// counts it (telemetry.ValueSize), counted while it is built, or 0 when it
// was not (decodeStd's path: the log then walks the value).
func decodeJSONSized(b []byte, maxDepth int) (any, int64, error) {
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, 0, errEmptyBody
	}
	if !utf8.Valid(b) {
		return nil, 0, apierror.New(apierror.InvalidParameter, "request body is not valid UTF-8")
	}
	keys, plain, err := checkDepth(b, maxDepth)
	if err != nil {
		return nil, 0, err
	}
	if plain {
		if v, size, ok := decodeFastSized(b, keys); ok {
			return v, size, nil
		}
		// Invalid JSON or a duplicate key: the standard decoder below
		// words the refusal.
	}
	v, err := decodeStd(b, keys)
	return v, 0, err
}

// decodeStd is decodeJSON's general path: encoding/json, which every
// refusal's wording and every string escape follow.
func decodeStd(b []byte, keys int) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, apierror.New(apierror.InvalidParameter, "request body is not valid JSON: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, apierror.New(apierror.InvalidParameter, "request body has data after the JSON value")
	}
	if keys > 1 && countEntries(v) != keys {
		return nil, duplicateKeyError(b)
	}
	return v, nil
}

// Number literals are bounded because OPA's arithmetic on them is not
// interruptible by EVAL_TIMEOUT and costs more than linear time in their
// size (big.Float formatting): one 100,000-digit cpu_cores held a CPU for
// 13 s. No authorization input needs more than float64 or int64 precision.
const (
	maxNumberLen = 100  // characters in one number literal
	maxNumberExp = 1000 // magnitude of its decimal exponent
)

// checkDepth scans b for nesting deeper than max and for number literals over
// the bounds without building anything, so a depth bomb or a number bomb is
// refused before the decoder allocates for it. It returns the number of
// object keys (colons outside strings) for the duplicate check, and plain:
// no string holds an escape or a control character, so decodeFastSized's
// reading of every string is byte for byte encoding/json's.
func checkDepth(b []byte, max int) (keys int, plain bool, err error) {
	depth, inStr, esc := 0, false, false
	numStart, expAt := -1, -1
	plain = true
	for i, c := range b {
		if inStr {
			switch {
			case esc:
				esc = false
			case c == '\\':
				esc, plain = true, false
			case c == '"':
				inStr = false
			case c < 0x20:
				plain = false
			}
			continue
		}
		if numStart >= 0 {
			switch {
			case c >= '0' && c <= '9', c == '.', c == '+', c == '-':
				continue
			case c == 'e', c == 'E':
				expAt = i
				continue
			}
			if err := checkNumber(b[numStart:i], expAt-numStart); err != nil {
				return 0, false, err
			}
			numStart = -1
		}
		switch c {
		case '"':
			inStr = true
		case ':':
			keys++
		case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
			numStart, expAt = i, -1
		case '{', '[':
			depth++
			if depth > max {
				return 0, false, apierror.New(apierror.InvalidParameter, "request body nests deeper than MAX_REQUEST_DEPTH (%d)", max)
			}
		case '}', ']':
			depth--
		}
	}
	if numStart >= 0 {
		if err := checkNumber(b[numStart:], expAt-numStart); err != nil {
			return 0, false, err
		}
	}
	return keys, plain, nil
}

// checkNumber bounds one number literal; exp is the index of its exponent
// marker, negative when it has none. Malformed literals are the decoder's
// to refuse.
func checkNumber(lit []byte, exp int) error {
	if len(lit) > maxNumberLen {
		return apierror.New(apierror.InvalidParameter, "request body has a number literal of %d characters, more than %d", len(lit), maxNumberLen)
	}
	if exp < 0 {
		return nil
	}
	e := 0
	for _, c := range lit[exp+1:] {
		if c >= '0' && c <= '9' {
			e = e*10 + int(c-'0') // at most 100 digits: capped below
			if e > maxNumberExp {
				return apierror.New(apierror.InvalidParameter, "request body has a number with an exponent beyond ±%d (%s)", maxNumberExp, lit)
			}
		}
	}
	return nil
}

// countEntries sums the sizes of all objects in a decoded value.
func countEntries(v any) int {
	switch t := v.(type) {
	case map[string]any:
		n := len(t)
		for _, e := range t {
			n += countEntries(e)
		}
		return n
	case []any:
		n := 0
		for _, e := range t {
			n += countEntries(e)
		}
		return n
	}
	return 0
}

// duplicateKeyError names the first duplicate key of b (already known to be
// valid JSON) and the JSON pointer of its object; keys compare as decoded.
func duplicateKeyError(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	type level struct {
		keys   map[string]struct{} // nil for an array
		name   string              // this container's key or index in its parent
		index  int                 // next array index
		expect bool                // object: the next string token is a key
	}
	var stack []*level
	pointer := func() string {
		var sb strings.Builder
		for _, l := range stack[1:] {
			sb.WriteByte('/')
			sb.WriteString(strings.NewReplacer("~", "~0", "/", "~1").Replace(l.name))
		}
		if sb.Len() == 0 {
			return "/"
		}
		return sb.String()
	}
	var pending string // key or index naming the next value
	for {
		tok, err := dec.Token()
		if err != nil {
			break
		}
		var top *level
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if top != nil && top.keys != nil && top.expect {
			if k, ok := tok.(string); ok {
				if _, dup := top.keys[k]; dup {
					return apierror.New(apierror.InvalidParameter, "request body has a duplicate key %q in the object at %s", k, pointer())
				}
				top.keys[k] = struct{}{}
				top.expect = false
				pending = k
				continue
			}
		}
		if top != nil {
			if top.keys != nil {
				top.expect = true
			} else {
				pending = itoa(top.index)
				top.index++
			}
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &level{keys: map[string]struct{}{}, name: pending, expect: true})
		case json.Delim('['):
			stack = append(stack, &level{name: pending})
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
			if len(stack) > 0 && stack[len(stack)-1].keys != nil {
				stack[len(stack)-1].expect = true
			}
		}
	}
	return apierror.New(apierror.InvalidParameter, "request body has a duplicate object key")
}
