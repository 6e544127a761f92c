package cache

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
)

// decodeJSON decodes one JSON document the way the service does (UseNumber).
func decodeJSON(tb testing.TB, s string) any {
	tb.Helper()
	v, err := decodeJSONBytes([]byte(s))
	if err != nil {
		tb.Fatalf("decode %q: %v", s, err)
	}
	return v
}

func decodeJSONBytes(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err == nil {
		return nil, errors.New("trailing data")
	}
	return v, nil
}

func canonical(tb testing.TB, v any) []byte {
	tb.Helper()
	b, err := AppendCanonical(nil, v)
	if err != nil {
		tb.Fatalf("AppendCanonical(%#v): %v", v, err)
	}
	return b
}

func TestCanonicalDistinguishes(t *testing.T) {
	tests := []struct {
		name string
		a, b string
	}{
		{"number vs string", `1`, `"1"`},
		{"integer vs decimal literal", `1`, `1.0`},
		{"number vs bool", `1`, `true`},
		{"true vs false", `true`, `false`},
		{"null vs false", `null`, `false`},
		{"null vs empty string", `null`, `""`},
		{"null vs missing key", `{"a":null}`, `{}`},
		{"empty string vs missing key", `{"a":""}`, `{}`},
		{"key/value boundary", `{"a":"b"}`, `{"ab":""}`},
		{"two keys vs one", `{"a":"b","c":"d"}`, `{"a":"bcd"}`},
		{"forged length prefix", `{"a":"s\u0001b"}`, `{"a":"s","b":""}`},
		{"forged tags", `["s\u0001a"]`, `["s","a"]`},
		{"forged object in string", `"o\u0001\u0001az"`, `{"a":null}`},
		{"array vs object", `["a"]`, `{"0":"a"}`},
		{"nested array vs flat", `[[1,2]]`, `[1,2]`},
		{"nested arrays split", `[[1],[2]]`, `[[1,2]]`},
		{"empty array vs empty object", `[]`, `{}`},
		{"empty array vs null", `[]`, `null`},
		{"array order", `[1,2]`, `[2,1]`},
		{"nested value", `{"a":{"b":1}}`, `{"a":{"b":2}}`},
		{"nested key", `{"a":{"b":1}}`, `{"a":{"c":1}}`},
		{"key moved up a level", `{"a":{"b":1}}`, `{"a":{},"b":1}`},
		{"unicode", `"é"`, `"e\u0301"`},
		{"negative zero literal", `0`, `-0`},
		{"trust level", `{"trust_level":0.9}`, `{"trust_level":0.91}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := decodeJSON(t, tt.a), decodeJSON(t, tt.b)
			if bytes.Equal(canonical(t, a), canonical(t, b)) {
				t.Fatalf("%s and %s have the same canonical encoding", tt.a, tt.b)
			}
			ka, _ := NewKey("r1", "acgs/main/decision", a)
			kb, _ := NewKey("r1", "acgs/main/decision", b)
			if ka == kb {
				t.Fatalf("%s and %s have the same key", tt.a, tt.b)
			}
		})
	}
}

func TestCanonicalEqual(t *testing.T) {
	tests := []struct {
		name string
		a, b any
	}{
		{"key order", `{"a":1,"b":{"x":true,"y":null}}`, `{"b":{"y":null,"x":true},"a":1}`},
		{"whitespace", `{ "a" : [ 1 , 2 ] }`, `{"a":[1,2]}`},
		{"escapes", `"\u0041"`, `"A"`},
		{"go int vs json number", 1, json.Number("1")},
		{"go int64 vs json number", int64(-42), json.Number("-42")},
		{"go float vs json number", 0.9, json.Number("0.9")},
		{"go whole float vs json number", float64(3), json.Number("3")},
		{"go tiny float as OPA writes it", 1e-7, json.Number("1e-07")},
		{"go huge float as OPA writes it", 1e21, json.Number("1e+21")},
		{"go large float as OPA writes it", 1e20, json.Number("1e+20")},
		{"go literal vs decoded", map[string]any{"a": []any{true, nil, "x"}}, `{"a":[true,null,"x"]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := tt.a, tt.b
			if s, ok := a.(string); ok {
				a = decodeJSON(t, s)
			}
			if s, ok := b.(string); ok {
				b = decodeJSON(t, s)
			}
			if ca, cb := canonical(t, a), canonical(t, b); !bytes.Equal(ca, cb) {
				t.Fatalf("encodings differ:\n%q\n%q", ca, cb)
			}
		})
	}
}

// TestCanonicalGoFloatsMatchOPA: a Go float64 is keyed as the number OPA
// makes of it (its text, which json.marshal gives back), so a float64 and
// a json.Number share a key exactly when OPA cannot tell them apart.
func TestCanonicalGoFloatsMatchOPA(t *testing.T) {
	for _, f := range []float64{0, 1, -1, 0.1, 1.5e-7, 1e-7, 123456789, 1e20, 1e21, 5e-324, math.MaxFloat64, -2.5e-10} {
		n, err := ast.InterfaceToValue(f)
		if err != nil {
			t.Fatal(err)
		}
		text := n.String()
		if a, b := canonical(t, f), canonical(t, json.Number(text)); !bytes.Equal(a, b) {
			t.Errorf("float64 %v encodes as %q, json.Number(%s) (OPA's number) as %q", f, a, text, b)
		}
		if js, _ := json.Marshal(f); string(js) != text {
			if a, b := canonical(t, f), canonical(t, json.Number(js)); bytes.Equal(a, b) {
				t.Errorf("float64 %v and json.Number(%s) share a key, but OPA keeps %s and %s apart", f, js, text, js)
			}
		}
	}
}

func TestAppendCanonicalErrors(t *testing.T) {
	tests := []struct {
		name string
		v    any
	}{
		{"NaN", math.NaN()},
		{"infinity", math.Inf(1)},
		{"int32", int32(1)},
		{"string slice", []string{"a"}},
		{"typed map", map[string]string{"a": "b"}},
		{"struct", struct{}{}},
		{"nested unsupported", map[string]any{"a": []any{1, uint8(2)}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := AppendCanonical(nil, tt.v); err == nil || !strings.HasPrefix(err.Error(), "cache: ") {
				t.Fatalf("AppendCanonical(%#v) error = %v, want a cache: error", tt.v, err)
			}
			if _, err := NewKey("r", "p", tt.v); err == nil {
				t.Fatalf("NewKey(%#v) succeeded", tt.v)
			}
		})
	}
}

func TestAppendCanonicalAppends(t *testing.T) {
	got, err := AppendCanonical([]byte("prefix"), "x")
	if err != nil || string(got) != "prefix"+"s\x01x" {
		t.Fatalf("got %q, %v", got, err)
	}
}

func TestNewKeyRevisionAndPath(t *testing.T) {
	in := decodeJSON(t, `{"a":1}`)
	tests := []struct {
		name           string
		rev1, path1    string
		rev2, path2    string
		wantSameResult bool
	}{
		{"same", "r1", "p", "r1", "p", true},
		{"revision", "r1", "p", "r2", "p", false},
		{"path", "r1", "p", "r1", "q", false},
		{"boundary between revision and path", "ab", "c", "a", "bc", false},
		{"empty revision", "", "rp", "r", "p", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k1, err1 := NewKey(tt.rev1, tt.path1, in)
			k2, err2 := NewKey(tt.rev2, tt.path2, in)
			if err1 != nil || err2 != nil {
				t.Fatal(err1, err2)
			}
			if (k1 == k2) != tt.wantSameResult {
				t.Fatalf("keys %v and %v: same=%v, want %v", k1, k2, k1 == k2, tt.wantSameResult)
			}
		})
	}
}

func loadInput(tb testing.TB, name string) any {
	tb.Helper()
	b, err := os.ReadFile("testdata/" + name + ".json")
	if err != nil {
		tb.Fatal(err)
	}
	v, err := decodeJSONBytes(b)
	if err != nil {
		tb.Fatal(err)
	}
	return v
}

func TestNewKeyDoesNotAllocate(t *testing.T) {
	in := loadInput(t, "safe_action")
	NewKey("rev", "acgs/main/decision", in) // warm the pool
	allocs := testing.AllocsPerRun(1000, func() {
		if _, err := NewKey("rev", "acgs/main/decision", in); err != nil {
			t.Fatal(err)
		}
	})
	// sync.Pool may drop its contents at a GC; allow that rare refill.
	if allocs > 0.1 {
		t.Fatalf("NewKey allocates %.2f times per call, want 0", allocs)
	}
}

// decodeCanonical is the inverse of AppendCanonical. That it exists (every
// encoding decodes back to the value it came from) is the proof that the
// encoding is injective: two different values cannot share an encoding.
func decodeCanonical(b []byte) (any, []byte, error) {
	if len(b) == 0 {
		return nil, nil, errors.New("short")
	}
	tag, b := b[0], b[1:]
	readLen := func() (int, error) {
		n, w := binary.Uvarint(b)
		if w <= 0 || n > uint64(len(b)) {
			return 0, errors.New("bad length")
		}
		b = b[w:]
		return int(n), nil
	}
	readBytes := func() (string, error) {
		n, err := readLen()
		if err != nil || n > len(b) {
			return "", errors.New("bad string")
		}
		s := string(b[:n])
		b = b[n:]
		return s, nil
	}
	switch tag {
	case tagNull:
		return nil, b, nil
	case tagTrue:
		return true, b, nil
	case tagFalse:
		return false, b, nil
	case tagString:
		s, err := readBytes()
		return s, b, err
	case tagNumber:
		s, err := readBytes()
		return json.Number(s), b, err
	case tagArray:
		n, err := readLen()
		if err != nil {
			return nil, nil, err
		}
		arr := make([]any, n)
		for i := range arr {
			if arr[i], b, err = decodeCanonical(b); err != nil {
				return nil, nil, err
			}
		}
		return arr, b, nil
	case tagObject:
		n, err := readLen()
		if err != nil {
			return nil, nil, err
		}
		m := make(map[string]any, n)
		prev := ""
		for i := range n {
			k, err := readBytes()
			if err != nil {
				return nil, nil, err
			}
			if i > 0 && k <= prev {
				return nil, nil, fmt.Errorf("keys not sorted: %q after %q", k, prev)
			}
			prev = k
			if m[k], b, err = decodeCanonical(b); err != nil {
				return nil, nil, err
			}
		}
		return m, b, nil
	default:
		return nil, nil, fmt.Errorf("unknown tag %q", tag)
	}
}

// randomValue generates JSON-shaped values from a deliberately small domain,
// so that random pairs are often equal or nearly equal.
func randomValue(r *rand.Rand, depth int) any {
	strs := []string{"", "a", "b", "ab", "s\x01a", "o\x00", "z", "é", "\"", "1"}
	nums := []json.Number{"0", "1", "1.0", "-1", "1e2", "0.9"}
	k := r.IntN(8)
	if depth <= 0 {
		k = r.IntN(5)
	}
	switch k {
	case 0:
		return nil
	case 1:
		return r.IntN(2) == 0
	case 2:
		return strs[r.IntN(len(strs))]
	case 3, 4:
		return nums[r.IntN(len(nums))]
	case 5:
		arr := make([]any, r.IntN(3))
		for i := range arr {
			arr[i] = randomValue(r, depth-1)
		}
		return arr
	default:
		m := map[string]any{}
		for range r.IntN(4) {
			m[strs[r.IntN(len(strs))]] = randomValue(r, depth-1)
		}
		return m
	}
}

func TestCanonicalProperty(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	vals := make([]any, 3000)
	encs := make([][]byte, len(vals))
	for i := range vals {
		vals[i] = randomValue(r, 3)
		encs[i] = canonical(t, vals[i])
		back, rest, err := decodeCanonical(encs[i])
		if err != nil || len(rest) != 0 || !reflect.DeepEqual(back, vals[i]) {
			t.Fatalf("round trip of %#v: got %#v, rest %q, err %v", vals[i], back, rest, err)
		}
		// The same value, through encoding/json and back, keeps its encoding.
		text, err := json.Marshal(vals[i])
		if err != nil {
			t.Fatal(err)
		}
		if again := canonical(t, decodeJSON(t, string(text))); !bytes.Equal(again, encs[i]) {
			t.Fatalf("%s re-decoded encodes differently", text)
		}
	}
	equalPairs := 0
	for i := range vals {
		for j := i + 1; j < len(vals) && j < i+200; j++ {
			same := bytes.Equal(encs[i], encs[j])
			if same != reflect.DeepEqual(vals[i], vals[j]) {
				t.Fatalf("encoding equality %v but DeepEqual %v for\n%#v\n%#v", same, !same, vals[i], vals[j])
			}
			if same {
				equalPairs++
			}
		}
	}
	if equalPairs == 0 {
		t.Fatal("generator produced no equal pairs; the property was not exercised")
	}
}

// FuzzCanonicalKey checks on arbitrary JSON documents that keys are
// deterministic and that documents decoding to different values never share a
// canonical encoding (so they can only share a key by an XXH3 collision).
func FuzzCanonicalKey(f *testing.F) {
	f.Add([]byte(`{"a":"b"}`), []byte(`{"ab":""}`))
	f.Add([]byte(`1`), []byte(`1.0`))
	f.Add([]byte(`[[1],[2]]`), []byte(`[[1,2]]`))
	f.Fuzz(func(t *testing.T, a, b []byte) {
		va, errA := decodeJSONBytes(a)
		vb, errB := decodeJSONBytes(b)
		if errA != nil || errB != nil {
			return
		}
		ka1, err := NewKey("rev", "p", va)
		if err != nil {
			t.Fatalf("NewKey(%s): %v", a, err)
		}
		ka2, _ := NewKey("rev", "p", va)
		if ka1 != ka2 {
			t.Fatalf("NewKey(%s) not deterministic", a)
		}
		ca, cb := canonical(t, va), canonical(t, vb)
		back, rest, err := decodeCanonical(ca)
		if err != nil || len(rest) != 0 || !reflect.DeepEqual(back, va) {
			t.Fatalf("round trip of %s failed: %v", a, err)
		}
		equal := reflect.DeepEqual(va, vb)
		if bytes.Equal(ca, cb) != equal {
			t.Fatalf("%s vs %s: same encoding %v, equal values %v", a, b, !equal, equal)
		}
		if kb, _ := NewKey("rev", "p", vb); equal && kb != ka1 {
			t.Fatalf("%s and %s are equal but have different keys", a, b)
		}
	})
}
