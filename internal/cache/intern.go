package cache

import (
	"bytes"
	"encoding/json"
	"sync"
	"weak"

	"github.com/zeebo/xxh3"
)

// interner keeps the decisions stored in L1 compact. Two things make an
// entry large: the decoded result (maps, slices and a boxed value for every
// string and number: about 1-3 KB for the constitution's decisions, beside
// 350-800 bytes of JSON) and there being one per key. But many keys get the
// same decision (inputs that differ in a field that moves no rule across a
// threshold; many agents asking the same thing), and distinct decisions are
// mostly made of the same strings and numbers (reasons, categories, scores).
// So:
//
//   - entries whose decisions are alike share one stored Value. Values are
//     matched on their JSON encoding (the same bytes are the same JSON
//     document, so the same decoded value); only a defined value with its
//     JSON is shared, any other is stored on its own. The table holds weak
//     pointers, so it never keeps alive a value that no entry uses; dead
//     slots are swept when the table has doubled since the last sweep;
//   - a new distinct decision is stored as a copy of its result whose short
//     strings and numbers are the ones already stored for other decisions
//     (the same boxed value, not only equal text), and whose empty lists and
//     objects are one shared empty list and object. The table of those
//     leaves is bounded: it starts again empty when it reaches leafTableMax
//     entries, so it holds at most twice that many leaves that no entry
//     uses any more.
//
// A stored Value and everything in it are never modified (as for every
// cached value), and its JSON has no spare capacity, so that a caller
// appending to it copies.
type interner struct {
	mu      sync.Mutex
	m       map[Key]weak.Pointer[Value]
	sweepAt int
	// leaves and oldLeaves map a short string or number to its stored boxed
	// value: the current generation and the one before it.
	leaves, oldLeaves map[leaf]any
}

// leaf is a string or the text of a json.Number.
type leaf struct {
	s   string
	num bool
}

const (
	// minSweep is the table size below which dead slots are left alone.
	minSweep = 1024
	// leafTableMax is the number of leaves in one generation of the table.
	leafTableMax = 1 << 14
	// maxLeafLen is the longest string shared as a leaf: long strings rarely
	// repeat and would make the table's bound a bound on little.
	maxLeafLen = 128
)

var (
	// undefined is the one stored Value of every undefined decision.
	undefined = &Value{}
	// emptyList and emptyObject are the stored empty list and object.
	emptyList   any = []any{}
	emptyObject any = map[string]any{}
)

func newInterner() *interner {
	return &interner{m: make(map[Key]weak.Pointer[Value]), sweepAt: minSweep, leaves: make(map[leaf]any)}
}

// intern returns the stored form of v: the Value already stored for the same
// decision if one is alive, else a new compact one.
func (in *interner) intern(v Value) *Value {
	if !v.Defined && v.Result == nil && v.JSON == nil {
		return undefined
	}
	if !v.Defined || v.JSON == nil {
		return &Value{Result: v.Result, Defined: v.Defined, JSON: v.JSON[:len(v.JSON):len(v.JSON)]}
	}
	h := xxh3.Hash128(v.JSON)
	k := Key{Hi: h.Hi, Lo: h.Lo}
	in.mu.Lock()
	defer in.mu.Unlock()
	if wp, ok := in.m[k]; ok {
		if p := wp.Value(); p != nil {
			if bytes.Equal(p.JSON, v.JSON) {
				return p
			}
			// Two documents with one 128-bit hash: keep this one unshared.
			return &Value{Result: in.compact(v.Result), Defined: true, JSON: v.JSON[:len(v.JSON):len(v.JSON)]}
		}
	}
	p := &Value{Result: in.compact(v.Result), Defined: true, JSON: v.JSON[:len(v.JSON):len(v.JSON)]}
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

// compact returns a copy of a decoded JSON value made of stored leaves, with
// maps and slices of exactly their size. Values of other types are kept as
// they are.
func (in *interner) compact(v any) any {
	switch x := v.(type) {
	case map[string]any:
		if len(x) == 0 {
			return emptyObject
		}
		m := make(map[string]any, len(x))
		for k, e := range x {
			if len(k) <= maxLeafLen {
				k = in.leaf(leaf{s: k}, k).(string)
			}
			m[k] = in.compact(e)
		}
		return m
	case []any:
		if len(x) == 0 {
			return emptyList
		}
		a := make([]any, len(x))
		for i, e := range x {
			a[i] = in.compact(e)
		}
		return a
	case string:
		if len(x) > maxLeafLen {
			return x
		}
		return in.leaf(leaf{s: x}, x)
	case json.Number:
		if len(x) > maxLeafLen {
			return x
		}
		return in.leaf(leaf{s: string(x), num: true}, x)
	default:
		return v
	}
}

// leaf returns the stored boxed value of l, storing v as it if there is none.
func (in *interner) leaf(l leaf, v any) any {
	if s, ok := in.leaves[l]; ok {
		return s
	}
	if s, ok := in.oldLeaves[l]; ok {
		in.leaves[l] = s
		return s
	}
	if len(in.leaves) >= leafTableMax {
		in.oldLeaves, in.leaves = in.leaves, make(map[leaf]any, leafTableMax/4)
	}
	in.leaves[l] = v
	return v
}

// size is the number of stored values in the table, live or not yet swept.
func (in *interner) size() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return len(in.m)
}
