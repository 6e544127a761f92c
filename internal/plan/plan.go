// Package plan answers, without evaluating, the decisions that a few input
// fields settle alone. OPA's partial evaluation specialises a document on
// those fields (the plan keys: input.type, input.action, ...) with every
// other field it reads unknown; where the result is one constant (say, every
// prohibited action is denied whatever the context), that constant is the
// decision of every input with those key values, answered in well under a
// microsecond. Anything else is a fallback: the evaluator answers.
//
// Residual queries (what partial evaluation leaves when the answer is not
// constant) are deliberately not run: the compiled evaluator runs the whole
// document faster than topdown runs a residual (BenchmarkEvaluators in
// internal/engine), so only constants still pay.
package plan

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"

	"github.com/acgs-lite/acgs/internal/cache"
	"github.com/acgs-lite/acgs/internal/datapath"
	"github.com/acgs-lite/acgs/internal/readset"
)

// Plan kinds, also the labels of the partial-evaluation metrics.
const (
	Constant = "constant" // the decision is known from the plan keys alone
	Fallback = "fallback" // it is not: the evaluator answers
)

// Plan is the outcome of specialising one document on one combination of
// plan-key values. It is immutable.
type Plan struct {
	kind    string
	Value   any    // Constant: the decision (decoded JSON, numbers as json.Number); nil when undefined
	Defined bool   // Constant: false when the document is undefined for every such input
	JSON    []byte // Constant: Value encoded
}

// Kind is Constant or Fallback.
func (p *Plan) Kind() string { return p.kind }

var fallback = &Plan{kind: Fallback}

// buildTimeout bounds one partial evaluation started by a request.
const buildTimeout = 10 * time.Second

// Options configure a Planner.
type Options struct {
	// Keys are the plan keys (input refs such as input.type) of documents
	// that declare none of their own (see Declare).
	Keys []string
	// Size bounds the plans kept (an LRU): key values come from requests.
	Size int
	// Log receives warnings (a build that failed).
	Log func(msg string, args ...any)
}

// Planner builds and keeps the plans of one policy revision.
type Planner struct {
	modules map[string]*ast.Module
	store   storage.Store
	reads   func(path string) *readset.Set
	log     func(msg string, args ...any)

	defaultKeys [][]string
	mu          sync.RWMutex
	keys        map[string][][]string // per path, declared by the bundle

	lru *lru.Cache[string, *Plan]
	sem chan struct{} // held while a build runs: one at a time

	// comp is the planner's own compiler, compiled from the same modules as
	// the serving one but used by nothing else: OPA's partial evaluation
	// rewrites terms it shares with its compiler (copy propagation), so a
	// build on the serving compiler would race with evaluations. Builds
	// (one at a time, under sem) are its only users. It is dropped once no
	// build has run for keep (see compilerKeep); guarded by sem, as are
	// dropTimer and lastBuild.
	comp      *ast.Compiler
	analysis  *analysis // of comp, for hazard; dropped with it
	keep      time.Duration
	dropTimer *time.Timer
	lastBuild time.Time
}

// compilerKeep is how long the planner keeps its compiler after its last
// build. Builds come in bursts (activation's seed list, a new action many
// agents send at once) and a burst shares one compilation, which costs
// 0.2-0.5 s of CPU for the constitution on the build goroutine, off the
// request path; kept for the life of the revision, the compiler was 3.4 MB
// of live heap, about 7 MB resident under Go's default GC pacing (issue 18).
const compilerKeep = 2 * time.Second

// New returns a planner for the bundle's parsed modules and store; reads
// gives each document's read set (what it can read of the input), which
// decides what partial evaluation treats as unknown.
func New(modules map[string]*ast.Module, store storage.Store, reads func(path string) *readset.Set, o Options) *Planner {
	p := &Planner{
		modules: modules, store: store, reads: reads, log: o.Log,
		keys: map[string][][]string{}, sem: make(chan struct{}, 1), keep: compilerKeep,
	}
	if p.log == nil {
		p.log = func(string, ...any) {}
	}
	p.defaultKeys = splitKeys(o.Keys)
	p.lru, _ = lru.New[string, *Plan](max(o.Size, 1))
	return p
}

func splitKeys(refs []string) [][]string {
	out := make([][]string, 0, len(refs))
	for _, k := range refs {
		out = append(out, strings.Split(strings.TrimPrefix(k, "input."), "."))
	}
	return out
}

// Declare sets the plan keys of the document at path (refs such as
// input.type), overriding Options.Keys for it. Call it before serving.
func (p *Planner) Declare(path string, keys []string) {
	p.mu.Lock()
	p.keys[path] = splitKeys(keys)
	p.mu.Unlock()
}

func (p *Planner) keysOf(path string) [][]string {
	p.mu.RLock()
	k, ok := p.keys[path]
	p.mu.RUnlock()
	if ok {
		return k
	}
	return p.defaultKeys
}

// Disabled says why path can have no plan ("" when it can): without keys
// nothing is specialised; a document that may read the input whole cannot
// list its unknowns; one that may call a non-deterministic built-in would
// have it frozen into a constant. The root document (data, path "" or
// "/") is never planned: a plan queries the path's segments, and the
// root has none to query.
func (p *Planner) Disabled(path string) string {
	if strings.Trim(path, "/") == "" {
		return "it is the root document"
	}
	if len(p.keysOf(path)) == 0 {
		return "no plan keys are declared for it"
	}
	rs := p.reads(path)
	switch {
	case rs == nil:
		return "the path is not a reference"
	case rs.Whole:
		return "it may read the input whole (" + rs.WholeWhy + ")"
	case !rs.Cacheable():
		return "it may call the non-deterministic built-in " + rs.Nondeterministic[0]
	}
	return ""
}

// key returns the plan key of input at path; ok is false when input is not
// an object or a plan-key field holds an object or array (such inputs are
// evaluated).
func (p *Planner) key(path string, keys [][]string, input any) (string, bool) {
	obj, isObj := input.(map[string]any)
	if !isObj {
		return "", false
	}
	var scratch [128]byte
	// The path's length first: a path may hold any byte (NUL too), and
	// the key must not let one path and its values read as another's.
	buf := binary.AppendUvarint(scratch[:0], uint64(len(path)))
	buf = append(buf, path...)
	for _, parts := range keys {
		v, present := lookup(obj, parts)
		if !present {
			buf = append(buf, 'u')
			continue
		}
		switch v.(type) {
		case map[string]any, []any:
			return "", false
		}
		var err error
		buf = append(buf, 'k')
		if buf, err = cache.AppendCanonical(buf, v); err != nil {
			return "", false
		}
	}
	return string(buf), true
}

func lookup(v any, parts []string) (any, bool) {
	for _, part := range parts {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = m[part]; !ok {
			return nil, false
		}
	}
	return v, true
}

// known is the part of input the plan keys select.
func known(keys [][]string, input map[string]any) map[string]any {
	out := make(map[string]any, len(keys))
	for _, parts := range keys {
		v, ok := lookup(input, parts)
		if !ok {
			continue
		}
		SetPath(out, parts, v)
	}
	return out
}

// SetPath sets m's field at parts (input.a.b as [a b]) to v, making the
// objects on the way: how a plan's known input, and a seed, is built.
func SetPath(m map[string]any, parts []string, v any) {
	for _, part := range parts[:len(parts)-1] {
		next, ok := m[part].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[part] = next
		}
		m = next
	}
	m[parts[len(parts)-1]] = v
}

// Get returns the plan for input at path, or nil when there is none yet; a
// missing plan is built in the background (one build at a time; while one
// runs, other misses are simply evaluated) so this request is not delayed.
func (p *Planner) Get(path string, input any) *Plan {
	keys := p.keysOf(path)
	if len(keys) == 0 {
		return nil
	}
	k, ok := p.key(path, keys, input)
	if !ok {
		return nil
	}
	if pl, ok := p.lru.Get(k); ok {
		return pl
	}
	select {
	case p.sem <- struct{}{}:
	default:
		return nil // a build is running; a later request for k will ask again
	}
	kn := known(keys, input.(map[string]any))
	go func() {
		defer func() { <-p.sem }()
		ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
		defer cancel()
		if _, done := p.lru.Peek(k); !done {
			p.lru.Add(k, p.build(ctx, path, kn))
		}
	}()
	return nil
}

// Build builds and keeps the plan for the input made of known (plan-key
// values) at path, waiting for any build in progress; for activation.
func (p *Planner) Build(ctx context.Context, path string, known map[string]any) *Plan {
	keys := p.keysOf(path)
	k, ok := p.key(path, keys, known)
	if len(keys) == 0 || !ok {
		return nil
	}
	p.sem <- struct{}{}
	defer func() { <-p.sem }()
	if pl, ok := p.lru.Peek(k); ok {
		return pl // a seed list named the value twice
	}
	pl := p.build(ctx, path, known)
	p.lru.Add(k, pl)
	return pl
}

// keepCompiler notes a build and (re)arms the timer that drops the
// compiler keep after the last one; the caller holds sem.
func (p *Planner) keepCompiler() {
	p.lastBuild = time.Now()
	if p.dropTimer == nil {
		p.dropTimer = time.AfterFunc(p.keep, p.dropCompiler)
	} else {
		p.dropTimer.Reset(p.keep)
	}
}

// dropCompiler lets go of the compiler when no build has run for keep (a
// build that ran while the timer fired has re-armed it); the next build
// compiles again.
func (p *Planner) dropCompiler() {
	p.sem <- struct{}{}
	defer func() { <-p.sem }()
	if time.Since(p.lastBuild) >= p.keep {
		p.comp, p.analysis = nil, nil
	}
}

// unknowns are the top-level input fields the document can read, except
// plan keys that are top-level fields themselves: what partial evaluation
// must leave open. A field the document cannot read cannot change its value.
func unknowns(rs *readset.Set, keys [][]string) []*ast.Term {
	var fields []string
	for _, paths := range [][]readset.Path{rs.Paths, rs.Types} {
		for _, path := range paths {
			name, ok := path[0].(string)
			if !ok || slices.Contains(fields, name) {
				continue
			}
			if slices.ContainsFunc(keys, func(k []string) bool { return len(k) == 1 && k[0] == name }) {
				continue
			}
			fields = append(fields, name)
		}
	}
	slices.Sort(fields)
	out := make([]*ast.Term, 0, len(fields))
	for _, f := range fields {
		out = append(out, ast.NewTerm(ast.InputRootRef.Append(ast.StringTerm(f))))
	}
	return out
}

// build partially evaluates path with known and every other field the
// document reads unknown, on the planner's own compiler; the caller holds
// sem. A build that cannot prove a constant gives Fallback.
func (p *Planner) build(ctx context.Context, path string, known map[string]any) (pl *Plan) {
	if why := p.Disabled(path); why != "" {
		return fallback
	}
	defer p.keepCompiler()
	defer func() { // OPA's compiler has panicked on malformed queries; never let it take the process
		if r := recover(); r != nil {
			p.log("partial evaluation panicked; the evaluator will answer", "path", path, "panic", r)
			pl = fallback
		}
	}()
	if p.comp == nil {
		comp := ast.NewCompiler().WithEnablePrintStatements(false)
		comp.Compile(p.modules) // Compile copies the modules: nothing is shared with the serving compiler
		if comp.Failed() {
			p.log("compiling the planner's copy of the policy failed; the evaluator will answer", "error", comp.Errors)
			return fallback
		}
		p.comp, p.analysis = comp, nil
	}
	ref, err := datapath.Parse(path) // the document the evaluator reads
	if err != nil {
		return fallback
	}
	docRef := ref.Copy() // for hazard: the query's terms are partial evaluation's to rewrite
	knownVal, err := ast.InterfaceToValue(known)
	if err != nil {
		return fallback
	}
	x := ast.VarTerm("__acgs_result__")
	pq, err := rego.New(
		rego.ParsedQuery(ast.NewBody(ast.Equality.Expr(x, ast.NewTerm(ref)))),
		rego.Compiler(p.comp),
		rego.Store(p.store),
		rego.ParsedInput(knownVal),
		rego.ParsedUnknowns(unknowns(p.reads(path), p.keysOf(path))),
		rego.PartialNamespace("acgs_plan"),
	).Partial(ctx)
	if err != nil {
		p.log("partial evaluation failed; the evaluator will answer", "path", path, "error", err)
		return fallback
	}
	c := constant(pq, x)
	if c == nil {
		return fallback
	}
	// Partial evaluation drops errors topdown raises (see hazard): a
	// constant stands only where no evaluation can raise one.
	if why := p.hazard(ctx, docRef, p.keysOf(path), knownVal); why != "" {
		return fallback // not logged: an ordinary outcome, not a failure
	}
	return c
}

// constant is the plan pq settles on, or nil when it settles none.
func constant(pq *rego.PartialQueries, x *ast.Term) *Plan {
	switch {
	case len(pq.Queries) == 0:
		return &Plan{kind: Constant} // undefined whatever the unknowns
	case len(pq.Queries) > 1 || len(pq.Support) > 0:
		return nil
	}
	body := pq.Queries[0]
	if len(body) != 1 || !body[0].IsEquality() {
		return nil
	}
	terms, ok := body[0].Terms.([]*ast.Term)
	if !ok || len(terms) != 3 {
		return nil
	}
	for _, t := range terms[1:] {
		if t.Equal(x) || !t.IsGround() {
			continue
		}
		v, err := ast.JSON(t.Value)
		if err != nil {
			return nil
		}
		c := &Plan{kind: Constant, Value: normalise(v), Defined: true}
		c.JSON, _ = json.Marshal(c.Value)
		return c
	}
	return nil
}

// normalise turns the numbers of ast.JSON output into json.Number, like
// every other decision the engine returns.
func normalise(v any) any {
	b, err := json.Marshal(v)
	if err != nil {
		return v
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.UseNumber()
	var out any
	if dec.Decode(&out) != nil {
		return v
	}
	return out
}
