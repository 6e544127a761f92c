package server

import (
	"encoding/binary"
	"net/http"
	"sync"
	"time"

	"github.com/maypok86/otter/v2"

	"github.com/acgs-lite/acgs/internal/cache"
	"github.com/acgs-lite/acgs/internal/engine"
	"github.com/acgs-lite/acgs/internal/telemetry"
	"github.com/acgs-lite/acgs/internal/telemetry/decisionmetrics"
)

// rawTier answers byte-identical repeats of decision requests (a client
// polling with the same request, retries, an agent fleet sending one
// template) without decoding them: it maps a 128-bit hash (keyOf) of the path and
// the exact body bytes to the L1 entry the normal path found or filled for
// them (engine.Ref). The mapping is sound because the decoded input, and so
// the cache key, is a function of the bytes; everything that can change the
// decision is re-checked on every hit by engine.Lookup (the entry must still
// be in L1, under the active bundle), and anything else goes the normal way.
// A hit gives the same response, metrics and decision as the normal path:
// both write through the same functions.
//
// It is only consulted for requests without a query string (?pretty and
// OPA's ?metrics and ?provenance change the response) and is off while the
// decision log is on, since the log records each request's decoded input.
type rawTier struct {
	c *otter.Cache[rawKey, rawEntry]
}

type rawKey cache.Key // a body's hash, not a decision's key

// rawEntry is what the tier remembers of a decided body: where its
// decision is, and what the answer needs of the decision's value, so that
// a hit is written from the decision's JSON without decoding it (L1 keeps
// most decisions encoded).
type rawEntry struct {
	ref engine.Ref
	opa bool // the body was OPA's {"input": ...} (the decision path takes both dialects)
	// series is where a hit is counted: the decision's path and outcome
	// (allow, deny, ...), from L1, as record would count it, resolved
	// once rather than by three label lookups per hit.
	series telemetry.DecisionSeries
}

// newRawTier returns a tier of at most size bodies, or nil for size 0.
func newRawTier(size int) (*rawTier, error) {
	if size <= 0 {
		return nil, nil
	}
	c, err := otter.New(&otter.Options[rawKey, rawEntry]{MaximumSize: size})
	if err != nil {
		return nil, err
	}
	return &rawTier{c: c}, nil
}

// keyOf hashes path and body with cache.Sum (SHA-256, truncated): the path
// and the body are the client's, and a client that could make two bodies
// collide could have one answered with the other's decision, validation
// included. A seeded fast hash (XXH3 with a secret seed, as until
// 2026-12-05) is not made to resist that; SHA-256 costs about 0.3 µs for a
// body of a few hundred bytes on this hardware.
func keyOf(path string, body []byte) rawKey {
	bp := keyBufs.Get().(*[]byte)
	b := binary.AppendUvarint((*bp)[:0], uint64(len(path)))
	b = append(b, path...)
	b = append(b, body...)
	k := rawKey(cache.Sum(b))
	if cap(b) <= maxPooledKeyBuf {
		*bp = b[:0]
		keyBufs.Put(bp)
	}
	return k
}

// keyBufs hold the bytes keyOf hashes; one grown past maxPooledKeyBuf by a
// large body is left to the collector.
var keyBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

const maxPooledKeyBuf = 64 << 10

// usable reports whether r may be answered from, and remembered in, the tier.
func (t *rawTier) usable(r *http.Request) bool {
	return t != nil && r.URL.RawQuery == ""
}

// rawLookup answers body at path from the raw-body tier when the L1 entry
// remembered for it is still there under the active bundle, recording the
// decision as the normal path would. An ACGS-dialect entry answers only
// where the ACGS dialect is spoken (acgs): elsewhere the same bytes are an
// OPA request without "input". k is the body's key in the tier, for
// rawRemember after a miss (the body is hashed once).
func (s *Server) rawLookup(r *http.Request, path string, body []byte, acgs bool) (d decided, opa bool, k rawKey, ok bool) {
	t := s.raw
	if !t.usable(r) {
		return decided{}, false, rawKey{}, false
	}
	k = keyOf(path, body)
	e, found := t.c.GetIfPresent(k)
	if found && (e.opa || acgs) {
		start := time.Now()
		var dd engine.Decision
		if dd, ok = s.d.Engine.Lookup(e.ref); ok {
			// What record does for a decision without an error
			// and with the decision log off (the tier is off while
			// it is on): its id, and counted in the entry's series
			// (its outcome and path, resolved by rawRemember).
			e.series.Observe(time.Since(start))
			d = decided{Decision: dd, ID: telemetry.NewDecisionID(), acgsChecked: !e.opa}
		}
	}
	s.d.Metrics.RawLookup(ok)
	return d, e.opa, k, ok
}

// rawRemember maps the body of key k (from rawLookup) at path to the cache entry its decision d was
// looked up under, when d came from the cache or was cached, and its answer
// can be written from the decision's JSON (an ACGS decision must come with
// acgsChecked; one whose answer needs the value field by field is left to
// the normal path).
func (s *Server) rawRemember(r *http.Request, path string, k rawKey, d decided, opa bool) {
	if !s.raw.usable(r) || d.Err != nil || (d.Defined && d.JSON == nil) || (!opa && !d.acgsChecked) {
		return
	}
	if ref, ok := d.Ref(); ok {
		series := s.d.Metrics.DecisionSeries(path, decisionmetrics.Outcome(d.Decision, nil), engine.SourceL1.String())
		s.raw.c.Set(k, rawEntry{ref: ref, opa: opa, series: series})
	}
}
