package cache

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/acgs-lite/acgs/internal/readset"
)

// Type tags of the canonical encoding. Every value starts with one tag and
// every variable-length part carries its length, so the encoding is a
// prefix-free code: no choice of user strings can make two different values
// encode to the same bytes (there is no delimiter to forge).
const (
	tagNull   = 'z'
	tagFalse  = 'f'
	tagTrue   = 't'
	tagString = 's'
	tagNumber = 'n'
	tagObject = 'o'
	tagArray  = 'a'
)

// maxPooledBuf bounds the buffers kept in the pool, so one huge input does not
// pin its memory for the life of the process.
const maxPooledBuf = 64 << 10

// member is one object member waiting to be sorted. Keeping the value next to
// its key saves a second map lookup per member after sorting.
type member struct {
	k string
	v any
}

// scratch is the per-call working memory of NewKey: the encoding buffer and a
// stack of object members being sorted. Pooled so a key costs no allocation.
type scratch struct {
	buf     []byte
	members []member
	used    int // high-water mark of members, cleared on release
}

var scratchPool = sync.Pool{New: func() any {
	return &scratch{buf: make([]byte, 0, 1024), members: make([]member, 0, 64)}
}}

func getScratch() *scratch { return scratchPool.Get().(*scratch) }

func putScratch(s *scratch) {
	if cap(s.buf) > maxPooledBuf {
		return
	}
	// Do not keep the caller's strings and values alive in the pool.
	clear(s.members[:s.used])
	s.buf, s.members, s.used = s.buf[:0], s.members[:0], 0
	scratchPool.Put(s)
}

// AppendCanonical appends the canonical encoding of v to dst: a type tag per
// value, a length before every string, number, object and array, object keys
// sorted bytewise. Two values get the same bytes exactly when they are equal
// as decoded JSON (reflect.DeepEqual after decoding with UseNumber).
//
// Numbers are encoded by their literal text, not by their numeric value: "1"
// and "1.0" get different encodings. That only costs a cache miss, and it keeps
// a cached result byte-exact when a policy echoes or formats an input number
// (OPA keeps the literal text of a number, so sprintf or json.marshal of 1.0
// and of 1 differ). Go numbers (int, int64, float64) are encoded as the text
// OPA makes of them (a float64 as FormatFloat 'g' writes it: 1e+20, 1e-07),
// so float64(1), int(1) and json.Number("1") agree, and a float64 shares a
// key with a json.Number exactly when OPA cannot tell them apart. The text
// of a json.Number is not validated: it is hashed as given.
//
// Supported: nil, bool, string, json.Number, float64, int, int64,
// map[string]any and []any. Any other type, NaN or an infinity is an error.
func AppendCanonical(dst []byte, v any) ([]byte, error) {
	s := getScratch()
	defer putScratch(s)
	return appendValue(dst, v, s)
}

// NewKey returns the cache key of one decision: a hash (finishKey) of the
// length-prefixed revision, the length-prefixed path and the canonical
// encoding of input. It does not allocate in the steady state.
func NewKey(revision, path string, input any) (Key, error) {
	s := getScratch()
	b := append(appendScope(s.buf[:0], revision, path), tagWhole)
	b, err := appendValue(b, input, s)
	return finishKey(s, b, err)
}

// appendScope appends the length-prefixed revision and path every key
// starts with.
func appendScope(b []byte, revision, path string) []byte {
	b = append(b, keyFormat)
	b = binary.AppendUvarint(b, uint64(len(revision)))
	b = append(b, revision...)
	b = binary.AppendUvarint(b, uint64(len(path)))
	return append(b, path...)
}

// finishKey hashes the encoding b (unless encoding failed) and returns the
// scratch to its pool. The hash is SHA-256, truncated to 128 bits: a key
// stands for a decision in every instance's L1 and in the shared L2, and
// the input is the client's, so two inputs must not be made to collide. A
// fast non-cryptographic hash (XXH3, as keys were until 2026-12-05) lets
// anyone who knows it build two inputs with one key, and have the second
// answered with the first's decision; SHA-256 costs about 0.2-0.3 µs for
// a key's few hundred bytes on this hardware.
func finishKey(s *scratch, b []byte, err error) (Key, error) {
	s.buf = b
	if err != nil {
		putScratch(s)
		return Key{}, err
	}
	k := Sum(b)
	putScratch(s)
	return k, nil
}

// Sum is the 128-bit hash of b that keys are made of: SHA-256 truncated to
// 128 bits, for bytes a client chooses (see finishKey).
func Sum(b []byte) Key {
	sum := sha256.Sum256(b)
	return Key{Hi: binary.BigEndian.Uint64(sum[0:8]), Lo: binary.BigEndian.Uint64(sum[8:16])}
}

// appendValue encodes v. s.members is a stack shared by all nesting levels:
// each object pushes its members, sorts its own segment and pops it when done.
func appendValue(b []byte, v any, s *scratch) ([]byte, error) {
	switch x := v.(type) {
	case nil:
		return append(b, tagNull), nil
	case nullInput:
		return append(b, tagNullInput), nil
	case bool:
		if x {
			return append(b, tagTrue), nil
		}
		return append(b, tagFalse), nil
	case string:
		b = append(b, tagString)
		b = binary.AppendUvarint(b, uint64(len(x)))
		return append(b, x...), nil
	case json.Number:
		b = append(b, tagNumber)
		b = binary.AppendUvarint(b, uint64(len(x)))
		return append(b, x...), nil
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return b, fmt.Errorf("cache: cannot encode %v in a cache key: not a JSON number", x)
		}
		b = append(b, tagNumber, 0)
		// As OPA turns a Go float64 into a number ('g', shortest): OPA
		// keeps a number's text (json.marshal writes it back), so 1e-7
		// given as float64 (1e-07) and as json.Number("1e-7") are two
		// inputs, and two keys.
		return endShortNumber(strconv.AppendFloat(b, x, 'g', -1, 64), len(b)), nil
	case int:
		b = append(b, tagNumber, 0)
		return endShortNumber(strconv.AppendInt(b, int64(x), 10), len(b)), nil
	case int64:
		b = append(b, tagNumber, 0)
		return endShortNumber(strconv.AppendInt(b, x, 10), len(b)), nil
	case map[string]any:
		return appendObject(b, x, s)
	case []any:
		b = append(b, tagArray)
		b = binary.AppendUvarint(b, uint64(len(x)))
		var err error
		for _, e := range x {
			if b, err = appendValue(b, e, s); err != nil {
				return b, err
			}
		}
		return b, nil
	default:
		return b, fmt.Errorf("cache: cannot encode %T in a cache key", v)
	}
}

// endShortNumber fills in the length byte reserved just before at, for a
// number text appended from at on. Go numbers format to at most 24 bytes, so
// the uvarint length always fits that single byte.
func endShortNumber(b []byte, at int) []byte {
	b[at-1] = byte(len(b) - at)
	return b
}

func compareMembers(a, b member) int { return strings.Compare(a.k, b.k) }

func appendObject(b []byte, m map[string]any, s *scratch) ([]byte, error) {
	b = append(b, tagObject)
	b = binary.AppendUvarint(b, uint64(len(m)))
	start := len(s.members)
	for k, v := range m {
		s.members = append(s.members, member{k, v})
	}
	s.used = max(s.used, len(s.members))
	// Nested objects may grow s.members past this segment (even reallocate
	// it); own keeps this level's view, which nested appends never overwrite.
	own := s.members[start:]
	if len(own) > 1 {
		slices.SortFunc(own, compareMembers)
	}
	var err error
	for _, e := range own {
		b = binary.AppendUvarint(b, uint64(len(e.k)))
		b = append(b, e.k...)
		if b, err = appendValue(b, e.v, s); err != nil {
			break
		}
	}
	s.members = s.members[:start]
	return b, err
}

// keyFormat starts every key's encoding: change it when the encoding
// changes, so that instances of two versions sharing an L2 never read each
// other's entries.
const keyFormat = 4 // 3: Go float64s as OPA writes them (03f1a77); 4: no input is not a null input

// NullInput is the input of a request whose whole input is JSON null (OPA's
// GET ?input=null, a v0 body of null): input is then defined, and null,
// where nil, no input at all, leaves it undefined, and a policy can tell
// the two apart (input == null, not input). Decoded JSON holds nil for a
// null everywhere else; only the whole input needs the difference. It
// encodes as null (decision logs).
var NullInput any = nullInput{}

type nullInput struct{}

func (nullInput) MarshalJSON() ([]byte, error) { return []byte("null"), nil }

// Tags that start the input part of a key: the whole input, or its
// projection onto a read set. A projection never hashes like a whole input.
const (
	tagWhole      = 'W'
	tagProjection = 'P'
	tagMissing    = 'm' // a read path absent from the input (never like null)
	tagNullInput  = 'Z' // the whole input is NullInput (never like no input)
)

// NewProjectedKey returns the cache key of a decision whose policy reads
// only paths of the input (a read set: rs.Paths, each read whole, and
// rs.Types, of which only the type is read). It hashes the revision, the
// path and, for each read path in order, the canonical value there or a
// missing marker, then for each type path the type there or a missing
// marker. Two inputs get the
// same key exactly when they agree on every read path, so a field the
// policy cannot read (a request id, a timestamp) does not change the key,
// and a missing field never hashes like a present one. Navigation follows
// reference semantics: a string element looks up an object member, an int
// element indexes an array; anything else is missing.
func NewProjectedKey(revision, path string, rs *readset.Set, input any) (Key, error) {
	s := getScratch()
	b := append(appendScope(s.buf[:0], revision, path), tagProjection)
	// The read set itself: another version of the analysis may project
	// another set of paths, under which other inputs give the same values.
	fp := rs.Fingerprint()
	b = append(b, fp[:]...)
	b = binary.AppendUvarint(b, uint64(len(rs.Paths)))
	var err error
	for _, p := range rs.Paths {
		var v any
		var ok bool
		if v, ok, err = lookup(input, p); err != nil {
			break
		}
		if !ok {
			b = append(b, tagMissing)
			continue
		}
		if b, err = appendValue(b, v, s); err != nil {
			break
		}
	}
	if err == nil {
		b = binary.AppendUvarint(b, uint64(len(rs.Types)))
		for _, p := range rs.Types {
			var v any
			var ok bool
			if v, ok, err = lookup(input, p); err != nil {
				break
			}
			if !ok {
				b = append(b, tagMissing)
				continue
			}
			var t byte
			if t, err = typeTag(v); err != nil {
				break
			}
			b = append(b, t)
		}
	}
	return finishKey(s, b, err)
}

// typeTag is one byte per JSON type: what a type test (is_object,
// type_name, ...) can tell of a value. true and false share one.
func typeTag(v any) (byte, error) {
	switch v.(type) {
	case nil, nullInput:
		return tagNull, nil
	case bool:
		return 'b', nil
	case string:
		return tagString, nil
	case json.Number, float64, int, int64:
		return tagNumber, nil
	case map[string]any:
		return tagObject, nil
	case []any:
		return tagArray, nil
	}
	return 0, fmt.Errorf("cache: cannot encode %T in a cache key", v)
}

// lookup follows p from v, the whole input, as a Rego reference would. No
// input at all (nil) has nothing at any path, itself included: the root of
// a null input (NullInput) is there, and null. A value of a Go type
// the key cannot encode on the way (a map[string]string, a []string: OPA
// takes them as input) is an error, not a missing path: two inputs
// differing inside it would otherwise share a key.
func lookup(v any, p readset.Path) (any, bool, error) {
	if v == nil {
		return nil, false, nil
	}
	for _, e := range p {
		switch k := e.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil, false, encodable(v)
			}
			if v, ok = m[k]; !ok {
				return nil, false, nil
			}
		case int:
			a, ok := v.([]any)
			if !ok {
				return nil, false, encodable(v)
			}
			if k < 0 || k >= len(a) {
				return nil, false, nil
			}
			v = a[k]
		default:
			return nil, false, nil
		}
	}
	return v, true, nil
}

// encodable is nil for a value of a type a key can encode.
func encodable(v any) error {
	_, err := typeTag(v)
	return err
}
