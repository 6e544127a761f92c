package jsonenc

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"testing"
)

func encoded(t *testing.T, s string, escapeHTML bool) []byte {
	t.Helper()
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(escapeHTML)
	if err := enc.Encode(s); err != nil {
		t.Fatal(err)
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

func check(t *testing.T, s string) {
	t.Helper()
	for _, html := range []bool{true, false} {
		if got, want := AppendString(nil, s, html), encoded(t, s, html); !bytes.Equal(got, want) {
			t.Fatalf("AppendString(%q, html=%v) = %s, encoding/json writes %s", s, html, got, want)
		}
	}
}

// TestAppendStringMatchesEncodingJSON: every byte value alone and inside
// text, escapes, HTML characters, U+2028/2029, invalid UTF-8 and random
// byte strings, with HTML escaping on and off.
func TestAppendStringMatchesEncodingJSON(t *testing.T) {
	for b := 0; b < 256; b++ {
		check(t, string([]byte{byte(b)}))
		check(t, "a"+string([]byte{byte(b)})+"é")
	}
	for _, s := range []string{"", "plain", `q"uote`, `back\slash`, "<a href='x'>&amp;</a>", "\u2028\u2029", "bad\xffutf8\xc3", "emoji 🙂", "\x00\x1f\x7f"} {
		check(t, s)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 20000; i++ {
		b := make([]byte, r.IntN(24))
		for j := range b {
			b[j] = byte(r.IntN(256))
		}
		check(t, string(b))
	}
}

func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"a", `"`, "<&>", "\u2028", "\xff", "\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) { check(t, s) })
}
