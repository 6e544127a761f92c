package engine

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	opaversion "github.com/open-policy-agent/opa/v1/version"

	"github.com/acgs-lite/acgs/internal/apierror"
	"github.com/acgs-lite/acgs/internal/datapath"
	"github.com/acgs-lite/acgs/internal/plan"
	"github.com/acgs-lite/acgs/internal/readset"
	"github.com/acgs-lite/acgs/internal/vm"
)

// maxPreparedPaths bounds the queries kept prepared per snapshot, for each
// evaluator: paths come from requests, so an unbounded map would let
// clients grow memory. A full map drops its least recently used path (see
// keep) rather than refusing new ones, so the paths in use stay prepared
// however many others clients ask for (a scan, an OPA client with many
// policies); refusing them prepared a path past the bound again on every
// request (milliseconds of CPU, one preparation at a time under prepMu).
const maxPreparedPaths = 256

// Module is one policy file of the active bundle.
type Module struct {
	ID  string `json:"id"`
	Raw string `json:"raw"`
	AST *ast.Module
}

// snapshot is one activated bundle. It is never mutated after activation
// except for its bounded, internally locked query and plan caches.
type snapshot struct {
	revision  string // the manifest's revision, shown to clients
	scope     string // revision plus content digest: scopes cache keys, so two bundles never share entries
	hash      string
	compiler  *ast.Compiler
	store     storage.Store
	modules   []Module
	roots     []string
	activated time.Time
	source    string

	reads       *readSets // what each document can read of the input: the cache key's scope
	entryPoints []string  // paths prepared (and their read sets computed) at activation

	parsed map[string]*ast.Module // the bundle's modules as parsed, for plan compilers
	strs   map[string]ast.Value   // strings of the modules and data, shared by converted inputs
	plans  *plan.Planner          // nil when partial evaluation is off

	// mu guards the maps (not their entries' recency, which is atomic);
	// each keeps at most maxPreparedPaths paths, the least recently used
	// dropped first.
	mu       sync.RWMutex
	queries  map[string]*preparedQuery
	compiles map[string]*compiledQuery // the VM's, by path; nil q: topdown runs it (why says why)
	// tick counts the paths stored in either map: the clock of recency.
	tick atomic.Uint64
	// prepMu serialises preparations, and their storing: rego sets a field
	// of the shared compiler, without a lock, when it prepares for a
	// target plugin. Lookups of stored paths never take it.
	prepMu sync.Mutex
}

// preparedQuery is one path prepared for topdown.
type preparedQuery struct {
	recency
	pq rego.PreparedEvalQuery
}

// compiledQuery is one path prepared for the compiled evaluator, or why not.
type compiledQuery struct {
	recency
	q   *vm.Query
	why string
}

// recency is when an entry of the snapshot's query maps was last used, on
// the snapshot's tick.
//
// The maps are bounded least-recently-used caches written by hand rather
// than otter or golang-lru (both in go.mod): Evaluators (readsets.go)
// lists compiles by ranging the map under mu, so it stays a map; a lookup
// stays a read lock and an atomic load (golang-lru's Get takes an
// exclusive lock to reorder its list); and eviction, a scan of at most
// maxPreparedPaths entries, only happens when a miss has just spent
// milliseconds preparing.
type recency struct{ used atomic.Uint64 }

func (r *recency) recent() *recency { return r }

// recent is what the query maps hold.
type recent interface{ recent() *recency }

// lookup returns path's entry of m (queries or compiles) and marks it used.
func lookup[V recent](s *snapshot, m map[string]V, path string) (V, bool) {
	s.mu.RLock()
	v, ok := m[path]
	s.mu.RUnlock()
	if ok {
		// The clock moves only when a path is stored, so a path used many
		// times between two stores is written once: concurrent hits on a
		// hot path do not all write its cache line. Between two stores
		// the order of use does not matter to eviction.
		r := v.recent()
		if now := s.tick.Load(); r.used.Load() != now {
			r.used.Store(now)
		}
	}
	return v, ok
}

// keep stores v as path's entry of m, which has none, dropping the least
// recently used entry when m is full. The caller holds prepMu (so that two
// preparations of one path do not both store it) but not mu.
func keep[V recent](s *snapshot, m map[string]V, path string, v V) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(m) >= maxPreparedPaths {
		victim, oldest := "", uint64(math.MaxUint64)
		for p, e := range m {
			if u := e.recent().used.Load(); u < oldest {
				victim, oldest = p, u
			}
		}
		delete(m, victim)
	}
	v.recent().used.Store(s.tick.Add(1))
	m[path] = v
}

// decisionSemantics is part of every cache key's scope: the OPA the
// service embeds and the version of the decision path's own analyses (read
// sets, plans, the VM). Replicas of different builds share an L2 during a
// rolling upgrade; without it, a decision a since-fixed evaluator made
// would be served by the fixed instances until its TTL. Bump semanticsRev
// with any change that can change a decision.
var decisionSemantics = "opa-" + opaversion.Version + "/acgs-" + semanticsRev

// semanticsRev: 2 since the VM leaves indexed comprehensions that may fail
// to topdown and keeps the last of equal values in object comprehensions,
// and an integer path segment names a number (datapath.Parse).
const semanticsRev = "2"

// activate compiles b into a snapshot after checking its constitutional hash.
func activate(ctx context.Context, b *bundle.Bundle, wantHash, source string) (*snapshot, error) {
	got, _ := b.Manifest.Metadata["constitutional_hash"].(string)
	if got == "" {
		return nil, fmt.Errorf("bundle %s: manifest declares no metadata.constitutional_hash (expected %s)", source, wantHash)
	}
	if got != wantHash {
		return nil, fmt.Errorf("bundle %s: constitutional hash %s does not match the configured %s", source, got, wantHash)
	}
	mods := make(map[string]*ast.Module, len(b.Modules))
	modules := make([]Module, 0, len(b.Modules))
	digest := sha256.New()
	sorted := append([]bundle.ModuleFile(nil), b.Modules...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Path < sorted[j].Path })
	for _, mf := range sorted {
		id := strings.TrimPrefix(mf.Path, "/")
		mods[id] = mf.Parsed
		modules = append(modules, Module{ID: id, Raw: string(mf.Raw), AST: mf.Parsed})
		fmt.Fprintf(digest, "%d:%s%d:", len(id), id, len(mf.Raw))
		digest.Write(mf.Raw)
	}
	data := b.Data
	if data == nil {
		data = map[string]any{}
	}
	dataJSON, err := json.Marshal(data)
	if err != nil {
		return nil, fmt.Errorf("bundle %s: data is not JSON: %w", source, err)
	}
	fmt.Fprintf(digest, "data%d:", len(dataJSON))
	digest.Write(dataJSON)
	manifestJSON, _ := json.Marshal(b.Manifest)
	digest.Write(manifestJSON)

	compiler := ast.NewCompiler().WithEnablePrintStatements(false)
	compiler.Compile(mods)
	if compiler.Failed() {
		return nil, fmt.Errorf("bundle %s: compile: %w", source, compiler.Errors)
	}
	store := inmem.NewFromObjectWithOpts(data, inmem.OptRoundTripOnWrite(false), inmem.OptReturnASTValuesOnRead(true))
	var roots []string
	if b.Manifest.Roots != nil {
		roots = append(roots, *b.Manifest.Roots...)
	}
	rev := b.Manifest.Revision
	sum := hex.EncodeToString(digest.Sum(nil))[:16]
	if rev == "" {
		rev = sum
	}
	s := &snapshot{
		revision:  rev,
		scope:     rev + "#" + sum + "#" + decisionSemantics,
		hash:      got,
		compiler:  compiler,
		store:     store,
		modules:   modules,
		roots:     roots,
		activated: time.Now(),
		source:    source,
		queries:   make(map[string]*preparedQuery),
		compiles:  make(map[string]*compiledQuery),
		parsed:    mods,
		reads:     newReadSets(readset.New(compiler)),
		strs:      internStrings(compiler.Modules, data),
	}
	_ = ctx
	return s, nil
}

// query returns the prepared query for a path, preparing it on first use
// (or again after it was dropped as the least recently used). Errors are
// not kept.
func (s *snapshot) query(ctx context.Context, path string) (*rego.PreparedEvalQuery, error) {
	if e, ok := lookup(s, s.queries, path); ok {
		return &e.pq, nil
	}
	ref, err := datapath.Parse(path)
	if err != nil {
		return nil, err
	}
	s.prepMu.Lock()
	defer s.prepMu.Unlock()
	if e, ok := lookup(s, s.queries, path); ok {
		return &e.pq, nil // prepared by the request this one waited for
	}
	prepared, err := rego.New(
		rego.ParsedQuery(ast.NewBody(ast.NewExpr(ast.NewTerm(ref)))),
		rego.Compiler(s.compiler),
		rego.Store(s.store),
	).PrepareForEval(ctx)
	if err != nil {
		var astErrs ast.Errors
		if errors.As(err, &astErrs) {
			// The bundle compiled when it was activated: what does not
			// compile now is the path the client asked for (a function,
			// which a query cannot name without calling it). Bad input,
			// not a failing policy.
			return nil, apierror.Wrap(apierror.InvalidParameter, errors.Join(ErrPathNotQueryable, err), "path %q cannot be queried: %v", path, err)
		}
		return nil, apierror.Wrap(apierror.EvaluationError, err, "preparing query for %q: %v", path, err)
	}
	e := &preparedQuery{pq: prepared}
	keep(s, s.queries, path, e)
	return &e.pq, nil
}

// compiled returns the path's query prepared for the compiled evaluator
// (internal/vm), preparing it on first use (or again after it was dropped
// as the least recently used); nil when the VM cannot run it (then topdown
// does, and the reason is kept for Evaluators and logged once per
// preparation kept, not per request) or the path is invalid.
func (s *snapshot) compiled(ctx context.Context, path string, log *slog.Logger) *vm.Query {
	if c, ok := lookup(s, s.compiles, path); ok {
		return c.q
	}
	ref, err := datapath.Parse(path)
	if err != nil {
		return nil
	}
	s.prepMu.Lock()
	c, ok := lookup(s, s.compiles, path) // prepared by the request this one waited for?
	if !ok {
		c = &compiledQuery{}
		if q, err := vm.PrepareQuery(context.WithoutCancel(ctx), s.compiler, s.store, ref); err != nil {
			c.why = err.Error()
		} else {
			c.q = q
		}
		keep(s, s.compiles, path, c)
	}
	s.prepMu.Unlock()
	switch {
	case ok:
	case c.q == nil:
		log.Warn("the compiled evaluator cannot run this policy path; topdown evaluates it", "path", path, "why", c.why)
	default:
		log.Debug("policy path runs on the compiled evaluator", "path", path)
	}
	return c.q
}
