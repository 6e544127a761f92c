package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/acgs-lite/acgs/internal/apierror"
	"github.com/acgs-lite/acgs/internal/telemetry"
)

// decodeFuzzSeeds are ACGS envelopes (valid, each field missing or of the
// wrong type, wrong hash) and hostile encodings: duplicate keys (plain,
// escaped, nested, lone surrogates), huge numbers, invalid UTF-8, depth at
// and over the limit, trailing data.
var decodeFuzzSeeds = []string{
	`{"type":"constitutional_evaluation","constitutional_hash":"cdd01ef066bc6cf2","action":"data.read_public","context":{}}`,
	`{"type":"evolution_approval","constitutional_hash":"cdd01ef066bc6cf2","evolution_request":{"id":"e","changes":{}}}`,
	`{"type":"data_access","constitutional_hash":"cdd01ef066bc6cf2","data_request":{"fields":["a"]}}`,
	`{"type":"constitutional_evaluation","constitutional_hash":"0000000000000000"}`,
	`{"constitutional_hash":"cdd01ef066bc6cf2"}`, `{"type":"t"}`, `{"type":null,"constitutional_hash":"cdd01ef066bc6cf2"}`,
	`{"type":"t","constitutional_hash":["cdd01ef066bc6cf2"]}`, `{"type":"t","constitutional_hash":"cdd01ef066bc6cf2","action":{}}`,
	`{"type":"x","constitutional_hash":"cdd01ef066bc6cf2","context":[],"data_request":1}`,
	`{"type":"x","constitutional_hash":"cdd01ef066bc6cf2","evolution_request":"s"}`,
	`{"input":{"a":[1,2,{"b":null}]}}`, `{"input":null}`,
	`{"type":"a","type":"b","constitutional_hash":"cdd01ef066bc6cf2"}`,
	`{"action":"data.read_public","\u0061ction":"system.execute_shell","type":"t","constitutional_hash":"cdd01ef066bc6cf2"}`,
	`{"context":{"agent":{"id":"a","id":"b"}},"type":"t","constitutional_hash":"cdd01ef066bc6cf2"}`,
	`[{"a":1},{"a":1}]`, `{"a":{"a":{"a":1}}}`, `{"\ud800":1,"\udc00":2}`, `{"a:b":1,"a":{"b":1}}`, `{"a\"":1,"a\\":2}`,
	`{`, `[]`, `"\u0000"`, `{"a":1} x`, `{"a":1}{"b":2}`, "\xff", "\xef\xbb\xbf{}", " \t\r\n{}\n", `[[[[[[[[[[]]]]]]]]]]`,
	strings.Repeat("[", 16) + strings.Repeat("]", 16), strings.Repeat("[", 17) + strings.Repeat("]", 17),
	`{"a":` + strings.Repeat(`{"a":`, 15) + `1` + strings.Repeat("}", 16),
	`1e400`, `-1e999999`, `{"n":` + strings.Repeat("9", 2000) + `}`, `{"n":0.` + strings.Repeat("0", 500) + `1}`, `-0`, `1E+2`, `01`,
	`{"a":NaN}`, `{"a":nan}`, `{"a":Infinity}`, `{"a":-inf}`, `{"a":1.}`, `{"a":.5}`, `{"a":+1}`, `{"a":0x1}`, `{"a":1e}`, `{"a":tru}`, `{"a":nul}`,
	"{\"a\":\"\t\"}", `{"a":1,}`, `[1,]`, `{"a" 1}`, `{'a':1}`, `{"a":1}` + "\x00", `{"a":[1,{"b":2,"b":3}]}`, `{"":1,"":2}`,
	`{"a":"\"}\\"}`, `{"a":"\ud83d\ude00"}`, `{"a":"\ud83d"}`, "{\"a\":\"\x00\"}", `{"a":"` + strings.Repeat(`\u0041`, 100) + `"}`,
}

// FuzzDecode fuzzes the request decoder and the ACGS envelope check alone
// (no evaluation), so the fuzzer spends its time in the code that parses
// untrusted bytes: every failure must be a 4xx apierror, never a panic; an
// accepted body has no duplicate key and no nesting beyond the limit (checked
// by an independent token walk), and a body refused for a duplicate key has one.
func FuzzDecode(f *testing.F) {
	for _, s := range decodeFuzzSeeds {
		f.Add([]byte(s))
	}
	s := &Server{hash: "cdd01ef066bc6cf2", d: Deps{Metrics: telemetry.NewMetrics(telemetry.BuildInfo{})}}
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := decodeJSON(b, 16)
		// The fast path (fastjson) must give exactly what encoding/json
		// gives, value and refusal alike.
		if keys, _, cerr := checkDepth(b, 16); cerr == nil && len(bytes.TrimSpace(b)) > 0 && utf8.Valid(b) {
			sv, serr := decodeStd(b, keys)
			if (err == nil) != (serr == nil) || (err != nil && err.Error() != serr.Error()) || !reflect.DeepEqual(v, sv) {
				t.Fatalf("decodeJSON %#v (%v), encoding/json %#v (%v) for %q", v, err, sv, serr, b)
			}
		}
		dup, depth, valid := oracleScan(b)
		if err != nil {
			e := apierror.As(err)
			if st := e.Code.Status(); st >= 500 {
				t.Fatalf("decode error with status %d: %v", st, err)
			}
			if strings.Contains(e.Message, "duplicate") && !dup {
				t.Fatalf("refused for a duplicate key that the token walk does not find: %v (%q)", err, b)
			}
			return
		}
		if !valid {
			t.Fatalf("accepted a body the standard decoder refuses: %q", b)
		}
		if dup {
			t.Fatalf("accepted a body with a duplicate key: %q", b)
		}
		if depth > 16 {
			t.Fatalf("accepted nesting %d > 16: %q", depth, b)
		}
		if _, err := s.validateACGS(v); err != nil && apierror.As(err).Code.Status() >= 500 {
			t.Fatalf("validation error with status %d: %v", apierror.As(err).Code.Status(), err)
		}
	})
}

// oracleScan walks b with encoding/json's tokenizer, independently of the
// decoder under test: whether some object repeats a key (as decoded), the
// deepest nesting, and whether b is exactly one valid JSON value.
func oracleScan(b []byte) (dup bool, maxDepth int, valid bool) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	type obj struct {
		keys      map[string]bool
		expectKey bool
	}
	var stack []*obj // nil entries are arrays
	for {
		tok, err := dec.Token()
		if err != nil {
			return dup, maxDepth, err.Error() == "EOF" && len(stack) == 0 && dec.InputOffset() > 0 && json.Valid(b)
		}
		var top *obj
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if top != nil && top.expectKey {
			if k, ok := tok.(string); ok {
				if top.keys[k] {
					dup = true
				}
				top.keys[k] = true
				top.expectKey = false
				continue
			}
		}
		if top != nil {
			top.expectKey = true
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &obj{keys: map[string]bool{}, expectKey: true})
		case json.Delim('['):
			stack = append(stack, nil)
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
		}
		if len(stack) > maxDepth {
			maxDepth = len(stack)
		}
	}
}

// TestWriteDecodeCorpus writes the seeds into testdata/fuzz/FuzzDecode in Go's
// corpus format when ACGS_WRITE_FUZZ_SEEDS=1.
func TestWriteDecodeCorpus(t *testing.T) {
	if os.Getenv("ACGS_WRITE_FUZZ_SEEDS") != "1" {
		t.Skip("set ACGS_WRITE_FUZZ_SEEDS=1 to rewrite the seed corpus")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, s := range decodeFuzzSeeds {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%02d", i)), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// FuzzYAMLBody: a YAML body is refused with a 4xx or becomes one JSON
// value within the limit (or stays empty), never a panic, and what it
// becomes is what decodeJSON then reads.
func FuzzYAMLBody(f *testing.F) {
	for _, s := range []string{
		"input:\n  type: data_access\n  fields: [a, b]\n", `{"input":{"a":1}}`, "\xef\xbb\xbf{}", "",
		"a: &a [x, x]\nb: [*a, *a]\n", "a: 1\na: 2\n", "[[[[", "? [a]\n: b\n", "a: !!binary aGk=\n",
		"a: 1e400\nb: 0x1F\nc: .inf\nd: ~\ne: 2001-12-14\n", "- y\n- no\n- on\n", "a: \"\\ud800\"\n",
	} {
		f.Add([]byte(s))
	}
	const limit = 4096
	f.Fuzz(func(t *testing.T, b []byte) {
		buf := bytes.NewBuffer(append([]byte(nil), b...))
		if err := yamlToJSON(buf, limit); err != nil {
			if st := apierror.As(err).Code.Status(); st < 400 || st >= 500 {
				t.Fatalf("refused with status %d: %v", st, err)
			}
			return
		}
		out := buf.Bytes()
		if len(bytes.TrimSpace(out)) == 0 {
			return
		}
		if !json.Valid(out) {
			t.Fatalf("%q became %q, not JSON", b, out)
		}
		if len(out) > limit && !bytes.Equal(out, bytes.TrimPrefix(b, []byte("\xef\xbb\xbf"))) {
			t.Fatalf("%q became %d bytes of JSON, over the limit", b, len(out))
		}
		if _, err := decodeJSON(out, 16); err != nil && apierror.As(err).Code.Status() >= 500 {
			t.Fatalf("decodeJSON of %q: %v", out, err)
		}
	})
}
