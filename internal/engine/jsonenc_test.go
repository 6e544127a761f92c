package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/acgs-lite/acgs/internal/inputgen"
	"github.com/acgs-lite/acgs/policies"
)

// TestEncodeResultEqualsMarshal: encodeResult writes exactly json.Marshal's
// bytes (and fails where it fails) for every value an evaluation's result
// can be made of: generated values with every byte, invalid UTF-8, line
// separators, HTML characters, numbers valid and not, nested maps and
// arrays; and the constitution's own decisions on generated inputs.
func TestEncodeResultEqualsMarshal(t *testing.T) {
	check := func(v any) {
		t.Helper()
		want, werr := json.Marshal(v)
		got, ok := encodeResult(v)
		if werr != nil {
			if ok {
				t.Fatalf("%#v: encodeResult gave %s, json.Marshal failed: %v", v, got, werr)
			}
			return
		}
		if !ok || !bytes.Equal(got, want) {
			t.Fatalf("%#v:\n got %s (ok %v)\nwant %s", v, got, ok, want)
		}
	}
	// Every byte, alone and in company, and some runes.
	for b := 0; b < 256; b++ {
		check(string([]byte{byte(b)}))
		check("a" + string([]byte{byte(b)}) + "z")
		check(map[string]any{string([]byte{byte(b)}): string([]byte{byte(b), 'x'})})
	}
	for _, s := range []string{"", "\u2028", "\u2029", "a\u2028b\u2029c", "<script>&amp;</script>", "é", "日本語", "\xff\xfe", "\xe2\x80", "\xe2\x80\xa8\xe2",
		"\U0001F600", "\xed\xa0\x80", "\x7f", "tab\tnew\nline\r\b\f\x00\x1f", `back\slash "quote"`} {
		check(s)
		check(map[string]any{s: s})
	}
	for _, n := range []string{"0", "-0", "1", "-1", "1.5", "1e10", "1E+10", "1e-10", "0.000001", "123456789012345678901234567890",
		"", "01", "1.", ".5", "+1", "1e", "1e+", "abc", "-", "0x10", "1.5e", "NaN", "Inf", " 1", "1 "} {
		check(json.Number(n))
		check([]any{json.Number(n)})
		check(map[string]any{"n": json.Number(n)})
	}
	check(nil)
	check(true)
	check(false)
	check([]any(nil))
	check([]any{})
	check(map[string]any(nil))
	check(map[string]any{})
	check(map[string]any{"f": 1.5, "i": 3, "s": []string{"x"}}) // types a result never has: json.Marshal's path
	// Random nested values.
	r := rand.New(rand.NewPCG(17, 71))
	alphabet := []string{"a", "b", "B", "_", "0", "9", "é", "<", "&", "\u2028", "\"", "\\", "\n", "\x01", "\xff", "zz", "a b", ""}
	str := func() string {
		var sb strings.Builder
		for range r.IntN(6) {
			sb.WriteString(alphabet[r.IntN(len(alphabet))])
		}
		return sb.String()
	}
	var gen func(depth int) any
	gen = func(depth int) any {
		k := r.IntN(8)
		if depth > 4 {
			k = r.IntN(5)
		}
		switch k {
		case 0:
			return nil
		case 1:
			return r.IntN(2) == 0
		case 2:
			return str()
		case 3:
			return json.Number([]string{"0", "-1", "2.5", "1e3", "12345678901234567890.0001", "0.1"}[r.IntN(6)])
		case 4:
			return json.Number(str())
		case 5, 6:
			m := map[string]any{}
			for range r.IntN(12) {
				m[str()] = gen(depth + 1)
			}
			return m
		default:
			a := make([]any, r.IntN(6))
			for i := range a {
				a[i] = gen(depth + 1)
			}
			return a
		}
	}
	for range 20000 {
		check(gen(0))
	}
	// The constitution's decisions, as the compiled evaluator gives them.
	ctx := context.Background()
	e, err := New(ctx, FSSource{FS: policies.FS, Name: "embedded"}, Options{ConstitutionalHash: inputgen.Hash, EvalTimeout: time.Minute, Compiled: true})
	if err != nil {
		t.Fatal(err)
	}
	n := 10000
	if testing.Short() {
		n = 1000
	}
	for _, in := range inputgen.New(23).Inputs(n) {
		d, err := e.Decide(ctx, "acgs/main/decision", in)
		if err != nil {
			t.Fatal(err)
		}
		check(d.Result)
	}
}
