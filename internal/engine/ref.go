package engine

import "github.com/acgs-lite/acgs/internal/cache"

// Ref names the cache entry a decision was looked up under: its key, how
// the key was made and the snapshot (scope) that made it. A caller that has
// seen the same request bytes before can answer them again from the entry
// (Lookup) without decoding the request or computing its key: the key is a
// function of the scope, the path and the input, and the input a function of
// the bytes.
type Ref struct {
	key   cache.Key
	kind  KeyKind
	scope string // the snapshot's scope: a new bundle makes every older Ref miss
}

// Ref returns the cache entry d was looked up under; ok is false when d was
// not looked up in the cache (no cache, or an input not cached).
func (d Decision) Ref() (Ref, bool) { return d.ref, d.ref.scope != "" }

// Lookup answers from L1 the decision that ref names, when it is still there
// and still the active snapshot's, as Decide would have for the input that
// produced ref: the same JSON, source, revision and metrics (key kind, an
// L1 hit). Its Result is nil unless L1 holds it decoded: the caller writes
// the answer from JSON and remembers what it needs of the value from the
// decision that gave it ref. ok is false otherwise, and nothing is counted:
// the caller then decides through Decide, which counts the miss once.
func (e *Engine) Lookup(ref Ref) (Decision, bool) {
	s := e.cur.Load()
	c := e.opts.Cache
	if s == nil || c == nil || ref.scope == "" || ref.scope != s.scope {
		return Decision{}, false
	}
	v, ok := c.Peek(ref.key)
	if !ok || (v.Defined && v.JSON == nil) {
		return Decision{}, false
	}
	c.CountL1(1, 0)
	e.onKey(ref.kind)
	return Decision{Result: v.Result, Defined: v.Defined, Revision: s.revision, Source: SourceL1, JSON: v.JSON, ref: ref}, true
}
