package cache

import (
	"bytes"
	"encoding/json"
	"slices"
	"sync"
	"sync/atomic"
	"weak"

	"github.com/zeebo/xxh3"

	"github.com/acgs-lite/acgs/internal/jsonenc"
)

// interner keeps the decisions stored in L1 compact. A decision is kept as
// its JSON, not as its decoded result: decoded, one of the constitution's
// decisions is two Go maps and a boxed value for every string and number,
// about 1.1 KB beside 330 bytes of JSON, and 10,000 of them doubled by the
// garbage collector's pacing were most of the service's resident memory.
// So:
//
//   - entries whose decisions are alike share one stored value. Values are
//     matched on their JSON encoding (the same bytes are the same JSON
//     document, so the same decoded value); only a defined value with its
//     JSON is shared and kept encoded, any other is stored as it is, on its
//     own. The table holds weak pointers, so it never keeps alive a value
//     that no entry uses; dead slots are swept when the table has doubled
//     since the last sweep;
//   - the JSON is kept as a skeleton shared with every other decision that
//     differs from it in numbers only (scores, echoed trust levels) and the
//     text of its own numbers: about 50 bytes instead of 330 for the
//     constitution's decisions. The split is a partition of the bytes, so
//     the JSON put back together is byte for byte the one stored, whatever
//     it holds;
//   - the decoded result is made again from the JSON when an entry is read,
//     and from its second decoding on kept, with the JSON, in a bounded set
//     of recently read values (a CLOCK: hotMax values, hotMaxBytes of JSON),
//     so that a decision read again and again is decoded twice, one stored
//     but never read is never decoded, and one-off reads of many decisions
//     take no room.
//
// A stored value and everything it hands out are never modified (as for
// every cached value), and the JSON it hands out has no spare capacity, so
// that a caller appending to it copies.
type interner struct {
	mu      sync.Mutex
	m       map[Key]weak.Pointer[stored]
	sweepAt int
	// skels holds the skeletons in use, by the hash of their text and cuts.
	skels       map[Key]weak.Pointer[skeleton]
	skelSweepAt int

	hot hotSet
}

// stored is one distinct decision as L1 keeps it: either fixed, a Value kept
// as it is (undefined, or without JSON), or the encoded JSON of a defined
// value (sk and nums) and, while it is in the hot set, its decoded form.
type stored struct {
	fixed *Value
	sk    *skeleton
	nums  string // the numbers cut out of the JSON: for each, its length (one byte) and its text
	size  int32  // length of the JSON
	// bits holds bitUsed, the CLOCK bit (set when the value is read while
	// decoded), and bitSeen (set when it was decoded once and not kept).
	bits atomic.Uint32
	hot  atomic.Pointer[Value]
}

// skeleton is the text of a JSON document with its numbers cut out: number
// i goes at offset cuts[i] of text.
type skeleton struct {
	text []byte
	cuts []uint32
}

const (
	// minSweep is the table size below which dead slots are left alone.
	minSweep = 1024
	// maxNumberLen is the longest number cut out of a skeleton (its length
	// is one byte); a longer one stays in the skeleton's text.
	maxNumberLen = 255
	// hotMax and hotMaxBytes bound the set of decoded values: at most hotMax
	// values whose JSON adds up to at most hotMaxBytes. A value whose JSON is
	// longer than hotMaxBytes is decoded for each read.
	hotMax      = 256
	hotMaxBytes = 256 << 10
)

// undefined is the one stored Value of every undefined decision.
var undefined = &stored{fixed: &Value{}}

func newInterner() *interner {
	return &interner{
		m: make(map[Key]weak.Pointer[stored]), sweepAt: minSweep,
		skels: make(map[Key]weak.Pointer[skeleton]), skelSweepAt: minSweep,
		hot: hotSet{ring: make([]*stored, hotMax)},
	}
}

// intern returns the stored form of v: the one already stored for the same
// decision if one is alive, else a new compact one.
func (in *interner) intern(v Value) *stored {
	if !v.Defined && v.Result == nil && v.JSON == nil {
		return undefined
	}
	if !v.Defined || v.JSON == nil || len(v.JSON) > 1<<30 {
		return &stored{fixed: &Value{Result: v.Result, Defined: v.Defined, JSON: v.JSON[:len(v.JSON):len(v.JSON)]}}
	}
	h := xxh3.Hash128(v.JSON)
	k := Key{Hi: h.Hi, Lo: h.Lo}
	// Most decisions stored are alike (many keys, few distinct decisions):
	// one already stored is found by comparing the bytes, without
	// validating, splitting and hashing its skeleton again (it was valid
	// JSON when it was stored, so the same bytes are).
	in.mu.Lock()
	if wp, ok := in.m[k]; ok {
		if p := wp.Value(); p != nil && joinedEqual(v.JSON, p.sk, p.nums) {
			in.mu.Unlock()
			return p
		}
	}
	in.mu.Unlock()
	if !json.Valid(v.JSON) {
		return &stored{fixed: &Value{Result: v.Result, Defined: v.Defined, JSON: v.JSON[:len(v.JSON):len(v.JSON)]}}
	}
	text, cuts, nums := split(v.JSON)
	skk := skeletonKey(text, cuts) // hashed before the lock: concurrent writes need not wait for it
	in.mu.Lock()
	defer in.mu.Unlock()
	sk := in.skeleton(skk, text, cuts)
	if wp, ok := in.m[k]; ok {
		if p := wp.Value(); p != nil {
			if p.sk == sk && p.nums == string(nums) {
				return p
			}
			// Two documents with one 128-bit hash: keep this one unshared.
			return &stored{sk: sk, nums: string(nums), size: int32(len(v.JSON))}
		}
	}
	p := &stored{sk: sk, nums: string(nums), size: int32(len(v.JSON))}
	in.m[k] = weak.Make(p)
	if len(in.m) >= in.sweepAt {
		for k, wp := range in.m {
			if wp.Value() == nil {
				delete(in.m, k)
			}
		}
		in.sweepAt = max(2*len(in.m), minSweep)
	}
	return p
}

// skeletonKey is the table key of the skeleton of text and cuts.
func skeletonKey(text []byte, cuts []uint32) Key {
	d := xxh3.New128()
	var b [4]byte
	for _, c := range cuts {
		b[0], b[1], b[2], b[3] = byte(c), byte(c>>8), byte(c>>16), byte(c>>24)
		_, _ = d.Write(b[:])
	}
	b[0], b[1], b[2], b[3] = byte(len(cuts)), byte(len(cuts)>>8), byte(len(cuts)>>16), byte(len(cuts)>>24)
	_, _ = d.Write(b[:])
	_, _ = d.Write(text)
	h := d.Sum128()
	return Key{Hi: h.Hi, Lo: h.Lo}
}

// skeleton returns the stored skeleton of text and cuts (whose key is k),
// storing a copy if there is none; in.mu is held.
func (in *interner) skeleton(k Key, text []byte, cuts []uint32) *skeleton {
	if wp, ok := in.skels[k]; ok {
		if s := wp.Value(); s != nil && bytes.Equal(s.text, text) && slices.Equal(s.cuts, cuts) {
			return s
		}
	}
	s := &skeleton{text: bytes.Clone(text), cuts: append([]uint32(nil), cuts...)}
	if wp, ok := in.skels[k]; ok && wp.Value() != nil {
		return s // another live skeleton has this hash: this one stays out of the table
	}
	in.skels[k] = weak.Make(s)
	if len(in.skels) >= in.skelSweepAt {
		for k, wp := range in.skels {
			if wp.Value() == nil {
				delete(in.skels, k)
			}
		}
		in.skelSweepAt = max(2*len(in.skels), minSweep)
	}
	return s
}

// split cuts the numbers out of a JSON document: text is the document
// without them, number i was at offset cuts[i] of text, and nums holds each
// number's length (one byte) and text. A number is a run of the characters
// of JSON numbers, outside strings, that starts with a digit or a minus
// sign. Whatever the input, put (join) gives it back byte for byte: text and
// the numbers are a partition of its bytes.
func split(doc []byte) (text []byte, cuts []uint32, nums []byte) {
	text = make([]byte, 0, len(doc))
	var strs jsonenc.Strings
	for i := 0; i < len(doc); {
		c := doc[i]
		if strs.Outside(c) && (c == '-' || (c >= '0' && c <= '9')) {
			j := i + 1
			for j < len(doc) && isNumberByte(doc[j]) {
				j++
			}
			if j-i <= maxNumberLen {
				cuts = append(cuts, uint32(len(text)))
				nums = append(nums, byte(j-i))
				nums = append(nums, doc[i:j]...)
				i = j
				continue
			}
			text = append(text, doc[i:j]...)
			i = j
			continue
		}
		text = append(text, c)
		i++
	}
	return text, cuts, nums
}

func isNumberByte(c byte) bool {
	return (c >= '0' && c <= '9') || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-'
}

// join puts a document split by split together again.
func join(dst []byte, sk *skeleton, nums string) []byte {
	prev := 0
	for _, c := range sk.cuts {
		dst = append(dst, sk.text[prev:c]...)
		n := int(nums[0])
		dst = append(dst, nums[1:1+n]...)
		nums = nums[1+n:]
		prev = int(c)
	}
	return append(dst, sk.text[prev:]...)
}

// joinedEqual reports whether doc is the document join(nil, sk, nums) would
// make, without making it.
func joinedEqual(doc []byte, sk *skeleton, nums string) bool {
	prev := 0
	for _, c := range sk.cuts {
		part := sk.text[prev:c]
		if len(doc) < len(part) || string(doc[:len(part)]) != string(part) {
			return false
		}
		doc = doc[len(part):]
		n := int(nums[0])
		if len(doc) < n || string(doc[:n]) != nums[1:1+n] {
			return false
		}
		doc, nums = doc[n:], nums[1+n:]
		prev = int(c)
	}
	return string(doc) == string(sk.text[prev:])
}

// value returns the decision p stores, decoding it when it is not in the
// hot set.
func (in *interner) value(p *stored) Value {
	if p.fixed != nil {
		return *p.fixed
	}
	if h := p.hot.Load(); h != nil {
		if p.bits.Load()&bitUsed == 0 {
			p.bits.Or(bitUsed)
		}
		return *h
	}
	return in.decode(p)
}

// encoded returns p's decision with its JSON, and with its decoded Result
// only when p already holds it decoded (nil otherwise): for a reader that
// needs the bytes and not the value, without the cost of decoding a cold
// entry or touching the hot set.
func (in *interner) encoded(p *stored) Value {
	if p.fixed != nil {
		return *p.fixed
	}
	if h := p.hot.Load(); h != nil {
		return *h
	}
	return Value{Defined: true, JSON: join(make([]byte, 0, p.size), p.sk, p.nums)}
}

// decoded is encoded with the Result of an entry held encoded decoded
// (decodeStored), neither kept nor offered to the hot set: for a reader
// that needs the value once, outside the lookups the hot set follows.
func (in *interner) decoded(p *stored) Value {
	if p.fixed != nil {
		return *p.fixed
	}
	if h := p.hot.Load(); h != nil {
		return *h
	}
	j := join(make([]byte, 0, p.size), p.sk, p.nums)
	return Value{Result: decodeStored(j), Defined: true, JSON: j}
}

const (
	bitUsed = 1 << iota
	bitSeen
)

// decode makes p's decision again from its JSON. The first time, that is
// all: a decision read once (a burst of one-off requests, a second pass over
// many keys) takes no room in the hot set; from the second time on, it is
// offered to the hot set.
func (in *interner) decode(p *stored) Value {
	j := join(make([]byte, 0, p.size), p.sk, p.nums)
	v := &Value{Result: decodeStored(j), Defined: true, JSON: j}
	if p.bits.Load()&bitSeen == 0 {
		p.bits.Or(bitSeen)
		return *v
	}
	return *in.hot.admit(p, v)
}

// hotSet is the bounded set of stored values kept decoded: a CLOCK over a
// ring of slots. A value read while decoded gets its bit set; the hand
// passing a value clears its bit, or drops its decoded form when the bit is
// already clear.
type hotSet struct {
	mu    sync.Mutex
	ring  []*stored
	hand  int
	bytes int // JSON bytes of the values in the ring
}

// admit keeps v as p's decoded form if it fits, and returns p's decoded
// form (v, or the one another reader installed first).
func (h *hotSet) admit(p *stored, v *Value) *Value {
	need := len(v.JSON)
	if need > hotMaxBytes {
		return v
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if cur := p.hot.Load(); cur != nil {
		return cur
	}
	// Every step moves the hand or empties a slot, and two turns clear
	// every bit, so this ends.
	for steps := 0; steps <= 4*len(h.ring); steps++ {
		q := h.ring[h.hand]
		switch {
		case q == nil && h.bytes+need <= hotMaxBytes:
			p.bits.And(^uint32(bitUsed))
			p.hot.Store(v)
			h.ring[h.hand] = p
			h.bytes += need
			h.hand = (h.hand + 1) % len(h.ring)
			return v
		case q == nil:
		case q.bits.Load()&bitUsed != 0:
			q.bits.And(^uint32(bitUsed)) // a second chance
		default:
			h.evict(h.hand)
			continue
		}
		h.hand = (h.hand + 1) % len(h.ring)
	}
	return v
}

// evict drops the decoded form of the value in slot i; h.mu is held.
func (h *hotSet) evict(i int) {
	q := h.ring[i]
	if v := q.hot.Swap(nil); v != nil {
		h.bytes -= len(v.JSON)
	}
	h.ring[i] = nil
}

// clear drops every decoded form (after L1 is emptied, so that the values
// of a purged revision are not kept).
func (h *hotSet) clear() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, q := range h.ring {
		if q != nil {
			h.evict(i)
		}
	}
	h.hand = 0
}

// size is the number of stored values in the table, live or not yet swept.
func (in *interner) size() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return len(in.m)
}
