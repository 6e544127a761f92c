package vm

import (
	"context"
	"errors"
	"fmt"
	"reflect"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/ir"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/topdown/builtins"
	"github.com/open-policy-agent/opa/v1/util"
)

// Target is the name of the rego target the VM registers. Prepare passes
// rego.Target(Target) to rego.New; the plugin refuses (ErrUnsupported) a
// preparation that did not come through Prepare, since only Prepare checks
// the query against the compiler (findIndexRisk): rego.New(...,
// rego.Target(vm.Target)) on its own could answer differently from topdown.
const Target = "acgs-vm"

func init() {
	rego.RegisterPlugin(Target, plugin{})
}

// env is what a preparation needs besides the plan, carried by the
// context Prepare gives to rego's PrepareForEval (rego hands a target
// plugin the plan only). Only Prepare sets it: its key is unexported.
type env struct {
	store storage.Store
	caps  *ast.Capabilities
	// strictRisk: why the query cannot run on the VM under strict
	// built-in errors (see findIndexRisk).
	strictRisk string
	// checked is the marker of a preparation through Prepare: the
	// compiler findIndexRisk looked at and its modules then. The plugin
	// refuses a preparation without it.
	checked *checked
}

// checked is what Prepare's soundness check (findIndexRisk) looked at.
type checked struct {
	compiler *ast.Compiler
	modules  map[string]*ast.Module // compiler.Modules when checked
}

// current reports whether the compiler still holds the modules the check
// looked at: rego compiles a module or bundle given among Prepare's
// options into the compiler (replacing its Modules) before planning.
func (c *checked) current() bool {
	m := c.compiler.Modules
	return len(m) == len(c.modules) && reflect.ValueOf(m).UnsafePointer() == reflect.ValueOf(c.modules).UnsafePointer()
}

type envKey struct{}

// captureKey carries, in a preparation's context, where PrepareForEval
// leaves the prepared query (PrepareQuery reads it back).
type captureKey struct{}

func envFrom(ctx context.Context) env {
	e, _ := ctx.Value(envKey{}).(env)
	return e
}

type plugin struct{}

func (plugin) IsTarget(t string) bool { return t == Target }

func (plugin) PrepareForEval(ctx context.Context, pol *ir.Policy, opts ...rego.PrepareOption) (rego.TargetPluginEval, error) {
	e := envFrom(ctx)
	switch {
	case e.checked == nil:
		// rego.New(..., rego.Target(vm.Target)) without Prepare: the query
		// was not checked for comprehensions topdown indexes, where the VM
		// may answer differently. Fail closed.
		return nil, unsupported("the query was not prepared through vm.Prepare, which checks it against the compiler; rego.Target(vm.Target) alone is refused")
	case !e.checked.current():
		return nil, unsupported("the compiler's modules changed after vm.Prepare checked the query (a module or bundle among its options)")
	}
	cfg := &rego.PrepareConfig{}
	for _, o := range opts {
		o(cfg)
	}
	prog, err := Compile(pol, Options{Builtins: cfg.BuiltinFuncs()})
	if err != nil {
		return nil, err
	}
	if prog.readsData && e.store == nil {
		return nil, unsupported("the plan reads base documents and no store was given to vm.Prepare")
	}
	if prog.readsData && prog.dataSystemRisk {
		root, err := storage.ReadOne(ctx, e.store, storage.RootPath)
		if err != nil {
			return nil, err
		}
		if hasSystem(root) {
			return nil, unsupported("data has a system document and the plan copies data or replaces it with with")
		}
	}
	prog.caps = e.caps
	prog.strictRisk = e.strictRisk
	p := &prepared{prog: prog, store: e.store}
	if c, ok := ctx.Value(captureKey{}).(**prepared); ok {
		*c = p
	}
	return p, nil
}

// prepared is a query lowered for the VM.
type prepared struct {
	prog  *Program
	store storage.Store
	memo  *sharedMemo // set by Prepare (armMemo); nil: nothing shared
}

// Eval evaluates the query: rego calls it from PreparedEvalQuery.Eval with
// the evaluation's context and its runtime document.
func (p *prepared) Eval(ctx context.Context, ectx *rego.EvalContext, rt ast.Value) (ast.Value, error) {
	var input *ast.Term
	if v := ectx.ParsedInput(); v != nil {
		input = ast.NewTerm(v)
	} else if raw := ectx.RawInput(); raw != nil {
		// As rego parses a raw input for topdown.
		ptr := util.Reference(raw)
		if err := util.RoundTripFast(ptr); err != nil {
			return nil, err
		}
		v, err := ast.InterfaceToValue(*ptr)
		if err != nil {
			return nil, err
		}
		input = ast.NewTerm(v)
	}
	var data *ast.Term
	var mk memoKey
	if p.prog.readsData {
		// The epoch before the read: a commit between the two makes a
		// value computed on this data one that no later evaluation uses.
		var epoch uint64
		if p.memo != nil {
			epoch = p.memo.epoch.Load()
		}
		v, err := p.store.Read(ctx, ectx.Transaction(), storage.RootPath)
		if err != nil {
			return nil, err
		}
		// Only a query that shares values asks what the transaction is.
		if p.memo != nil && readTxn(ectx.Transaction()) {
			mk = p.memo.keyFor(epoch, v)
		}
		dv, ok := v.(ast.Value)
		if !ok {
			if dv, err = ast.InterfaceToValue(v); err != nil {
				return nil, err
			}
		}
		data = ast.NewTerm(dv)
	}
	return p.prog.eval(ctx, ectx, rt, input, data, nil, mk)
}

// Eval runs the program's first plan on input and data (nil: undefined)
// and returns its result set, a set of objects binding the query's
// variables (what rego turns into a ResultSet). ectx may be nil.
func (p *Program) Eval(ctx context.Context, ectx *rego.EvalContext, rt ast.Value, input, data *ast.Term) (rs ast.Set, err error) {
	return p.eval(ctx, ectx, rt, input, data, nil, memoKey{})
}

// eval is Eval with the cache of non-deterministic built-in results of an
// evaluation without rego's context (ectx nil), and the key of the shared
// functions' values on data (see sharedMemo).
func (p *Program) eval(ctx context.Context, ectx *rego.EvalContext, rt ast.Value, input, data *ast.Term, ndb builtins.NDBCache, mk memoKey) (rs ast.Set, err error) {
	st := p.pool.Get().(*state)
	defer func() {
		// A plan the lowering misjudged must fail one decision, not the
		// process; the state is dropped, not pooled.
		if r := recover(); r != nil {
			rs, err = nil, internalError(nil, fmt.Sprintf("evaluation panicked: %v", r))
		}
	}()
	st.reset(ctx, ectx, rt)
	if st.strict && p.strictRisk != "" {
		st.release()
		return nil, unsupported("under strict built-in errors, %s", p.strictRisk)
	}
	st.ndb = ndb
	st.mk = mk
	rs, err = st.runPlan(p.plans[0], input, data)
	st.release()
	return rs, err
}

// Prepare prepares query (a body such as data.x.y) for evaluation on the
// VM against compiler and store, with the rego options extra (for example
// rego.StrictBuiltinErrors or rego.EnablePrintStatements). It returns an
// error wrapping ErrUnsupported when the VM cannot run the query: the
// caller prepares it for topdown instead. Evaluate with the result's Eval
// as for topdown.
//
// The result set is topdown's for a query topdown gives at most one
// result (any query of one ground reference, such as data.x.y, which is
// all the engine prepares). A query with several results (x :=
// data.x.arr[_]) gets each distinct result once, in the order of
// ast.Compare, where topdown gives them in the order it finds them,
// repeats included: the plan collects results into a set.
//
// Prepare is the only way to prepare a query on the VM (the plugin refuses
// rego.Target(vm.Target) without it), since it checks the query against
// the compiler first (findIndexRisk: comprehensions topdown indexes, and
// comprehensions as body expressions, which OPA's plan skips and topdown
// evaluates, in the query or the rules it reaches). So it requires a
// compiler (nil is refused: rego would compile its own from modules the
// check cannot see), and refuses extra options that change what the check
// looked at: modules, bundles, a package or imports for the query,
// resolvers (topdown's, which the VM does not consult). The query, compiler, store and target are Prepare's
// whatever extra says.
//
// rego switches a compiler used with a target plugin to IR evaluation mode
// (which only stops later topdown queries compiled with it from building
// comprehension indices); Prepare sets it back to topdown's mode. rego
// writes that field without a lock, so do not prepare on a compiler that
// other goroutines compile queries with at the same time (prepare at
// activation, or under the same lock as topdown preparations).
//
// On OPA's inmem store, rules of the data only are computed once and
// shared by the evaluations (see sharedMemo): Prepare registers a trigger
// on the store, under its write lock, so do not call it while holding a
// write transaction on store.
func Prepare(ctx context.Context, compiler *ast.Compiler, store storage.Store, query ast.Body, extra ...func(*rego.Rego)) (rego.PreparedEvalQuery, error) {
	pq, _, err := prepare(ctx, compiler, store, query, extra...)
	return pq, err
}

// prepare is Prepare, returning also what the plugin prepared (nil when
// rego did not call it).
func prepare(ctx context.Context, compiler *ast.Compiler, store storage.Store, query ast.Body, extra ...func(*rego.Rego)) (rego.PreparedEvalQuery, *prepared, error) {
	if compiler == nil {
		return rego.PreparedEvalQuery{}, nil, unsupported("vm.Prepare was given no compiler: the check of the query needs the compiled policy")
	}
	if why := extraRisk(extra); why != "" {
		return rego.PreparedEvalQuery{}, nil, unsupported("%s", why)
	}
	risk := findIndexRisk(compiler, query)
	if risk.always != "" {
		return rego.PreparedEvalQuery{}, nil, unsupported("%s", risk.always)
	}
	opts := make([]func(*rego.Rego), 0, len(extra)+5)
	opts = append(opts, extra...)
	// Last, so that no option of extra replaces what was checked, nor
	// leaves the shared compiler in IR mode.
	opts = append(opts, rego.ParsedQuery(query), rego.Compiler(compiler), rego.Store(store), rego.Target(Target), rego.EvalMode(ast.EvalModeTopdown))
	e := env{
		store: store, caps: compiler.Capabilities(), strictRisk: risk.strict,
		checked: &checked{compiler: compiler, modules: compiler.Modules},
	}
	var p *prepared
	pctx := context.WithValue(context.WithValue(ctx, envKey{}, e), captureKey{}, &p)
	pq, err := rego.New(opts...).PrepareForEval(pctx)
	if err != nil {
		if errors.Is(err, ErrUnsupported) {
			return rego.PreparedEvalQuery{}, nil, err
		}
		// The planner refuses what it cannot plan (and compile errors
		// end up here too): topdown decides.
		return rego.PreparedEvalQuery{}, nil, fmt.Errorf("%w: planning: %w", ErrUnsupported, err)
	}
	// Functions of the data only are shared across evaluations when a
	// trigger on the store says when the data changes; that needs a write
	// transaction, so not when the caller gave rego one (it may hold it).
	if p != nil && !setsTxn(extra) {
		p.armMemo(ctx)
	}
	return pq, p, nil
}

// regoFields are the fields of rego.Rego that an option of Prepare's extra
// must leave empty: modules and bundles (compiled into the compiler after
// the check looked at it), a package and imports (the query would be
// compiled in another context than the check's) and resolvers (which
// topdown consults and the VM does not), and a compiler hook (which would
// change the compiler after the check).
var regoFields = []string{"modules", "parsedModules", "bundles", "bundlePaths", "loadPaths", "pkg", "parsedPackage", "imports", "parsedImports", "resolvers", "compilerHook"}

// extraRisk says why Prepare cannot take the options extra, if it cannot.
// rego.Rego has no accessors: its fields are read by reflection, and a
// field not found (another OPA) refuses.
func extraRisk(extra []func(*rego.Rego)) string {
	if len(extra) == 0 {
		return ""
	}
	r := reflect.ValueOf(rego.New(extra...)).Elem()
	for _, name := range regoFields {
		f := r.FieldByName(name)
		switch {
		case !f.IsValid():
			return "rego.Rego has no field " + name + " to check vm.Prepare's options against"
		case f.Kind() == reflect.Map || f.Kind() == reflect.Slice:
			if f.Len() > 0 {
				return "an option of vm.Prepare sets rego's " + name + ", which the check of the query does not see"
			}
		case !f.IsZero():
			return "an option of vm.Prepare sets rego's " + name + ", which the check of the query does not see"
		}
	}
	return ""
}

// setsTxn reports whether an option of extra gives rego a transaction
// (rego.Transaction), or whether that cannot be told.
func setsTxn(extra []func(*rego.Rego)) bool {
	if len(extra) == 0 {
		return false
	}
	f := reflect.ValueOf(rego.New(extra...)).Elem().FieldByName("txn")
	return !f.IsValid() || !f.IsZero()
}

// Query is a query of one reference (such as data.x.y) prepared for the
// VM, evaluated either through rego (PreparedEvalQuery) or directly (Eval):
// without rego's evaluation context, metrics and result set, which cost
// more than a small policy's evaluation.
type Query struct {
	PreparedEvalQuery rego.PreparedEvalQuery
	p                 *prepared
}

// PrepareQuery is Prepare for a query of one reference, returning it as a
// Query that can also be evaluated directly.
func PrepareQuery(ctx context.Context, compiler *ast.Compiler, store storage.Store, ref ast.Ref, extra ...func(*rego.Rego)) (*Query, error) {
	pq, p, err := prepare(ctx, compiler, store, ast.NewBody(ast.NewExpr(ast.NewTerm(ref))), extra...)
	if err != nil {
		return nil, err
	}
	if p == nil {
		return nil, unsupported("the query was not prepared by the VM plugin")
	}
	return &Query{PreparedEvalQuery: pq, p: p}, nil
}

// Eval evaluates the query on input (nil: none) as PreparedEvalQuery.Eval
// with rego.EvalParsedInput(input) and rego.EvalNDBuiltinCache(ndb) does,
// and returns the AST value of its first result's expression (which rego
// converts with ast.JSON); defined is false when there is no result. ok is
// false when the result set is not one rego would turn into that single
// value: the caller evaluates through PreparedEvalQuery then.
func (q *Query) Eval(ctx context.Context, input ast.Value, ndb builtins.NDBCache) (v ast.Value, defined, ok bool, err error) {
	var in *ast.Term
	if input != nil {
		in = ast.NewTerm(input)
	}
	var data *ast.Term
	var mk memoKey
	if q.p.prog.readsData {
		// A transaction per evaluation, as rego opens one.
		txn, err := q.p.store.NewTransaction(ctx)
		if err != nil {
			return nil, false, true, err
		}
		defer q.p.store.Abort(ctx, txn)
		var epoch uint64 // before the read, as in prepared.Eval
		if q.p.memo != nil {
			epoch = q.p.memo.epoch.Load()
		}
		x, err := q.p.store.Read(ctx, txn, storage.RootPath)
		if err != nil {
			return nil, false, true, err
		}
		mk = q.p.memo.keyFor(epoch, x)
		dv, isAST := x.(ast.Value)
		if !isAST {
			if dv, err = ast.InterfaceToValue(x); err != nil {
				return nil, false, true, err
			}
		}
		data = ast.NewTerm(dv)
	}
	rs, err := q.p.prog.eval(ctx, nil, nil, in, data, ndb, mk)
	if err != nil {
		return nil, false, true, err
	}
	switch rs.Len() {
	case 0:
		return nil, false, true, nil
	case 1:
		obj, isObj := rs.Slice()[0].Value.(ast.Object)
		if !isObj || obj.Len() != 1 {
			return nil, false, false, nil
		}
		var val *ast.Term
		obj.Foreach(func(_, x *ast.Term) { val = x })
		return val.Value, true, true, nil
	}
	return nil, false, false, nil
}

// hasSystem reports whether a data root read from a store has a top-level
// "system" document.
func hasSystem(root any) bool {
	switch r := root.(type) {
	case ast.Object:
		return r.Get(systemKey) != nil
	case map[string]any:
		_, ok := r[string(ast.SystemDocumentKey)]
		return ok
	}
	return false
}
