package cache

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/acgs-lite/acgs/internal/readset"
)

func decode(tb testing.TB, s string) any {
	tb.Helper()
	var v any
	d := json.NewDecoder(stringsReader(s))
	d.UseNumber()
	if err := d.Decode(&v); err != nil {
		tb.Fatal(err)
	}
	return v
}

// TestProjectedKey: inputs that agree on every read path share a key, and
// any difference on a read path (a value, a type, presence) separates them.
func TestProjectedKey(t *testing.T) {
	paths := []readset.Path{{"action"}, {"context", "agent", "trust_level"}, {"items"}, {"xs", 0, "name"}}
	base := `{"action":"read","context":{"agent":{"trust_level":0.9}},"items":[1,2],"xs":[{"name":"a"}]}`
	cases := []struct {
		name  string
		input string
		same  bool
	}{
		{"identical", base, true},
		{"an id and a timestamp outside the read set", `{"request_id":"r-1","ts":123,"action":"read","context":{"session":"s","agent":{"id":"x","trust_level":0.9}},"items":[1,2],"xs":[{"name":"a","extra":true},{"name":"b"}]}`, true},
		{"member order", `{"xs":[{"name":"a"}],"items":[1,2],"context":{"agent":{"trust_level":0.9}},"action":"read"}`, true},
		{"a read value differs", `{"action":"write","context":{"agent":{"trust_level":0.9}},"items":[1,2],"xs":[{"name":"a"}]}`, false},
		{"number text differs (0.90)", `{"action":"read","context":{"agent":{"trust_level":0.90}},"items":[1,2],"xs":[{"name":"a"}]}`, false},
		{"a read field missing", `{"action":"read","context":{"agent":{}},"items":[1,2],"xs":[{"name":"a"}]}`, false},
		{"a read field null", `{"action":"read","context":{"agent":{"trust_level":null}},"items":[1,2],"xs":[{"name":"a"}]}`, false},
		{"an array read whole: order", `{"action":"read","context":{"agent":{"trust_level":0.9}},"items":[2,1],"xs":[{"name":"a"}]}`, false},
		{"an array read whole: an element more", `{"action":"read","context":{"agent":{"trust_level":0.9}},"items":[1,2,3],"xs":[{"name":"a"}]}`, false},
		{"an indexed element", `{"action":"read","context":{"agent":{"trust_level":0.9}},"items":[1,2],"xs":[{"name":"b"},{"name":"a"}]}`, false},
		{"string for number", `{"action":"read","context":{"agent":{"trust_level":"0.9"}},"items":[1,2],"xs":[{"name":"a"}]}`, false},
	}
	want, err := NewProjectedKey("rev", "p", &readset.Set{Paths: paths}, decode(t, base))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := NewProjectedKey("rev", "p", &readset.Set{Paths: paths}, decode(t, tc.input))
			if err != nil {
				t.Fatal(err)
			}
			if (got == want) != tc.same {
				t.Errorf("same key = %v, want %v", got == want, tc.same)
			}
		})
	}
}

// TestProjectedKeyMissingIsNeverAValue: a missing path, a null and every
// kind of container that makes the path missing are told apart only as the
// reference would tell them apart: undefined is undefined, whatever the
// parent was, and never like a present value.
func TestProjectedKeyMissingIsNeverAValue(t *testing.T) {
	paths := []readset.Path{{"a", "b"}, {"xs", 1}}
	key := func(s string) Key {
		k, err := NewProjectedKey("rev", "p", &readset.Set{Paths: paths}, decode(t, s))
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	missing := key(`{}`)
	for _, s := range []string{`{"a":"str"}`, `{"a":[1]}`, `{"a":{}}`, `{"a":null}`, `{"xs":{"1":2}}`, `{"xs":[0]}`, `{"xs":"ab"}`, `null`, `[1,2]`} {
		if k := key(s); k != missing {
			t.Errorf("%s: a missing path hashed differently from {}", s)
		}
	}
	for _, s := range []string{`{"a":{"b":null}}`, `{"a":{"b":false}}`, `{"a":{"b":""}}`, `{"a":{"b":0}}`, `{"a":{"b":{}}}`, `{"a":{"b":[]}}`, `{"xs":[0,null]}`} {
		if k := key(s); k == missing {
			t.Errorf("%s: a present value hashed like a missing path", s)
		}
	}
	// Tags: the projection onto no path never hashes like the whole input.
	whole, _ := NewKey("rev", "p", map[string]any{})
	none, _ := NewProjectedKey("rev", "p", &readset.Set{}, map[string]any{})
	if whole == none {
		t.Errorf("an empty projection hashed like the whole empty input")
	}
	// Revision and path scope the key.
	a, _ := NewProjectedKey("rev", "p", &readset.Set{Paths: paths}, map[string]any{})
	b, _ := NewProjectedKey("rev2", "p", &readset.Set{Paths: paths}, map[string]any{})
	c, _ := NewProjectedKey("rev", "q", &readset.Set{Paths: paths}, map[string]any{})
	if a == b || a == c {
		t.Errorf("revision or path did not change the key")
	}
}

// FuzzProjectedKey: a member added outside the read set never changes the
// key; encoding never panics on any decoded JSON.
func FuzzProjectedKey(f *testing.F) {
	f.Add(`{"action":"read","context":{"agent":{"trust_level":0.9}}}`, "noise")
	f.Add(`{"a":[{"b":1}],"context":null}`, "context")
	f.Add(`[1,{"a":2}]`, "a")
	paths := []readset.Path{{"action"}, {"context", "agent", "trust_level"}, {"a", 0, "b"}}
	f.Fuzz(func(t *testing.T, doc, extra string) {
		var v any
		d := json.NewDecoder(stringsReader(doc))
		d.UseNumber()
		if d.Decode(&v) != nil {
			return
		}
		k1, err := NewProjectedKey("rev", "p", &readset.Set{Paths: paths}, v)
		if err != nil {
			return
		}
		m, ok := v.(map[string]any)
		if !ok || extra == "action" || extra == "context" || extra == "a" {
			return
		}
		if _, taken := m[extra]; taken {
			return
		}
		m[extra] = "noise"
		k2, err := NewProjectedKey("rev", "p", &readset.Set{Paths: paths}, m)
		if err != nil || k1 != k2 {
			t.Fatalf("a member outside the read set changed the key (%v)", err)
		}
	})
}

func stringsReader(s string) *strings.Reader { return strings.NewReader(s) }

// TestProjectedKeyTypes: of a path whose type only is read, the type counts
// and the contents do not.
func TestProjectedKeyTypes(t *testing.T) {
	rs := &readset.Set{Paths: []readset.Path{{"r", "kind"}}, Types: []readset.Path{{"r"}}}
	key := func(s string) Key {
		k, err := NewProjectedKey("rev", "p", rs, decode(t, s))
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	obj := key(`{"r":{"kind":"a"}}`)
	for _, s := range []string{`{"r":{"kind":"a","id":"x"}}`, `{"r":{"kind":"a","meta":{"n":[1]}},"x":1}`} {
		if key(s) != obj {
			t.Errorf("%s: contents outside the read paths changed the key", s)
		}
	}
	seen := map[Key]string{obj: "object"}
	for _, s := range []string{`{}`, `{"r":null}`, `{"r":true}`, `{"r":"a"}`, `{"r":1}`, `{"r":[]}`, `{"r":{"kind":"b"}}`} {
		k := key(s)
		if prev, dup := seen[k]; dup {
			t.Errorf("%s hashed like %s", s, prev)
		}
		seen[k] = s
	}
	if key(`{"r":true}`) != key(`{"r":false}`) {
		t.Errorf("true and false are one type")
	}
	if key(`{"r":1}`) != key(`{"r":2.5}`) {
		t.Errorf("1 and 2.5 are one type")
	}
}

// TestProjectedKeyRefusesGoContainers: a read path through a Go container
// the key cannot encode (OPA takes a map[string]string or a []string as
// input) makes the key an error (the decision is not cached), not a
// missing path that two different inputs would share.
func TestProjectedKeyRefusesGoContainers(t *testing.T) {
	for _, tc := range []struct {
		name  string
		paths []readset.Path
		types bool
		input any
	}{
		{"map[string]string", []readset.Path{{"ctx", "role"}}, false, map[string]any{"ctx": map[string]string{"role": "admin"}}},
		{"[]string", []readset.Path{{"roles", 0}}, false, map[string]any{"roles": []string{"admin"}}},
		{"a type read through one", []readset.Path{{"ctx", "role"}}, true, map[string]any{"ctx": map[string]string{"role": "admin"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs := &readset.Set{Paths: tc.paths}
			if tc.types {
				rs = &readset.Set{Types: tc.paths}
			}
			if k, err := NewProjectedKey("rev", "p", rs, tc.input); err == nil {
				t.Fatalf("key %x, want an error", k)
			}
		})
	}
	// Scalars on the way are a missing path, as in a reference.
	if _, err := NewProjectedKey("rev", "p", &readset.Set{Paths: []readset.Path{{"ctx", "role"}}}, map[string]any{"ctx": "x"}); err != nil {
		t.Fatal(err)
	}
}
