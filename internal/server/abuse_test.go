package server_test

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/acgs-lite/acgs/internal/config"
)

const adminToken2 = "second-admin-token-abcdefghijkl"

// abuseCase is one hostile request and the answer the contract requires.
type abuseCase struct {
	name, method, path string
	body               func() io.Reader // nil: no body
	hdr                map[string]string
	code               int
	errCode            string // "" for a success
	msg                string // substring of the error message
	within             time.Duration
	check              func(t *testing.T, r resp)
}

// TestAbuse is the table of hostile inputs at the handler: depth bombs (body
// and ?input=), gzip bombs, huge numbers and strings, invalid UTF-8, duplicate
// keys, oversized batches. Every answer is one JSON document, with the status
// and error code of the API contract, within a bound.
func TestAbuse(t *testing.T) {
	h := mustOpen(t, func(c *config.Config) { c.AdminTok = []string{adminToken, adminToken2} })
	safe, dangerous := request(t, "safe"), request(t, "dangerous")
	str := func(s string) func() io.Reader { return func() io.Reader { return strings.NewReader(s) } }
	opaDepth := func(depth int) string { // {"input": ...} nesting to exactly depth
		return `{"input":` + strings.Repeat(`{"a":`, depth-1) + `1` + strings.Repeat(`}`, depth)
	}
	digits := strings.Repeat("9", 100_000)
	withCPU := func(n string) string { return strings.Replace(safe, `"cpu_cores": 1`, `"cpu_cores": `+n, 1) }
	withTrust := func(n string) string { return strings.Replace(safe, `"trust_level": 0.9`, `"trust_level": `+n, 1) }
	withExplanation := func(s string) string {
		return strings.Replace(safe, `"explanation": "`, `"explanation": "`+s, 1)
	}
	gzipHdr := map[string]string{"Content-Encoding": "gzip"}
	batchOf := func(n int, item string) string {
		items := make([]string, n)
		for i := range items {
			items[i] = item
		}
		return `{"requests":[` + strings.Join(items, ",") + `]}`
	}
	opaBatchOf := func(n int, item string) string {
		items := make([]string, n)
		for i := range items {
			items[i] = fmt.Sprintf(`"id-%d":%s`, i, item)
		}
		return `{"inputs":{` + strings.Join(items, ",") + `}}`
	}
	decision := "/v1/data/acgs/main/decision"
	denied := func(t *testing.T, r resp) {
		if r.obj["allow"] != false {
			t.Errorf("expected a deny, got %s", short(r.body))
		}
	}
	decided := func(t *testing.T, r resp) { // the policy's call: any well-formed decision
		if _, ok := r.obj["allow"].(bool); !ok {
			t.Errorf("expected a decision, got %s", short(r.body))
		}
	}
	allowed := func(t *testing.T, r resp) {
		if r.obj["allow"] != true {
			t.Errorf("expected an allow, got %s", short(r.body))
		}
	}
	rows := []abuseCase{
		// depth bombs
		{name: "depth bomb: 100k open brackets", method: "POST", path: decision, body: str(strings.Repeat("[", 100_000)), code: 400, errCode: "invalid_parameter", msg: "MAX_REQUEST_DEPTH"},
		{name: "depth bomb: 1M open braces, no closers", method: "POST", path: decision, body: str(strings.Repeat(`{"a":`, 200_000)), code: 400, errCode: "invalid_parameter", msg: "MAX_REQUEST_DEPTH"},
		{name: "depth 64 (the limit) accepted", method: "POST", path: decision, body: str(opaDepth(64)), code: 200},
		{name: "depth 65 refused", method: "POST", path: decision, body: str(opaDepth(65)), code: 400, errCode: "invalid_parameter", msg: "MAX_REQUEST_DEPTH"},
		{name: "depth bomb in ?input=", method: "GET", path: decision + "?input=" + url.QueryEscape(strings.Repeat("[", 5000)), code: 400, errCode: "invalid_parameter", msg: "MAX_REQUEST_DEPTH"},
		{name: "depth bomb in ?input= on /allow", method: "GET", path: "/v1/data/acgs/main/allow?input=" + url.QueryEscape(strings.Repeat(`{"a":`, 1000)), code: 400, errCode: "invalid_parameter", msg: "query parameter input"},
		{name: "depth bomb in a batch item", method: "POST", path: "/v1/acgs/batch", body: str(`{"requests":[` + strings.Repeat("[", 10_000) + `]}`), code: 400, errCode: "invalid_parameter", msg: "MAX_REQUEST_DEPTH"},
		// gzip bombs: the limit applies after decompression
		{name: "gzip bomb: 64 MiB of one letter", method: "POST", path: decision, body: func() io.Reader { return gzipBomb(64 << 20) }, hdr: gzipHdr, code: 413, errCode: "request_too_large", msg: "MAX_REQUEST_BYTES", within: 3 * time.Second},
		{name: "gzip bomb: 200 concatenated members", method: "POST", path: decision, body: func() io.Reader { return gzipMembers(200, 64<<10) }, hdr: gzipHdr, code: 413, errCode: "request_too_large", within: 3 * time.Second},
		// Empty members decompress to nothing: the body as sent is bounded too.
		{name: "gzip padding: 4 MiB of empty members after a request", method: "POST", path: decision, body: func() io.Reader { return gzipPadded(safe, 4<<20) }, hdr: gzipHdr, code: 413, errCode: "request_too_large", msg: "MAX_REQUEST_BYTES", within: 3 * time.Second},
		{name: "gzip body just under the limit", method: "POST", path: decision, body: func() io.Reader { return gz(safe + strings.Repeat(" ", (1<<20)-len(safe)-1)) }, hdr: gzipHdr, code: 200, check: allowed},
		// A body that does not compress is a little larger sent than
		// decompressed: the limit is on what it decompresses to.
		{name: "stored (uncompressed) gzip just under the limit", method: "POST", path: decision, body: func() io.Reader { return gzStored(safe + strings.Repeat(" ", (1<<20)-len(safe)-1)) }, hdr: gzipHdr, code: 200, check: allowed},
		{name: "stored (uncompressed) gzip one byte over the limit", method: "POST", path: decision, body: func() io.Reader { return gzStored(safe + strings.Repeat(" ", (1<<20)-len(safe)+1)) }, hdr: gzipHdr, code: 413, errCode: "request_too_large"},
		// A malformed query is refused, not read with pairs dropped:
		// the decision would be another request's.
		{name: "bad escape in ?input=", method: "GET", path: decision + "?input=%7B%22type%22:%22data_access%22%ZZ%7D", code: 400, errCode: "invalid_parameter", msg: "malformed query string"},
		{name: "bad escape in an ACGS allow parameter", method: "GET", path: "/v1/data/acgs/main/allow?type=constitutional_evaluation&action=%ZZ", code: 400, errCode: "invalid_parameter", msg: `"%ZZ"`},
		{name: "escape cut short at the end", method: "POST", path: decision + "?pretty=%4", body: str(safe), code: 400, errCode: "invalid_parameter", msg: "malformed query string"},
		{name: "more parameters than Go reads", method: "GET", path: decision + "?input=" + url.QueryEscape(safe) + strings.Repeat("&", 10000), code: 400, errCode: "invalid_parameter", msg: "10001 parameters"},
		{name: "as many parameters as Go reads", method: "GET", path: decision + "?input=" + url.QueryEscape(`{"type":"x"}`) + strings.Repeat("&x", 9999), code: 200},
		{name: "semicolon separator", method: "POST", path: decision + "?pretty;metrics", body: str(safe), code: 400, errCode: "invalid_parameter", msg: "semicolon"},
		{name: "gzip body one byte over the limit", method: "POST", path: decision, body: func() io.Reader { return gz(safe + strings.Repeat(" ", (1<<20)-len(safe)+1)) }, hdr: gzipHdr, code: 413, errCode: "request_too_large"},
		{name: "gzip truncated", method: "POST", path: decision, body: func() io.Reader { b, _ := io.ReadAll(gz(safe)); return bytes.NewReader(b[:len(b)/2]) }, hdr: gzipHdr, code: 400, errCode: "invalid_parameter", msg: "gzip"},
		{name: "gzip with a bad checksum", method: "POST", path: decision, body: func() io.Reader {
			b, _ := io.ReadAll(gz(safe))
			b[len(b)-6] ^= 0xff
			return bytes.NewReader(b)
		}, hdr: gzipHdr, code: 400, errCode: "invalid_parameter", msg: "gzip"},
		{name: "gzip header on a plain body", method: "POST", path: decision, body: str(safe), hdr: gzipHdr, code: 400, errCode: "invalid_parameter", msg: "gzip"},
		// huge numbers: bounded at decode (OPA arithmetic on them ignores EVAL_TIMEOUT)
		{name: "1e999999", method: "POST", path: decision, body: str(withTrust("1e999999")), code: 400, errCode: "invalid_parameter", msg: "exponent"},
		{name: "-1e999999 in the OPA dialect", method: "POST", path: decision, body: str(`{"input":` + withTrust("-1e999999") + `}`), code: 400, errCode: "invalid_parameter", msg: "exponent"},
		{name: "1e-999999", method: "POST", path: decision, body: str(withTrust("1e-999999")), code: 400, errCode: "invalid_parameter", msg: "exponent"},
		{name: "100k-digit integer", method: "POST", path: decision, body: str(withCPU(digits)), code: 400, errCode: "invalid_parameter", msg: "number literal", within: time.Second},
		{name: "100k-digit fraction", method: "POST", path: decision, body: str(withTrust("0." + digits)), code: 400, errCode: "invalid_parameter", msg: "number literal", within: time.Second},
		{name: "100k-digit integer in ?input=", method: "GET", path: "/v1/data/acgs/main/allow?input=" + url.QueryEscape(`{"n":`+digits[:20_000]+`}`), code: 400, errCode: "invalid_parameter", msg: "number literal"},
		{name: "100-digit integer accepted, judged by the policy", method: "POST", path: decision, body: str(withCPU(digits[:100])), code: 200, check: denied},
		{name: "1e1000 accepted, judged by the policy", method: "POST", path: decision, body: str(withCPU("1e1000")), code: 200, check: denied, within: 2 * time.Second},
		{name: "digits inside a string are not a number", method: "POST", path: decision, body: str(withExplanation(digits)), code: 200, check: allowed},
		// huge strings and objects
		{name: "900 KiB string", method: "POST", path: decision, body: str(withExplanation(strings.Repeat("x", 900<<10))), code: 200, check: allowed, within: 5 * time.Second},
		{name: "900 KiB action", method: "POST", path: decision, body: str(strings.Replace(safe, `"data.read_public"`, `"`+strings.Repeat("a", 900<<10)+`"`, 1)), code: 200, check: decided, within: 5 * time.Second},
		{name: "2 MiB string", method: "POST", path: decision, body: str(withExplanation(strings.Repeat("x", 2<<20))), code: 413, errCode: "request_too_large"},
		{name: "50,000 keys in one object", method: "POST", path: decision, body: str(strings.Replace(safe, `"context": {`, `"context": {`+manyKeys(50_000)+`,`, 1)), code: 200, within: 5 * time.Second},
		{name: "100,000 array elements", method: "POST", path: decision, body: str(strings.Replace(safe, `"context": {`, `"context": {"list":[`+strings.TrimSuffix(strings.Repeat("1,", 100_000), ",")+`],`, 1)), code: 200, within: 5 * time.Second},
		// invalid UTF-8
		{name: "invalid UTF-8 byte", method: "POST", path: decision, body: str(strings.Replace(safe, "data.read_public", "data.read_public\xff", 1)), code: 400, errCode: "invalid_parameter", msg: "UTF-8"},
		{name: "overlong UTF-8 encoding of /", method: "POST", path: decision, body: str(strings.Replace(safe, "data.read_public", "data\xc0\xafread_public", 1)), code: 400, errCode: "invalid_parameter", msg: "UTF-8"},
		{name: "UTF-8 encoded surrogate", method: "POST", path: decision, body: str(strings.Replace(safe, "data.read_public", "data.read_public\xed\xa0\x80", 1)), code: 400, errCode: "invalid_parameter", msg: "UTF-8"},
		{name: "invalid UTF-8 in a key", method: "POST", path: decision, body: str(strings.Replace(safe, `"action"`, "\"act\xffion\"", 1)), code: 400, errCode: "invalid_parameter", msg: "UTF-8"},
		{name: "invalid UTF-8 in ?input=", method: "GET", path: "/v1/data/acgs/main/allow?input=%7B%22a%22%3A%22%FF%22%7D", code: 400, errCode: "invalid_parameter", msg: "UTF-8"},
		{name: "escaped lone surrogate decodes to U+FFFD, judged by the policy", method: "POST", path: decision, body: str(strings.Replace(safe, "data.read_public", `data.read_public\ud800`, 1)), code: 200, check: decided},
		// duplicate keys: refused, naming the key (a proxy may read the other one)
		{name: "duplicate action", method: "POST", path: decision, body: str(strings.Replace(safe, `"action": "data.read_public"`, `"action": "system.execute_shell", "action": "data.read_public"`, 1)), code: 400, errCode: "invalid_parameter", msg: `duplicate key "action"`},
		{name: "duplicate action spelled with an escape", method: "POST", path: decision, body: str(strings.Replace(safe, `"action": "data.read_public"`, `"action": "system.execute_shell", "\u0061ction": "data.read_public"`, 1)), code: 400, errCode: "invalid_parameter", msg: `duplicate key "action"`},
		{name: "duplicate nested key", method: "POST", path: decision, body: str(strings.Replace(dangerous, `"sandbox_enabled": false`, `"sandbox_enabled": false, "sandbox_enabled": true`, 1)), code: 400, errCode: "invalid_parameter", msg: "/context/environment"},
		{name: "duplicate input in the OPA dialect", method: "POST", path: decision, body: str(`{"input":` + dangerous + `,"input":` + safe + `}`), code: 400, errCode: "invalid_parameter", msg: `duplicate key "input"`},
		{name: "duplicate constitutional_hash", method: "POST", path: decision, body: str(strings.Replace(safe, `"constitutional_hash": "cdd01ef066bc6cf2"`, `"constitutional_hash": "0000000000000000", "constitutional_hash": "cdd01ef066bc6cf2"`, 1)), code: 400, errCode: "invalid_parameter", msg: "duplicate key"},
		{name: "duplicate batch id", method: "POST", path: "/v1/batch/data/acgs/main/decision", body: str(`{"inputs":{"a":` + safe + `,"a":` + dangerous + `}}`), code: 400, errCode: "invalid_parameter", msg: `duplicate key "a" in the object at /inputs`},
		{name: "duplicate key inside an ACGS batch item", method: "POST", path: "/v1/acgs/batch", body: str(`{"requests":[{"type":"a","type":"b"}]}`), code: 400, errCode: "invalid_parameter", msg: "/requests/0"},
		{name: "duplicate key in ?input=", method: "GET", path: "/v1/data/acgs/main/allow?input=" + url.QueryEscape(`{"type":"a","type":"b"}`), code: 400, errCode: "invalid_parameter", msg: "duplicate key"},
		{name: "same key in sibling objects is fine", method: "POST", path: "/v1/batch/data/acgs/main/decision", body: str(`{"inputs":{"a":{"k":1},"b":{"k":1}}}`), code: 200},
		// oversized batches (the harness sets MAX_BATCH_ITEMS=50)
		{name: "ACGS batch at MAX_BATCH_ITEMS", method: "POST", path: "/v1/acgs/batch", body: str(batchOf(50, safe)), code: 200},
		{name: "ACGS batch over MAX_BATCH_ITEMS", method: "POST", path: "/v1/acgs/batch", body: str(batchOf(51, safe)), code: 413, errCode: "request_too_large", msg: "MAX_BATCH_ITEMS"},
		{name: "ACGS batch of 100k empty items", method: "POST", path: "/v1/acgs/batch", body: str(batchOf(100_000, "{}")), code: 413, errCode: "request_too_large", msg: "MAX_BATCH_ITEMS", within: 3 * time.Second},
		{name: "OPA batch over MAX_BATCH_ITEMS", method: "POST", path: "/v1/batch/data/acgs/main/decision", body: str(opaBatchOf(51, safe)), code: 413, errCode: "request_too_large", msg: "MAX_BATCH_ITEMS"},
		{name: "OPA batch over the byte limit", method: "POST", path: "/v1/batch/data/acgs/main/decision", body: str(opaBatchOf(50, withExplanation(strings.Repeat("x", 30<<10)))), code: 413, errCode: "request_too_large", msg: "MAX_REQUEST_BYTES"},
	}
	for _, c := range rows {
		t.Run(c.name, func(t *testing.T) { runAbuse(t, h, c) })
	}
}

// TestAdminAbuse covers the admin guard: missing, malformed, wrong,
// prefix-matching and extended tokens are refused with 401 and a
// WWW-Authenticate challenge; both tokens of a rotation window are accepted.
//
// The comparison is constant time over SHA-256 digests of the presented and
// configured tokens, so neither a shared prefix nor the token's length
// changes its duration. That is a property of the code (server.go, admin),
// not asserted here: a statistical timing test on a shared machine would be
// flaky and prove little.
func TestAdminAbuse(t *testing.T) {
	h := mustOpen(t, func(c *config.Config) { c.AdminTok = []string{adminToken, adminToken2} })
	bearer := func(s string) map[string]string { return map[string]string{"Authorization": s} }
	unauthorized := func(t *testing.T, r resp) {
		if r.hdr.Get("WWW-Authenticate") == "" {
			t.Error("401 without a WWW-Authenticate challenge")
		}
	}
	rows := []abuseCase{
		{name: "no Authorization", method: "DELETE", path: "/v1/cache", code: 401, errCode: "unauthorized", check: unauthorized},
		{name: "empty bearer", method: "DELETE", path: "/v1/cache", hdr: bearer("Bearer "), code: 401, errCode: "unauthorized", check: unauthorized},
		{name: "wrong token of the same length", method: "DELETE", path: "/v1/cache", hdr: bearer("Bearer " + strings.Repeat("x", len(adminToken))), code: 401, errCode: "unauthorized"},
		{name: "prefix of the token", method: "DELETE", path: "/v1/cache", hdr: bearer("Bearer " + adminToken[:len(adminToken)-1]), code: 401, errCode: "unauthorized"},
		{name: "first byte of the token", method: "DELETE", path: "/v1/cache", hdr: bearer("Bearer " + adminToken[:1]), code: 401, errCode: "unauthorized"},
		{name: "token with a suffix", method: "DELETE", path: "/v1/cache", hdr: bearer("Bearer " + adminToken + "x"), code: 401, errCode: "unauthorized"},
		{name: "token with a trailing space", method: "DELETE", path: "/v1/cache", hdr: bearer("Bearer " + adminToken + " "), code: 401, errCode: "unauthorized"},
		{name: "both tokens concatenated", method: "DELETE", path: "/v1/cache", hdr: bearer("Bearer " + adminToken + "," + adminToken2), code: 401, errCode: "unauthorized"},
		{name: "scheme name in lower case", method: "DELETE", path: "/v1/cache", hdr: bearer("bearer " + adminToken), code: 200},
		{name: "scheme name in upper case", method: "DELETE", path: "/v1/cache", hdr: bearer("BEARER " + adminToken), code: 200},
		{name: "token under Basic", method: "DELETE", path: "/v1/cache", hdr: bearer("Basic " + adminToken), code: 401, errCode: "unauthorized"},
		{name: "token without a scheme", method: "DELETE", path: "/v1/cache", hdr: bearer(adminToken), code: 401, errCode: "unauthorized"},
		{name: "reload with a wrong token", method: "POST", path: "/v1/admin/reload", hdr: bearer("Bearer wrong-token-wrong-token"), code: 401, errCode: "unauthorized"},
		{name: "pprof without a token", method: "GET", path: "/debug/pprof/", code: 401, errCode: "unauthorized"},
		{name: "pprof cmdline without a token", method: "GET", path: "/debug/pprof/cmdline", code: 401, errCode: "unauthorized"},
		{name: "first token (rotation window)", method: "DELETE", path: "/v1/cache", hdr: bearer("Bearer " + adminToken), code: 200},
		{name: "second token (rotation window)", method: "DELETE", path: "/v1/cache", hdr: bearer("Bearer " + adminToken2), code: 200},
		{name: "reload with the second token", method: "POST", path: "/v1/admin/reload", hdr: bearer("Bearer " + adminToken2), code: 200},
	}
	for _, c := range rows {
		t.Run(c.name, func(t *testing.T) { runAbuse(t, h, c) })
	}
	t.Run("pprof with a token", func(t *testing.T) {
		r := h.do(t, "GET", "/debug/pprof/", nil, bearer("Bearer "+adminToken))
		if r.code != 200 {
			t.Fatalf("status %d", r.code)
		}
	})
	t.Run("admin off: 404 whatever the token", func(t *testing.T) {
		off := mustOpen(t, func(c *config.Config) { c.AdminTok = nil })
		for _, tok := range []string{"", adminToken} {
			r := off.do(t, "DELETE", "/v1/cache", nil, bearer("Bearer "+tok))
			if r.code != 404 || r.obj["code"] != "resource_not_found" {
				t.Fatalf("token %q: %d %s", tok, r.code, r.body)
			}
		}
	})
	t.Run("after rotation the old token is refused", func(t *testing.T) {
		rotated := mustOpen(t, func(c *config.Config) { c.AdminTok = []string{adminToken2} })
		if r := rotated.do(t, "DELETE", "/v1/cache", nil, bearer("Bearer "+adminToken)); r.code != 401 {
			t.Fatalf("old token: %d %s", r.code, r.body)
		}
		if r := rotated.do(t, "DELETE", "/v1/cache", nil, bearer("Bearer "+adminToken2)); r.code != 200 {
			t.Fatalf("new token: %d %s", r.code, r.body)
		}
	})
}

func runAbuse(t *testing.T, h *harness, c abuseCase) {
	t.Helper()
	var body io.Reader
	if c.body != nil {
		body = c.body()
	}
	start := time.Now()
	r := h.do(t, c.method, c.path, body, c.hdr)
	took := time.Since(start)
	if r.code != c.code {
		t.Fatalf("status %d, want %d: %s", r.code, c.code, short(r.body))
	}
	if !json.Valid(r.body) {
		t.Fatalf("response is not JSON: %s", short(r.body))
	}
	if c.errCode != "" && r.obj["code"] != c.errCode {
		t.Fatalf("code %v, want %s: %s", r.obj["code"], c.errCode, short(r.body))
	}
	if c.msg != "" {
		if m, _ := r.obj["message"].(string); !strings.Contains(m, c.msg) {
			t.Fatalf("message %q does not mention %q", m, c.msg)
		}
	}
	if c.within > 0 && took > c.within {
		t.Fatalf("answered in %s, more than %s", took, c.within)
	}
	if c.check != nil {
		c.check(t, r)
	}
}

func short(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + "..."
	}
	return string(b)
}

// gzipMembers is n concatenated gzip members of size bytes each: Go's reader
// reads them as one stream, so the limit must hold across members.
func gzipMembers(n, size int) io.Reader {
	var b bytes.Buffer
	chunk := bytes.Repeat([]byte{' '}, size)
	for i := 0; i < n; i++ {
		w, _ := gzip.NewWriterLevel(&b, gzip.BestCompression)
		_, _ = w.Write(chunk)
		_ = w.Close()
	}
	return &b
}

// gzStored is s gzipped without compression (stored blocks): larger than s.
func gzStored(s string) io.Reader {
	var b bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&b, gzip.NoCompression)
	_, _ = zw.Write([]byte(s))
	_ = zw.Close()
	return &b
}

// gzipPadded is body gzipped, followed by empty gzip members up to about
// size bytes: a small document in a large body.
func gzipPadded(body string, size int) io.Reader {
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	_, _ = w.Write([]byte(body))
	_ = w.Close()
	var empty bytes.Buffer
	w = gzip.NewWriter(&empty)
	_ = w.Close()
	for b.Len() < size {
		b.Write(empty.Bytes())
	}
	return &b
}

func manyKeys(n int) string {
	var sb strings.Builder
	for i := 0; i < n; i++ {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, `"k%d":%d`, i, i)
	}
	return sb.String()
}
