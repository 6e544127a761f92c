package cache

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"runtime"
	"strings"
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
// is made of.
func TestInternKeepsTheValue(t *testing.T) {
	long := strings.Repeat("x", maxLeafLen+1)
	for _, tc := range []struct {
		name string
		v    Value
	}{
		{"constitution decision", valueOf(t, `{"allow":false,"compliance_score":0.829,"constitutional_hash":"cdd01ef066bc6cf2","evaluation_details":{"accountability":0.5,"autonomy":1.0,"trust_level":0.702},"policy":"constitutional","reasons":["Agent trust level 0.702 below required 0.8","Audit logging is not enabled (no audit trail)"]}`)},
		{"empty list and object", valueOf(t, `{"a":[],"b":{},"c":[[],{}]}`)},
		{"scalars", valueOf(t, `[true,false,null,"s",1,1.0,-2.5e3,""]`)},
		{"a bare string", valueOf(t, `"allowed"`)},
		{"a bare number", valueOf(t, `0.95`)},
		{"long strings and keys", valueOf(t, fmt.Sprintf(`{%q:%q,"n":%s}`, long, long, "1"+strings.Repeat("0", maxLeafLen)))},
		{"not JSON-decoded types", Value{Result: map[string]any{"f": 1.5, "i": 3, "s": []string{"a"}}, Defined: true, JSON: []byte(`{"f":1.5,"i":3,"s":["a"]}`)}},
		{"defined without JSON", Value{Result: map[string]any{"allow": true}, Defined: true}},
		{"undefined", Value{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := newInterner()
			p := in.intern(tc.v)
			if p.Defined != tc.v.Defined || !reflect.DeepEqual(p.Result, tc.v.Result) || string(p.JSON) != string(tc.v.JSON) {
				t.Fatalf("stored %+v, want %+v", *p, tc.v)
			}
		})
	}
}

// Entries with the same decision share one stored value; others do not.
func TestInternSharesAlikeDecisions(t *testing.T) {
	in := newInterner()
	a := in.intern(valueOf(t, `{"allow":true,"reasons":[],"score":0.9}`))
	b := in.intern(valueOf(t, `{"allow":true,"reasons":[],"score":0.9}`)) // same document, new memory
	c := in.intern(valueOf(t, `{"allow":true,"reasons":[],"score":0.91}`))
	if a != b {
		t.Error("two alike decisions are stored twice")
	}
	if a == c || reflect.DeepEqual(a.Result, c.Result) {
		t.Error("two different decisions share a stored value")
	}
	u1 := in.intern(Value{})
	u2 := in.intern(Value{})
	if u1 != u2 {
		t.Error("undefined decisions are stored more than once")
	}
	// Leaves are shared between different decisions: the same box, not
	// only the same text.
	ra, rc := a.Result.(map[string]any), c.Result.(map[string]any)
	if !sameBox(ra["reasons"], rc["reasons"]) {
		t.Error("the empty reasons of two decisions are two lists")
	}
	d := in.intern(valueOf(t, `{"allow":false,"policy":"constitutional"}`))
	e := in.intern(valueOf(t, `{"allow":true,"policy":"constitutional"}`))
	if !sameBox(d.Result.(map[string]any)["policy"], e.Result.(map[string]any)["policy"]) {
		t.Error("a string shared by two decisions is stored twice")
	}
}

// sameBox reports whether two interface values point to the same memory.
func sameBox(a, b any) bool {
	return (*[2]unsafe.Pointer)(unsafe.Pointer(&a))[1] == (*[2]unsafe.Pointer)(unsafe.Pointer(&b))[1]
}

// A caller appending to a stored value's JSON (to build a response) gets a
// copy: the stored bytes never change.
func TestInternJSONHasNoSpareCapacity(t *testing.T) {
	in := newInterner()
	v := valueOf(t, `{"allow":true}`)
	v.JSON = append(make([]byte, 0, 64), v.JSON...)
	p := in.intern(v)
	_ = append(p.JSON, `garbage`...)
	q := in.intern(valueOf(t, `{"allow":true}`))
	if string(q.JSON) != `{"allow":true}` || cap(p.JSON) != len(p.JSON) {
		t.Fatalf("stored JSON %q (cap %d) changed by an append", q.JSON, cap(p.JSON))
	}
}

// The table keeps no value alive that no entry uses, and its dead slots go.
func TestInternForgetsUnusedValues(t *testing.T) {
	in := newInterner()
	keep := in.intern(valueOf(t, `{"allow":true,"n":-1}`))
	for i := range 3 * minSweep {
		in.intern(valueOf(t, fmt.Sprintf(`{"allow":true,"n":%d}`, i)))
		if i%minSweep == 0 {
			runtime.GC()
		}
	}
	runtime.GC()
	in.intern(valueOf(t, `{"allow":true,"n":"last"}`))
	if n := in.size(); n > 2*minSweep {
		t.Errorf("%d slots after %d unused values were stored, want them swept", n, 3*minSweep)
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
	other := &Value{Result: "other", Defined: true, JSON: []byte(`"other"`)}
	v := valueOf(t, `{"allow":true}`)
	h := xxh3.Hash128(v.JSON)
	in.m[Key{Hi: h.Hi, Lo: h.Lo}] = weak.Make(other)
	p := in.intern(v)
	if p == other || string(p.JSON) != `{"allow":true}` || !reflect.DeepEqual(p.Result, v.Result) {
		t.Fatalf("stored %+v for %s", *p, v.JSON)
	}
	runtime.KeepAlive(other)
}

// Past the bound of the leaf table, stored values stay right.
func TestInternLeafTableBound(t *testing.T) {
	in := newInterner()
	var want []Value
	var got []*Value
	for i := range 2*leafTableMax + 10 {
		v := valueOf(t, fmt.Sprintf(`{"allow":true,"id":"agent-%d","score":0.%d}`, i, i))
		want, got = append(want, v), append(got, in.intern(v))
	}
	if len(in.leaves) > leafTableMax || len(in.oldLeaves) > leafTableMax {
		t.Errorf("leaf table holds %d + %d leaves, bound %d", len(in.leaves), len(in.oldLeaves), leafTableMax)
	}
	for i := range want {
		if !reflect.DeepEqual(got[i].Result, want[i].Result) {
			t.Fatalf("value %d: stored %v, want %v", i, got[i].Result, want[i].Result)
		}
	}
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
		got, tier, ok := c.Get(ctx, key(t, i))
		if !ok || tier != TierL1 || !sameDecision(got, want) || string(got.JSON) != string(want.JSON) {
			t.Fatalf("key %d: got %+v %v %v, want %+v", i, got, tier, ok, want)
		}
	}
}
