package engine

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/maypok86/otter/v2"
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
// clients grow memory. A full cache drops the path least worth keeping (see
// newPathCache) rather than refusing new ones, so the paths in use stay
// prepared however many others clients ask for (a scan, an OPA client with
// many policies); refusing them prepared a path past the bound again on
// every request (milliseconds of CPU, one preparation at a time under
// prepMu).
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
	digest    string // the content digest (modules, data, manifest): tells apart two bundles of one revision
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

	// What is prepared per path, each at most maxPreparedPaths paths.
	// Lookups of stored paths never take prepMu.
	queries  *otter.Cache[string, *rego.PreparedEvalQuery]
	compiles *otter.Cache[string, *compiledQuery] // the VM's; nil q: topdown runs it (why says why)
	// sighted: paths other than entry points asked once, not yet prepared
	// for the VM (see compiled).
	sighted *otter.Cache[string, struct{}]
	// inspections: the queries prepared for Inspect (inspect.go), at most
	// maxInspectedPaths, strict and not counted apart.
	inspections *otter.Cache[inspectedKey, *rego.PreparedEvalQuery]
	// prepMu serialises preparations: rego sets a field of the shared
	// compiler, without a lock, when it prepares for a target plugin.
	prepMu sync.Mutex
}

// compiledQuery is one path prepared for the compiled evaluator, or why not.
type compiledQuery struct {
	q   *vm.Query
	why string
}

// newPathCache returns the cache of what a snapshot computes per requested
// path (prepared queries, read sets), keeping at most size paths.
//
// otter (W-TinyLFU, as internal/cache's L1) rather than a map that stops
// storing when full, or a least-recently-used list: paths come from
// requests, and a path asked once (a scan) is not admitted in place of one
// asked more often, so the paths in use stay cached however many one-off
// paths clients ask, even when more than size of them come between two
// uses of a hot path (which would flush an LRU). The price: a path first
// asked when the cache is full of others is admitted only once it has been
// asked more often than the path it would replace, so it may be computed
// a few times before it stays. A hit is a lock-free read; a miss that
// several requests make at once is computed once (Get's loader), the
// others taking its value; errors are not kept.
//
// Maintenance (eviction included) runs on the request that reads or
// stores, as for the L1 and inspect.go's queries: no goroutine per drain of
// the read buffer.
//
// A path pinned reports (an entry point) weighs nothing, and otter never
// evicts an entry of no weight: the entry points, prepared at activation,
// stay prepared (and in Evaluators) whatever other paths clients ask.
func newPathCache[V any](size int, pinned func(path string) bool) *otter.Cache[string, V] {
	return otter.Must(&otter.Options[string, V]{
		MaximumWeight: uint64(size),
		Weigher: func(path string, _ V) uint32 {
			if pinned(path) {
				return 0
			}
			return 1
		},
		Executor: func(fn func()) { fn() },
	})
}

// decisionSemantics is part of every cache key's scope: the OPA the
// service embeds and the version of the decision path's own analyses (read
// sets, plans, the VM). Replicas of different builds share an L2 during a
// rolling upgrade; without it, a decision a since-fixed evaluator made
// would be served by the fixed instances until its TTL. Bump semanticsRev
// with any change that can change a decision.
var decisionSemantics = "opa-" + opaversion.Version + "/acgs-" + semanticsRev + "/tz-" + localZone()

// localZone describes the process's local time zone: time.date, time.clock,
// time.weekday and time.format given "Local" answer by it, so replicas in
// other zones sharing an L2 must not serve each other's such decisions.
// time.Local's name is always "Local", and two zones alike today may not
// have been (America/Indiana/Indianapolis and America/New_York in 2000):
// the digest covers every transition from 1970 to 2040, each instant with
// the abbreviation and offset that follow it.
func localZone() string {
	h := sha256.New()
	t := time.Unix(0, 0).In(time.Local)
	stop := time.Date(2040, 1, 1, 0, 0, 0, 0, time.UTC)
	for range 1000 { // a bound: zones change at most a few times a year
		name, off := t.Zone()
		fmt.Fprintf(h, "%d %s %d;", t.Unix(), name, off)
		_, end := t.ZoneBounds()
		if end.IsZero() || end.After(stop) {
			break
		}
		t = end
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// semanticsRev: 2 since the VM leaves indexed comprehensions that may fail
// to topdown and keeps the last of equal values in object comprehensions,
// and an integer path segment names a number (datapath.Parse); 3 since the
// VM hands equal values written otherwise (1 and 1.0) to topdown and
// constant plans are refused where topdown could raise a conflict; 4
// since datapath.Parse undoes a segment's escapes (a%2Fb is the key "a/b",
// which an older build read as the key "a%2Fb"); 5 since a read set reads
// the value of a variable that is a key in a rule's head reference (an
// older build read only its type and keyed one role's decision as
// another's) and the VM leaves a bare comprehension to topdown.
const semanticsRev = "5"

// dataHashes refuses a bundle whose data names another constitution: the
// policy compares requests with, and answers, the hash its data holds
// (data.acgs.config.constitutional_hash), which a manifest with the right
// hash does not vouch for. Every string under a key constitutional_hash,
// at any depth, must be the configured hash; with strict (a document the
// policy reads as its hash, virtualHashes), any other value is refused
// too, as what the policy compares with it is not the configured hash
// either. Elsewhere a value of another type is left alone (a schema's
// {"constitutional_hash": {"type": "string"}}). Only the exact key name
// counts.
func dataHashes(v any, want, at string, strict bool) error {
	switch x := v.(type) {
	case map[string]any:
		for _, k := range slices.Sorted(maps.Keys(x)) { // the first problem, the same each time
			e := x[k]
			if k == "constitutional_hash" {
				if s, ok := e.(string); (ok && s != want) || (!ok && strict) {
					return fmt.Errorf("%s.%s is %s, not the configured constitutional hash %s", at, k, describeValue(e), want)
				}
			}
			if err := dataHashes(e, want, at+"."+k, strict); err != nil {
				return err
			}
		}
	case []any:
		for i, e := range x {
			if err := dataHashes(e, want, fmt.Sprintf("%s[%d]", at, i), strict); err != nil {
				return err
			}
		}
	}
	return nil
}

// describeValue shows a value found under a key constitutional_hash: a
// string quoted, another value as JSON (shortened) with its kind.
func describeValue(v any) string {
	if s, ok := v.(string); ok {
		return strconv.Quote(s)
	}
	kind := "a number"
	switch v.(type) {
	case nil:
		return "null (not a string)"
	case bool:
		kind = "a boolean"
	case map[string]any:
		kind = "an object"
	case []any:
		kind = "an array (or set)"
	}
	raw, err := json.Marshal(v)
	if err != nil {
		raw = []byte(fmt.Sprint(v))
	}
	if len(raw) > 80 {
		raw = append(raw[:77:77], "..."...)
	}
	return fmt.Sprintf("%s (%s, not a string)", raw, kind)
}

// hashCheckBudget bounds the evaluations virtualHashes makes at
// activation, all of them together: a document it must evaluate and
// cannot within it refuses the bundle.
const hashCheckBudget = 3 * time.Second

// hashKey is the key whose values must be the configured hash.
var hashKey = ast.String("constitutional_hash")

// endsWithHash reports whether r's last key is constitutional_hash.
func endsWithHash(r ast.Ref) bool {
	return len(r) > 1 && r[len(r)-1].Value.Compare(hashKey) == 0
}

// looksLikeHash matches a constitutional hash as configured: 16
// lowercase hex digits.
var looksLikeHash = regexp.MustCompile(`^[0-9a-f]{16}$`)

// virtualHashes refuses a compiled bundle whose rules make a document the
// policy reads as a constitutional hash hold anything but the configured
// one (want). dataHashes checks the JSON data; the policy compares
// requests with data.acgs.config.constitutional_hash whatever defines it,
// and a rule (package acgs.config, constitutional_hash := "...") defines
// it as well as data.json does. It checks, outside Rego test packages
// that no served rule reads:
//
//   - Documents read: a ground reference into data ending in
//     constitutional_hash is evaluated without input and must be the
//     configured hash (a string) or undefined. One that depends on the
//     input (a read of a decision's answered hash) cannot be evaluated at
//     activation and is left alone.
//   - Documents defined: a rule whose reference ends in
//     constitutional_hash (constitutional_hash := ..., config.constitutional_hash
//     := ..., cfg[k].constitutional_hash := ...) must not depend on the
//     input or a non-deterministic built-in; its document is evaluated and
//     every constitutional_hash in it must be the configured hash.
//   - Literals: a string that looks like a hash (16 lowercase hex digits)
//     under the key constitutional_hash of an object literal, or as the
//     value of a with replacing such a document, must be the configured
//     hash (a decision answering an older hash written in the policy).
//
// It is a check against a bundle that names another constitution by
// mistake, not against a policy written to accept any hash: a comparison
// with a computed key or a value from the input is not seen. Where a
// reviewed version of it swept every rule whose type might hold the key,
// valid bundles (partial objects over the input, helper rules and
// functions building decisions, schemas) were refused.
func virtualHashes(ctx context.Context, compiler *ast.Compiler, store storage.Store, reads *readset.Analyzer, want string) error {
	ctx, cancel := context.WithTimeout(ctx, hashCheckBudget)
	defer cancel()
	var targets []*hashTarget
	seen := map[string]*hashTarget{}
	add := func(ref ast.Ref, r *ast.Rule) {
		k := ref.String()
		t := seen[k]
		if t == nil {
			t = &hashTarget{ref: ref}
			seen[k] = t
			targets = append(targets, t)
		}
		if r != nil {
			t.rules = append(t.rules, r)
		}
	}
	ids := slices.Sorted(maps.Keys(compiler.Modules))
	// A test package's literals are its tests' inputs (wrong hashes among
	// them), unless a served rule reads its documents: the served modules'
	// references into data, collected once.
	var servedRefs []ast.Ref
	for _, id := range ids {
		if m := compiler.Modules[id]; !isTestPackage(m.Package) {
			ast.WalkRefs(m, func(r ast.Ref) bool {
				if r[0].Equal(ast.DefaultRootDocument) {
					servedRefs = append(servedRefs, r.GroundPrefix())
				}
				return false
			})
		}
	}
	served := func(pkg *ast.Package) bool {
		return !isTestPackage(pkg) || slices.ContainsFunc(servedRefs, func(r ast.Ref) bool { return r.HasPrefix(pkg.Path) || pkg.Path.HasPrefix(r) })
	}
	var mods []*ast.Module
	for _, id := range ids {
		m := compiler.Modules[id]
		if !served(m.Package) {
			continue
		}
		mods = append(mods, m)
		ast.WalkRefs(m, func(r ast.Ref) bool {
			if r[0].Equal(ast.DefaultRootDocument) && endsWithHash(r) && r.IsGround() {
				add(r, nil)
			}
			return false
		})
		for _, r := range m.Rules {
			if len(r.Head.Args) == 0 && endsWithHash(r.Ref()) {
				add(r.Ref().GroundPrefix(), r)
			}
		}
	}
	for _, m := range mods {
		if err := literalHashes(m, targets, want); err != nil {
			return err
		}
	}
	for _, t := range targets {
		if err := t.check(ctx, compiler, store, reads, want); err != nil {
			return err
		}
	}
	return nil
}

// hashTarget is a document virtualHashes checks: read at ref, or defined
// there by rules whose reference ends in constitutional_hash.
type hashTarget struct {
	ref   ast.Ref
	rules []*ast.Rule
}

// headValue is r's value, or what the body binds it to when the compiler
// moved it there (a reference in a head becomes a local, x = ref).
func headValue(r *ast.Rule) *ast.Term {
	v := r.Head.Value
	x, ok := v.Value.(ast.Var)
	if !ok {
		return v
	}
	for _, e := range r.Body {
		if e.IsEquality() || e.IsAssignment() {
			a, b := e.Operand(0), e.Operand(1)
			if a.Value.Compare(x) == 0 {
				return b
			}
			if b.Value.Compare(x) == 0 {
				return a
			}
		}
	}
	return v
}

// fixedHash reports whether t is the configured hash as written, or a
// ground reference into data ending in constitutional_hash (itself a
// target, checked).
func fixedHash(t *ast.Term, want string) bool {
	switch x := t.Value.(type) {
	case ast.String:
		return string(x) == want
	case ast.Ref:
		return x[0].Equal(ast.DefaultRootDocument) && endsWithHash(x) && x.IsGround()
	}
	return false
}

// check evaluates the document without input and walks its value. One
// that depends on the input is not known at activation: left alone when
// only read (a decision's answered hash), and accepted when defined only
// by rules whose value is fixedHash (results[i].constitutional_hash :=
// data.acgs.config.constitutional_hash if ...), else refused.
func (t *hashTarget) check(ctx context.Context, compiler *ast.Compiler, store storage.Store, reads *readset.Analyzer, want string) error {
	ref := t.ref
	at := ref.String()
	where := ""
	if len(t.rules) > 0 {
		where = " (defined at " + locString(t.rules[0].Location) + ")"
	}
	if rs := reads.Analyze(ref); rs.Whole || len(rs.Paths) > 0 || len(rs.Types) > 0 || len(rs.Nondeterministic) > 0 {
		fixed := len(rs.Nondeterministic) == 0
		for _, r := range t.rules {
			for e := r; e != nil && fixed; e = e.Else {
				fixed = e.Head.Value != nil && fixedHash(headValue(e), want)
			}
		}
		if fixed {
			return nil
		}
		what := "the input"
		switch {
		case len(rs.Nondeterministic) > 0:
			what = "non-deterministic built-ins (" + strings.Join(rs.Nondeterministic, ", ") + ")"
		case !rs.Whole && len(rs.Paths) > 0:
			what = "the input (" + rs.Paths[0].String() + ")"
		}
		return fmt.Errorf("%s depends on %s%s: the constitutional hash it holds is not fixed at activation", at, what, where)
	}
	rs, err := rego.New(
		rego.ParsedQuery(ast.NewBody(ast.NewExpr(ast.NewTerm(ref)))),
		rego.Compiler(compiler),
		rego.Store(store),
	).Eval(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%s%s: its constitutional hash check did not end within %s", at, where, hashCheckBudget)
		}
		return fmt.Errorf("%s cannot be evaluated without input to check its constitutional hash%s: %w", at, where, err)
	}
	if len(rs) == 0 || len(rs[0].Expressions) == 0 {
		return nil // undefined: holds no hash
	}
	v := rs[0].Expressions[0].Value
	if endsWithHash(ref) {
		err = dataHashes(map[string]any{"constitutional_hash": v}, want, ref[:len(ref)-1].String(), true)
	} else {
		err = dataHashes(v, want, at, true)
	}
	if err != nil {
		return fmt.Errorf("%w%s", err, where)
	}
	return nil
}

// isTestPackage reports whether pkg is a package of Rego tests (x_test).
func isTestPackage(pkg *ast.Package) bool {
	s, ok := pkg.Path[len(pkg.Path)-1].Value.(ast.String)
	return ok && strings.HasSuffix(string(s), "_test")
}

// literalHashes refuses, in the rules of m but its tests (test_*), a
// hash-looking string other than want under the key constitutional_hash
// of an object literal, and a with replacing a document of data that is,
// holds or is within one of targets by anything but fixedHash.
func literalHashes(m *ast.Module, targets []*hashTarget, want string) error {
	other := func(t *ast.Term) bool {
		s, ok := t.Value.(ast.String)
		return ok && string(s) != want && looksLikeHash.MatchString(string(s))
	}
	var err error
	for _, r := range m.Rules {
		if strings.HasPrefix(r.Head.Name.String(), "test_") {
			continue
		}
		ast.WalkExprs(r, func(e *ast.Expr) bool {
			for _, w := range e.With {
				target, ok := w.Target.Value.(ast.Ref)
				if !ok || !target.HasPrefix(ast.DefaultRootRef) || fixedHash(w.Value, want) {
					continue
				}
				for _, t := range targets {
					if t.ref.HasPrefix(target) || target.HasPrefix(t.ref) {
						err = fmt.Errorf("%s replaces %s, which is, holds or is within %s, with %s (%s): the constitutional hash is not to be replaced", r.Ref(), target, t.ref, termText(w.Value), locString(w.Location))
						break
					}
				}
			}
			return err != nil
		})
		if err != nil {
			return err
		}
		if err = objectHashes(r, other, want); err != nil {
			return err
		}
	}
	return nil
}

// objectHashes refuses an object literal in r holding a string other
// (hash-looking, not want) under the key constitutional_hash.
func objectHashes(r *ast.Rule, other func(*ast.Term) bool, want string) error {
	var err error
	ast.WalkTerms(r, func(t *ast.Term) bool {
		if obj, ok := t.Value.(ast.Object); ok && err == nil {
			if v := obj.Get(ast.NewTerm(hashKey)); v != nil && other(v) {
				where := t.Location
				if v.Location != nil {
					where = v.Location
				}
				err = fmt.Errorf("%s holds %s under constitutional_hash (%s), not the configured constitutional hash %s", r.Ref(), termText(v), locString(where), want)
			}
		}
		return err != nil
	})
	return err
}

// termText is t as written in the module (the compiler renames locals).
func termText(t *ast.Term) string {
	if t.Location != nil && len(t.Location.Text) > 0 {
		return string(t.Location.Text)
	}
	return t.String()
}

// locString is file:row of loc ("" when there is none).
func locString(loc *ast.Location) string {
	if loc == nil {
		return ""
	}
	return loc.File + ":" + strconv.Itoa(loc.Row)
}

// errUnchanged: the bundle is the active one (activate's active scope).
var errUnchanged = errors.New("the bundle is the active one")

// activate compiles b into a snapshot after checking its constitutional
// hash, or returns errUnchanged before compiling when its scope (revision,
// content digest, decision semantics) is active, the active snapshot's.
func activate(ctx context.Context, b *bundle.Bundle, wantHash, source, active string) (*snapshot, error) {
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
	if err := dataHashes(data, wantHash, "data", false); err != nil {
		return nil, fmt.Errorf("bundle %s: %w", source, err)
	}
	dataJSON, err := json.Marshal(data)
	if err != nil {
		return nil, fmt.Errorf("bundle %s: data is not JSON: %w", source, err)
	}
	fmt.Fprintf(digest, "data%d:", len(dataJSON))
	digest.Write(dataJSON)
	manifestJSON, _ := json.Marshal(b.Manifest)
	digest.Write(manifestJSON)
	rev := b.Manifest.Revision
	sum := hex.EncodeToString(digest.Sum(nil))[:16]
	if rev == "" {
		rev = sum
	}
	scope := rev + "#" + sum + "#" + decisionSemantics
	if scope == active {
		return nil, errUnchanged
	}

	compiler := ast.NewCompiler().WithEnablePrintStatements(false)
	compiler.Compile(mods)
	if compiler.Failed() {
		return nil, fmt.Errorf("bundle %s: compile: %w", source, compiler.Errors)
	}
	store := inmem.NewFromObjectWithOpts(data, inmem.OptRoundTripOnWrite(false), inmem.OptReturnASTValuesOnRead(true))
	an := readset.New(compiler)
	if err := virtualHashes(ctx, compiler, store, an, wantHash); err != nil {
		return nil, fmt.Errorf("bundle %s: %w", source, err)
	}
	var roots []string
	if b.Manifest.Roots != nil {
		roots = append(roots, *b.Manifest.Roots...)
	}
	s := &snapshot{
		revision:  rev,
		scope:     scope,
		digest:    sum,
		hash:      got,
		compiler:  compiler,
		store:     store,
		modules:   modules,
		roots:     roots,
		activated: time.Now(),
		source:    source,
		parsed:    mods,
		strs:      internStrings(compiler.Modules, data),
	}
	s.queries = newPathCache[*rego.PreparedEvalQuery](maxPreparedPaths, s.isEntryPoint)
	s.compiles = newPathCache[*compiledQuery](maxPreparedPaths, s.isEntryPoint)
	s.sighted = newPathCache[struct{}](maxPreparedPaths, s.isEntryPoint)
	s.reads = newReadSets(an, s.isEntryPoint)
	s.inspections = otter.Must(&otter.Options[inspectedKey, *rego.PreparedEvalQuery]{
		MaximumSize: maxInspectedPaths,
		Executor:    func(fn func()) { fn() },
	})
	return s, nil
}

// function refuses a path that names a function, as its preparation
// would, but before an evaluation slot is asked for: under overload such a
// request was shed (503) where it is bad input (400), and each took a slot
// to find out (review). Other preparation errors are still found when the
// query is prepared.
func (s *snapshot) function(path string) error {
	if _, prepared := s.queries.GetIfPresent(path); prepared {
		return nil // a prepared path names no function (the entry points are)
	}
	// A path that does not parse is refused where it is prepared, as before.
	if ref, err := datapath.Parse(path); err == nil {
		for _, r := range s.compiler.GetRulesExact(ref) {
			if len(r.Head.Args) > 0 {
				return apierror.Wrap(apierror.InvalidParameter, ErrPathNotQueryable, "path %q cannot be queried: data.%s is a function", path, strings.ReplaceAll(path, "/", "."))
			}
		}
	}
	return nil
}

// query returns the prepared query for a path, preparing it on first use
// (or again after it was dropped). Errors are not kept.
func (s *snapshot) query(ctx context.Context, path string) (*rego.PreparedEvalQuery, error) {
	if pq, ok := s.queries.GetIfPresent(path); ok {
		return pq, nil
	}
	pq, err := s.queries.Get(ctx, path, otter.LoaderFunc[string, *rego.PreparedEvalQuery](s.prepare))
	if err != nil && apierror.CodeOf(err) == apierror.InternalError {
		// ctx ended before the preparation began, or while this request
		// waited for another preparing the same path.
		return nil, apierror.Wrap(apierror.EvaluationError, err, "preparing query for %q: %v", path, err)
	}
	return pq, err
}

// prepare prepares the topdown query of path, for query.
func (s *snapshot) prepare(ctx context.Context, path string) (*rego.PreparedEvalQuery, error) {
	ref, err := datapath.Parse(path)
	if err != nil {
		return nil, err
	}
	return s.prepareBody(ctx, path, ast.NewBody(ast.NewExpr(ast.NewTerm(ref))))
}

// prepareBody prepares body, the query of path, for topdown (under prepMu:
// rego sets a field of the shared compiler when it prepares).
func (s *snapshot) prepareBody(ctx context.Context, path string, body ast.Body, opts ...func(*rego.Rego)) (*rego.PreparedEvalQuery, error) {
	s.prepMu.Lock()
	defer s.prepMu.Unlock()
	prepared, err := rego.New(append([]func(*rego.Rego){
		rego.ParsedQuery(body),
		rego.Compiler(s.compiler),
		rego.Store(s.store),
	}, opts...)...).PrepareForEval(ctx)
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
	return &prepared, nil
}

// isEntryPoint reports whether path is one of the entry points, which
// activation appends to before it prepares them and before the snapshot is
// published (read-only after).
func (s *snapshot) isEntryPoint(path string) bool { return slices.Contains(s.entryPoints, path) }

// compiled returns the path's query prepared for the compiled evaluator
// (internal/vm), preparing it at activation for an entry point and on its
// second request for any other path (or again after it was dropped); nil
// on a path's first request, and when the VM cannot run it (then topdown does, and the
// reason is kept for Evaluators and logged once per preparation stored,
// not per request) or the path is invalid.
func (s *snapshot) compiled(ctx context.Context, path string, log *slog.Logger) *vm.Query {
	if c, ok := s.compiles.GetIfPresent(path); ok {
		return c.q
	}
	if !s.isEntryPoint(path) {
		// A path's first request is answered by topdown, and the VM is
		// prepared for it when it is asked again. Preparing for the VM
		// plans every rule the path reaches (OPA's planner), several
		// milliseconds of CPU: paths asked once each (array indices,
		// scans) made most of a service's CPU that, for one evaluation.
		// One request is the first: of requests asked at once, the rest
		// prepare (a check, then a set, let all of them pass as first).
		if _, first := s.sighted.SetIfAbsent(path, struct{}{}); first {
			return nil
		}
	}
	prepared := false // by this request, not one it waited for
	c, err := s.compiles.Get(context.WithoutCancel(ctx), path, otter.LoaderFunc[string, *compiledQuery](func(ctx context.Context, path string) (*compiledQuery, error) {
		ref, err := datapath.Parse(path)
		if err != nil {
			return nil, err
		}
		s.prepMu.Lock()
		defer s.prepMu.Unlock()
		prepared = true
		c := &compiledQuery{}
		if q, err := vm.PrepareQuery(ctx, s.compiler, s.store, ref); err != nil {
			c.why = err.Error()
		} else {
			c.q = q
		}
		return c, nil
	}))
	switch {
	case err != nil:
		return nil
	case !prepared:
	case c.q == nil:
		log.Warn("the compiled evaluator cannot run this policy path; topdown evaluates it", "path", path, "why", c.why)
	default:
		log.Debug("policy path runs on the compiled evaluator", "path", path)
	}
	return c.q
}
