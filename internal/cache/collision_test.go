package cache

import (
	"encoding/binary"
	"encoding/json"
	"testing"

	"github.com/zeebo/xxh3"

	"github.com/acgs-lite/acgs/internal/readset"
)

// xxh3Secret is the first 192 bytes of XXH3's published default secret
// (kSecret): what made keys hashed with XXH3 collide at will.
var xxh3Secret = []byte{
	0xb8, 0xfe, 0x6c, 0x39, 0x23, 0xa4, 0x4b, 0xbe, 0x7c, 0x01, 0x81, 0x2c, 0xf7, 0x21, 0xad, 0x1c,
	0xde, 0xd4, 0x6d, 0xe9, 0x83, 0x90, 0x97, 0xdb, 0x72, 0x40, 0xa4, 0xa4, 0xb7, 0xb3, 0x67, 0x1f,
	0xcb, 0x79, 0xe6, 0x4e, 0xcc, 0xc0, 0xe5, 0x78, 0x82, 0x5a, 0xd0, 0x7d, 0xcc, 0xff, 0x72, 0x21,
	0xb8, 0x08, 0x46, 0x74, 0xf7, 0x43, 0x24, 0x8e, 0xe0, 0x35, 0x90, 0xe6, 0x81, 0x3a, 0x26, 0x4c,
	0x3c, 0x28, 0x52, 0xbb, 0x91, 0xc3, 0x00, 0xcb, 0x88, 0xd0, 0x65, 0x8b, 0x1b, 0x53, 0x2e, 0xa3,
	0x71, 0x64, 0x48, 0x97, 0xa2, 0x0d, 0xf9, 0x4e, 0x38, 0x19, 0xef, 0x46, 0xa9, 0xde, 0xac, 0xd8,
	0xa8, 0xfa, 0x76, 0x3f, 0xe3, 0x9c, 0x34, 0x3f, 0xf9, 0xdc, 0xbb, 0xc7, 0xc7, 0x0b, 0x4f, 0x1d,
	0x8a, 0x51, 0xe0, 0x4b, 0xcd, 0xb4, 0x59, 0x31, 0xc8, 0x9f, 0x7e, 0xc9, 0xd9, 0x78, 0x73, 0x64,
	0xea, 0xc5, 0xac, 0x83, 0x34, 0xd3, 0xeb, 0xc3, 0xc5, 0x81, 0xa0, 0xff, 0xfa, 0x13, 0x63, 0xeb,
	0x17, 0x0d, 0xdd, 0x51, 0xb7, 0xf0, 0xda, 0x49, 0xd3, 0x16, 0x55, 0x26, 0x29, 0xd4, 0x68, 0x9e,
	0x2b, 0x16, 0xbe, 0x58, 0x7d, 0x47, 0xa1, 0xfc, 0x8f, 0xf8, 0xb8, 0xd1, 0x7a, 0xd0, 0x31, 0xce,
	0x45, 0xcb, 0x3a, 0x8f, 0x95, 0x16, 0x04, 0x28, 0xaf, 0xd7, 0xfb, 0xca, 0xbb, 0x4b, 0x40, 0x7e,
}

// Two inputs whose key encodings XXH3-128 maps to one hash (two 8-byte
// words swapped between stripes 3 and 11 of a long string, chosen from the
// public secret so that their products agree) must get two keys: a
// client that could collide keys could have one input answered with the
// other's cached decision.
func TestKeysOfCollidingInputsDiffer(t *testing.T) {
	const rev, path, L = "r1#0123456789abcdef", "acgs/main/decision", 3000
	prefix := appendScope(nil, rev, path)
	prefix = append(prefix, tagWhole, tagString)
	prefix = binary.AppendUvarint(prefix, L)
	off := len(prefix)
	n1, n2, lane := 3, 11, 2
	p1, p2 := 64*n1+8*lane, 64*n2+8*lane
	s1 := binary.LittleEndian.Uint64(xxh3Secret[8*n1+8*lane:])
	s2 := binary.LittleEndian.Uint64(xxh3Secret[8*n2+8*lane:])
	x := s1&0xffffffff | s2&^0xffffffff
	y := s2&0xffffffff | s1&^0xffffffff
	mk := func(a, b uint64) string {
		buf := make([]byte, L)
		for i := range buf {
			buf[i] = 'A'
		}
		binary.LittleEndian.PutUint64(buf[p1-off:], a)
		binary.LittleEndian.PutUint64(buf[p2-off:], b)
		return string(buf)
	}
	a, b := mk(x, y), mk(y, x)
	// The encodings NewKey hashed: scope, tag, then the string.
	enc := func(v string) []byte {
		s := getScratch()
		defer putScratch(s)
		e, err := appendValue(append(appendScope(nil, rev, path), tagWhole), v, s)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	encA, encB := enc(a), enc(b)
	if a == b || string(encA) == string(encB) || xxh3.Hash128(encA) != xxh3.Hash128(encB) {
		t.Fatal("the test no longer builds an XXH3 collision of two key encodings")
	}
	ka, _ := NewKey(rev, path, a)
	kb, _ := NewKey(rev, path, b)
	if ka == kb {
		t.Fatalf("NewKey: two inputs, one key %x", ka)
	}
	rs := &readset.Set{Paths: []readset.Path{{"cmd"}}}
	pa, _ := NewProjectedKey(rev, path, rs, map[string]any{"cmd": a})
	pb, _ := NewProjectedKey(rev, path, rs, map[string]any{"cmd": b})
	if pa == pb {
		t.Fatalf("NewProjectedKey: two inputs, one key %x", pa)
	}
}

// A projected key names its read set: one input projected by two sets to
// the same values (another version of the analysis sharing an L2) gets
// two keys.
func TestProjectedKeyNamesItsReadSet(t *testing.T) {
	ab := &readset.Set{Paths: []readset.Path{{"a", "b"}}}
	a := &readset.Set{Paths: []readset.Path{{"a"}}}
	k1, err1 := NewProjectedKey("rev", "p", ab, map[string]any{"a": map[string]any{"b": json.Number("5")}})
	k2, err2 := NewProjectedKey("rev", "p", a, map[string]any{"a": json.Number("5")})
	if err1 != nil || err2 != nil || k1 == k2 {
		t.Fatalf("input.a.b = 5 under [a.b] and input.a = 5 under [a]: keys %x %x (%v, %v)", k1, k2, err1, err2)
	}
	if ab.Fingerprint() == a.Fingerprint() || ab.Fingerprint() != (&readset.Set{Paths: []readset.Path{{"a", "b"}}}).Fingerprint() {
		t.Fatal("fingerprints do not tell the sets apart, or differ for equal sets")
	}
}

// No input and a null input (NullInput) are two inputs wherever a policy
// could tell them apart (input == null, not input, is_null(input)): the
// whole input, its root read whole, its root's type. Where it cannot (it
// reads only paths inside the input, missing in both), they share a key.
func TestNoInputIsNotANullInput(t *testing.T) {
	for _, c := range []struct {
		name string
		rs   *readset.Set // nil: the whole input (NewKey)
		same bool
	}{
		{"whole input", nil, false},
		{"the root read whole", &readset.Set{Paths: []readset.Path{{}}}, false},
		{"the root's type", &readset.Set{Types: []readset.Path{{}}}, false},
		{"a path inside", &readset.Set{Paths: []readset.Path{{"x"}}, Types: []readset.Path{{"y"}}}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			key := func(input any) Key {
				var k Key
				var err error
				if c.rs == nil {
					k, err = NewKey("rev", "p", input)
				} else {
					k, err = NewProjectedKey("rev", "p", c.rs, input)
				}
				if err != nil {
					t.Fatal(err)
				}
				return k
			}
			if same := key(nil) == key(NullInput); same != c.same {
				t.Errorf("no input and a null input share a key: %v, want %v", same, c.same)
			}
			if !c.same && key(NullInput) == key(map[string]any{}) {
				t.Error("a null input and an empty object share a key where the root is read")
			}
		})
	}
}
