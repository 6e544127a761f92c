package engine

import (
	"context"

	"github.com/maypok86/otter/v2"

	"github.com/acgs-lite/acgs/internal/cache"
	"github.com/acgs-lite/acgs/internal/datapath"
	"github.com/acgs-lite/acgs/internal/readset"
)

// maxReadSetPaths bounds the read sets kept per snapshot: paths come from
// requests, so an unbounded map would let clients grow memory. A full cache
// drops the path least worth keeping (see newPathCache) rather than
// refusing new ones: refusing them computed the read set of a path first
// asked past the bound again on every decision, cache hits included.
const maxReadSetPaths = 1024

// KeyKind says how a decision's cache key was made, for metrics.
type KeyKind uint8

// Kinds of cache key.
const (
	// KeyReadSet: the key covers only the input paths the policy can read.
	KeyReadSet KeyKind = iota
	// KeyWholeInput: the policy may read the whole input, so the key covers it.
	KeyWholeInput
	// KeyUncached: the decision is not cached (a non-deterministic built-in
	// is reachable, or the input cannot be encoded).
	KeyUncached
)

// String is the metric label of the kind.
func (k KeyKind) String() string {
	switch k {
	case KeyReadSet:
		return "read_set"
	case KeyWholeInput:
		return "whole_input"
	default:
		return "uncached"
	}
}

// readSets holds one snapshot's analyzer and the read sets computed so far.
type readSets struct {
	an   *readset.Analyzer
	m    *otter.Cache[string, *readset.Set]
	load otter.Loader[string, *readset.Set]
}

func newReadSets(an *readset.Analyzer, pinned func(path string) bool) *readSets {
	r := &readSets{an: an, m: newPathCache[*readset.Set](maxReadSetPaths, pinned)}
	r.load = otter.LoaderFunc[string, *readset.Set](func(_ context.Context, path string) (*readset.Set, error) {
		ref, err := datapath.Parse(path)
		if err != nil {
			return nil, err
		}
		return r.an.Analyze(ref), nil
	})
	return r
}

// get returns the read set of the document at path; nil when the path is
// not a valid reference (such a request fails before any cache matters).
func (r *readSets) get(path string) *readset.Set {
	if rs, ok := r.m.GetIfPresent(path); ok {
		return rs
	}
	rs, err := r.m.Get(context.Background(), path, r.load)
	if err != nil {
		return nil
	}
	return rs
}

// key returns the cache key of input at path: on the projection of the
// input onto the path's read set, or on the whole input when the policy may
// read it whole. ok is false when the decision must not be cached.
func (s *snapshot) key(path string, input any) (cache.Key, KeyKind, bool) {
	rs := s.reads.get(path)
	if rs != nil && !rs.Cacheable() {
		return cache.Key{}, KeyUncached, false
	}
	if rs == nil || rs.Whole {
		k, err := cache.NewKey(s.scope, path, input)
		if err != nil {
			// An input the key cannot encode is still a valid policy input; it is just not cached.
			return cache.Key{}, KeyUncached, false
		}
		return k, KeyWholeInput, true
	}
	k, err := cache.NewProjectedKey(s.scope, path, rs, input)
	if err != nil {
		return cache.Key{}, KeyUncached, false
	}
	return k, KeyReadSet, true
}

// ReadSet returns the read set of the document at path under the active
// policy; ok is false when no policy is active or the path is invalid.
func (e *Engine) ReadSet(path string) (*readset.Set, bool) {
	s := e.cur.Load()
	if s == nil {
		return nil, false
	}
	rs := s.reads.get(path)
	return rs, rs != nil
}

// ReadSets returns the read sets of the active policy's entry points (the
// paths prepared at activation), by path.
func (e *Engine) ReadSets() map[string]*readset.Set { return e.Active().ReadSets() }

// ReadSets returns the read sets of a's entry points, by path.
func (a Active) ReadSets() map[string]*readset.Set {
	s := a.s
	if s == nil {
		return nil
	}
	out := make(map[string]*readset.Set, len(s.entryPoints))
	for _, p := range s.entryPoints {
		if rs := s.reads.get(p); rs != nil {
			out[p] = rs
		}
	}
	return out
}

func (e *Engine) onKey(k KeyKind) {
	if e.opts.OnKey != nil {
		e.opts.OnKey(k)
	}
}

// logReadSets says at activation what each entry point's decisions are keyed
// on, and which are never cached.
func (e *Engine) logReadSets(s *snapshot) {
	for _, p := range s.entryPoints {
		rs := s.reads.get(p)
		switch {
		case rs == nil:
		case !rs.Cacheable():
			e.log.Warn("decisions call non-deterministic built-ins and are never cached", "path", p, "builtins", rs.Nondeterministic)
		case rs.Whole:
			e.log.Info("read set: the whole input (cache keys cover every field)", "path", p, "why", rs.WholeWhy, "rules", rs.Rules)
		default:
			e.log.Info("read set", "path", p, "input_paths", len(rs.Paths), "type_only_paths", len(rs.Types), "rules", rs.Rules)
		}
	}
}

// Evaluators says, for each path prepared so far, which evaluator answers
// its cache misses: "vm", or "topdown" and why the VM cannot run it.
// Empty when the compiled evaluator is off.
func (e *Engine) Evaluators() map[string]string { return e.Active().Evaluators() }

// Evaluators says which evaluator answers each path of a prepared so far,
// as Engine.Evaluators does.
func (a Active) Evaluators() map[string]string {
	s := a.s
	if s == nil || !a.e.opts.Compiled {
		return nil
	}
	out := make(map[string]string, s.compiles.EstimatedSize())
	for p, c := range s.compiles.All() {
		if c.q != nil {
			out[p] = "vm"
		} else {
			out[p] = "topdown: " + c.why
		}
	}
	return out
}
