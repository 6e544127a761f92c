package cache

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"
	"unsafe"
	"weak"

	"github.com/zeebo/xxh3"
)

// valueOf is a decision as the engine stores it: the decoded result and its
// JSON.
func valueOf(tb testing.TB, doc string) Value {
	tb.Helper()
	r := decodeJSON(tb, doc)
	j, err := json.Marshal(r)
	if err != nil {
		tb.Fatal(err)
	}
	return Value{Result: r, Defined: true, JSON: j}
}

// The stored form of a value says exactly what the value says, whatever it
// is made of: the same JSON, byte for byte, and the same document.
func TestInternKeepsTheValue(t *testing.T) {
	long := strings.Repeat("x", 300)
	for _, tc := range []struct {
		name string
		v    Value
	}{
		{"constitution decision", valueOf(t, `{"allow":false,"compliance_score":0.829,"constitutional_hash":"cdd01ef066bc6cf2","evaluation_details":{"accountability":0.5,"autonomy":1.0,"trust_level":0.702},"policy":"constitutional","reasons":["Agent trust level 0.702 below required 0.8","Audit logging is not enabled (no audit trail)"]}`)},
		{"empty list and object", valueOf(t, `{"a":[],"b":{},"c":[[],{}]}`)},
		{"scalars", valueOf(t, `[true,false,null,"s",1,1.0,-2.5e3,"",-0,1E+2]`)},
		{"numbers in strings and keys", valueOf(t, `{"1":"2","a\"3":"4\\","-5":[6,"7"]}`)},
		{"a bare string", valueOf(t, `"allowed"`)},
		{"a bare number", valueOf(t, `0.95`)},
		{"long strings, keys and numbers", valueOf(t, fmt.Sprintf(`{%q:%q,"n":%s}`, long, long, "1"+strings.Repeat("0", 300)))},
		{"escapes", valueOf(t, `{"\u003chtml\u003e":"a\u0026b","t":"\t\n"}`)},
		{"not JSON-decoded types", Value{Result: map[string]any{"f": 1.5, "i": 3, "s": []string{"a"}}, Defined: true, JSON: []byte(`{"f":1.5,"i":3,"s":["a"]}`)}},
		{"defined without JSON", Value{Result: map[string]any{"allow": true}, Defined: true}},
		{"JSON that is not JSON", Value{Result: "x", Defined: true, JSON: []byte(`{"allow":`)}},
		{"undefined", Value{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := newInterner()
			for range 3 { // decoded, decoded and kept, then from the hot set
				got := in.value(in.intern(tc.v))
				if got.Defined != tc.v.Defined || string(got.JSON) != string(tc.v.JSON) || mustJSON(got.Result) != mustJSON(tc.v.Result) {
					t.Fatalf("stored %+v, want %+v", got, tc.v)
				}
			}
		})
	}
}

// A stored value read again is decoded from its JSON with numbers as
// json.Number, as an entry read from L2 is.
func TestInternDecodesAsL2Does(t *testing.T) {
	in := newInterner()
	v := valueOf(t, `{"allow":true,"score":0.96,"n":[1,2.5,"x"],"o":{}}`)
	got := in.value(in.intern(v))
	if !reflect.DeepEqual(got.Result, v.Result) {
		t.Fatalf("decoded %#v, want %#v", got.Result, v.Result)
	}
}

// Entries with the same decision share one stored value; others do not,
// but decisions that differ in numbers only share their skeleton.
func TestInternSharesAlikeDecisions(t *testing.T) {
	in := newInterner()
	a := in.intern(valueOf(t, `{"allow":true,"reasons":[],"score":0.9}`))
	b := in.intern(valueOf(t, `{"allow":true,"reasons":[],"score":0.9}`)) // same document, new memory
	c := in.intern(valueOf(t, `{"allow":true,"reasons":[],"score":0.91}`))
	if a != b {
		t.Error("two alike decisions are stored twice")
	}
	if a == c || reflect.DeepEqual(in.value(a).Result, in.value(c).Result) {
		t.Error("two different decisions share a stored value")
	}
	if a.sk != c.sk {
		t.Error("two decisions that differ in a number do not share their skeleton")
	}
	if d := in.intern(valueOf(t, `{"allow":false,"reasons":[],"score":0.9}`)); d.sk == a.sk {
		t.Error("two decisions that differ in more than numbers share a skeleton")
	}
	u1 := in.intern(Value{})
	u2 := in.intern(Value{})
	if u1 != u2 {
		t.Error("undefined decisions are stored more than once")
	}
}

// Splitting a document and joining it gives the same bytes, whatever they are.
func TestSplitJoin(t *testing.T) {
	for _, doc := range []string{
		``, `0`, `-`, `"`, `"\\"1`, `{"a":-1.5e+10,"b":"-1","c":[0,-0,1e5]}`, `--1..2ee`, `"unterminated 1 2`,
		`{"\"":1,"x\\":2}`, strings.Repeat("9", 600), `[` + strings.Repeat("1,", 300) + `1]`, "1\x00\xff2",
	} {
		text, cuts, nums := split([]byte(doc))
		sk := &skeleton{text: text, cuts: cuts}
		if got := join(nil, sk, string(nums)); string(got) != doc {
			t.Errorf("split and joined %q: got %q", doc, got)
		}
		if !joinedEqual([]byte(doc), sk, string(nums)) {
			t.Errorf("joinedEqual(%q) of its own split is false", doc)
		}
		for _, other := range []string{doc + "1", doc + " ", "1" + doc, strings.Replace(doc, "1", "2", 1)} {
			if other != doc && joinedEqual([]byte(other), sk, string(nums)) {
				t.Errorf("joinedEqual(%q) of the split of %q is true", other, doc)
			}
		}
	}
}

// joinedEqual(b, split(a)) holds exactly when a and b are the same bytes:
// the interner trusts it to find a stored decision.
func FuzzJoinedEqual(f *testing.F) {
	f.Add([]byte(`{"score":0.96,"r":["a 1"]}`), []byte(`{"score":0.97,"r":["a 1"]}`))
	f.Add([]byte(`[1,2]`), []byte(`[12]`))
	f.Add([]byte(`1`), []byte(`1`))
	f.Fuzz(func(t *testing.T, a, b []byte) {
		text, cuts, nums := split(a)
		if got, want := joinedEqual(b, &skeleton{text: text, cuts: cuts}, string(nums)), bytes.Equal(a, b); got != want {
			t.Fatalf("joinedEqual(%q, split(%q)) = %v, want %v", b, a, got, want)
		}
	})
}

func FuzzSplitJoin(f *testing.F) {
	f.Add([]byte(`{"allow":true,"compliance_score":0.96,"evaluation_details":{"trust_level":0.9000001},"reasons":["a 1"]}`))
	f.Add([]byte(`"\\\"1" 2 -3`))
	f.Fuzz(func(t *testing.T, doc []byte) {
		text, cuts, nums := split(doc)
		if got := join(nil, &skeleton{text: text, cuts: cuts}, string(nums)); !bytes.Equal(got, doc) {
			t.Fatalf("split and joined %q: got %q", doc, got)
		}
	})
}

// A caller appending to a stored value's JSON (to build a response) gets a
// copy: the stored bytes never change.
func TestInternJSONHasNoSpareCapacity(t *testing.T) {
	in := newInterner()
	v := valueOf(t, `{"allow":true}`)
	v.JSON = append(make([]byte, 0, 64), v.JSON...)
	p := in.intern(v)
	for range 3 {
		got := in.value(p)
		_ = append(got.JSON, `garbage`...)
		if string(got.JSON) != `{"allow":true}` || cap(got.JSON) != len(got.JSON) {
			t.Fatalf("stored JSON %q (cap %d) changed by an append", got.JSON, cap(got.JSON))
		}
	}
}

// The tables keep no value or skeleton alive that no entry uses, and their
// dead slots go.
func TestInternForgetsUnusedValues(t *testing.T) {
	in := newInterner()
	keep := in.intern(valueOf(t, `{"allow":true,"n":-1}`))
	for i := range 3 * minSweep {
		in.intern(valueOf(t, fmt.Sprintf(`{"allow":true,"n":%d,"k%d":1}`, i, i)))
		if i%minSweep == 0 {
			runtime.GC()
		}
	}
	runtime.GC()
	in.intern(valueOf(t, `{"allow":true,"n":"last"}`))
	if n := in.size(); n > 2*minSweep {
		t.Errorf("%d slots after %d unused values were stored, want them swept", n, 3*minSweep)
	}
	if n := len(in.skels); n > 2*minSweep {
		t.Errorf("%d skeleton slots after %d unused skeletons were stored, want them swept", n, 3*minSweep)
	}
	if in.intern(valueOf(t, `{"allow":true,"n":-1}`)) != keep {
		t.Error("a value still in use was forgotten")
	}
	runtime.KeepAlive(keep)
}

// Two documents with the same hash are never mixed up: the second is stored
// on its own.
func TestInternHashCollision(t *testing.T) {
	in := newInterner()
	other := in.intern(valueOf(t, `"other"`))
	v := valueOf(t, `{"allow":true}`)
	h := xxh3.Hash128(v.JSON)
	in.m[Key{Hi: h.Hi, Lo: h.Lo}] = weak.Make(other)
	p := in.intern(v)
	if got := in.value(p); p == other || string(got.JSON) != `{"allow":true}` || !reflect.DeepEqual(got.Result, v.Result) {
		t.Fatalf("stored %+v for %s", got, v.JSON)
	}
	runtime.KeepAlive(other)
}

// A value read again and again is decoded twice: the hot set keeps its
// decoded form from the second reading on.
func TestHotSetKeepsWhatIsRead(t *testing.T) {
	in := newInterner()
	p := in.intern(valueOf(t, `{"allow":true,"score":0.5}`))
	if p.hot.Load() != nil {
		t.Fatal("a value stored but never read is kept decoded")
	}
	in.value(p)
	if p.hot.Load() != nil {
		t.Fatal("a value read once is kept decoded")
	}
	a, b := in.value(p), in.value(p)
	if !sameBox(a.Result, b.Result) || &a.JSON[0] != &b.JSON[0] {
		t.Error("a value read three times was decoded three times")
	}
	allocs := testing.AllocsPerRun(100, func() { in.value(p) })
	if allocs != 0 {
		t.Errorf("reading a decoded value allocates %.1f times", allocs)
	}
}

// The hot set holds at most hotMax values and hotMaxBytes of JSON, and a
// value read again and again stays while one-off reads come and go.
func TestHotSetBound(t *testing.T) {
	in := newInterner()
	often := in.intern(valueOf(t, `{"often":true}`))
	var all []*stored
	for i := range 3 * hotMax {
		p := in.intern(valueOf(t, fmt.Sprintf(`{"allow":true,"n":%d}`, i)))
		all = append(all, p)
		in.value(p)
		in.value(p)
		in.value(often)
		if got := in.value(p); mustJSON(got.Result) != fmt.Sprintf(`{"allow":true,"n":%d}`, i) {
			t.Fatalf("value %d reads %s", i, mustJSON(got.Result))
		}
	}
	decoded := 0
	for _, p := range all {
		if p.hot.Load() != nil {
			decoded++
		}
	}
	if decoded >= hotMax {
		t.Errorf("%d values decoded, bound %d", decoded, hotMax)
	}
	if often.hot.Load() == nil {
		t.Error("a value read after every other one was dropped from the hot set")
	}
	big := in.intern(valueOf(t, `"`+strings.Repeat("x", hotMaxBytes/3)+`"`))
	y := in.intern(valueOf(t, `"`+strings.Repeat("y", hotMaxBytes/3)+`"`))
	z := in.intern(valueOf(t, `"`+strings.Repeat("z", hotMaxBytes/3)+`"`))
	for range 10 {
		in.value(big)
		in.value(y)
		in.value(z)
	}
	if in.hot.bytes > hotMaxBytes {
		t.Errorf("hot set holds %d bytes of JSON, bound %d", in.hot.bytes, hotMaxBytes)
	}
	huge := in.intern(valueOf(t, `"`+strings.Repeat("h", hotMaxBytes)+`"`))
	in.value(huge)
	if got := in.value(huge); len(got.JSON) != hotMaxBytes+2 || huge.hot.Load() != nil {
		t.Error("a value longer than the hot set's bound is kept decoded or read wrong")
	}
	in.hot.clear()
	if in.hot.bytes != 0 || often.hot.Load() != nil {
		t.Error("clear left decoded values")
	}
}

// Readers decoding and evicting at the same time each read their own
// decision (run with -race).
func TestHotSetConcurrentReads(t *testing.T) {
	in := newInterner()
	var ps []*stored
	for i := range 2 * hotMax {
		ps = append(ps, in.intern(valueOf(t, fmt.Sprintf(`{"n":%d}`, i))))
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 4 * hotMax {
				j := (i*7 + g*13) % len(ps)
				if got := in.value(ps[j]); string(got.JSON) != fmt.Sprintf(`{"n":%d}`, j) || mustJSON(got.Result) != string(got.JSON) {
					t.Errorf("value %d reads %s / %s", j, got.JSON, mustJSON(got.Result))
					return
				}
			}
		}()
	}
	wg.Wait()
}

// Through the cache: keys with alike decisions answer from one stored value,
// and each answers its own decision.
func TestL1SharesAlikeDecisions(t *testing.T) {
	ctx := context.Background()
	c := newCache(t, "")
	allow, deny := decision(t, true), decision(t, false)
	allow.JSON, deny.JSON = []byte(mustJSON(allow.Result)), []byte(mustJSON(deny.Result))
	for i := range 100 {
		v := allow
		if i%2 == 1 {
			v = deny
		}
		c.Set(key(t, i), valueOf(t, string(v.JSON)))
	}
	if n := c.values.size(); n != 2 {
		t.Errorf("%d stored values for 2 distinct decisions", n)
	}
	for i := range 100 {
		want := allow
		if i%2 == 1 {
			want = deny
		}
		got, tier, ok := c.Lookup(ctx, key(t, i))
		if !ok || tier != TierL1 || !sameDecision(got, want) || string(got.JSON) != string(want.JSON) {
			t.Fatalf("key %d: got %+v %v %v, want %+v", i, got, tier, ok, want)
		}
	}
}

// sameBox reports whether two interface values point to the same memory.
func sameBox(a, b any) bool {
	return (*[2]unsafe.Pointer)(unsafe.Pointer(&a))[1] == (*[2]unsafe.Pointer)(unsafe.Pointer(&b))[1]
}
