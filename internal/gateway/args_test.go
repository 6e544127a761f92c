package gateway

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestDecodeArguments(t *testing.T) {
	for _, c := range []struct {
		raw, err string
		want     any
	}{
		{raw: ``, want: nil},
		{raw: `  `, want: nil},
		{raw: `{}`, want: map[string]any{}},
		{raw: `{"a":"x:y","b":{"c":[1,"\"}:{"]}}`, want: map[string]any{"a": "x:y", "b": map[string]any{"c": []any{json.Number("1"), `"}:{`}}}},
		{raw: `{"a\\":1,"b":2}`, want: map[string]any{`a\`: json.Number("1"), "b": json.Number("2")}},
		{raw: `["x"]`, want: []any{"x"}},
		{raw: `{"a":1,"a":2}`, err: `repeat a key at "/*"`},
		{raw: `{"o":{"k":1,"k":1}}`, err: `repeat a key at "/*/*"`},
		{raw: `[{"k":1},{"k":1,"k":2}]`, err: `repeat a key at "/1/*"`},
		{raw: `{"\u017fource":"/etc/passwd"}`, err: "U+017F or U+212A"}, // ſource: "source" to a Go struct decoder
		{raw: `{"o":{"toKen":"x"}}`, err: `at "/*/*" holds`},            // Kelvin sign: "token"
		{raw: `{"a":1,"a":2,"ſ":1}`, err: "U+017F or U+212A"},           // the strict path too
		{raw: `{"a":1} {}`, err: "data after"},
		{raw: `{"a":}`, err: "not valid JSON"},
		{raw: `{"n":1e1001}`, err: "exponent"},
		{raw: `[0,{"n":[1e1001]}]`, err: `exponent beyond ±1000 at "/1/*/0"`},
		{raw: `{"n":1e1000}`, want: map[string]any{"n": json.Number("1e1000")}},
		{raw: `{"n":` + strings.Repeat("1", 101) + `}`, err: "longer than 100"},
		{raw: strings.Repeat("[", 65) + strings.Repeat("]", 65), err: "deeper than 64"},
		{raw: strings.Repeat("[", 64) + strings.Repeat("]", 64), want: nil /* checked below */},
	} {
		v, ok, err := decodeArguments(json.RawMessage(c.raw))
		switch {
		case c.err != "":
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%.40s: error %v, want %q", c.raw, err, c.err)
			}
		case err != nil:
			t.Errorf("%.40s: %v", c.raw, err)
		case strings.TrimSpace(c.raw) == "":
			if ok {
				t.Errorf("%q: absent arguments decoded as present", c.raw)
			}
		case strings.HasPrefix(c.raw, "[[[["):
			if !ok {
				t.Errorf("64 levels refused")
			}
		default:
			a, _ := json.Marshal(v)
			b, _ := json.Marshal(c.want)
			if !ok || string(a) != string(b) {
				t.Errorf("%s: got %s", c.raw, a)
			}
		}
	}
}

func BenchmarkDecodeArguments(b *testing.B) {
	raw := json.RawMessage(`{"path":"/workspace/notes/a.txt","options":{"encoding":"utf-8","lines":[1,2,3]},"text":"hello world"}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := decodeArguments(raw); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeNoArguments: a tool that takes no arguments, called with
// {} (mcptest's noop in BenchmarkOverhead).
func BenchmarkDecodeNoArguments(b *testing.B) {
	raw := json.RawMessage(`{}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := decodeArguments(raw); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzDecodeArguments checks the fast decoder against the token-by-token
// one: whatever the fast path accepts, the strict path accepts with the same
// value (so no repeated key slips through the member count), and whatever
// the strict path refuses for a repeated key, the fast path refuses.
func FuzzDecodeArguments(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":1,"a":2}`, `{"a":"x:y","b":{"c":[1,"\"}:{"]}}`, `[{"k":1},{"k":1,"k":2}]`,
		`{"a\\":1,"a\\":1}`, `{"n":1e1000}`, `{"\u0061":1,"a":2}`, `[[[]]]`, `"x"`, `{"a":{"b":{}},"b":1}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		fast, fastOK, fastErr := decodeArguments(raw)
		trimmed := strings.Trim(string(raw), jsonSpace)
		if trimmed == "" {
			return
		}
		strict, strictOK, strictErr := decodeArgumentsStrict(json.RawMessage(trimmed))
		if fastErr == nil && fastOK {
			if !json.Valid(raw) {
				t.Fatalf("accepted invalid JSON %q", raw)
			}
			if strictErr != nil || !strictOK {
				t.Fatalf("fast path accepted %q, strict path: %v", raw, strictErr)
			}
			a, _ := json.Marshal(fast)
			b, _ := json.Marshal(strict)
			if string(a) != string(b) {
				t.Fatalf("%q: fast %s, strict %s", raw, a, b)
			}
		}
		if strictErr != nil && strings.Contains(strictErr.Error(), "repeat a key") && fastErr == nil {
			t.Fatalf("%q: a repeated key passed the fast path", raw)
		}
	})
}
