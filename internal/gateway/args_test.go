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
		{raw: `{"a":1,"a":2}`, err: `repeat the key "a" at "/a"`},
		{raw: `{"o":{"k":1,"k":1}}`, err: `repeat the key "k" at "/o/k"`},
		{raw: `[{"k":1},{"k":1,"k":2}]`, err: `repeat the key "k" at "/1/k"`},
		{raw: `{"a":1} {}`, err: "data after"},
		{raw: `{"a":}`, err: "not valid JSON"},
		{raw: `{"n":1e1001}`, err: "exponent"},
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
