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
	"github.com/open-policy-agent/opa/v1/types"
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
var decisionSemantics = "opa-" + opaversion.Version + "/acgs-" + semanticsRev

// semanticsRev: 2 since the VM leaves indexed comprehensions that may fail
// to topdown and keeps the last of equal values in object comprehensions,
// and an integer path segment names a number (datapath.Parse); 3 since the
// VM hands equal values written otherwise (1 and 1.0) to topdown and
// constant plans are refused where topdown could raise a conflict; 4
// since datapath.Parse undoes a segment's escapes (a%2Fb is the key "a/b",
// which an older build read as the key "a%2Fb").
const semanticsRev = "4"

// dataHashes refuses a bundle whose data names another constitution: the
// policy compares requests with, and answers, the hash its data holds
// (data.acgs.config.constitutional_hash), which a manifest with the right
// hash does not vouch for. Every value under a key constitutional_hash, at
// any depth, must be the configured hash: a value of another type (an
// array, a number, an object, null) is refused too, not skipped, as what
// a policy compares with it is not the configured hash string either.
// Only the exact key name counts. Values of virtual documents (sets as
// arrays) are walked the same way (virtualHashes).
func dataHashes(v any, want, at string) error {
	switch x := v.(type) {
	case map[string]any:
		for _, k := range slices.Sorted(maps.Keys(x)) {
			e := x[k]
			if k == "constitutional_hash" {
				if s, ok := e.(string); !ok || s != want {
					return fmt.Errorf("%s.%s is %s, not the configured constitutional hash %s", at, k, describeValue(e), want)
				}
				continue
			}
			if err := dataHashes(e, want, at+"."+k); err != nil {
				return err
			}
		}
	case []any:
		for i, e := range x {
			if err := dataHashes(e, want, fmt.Sprintf("%s[%d]", at, i)); err != nil {
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

// virtualHashes refuses a compiled bundle whose rules can make a document
// named constitutional_hash hold anything but the configured hash (want).
// dataHashes checks the JSON data; the policy compares requests with
// data.acgs.config.constitutional_hash whatever defines it, and a rule
// (package acgs.config, constitutional_hash := "...") defines it as well
// as data.json does. Where in doubt, it refuses:
//
//   - Documents read: every reference into data, in any rule, whose last
//     key is constitutional_hash (data.acgs.config.constitutional_hash)
//     must not depend on the input (or a non-deterministic built-in) and
//     must evaluate, without input, to the configured hash or be undefined.
//   - Documents defined: every rule (complete, partial, with a multi-part
//     ref head; not a function) whose document (the ground prefix of its
//     reference) ends with constitutional_hash, or whose type (the
//     compiler's type check) may hold a key constitutional_hash at any
//     depth (an object of such a static key, or of keys that may be
//     strings, as config[k] := v gives), is evaluated without input and its
//     value walked as dataHashes walks data. Such a rule that depends on
//     the input is refused when its document is the hash itself. Another
//     that depends on the input (the decisions, which answer the hash;
//     partial objects keyed by the input's strings) cannot be evaluated at
//     activation: only the next point and the first (when its hash is
//     read by reference) check it.
//   - Literals and with: an object literal in any rule with a key
//     constitutional_hash must hold the configured hash, a reference to a
//     document checked above, or a variable bound to either; a with
//     modifier must not replace such a document or one holding a document
//     read (literalHashes).
//
// A document at a key not spelled constitutional_hash is not looked at,
// as in data. Modules of packages named *_test (Rego tests, served only
// when a bundle ships them) are neither walked for definitions nor for
// literals: they build wrong hashes as test inputs, and no served policy
// reads their documents unless a reference says so, which the first
// point checks wherever it is.
func virtualHashes(ctx context.Context, compiler *ast.Compiler, store storage.Store, reads *readset.Analyzer, want string) error {
	ctx, cancel := context.WithTimeout(ctx, hashCheckBudget)
	defer cancel()
	var targets []*hashTarget
	seen := map[string]*hashTarget{}
	add := func(t *hashTarget) {
		k := t.ref.String()
		if old := seen[k]; old != nil {
			// The stricter wins: a document two rules define (config.x
			// and config[k]) is checked as the stricter needs.
			old.dependOK = old.dependOK && t.dependOK
			old.readsInput = old.readsInput || t.readsInput // either makes it depend on the input
			if old.rule == "" {
				old.rule = t.rule
			}
			return
		}
		seen[k] = t
		targets = append(targets, t)
	}
	ids := slices.Sorted(maps.Keys(compiler.Modules))
	for _, id := range ids {
		ast.WalkRefs(compiler.Modules[id], func(r ast.Ref) bool {
			if len(r) > 1 && r[0].Equal(ast.DefaultRootDocument) && r[len(r)-1].Value.Compare(hashKey) == 0 && r.IsGround() {
				add(&hashTarget{ref: r})
			}
			return false
		})
	}
	read := slices.Clone(targets) // the documents references read
	for _, id := range ids {
		m := compiler.Modules[id]
		if isTestPackage(m.Package) {
			continue
		}
		for _, r := range m.Rules {
			if len(r.Head.Args) > 0 {
				continue // a function is no document
			}
			full := r.Ref()
			doc := full.GroundPrefix()
			where := locString(r.Location)
			switch {
			case doc[len(doc)-1].Value.Compare(hashKey) == 0:
				add(&hashTarget{ref: doc, rule: where})
			case mayHoldHash(compiler.TypeEnv.GetByRef(doc), 0):
				// Input-dependent, it is not evaluated here (partial
				// objects keyed by the input's strings are common: refused,
				// valid bundles were); a read of its hash by reference is
				// a target above, and refused when it depends on the input.
				add(&hashTarget{ref: doc, rule: where, dependOK: true, readsInput: readsInput(r)})
			}
		}
		if err := literalHashes(m, read, want); err != nil {
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

// hashTarget is a document virtualHashes checks.
type hashTarget struct {
	ref ast.Ref
	// dependOK: a complete rule's document that may depend on the input
	// (its literals are checked instead); else such a document is refused.
	dependOK   bool
	readsInput bool   // its rule reads the input itself (dependOK only)
	rule       string // file:row of a rule defining it; "" when only read
}

func (t *hashTarget) definedAt() string {
	if t.rule == "" {
		return ""
	}
	return " (defined at " + t.rule + ")"
}

// check evaluates the document without input and walks its value.
func (t *hashTarget) check(ctx context.Context, compiler *ast.Compiler, store storage.Store, reads *readset.Analyzer, want string) error {
	if t.dependOK && t.readsInput {
		return nil // the rule reads the input itself: Analyze would say so
	}
	at := t.ref.String()
	if rs := reads.Analyze(t.ref); rs.Whole || len(rs.Paths) > 0 || len(rs.Types) > 0 || len(rs.Nondeterministic) > 0 {
		if t.dependOK {
			return nil
		}
		what := "the input"
		switch {
		case len(rs.Nondeterministic) > 0:
			what = "non-deterministic built-ins (" + strings.Join(rs.Nondeterministic, ", ") + ")"
		case !rs.Whole && len(rs.Paths) > 0:
			what = "the input (" + rs.Paths[0].String() + ")"
		}
		return fmt.Errorf("%s depends on %s%s: the constitutional hash it may hold is not fixed at activation", at, what, t.definedAt())
	}
	rs, err := rego.New(
		rego.ParsedQuery(ast.NewBody(ast.NewExpr(ast.NewTerm(t.ref)))),
		rego.Compiler(compiler),
		rego.Store(store),
	).Eval(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%s%s: its constitutional hash check did not end within %s", at, t.definedAt(), hashCheckBudget)
		}
		return fmt.Errorf("%s cannot be evaluated without input to check its constitutional hash%s: %w", at, t.definedAt(), err)
	}
	if len(rs) == 0 || len(rs[0].Expressions) == 0 {
		return nil // undefined: holds no hash
	}
	v := rs[0].Expressions[0].Value
	if t.ref[len(t.ref)-1].Value.Compare(hashKey) == 0 {
		err = dataHashes(map[string]any{"constitutional_hash": v}, want, t.ref[:len(t.ref)-1].String())
	} else {
		err = dataHashes(v, want, at)
	}
	if err != nil {
		return fmt.Errorf("%w%s", err, t.definedAt())
	}
	return nil
}

// readsInput reports whether r or one of its else branches reads the
// input itself (the rules it reads are not looked at: readset.Analyze
// answers for them). Only a shortcut: false says nothing.
func readsInput(r *ast.Rule) bool {
	found := false
	ast.WalkRefs(r, func(ref ast.Ref) bool {
		found = found || ref.HasPrefix(ast.InputRootRef)
		return found
	})
	return found
}

// isTestPackage reports whether pkg is a package of Rego tests (x_test).
func isTestPackage(pkg *ast.Package) bool {
	s, ok := pkg.Path[len(pkg.Path)-1].Value.(ast.String)
	return ok && strings.HasSuffix(string(s), "_test")
}

// mayHoldHash reports whether a value of type t may hold a key
// constitutional_hash at some depth (an array's or a set's elements
// included); an unknown type may.
func mayHoldHash(t types.Type, depth int) bool {
	if depth > 32 {
		return true
	}
	switch x := t.(type) {
	case types.Null, types.Boolean, types.Number, types.String, *types.Function:
		return false
	case *types.NamedType:
		return mayHoldHash(x.Type, depth+1)
	case types.Any:
		if len(x) == 0 {
			return true
		}
		return slices.ContainsFunc(x, func(t types.Type) bool { return mayHoldHash(t, depth+1) })
	case *types.Object:
		for _, p := range x.StaticProperties() {
			if p.Key == string(hashKey) || mayHoldHash(p.Value, depth+1) {
				return true
			}
		}
		if d := x.DynamicProperties(); d != nil {
			return mayBeString(d.Key, depth+1) || mayHoldHash(d.Value, depth+1)
		}
		return false
	case *types.Array:
		for i := range x.Len() {
			if mayHoldHash(x.Select(i), depth+1) {
				return true
			}
		}
		return x.Dynamic() != nil && mayHoldHash(x.Dynamic(), depth+1)
	case *types.Set:
		return mayHoldHash(x.Of(), depth+1)
	default:
		return true
	}
}

// mayBeString reports whether a key of type t may be a string.
func mayBeString(t types.Type, depth int) bool {
	switch x := t.(type) {
	case types.Null, types.Boolean, types.Number, *types.Object, *types.Array, *types.Set, *types.Function:
		return false
	case *types.NamedType:
		return depth > 32 || mayBeString(x.Type, depth+1)
	case types.Any:
		return len(x) == 0 || slices.ContainsFunc(x, func(t types.Type) bool { return mayBeString(t, depth+1) })
	default:
		return true // a string, or a type not known here
	}
}

// literalHashes refuses an object literal in a rule of m with a key
// constitutional_hash that holds something other than the configured
// hash, a reference into data ending with constitutional_hash (which
// virtualHashes checks) or a variable bound to one of those in the rule.
// The decisions answer the hash so, from data.acgs.config; they depend on
// the input and cannot be evaluated at activation. It refuses as well a
// with modifier that replaces, for the expression it modifies, a document
// constitutional_hash by anything else, or a document holding one that a
// reference reads (with data.acgs.config as input.cfg): virtualHashes
// checks documents as they are without such a replacement.
func literalHashes(m *ast.Module, read []*hashTarget, want string) error {
	for _, r := range m.Rules {
		// Variables bound, by an equality anywhere in the rule and its
		// else branches, to the hash (the compiler names locals uniquely
		// per module); to a fixpoint, for chains of variables.
		ok := map[ast.Var]bool{}
		var binds [][2]*ast.Term
		ast.WalkExprs(r, func(e *ast.Expr) bool {
			if e.IsEquality() || e.IsAssignment() {
				binds = append(binds, [2]*ast.Term{e.Operand(0), e.Operand(1)}, [2]*ast.Term{e.Operand(1), e.Operand(0)})
			}
			return false
		})
		for changed := true; changed; {
			changed = false
			for _, b := range binds {
				if v, isVar := b[0].Value.(ast.Var); isVar && !ok[v] && holdsHash(b[1], ok, want) {
					ok[v], changed = true, true
				}
			}
		}
		var err error
		ast.WalkExprs(r, func(e *ast.Expr) bool {
			for _, w := range e.With {
				if err != nil {
					break
				}
				target, isRef := w.Target.Value.(ast.Ref)
				if !isRef || !target.HasPrefix(ast.DefaultRootRef) {
					continue // the input or a function
				}
				if target[len(target)-1].Value.Compare(hashKey) == 0 {
					if !holdsHash(w.Value, ok, want) {
						err = fmt.Errorf("%s replaces %s with %s (%s), not the configured constitutional hash %s or a document holding it", r.Ref(), target, termText(w.Value), locString(w.Location), want)
					}
					continue
				}
				for _, t := range read {
					if t.ref.HasPrefix(target) || target.HasPrefix(t.ref) {
						err = fmt.Errorf("%s replaces %s, which holds or is within %s, with %s (%s): the constitutional hash is not to be replaced", r.Ref(), target, t.ref, termText(w.Value), locString(w.Location))
						break
					}
				}
			}
			return err != nil
		})
		ast.WalkTerms(r, func(t *ast.Term) bool {
			obj, isObj := t.Value.(ast.Object)
			if !isObj || err != nil {
				return err != nil
			}
			if v := obj.Get(ast.NewTerm(hashKey)); v != nil && !holdsHash(v, ok, want) {
				where := r.Location
				if v.Location != nil {
					where = v.Location
				}
				err = fmt.Errorf("%s may hold %s under constitutional_hash (%s), not the configured constitutional hash %s or a document holding it", r.Ref(), termText(v), locString(where), want)
			}
			return false
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// locString is file:row of loc ("" when there is none).
func locString(loc *ast.Location) string {
	if loc == nil {
		return ""
	}
	return loc.File + ":" + strconv.Itoa(loc.Row)
}

// termText is t as written in the module (the compiler renames locals).
func termText(t *ast.Term) string {
	if t.Location != nil && len(t.Location.Text) > 0 {
		return string(t.Location.Text)
	}
	return t.String()
}

// holdsHash reports whether t is the configured hash, a reference into
// data ending with constitutional_hash, or a variable of ok.
func holdsHash(t *ast.Term, ok map[ast.Var]bool, want string) bool {
	switch x := t.Value.(type) {
	case ast.String:
		return string(x) == want
	case ast.Var:
		return ok[x]
	case ast.Ref:
		return len(x) > 1 && x[0].Equal(ast.DefaultRootDocument) && x[len(x)-1].Value.Compare(hashKey) == 0 && x.IsGround()
	}
	return false
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
	if err := dataHashes(data, wantHash, "data"); err != nil {
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
		if _, again := s.sighted.GetIfPresent(path); !again {
			s.sighted.Set(path, struct{}{})
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
