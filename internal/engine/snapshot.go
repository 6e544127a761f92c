package engine

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
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

// maxPreparedPaths bounds the prepared queries kept per snapshot: paths come
// from requests, so an unbounded map would let clients grow memory.
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

	mu       sync.RWMutex
	queries  map[string]*rego.PreparedEvalQuery
	compiles map[string]*compiledQuery // the VM's, by path; nil q: topdown runs it (why says why)
	// prepMu serialises preparations: rego sets a field of the shared
	// compiler, without a lock, when it prepares for a target plugin.
	prepMu sync.Mutex
}

// compiledQuery is one path prepared for the compiled evaluator, or why not.
type compiledQuery struct {
	q   *vm.Query
	why string
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
		queries:   make(map[string]*rego.PreparedEvalQuery),
		compiles:  make(map[string]*compiledQuery),
		parsed:    mods,
		reads:     newReadSets(readset.New(compiler)),
		strs:      internStrings(compiler.Modules, data),
	}
	_ = ctx
	return s, nil
}

// query returns the prepared query for a path, preparing it on first use.
func (s *snapshot) query(ctx context.Context, path string) (*rego.PreparedEvalQuery, error) {
	s.mu.RLock()
	pq, ok := s.queries[path]
	s.mu.RUnlock()
	if ok {
		return pq, nil
	}
	ref, err := datapath.Parse(path)
	if err != nil {
		return nil, err
	}
	s.prepMu.Lock()
	prepared, err := rego.New(
		rego.ParsedQuery(ast.NewBody(ast.NewExpr(ast.NewTerm(ref)))),
		rego.Compiler(s.compiler),
		rego.Store(s.store),
	).PrepareForEval(ctx)
	s.prepMu.Unlock()
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
	s.mu.Lock()
	if existing, ok := s.queries[path]; ok {
		prepared = *existing
	} else if len(s.queries) < maxPreparedPaths {
		s.queries[path] = &prepared
	}
	s.mu.Unlock()
	return &prepared, nil
}

// compiled returns the path's query prepared for the compiled evaluator
// (internal/vm), preparing it on first use; nil when the VM cannot run it
// (then topdown does, and the reason is logged once and kept for
// Evaluators) or the path is invalid.
func (s *snapshot) compiled(ctx context.Context, path string, log *slog.Logger) *vm.Query {
	s.mu.RLock()
	c, ok := s.compiles[path]
	s.mu.RUnlock()
	if ok {
		return c.q
	}
	ref, err := datapath.Parse(path)
	if err != nil {
		return nil
	}
	s.prepMu.Lock()
	q, err := vm.PrepareQuery(context.WithoutCancel(ctx), s.compiler, s.store, ref)
	s.prepMu.Unlock()
	c = &compiledQuery{}
	if err != nil {
		c.why = err.Error()
		log.Warn("the compiled evaluator cannot run this policy path; topdown evaluates it", "path", path, "why", c.why)
	} else {
		c.q = q
		log.Debug("policy path runs on the compiled evaluator", "path", path)
	}
	s.mu.Lock()
	if existing, ok := s.compiles[path]; ok {
		c = existing
	} else if len(s.compiles) < maxPreparedPaths {
		s.compiles[path] = c
	}
	s.mu.Unlock()
	return c.q
}
