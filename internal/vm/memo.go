package vm

import (
	"context"
	"maps"
	"reflect"
	"sync/atomic"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/ir"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
)

// A rule of the data document only (one whose value cannot depend on the
// input) is the same in every evaluation on the same data: the VM computes
// it once and every later evaluation reuses the value (sharedMemo). Which
// functions qualify is decided on the IR (findShared), conservatively:
// where in doubt, a function is not shared.

// pureBuiltins are the built-ins a shared function may call: their result
// is a function of their arguments only (no clock, randomness, network,
// runtime document, print or trace). Of the built-in context they read
// only the call's location for errors, cancellation, and the regex and
// value caches and their hit counters: a shared value skips those calls,
// so with an inter-query value cache configured (the engine configures
// none) the rego_builtin_regex_interquery_value_cache_hits metric counts
// fewer hits than topdown would, and nothing else differs. A built-in not
// named here (a custom one included) makes every function that reaches it
// unshared.
var pureBuiltins = func() map[string]bool {
	m := map[string]bool{}
	for _, n := range []string{
		// comparison and arithmetic
		"equal", "neq", "lt", "lte", "gt", "gte",
		"plus", "minus", "mul", "div", "rem", "abs", "round", "ceil", "floor",
		"numbers.range", "numbers.range_step", "to_number", "format_int",
		// aggregates, arrays, sets
		"count", "sum", "product", "max", "min", "sort",
		"array.concat", "array.slice", "array.reverse",
		"and", "or", "intersection", "union",
		"internal.member_2", "internal.member_3",
		// objects
		"object.get", "object.keys", "object.remove", "object.filter",
		"object.union", "object.union_n", "object.subset",
		"json.filter", "json.remove",
		// strings
		"concat", "contains", "endswith", "startswith", "indexof", "indexof_n",
		"lower", "upper", "replace", "split", "sprintf", "substring",
		"trim", "trim_left", "trim_right", "trim_prefix", "trim_suffix", "trim_space",
		"strings.replace_n", "strings.reverse", "strings.count",
		"strings.any_prefix_match", "strings.any_suffix_match",
		// regex.match: its regex cache (OPA's, or the inter-query value
		// cache) only saves compiling a pattern again; an invalid pattern
		// is an error on every call (never stored: see call)
		"regex.match",
		// types
		"is_number", "is_string", "is_boolean", "is_array", "is_set",
		"is_object", "is_null", "type_name",
	} {
		m[n] = true
	}
	return m
}()

// memoCell is a shared function's value computed on one data document
// (data, by identity) at one epoch of its store.
type memoCell struct {
	data  ast.Value
	epoch uint64
	val   *ast.Term // nil: the function is undefined on that data
}

// sharedMemo is a prepared query's table of shared functions' values. Its
// epoch counts the commits to the query's store (a trigger registered by
// Prepare): the inmem store changes its documents in place, so a document
// read before a commit can be the same object as one read after it.
type sharedMemo struct {
	epoch atomic.Uint64
	// cells: two per shared function, for evaluations without and with
	// strict built-in errors (a built-in's error is an undefined value in
	// one and an error in the other).
	cells []atomic.Pointer[memoCell]
}

// memoKey is what a sharedMemo's cell must match for an evaluation to use
// it: the data document it read (by identity) and the store's epoch read
// before it. memo nil: no shared value for this evaluation.
type memoKey struct {
	memo  *sharedMemo
	epoch uint64
	data  ast.Value
}

// keyFor returns the memoKey of an evaluation that read data (ast.Value or
// not) at epoch: only a data object read as an AST value can be the one
// read by another evaluation (anything converted is a new object).
func (m *sharedMemo) keyFor(epoch uint64, data any) memoKey {
	if m == nil {
		return memoKey{}
	}
	obj, ok := data.(ast.Object)
	if !ok {
		return memoKey{}
	}
	return memoKey{memo: m, epoch: epoch, data: obj}
}

// armMemo gives p a sharedMemo when its program has shared functions and
// its store is OPA's inmem store: a trigger registered on it counts its
// commits (Register records the trigger at once, under the write lock
// only, so the transaction is aborted: no wait for open readers). Other
// stores share nothing (how and when they change data is not known
// here). Registering takes the store's write lock: the caller must not
// hold a write transaction on it.
func (p *prepared) armMemo(ctx context.Context) {
	if p.prog.nshared == 0 || p.store == nil || !p.prog.readsData || !isInmem(p.store) {
		return
	}
	m := &sharedMemo{cells: make([]atomic.Pointer[memoCell], 2*p.prog.nshared)}
	txn, err := p.store.NewTransaction(ctx, storage.WriteParams)
	if err != nil {
		return
	}
	defer p.store.Abort(ctx, txn)
	_, err = p.store.Register(ctx, txn, storage.TriggerConfig{
		SkipDataConversion: true,
		OnCommit: func(context.Context, storage.Transaction, storage.TriggerEvent) {
			m.epoch.Add(1)
		},
	})
	if err != nil {
		return
	}
	p.memo = m
}

// inmemStore is the type of OPA's inmem store (unexported there).
var inmemStore = reflect.TypeOf(inmem.New())

func isInmem(s storage.Store) bool {
	return reflect.TypeOf(s) == inmemStore
}

// inmemTxn is the type of the inmem store's transactions (unexported), and
// inmemWrite the index of its write field (false in a read transaction):
// looked up once, not by name on every evaluation. inmemTxn is nil where
// either cannot be found (another OPA): no transaction is a read one then.
var inmemTxn, inmemWrite = func() (reflect.Type, int) {
	s := inmem.New()
	txn, err := s.NewTransaction(context.Background())
	if err != nil {
		return nil, 0
	}
	defer s.Abort(context.Background(), txn)
	t := reflect.TypeOf(txn)
	if t.Kind() != reflect.Pointer || t.Elem().Kind() != reflect.Struct {
		return nil, 0
	}
	f, ok := t.Elem().FieldByName("write")
	if !ok || f.Type.Kind() != reflect.Bool || len(f.Index) != 1 {
		return nil, 0
	}
	return t, f.Index[0]
}()

// readTxn reports whether txn is a read transaction of the inmem store:
// only then is the data it reads a committed document that nothing
// changes before the next commit (readers hold the store's read lock).
// A write transaction (one a caller gives rego.EvalTransaction) reads its
// own uncommitted updates, and a later write in it can change the very
// object read before, in place and with no commit (no epoch change): a
// value shared on it would be stale. Where it cannot be told, false.
func readTxn(txn storage.Transaction) bool {
	if txn == nil || inmemTxn == nil || reflect.TypeOf(txn) != inmemTxn {
		return false
	}
	v := reflect.ValueOf(txn)
	if v.IsNil() {
		return false
	}
	return !v.Elem().Field(inmemWrite).Bool()
}

// funcInfo is what findShared learns of one function from its statements.
type funcInfo struct {
	readsInput bool // mentions its input parameter other than passing it on as a function's input
	impure     bool // calls a built-in not in pureBuiltins, calls dynamically, or has a with
	callees    []int
}

// findShared marks the functions of pol (lowered into funcs, in the same
// order) whose value cannot depend on the input nor on anything but the
// data document: functions of input and data only (those memoised per
// evaluation) that never read their input parameter, call only such
// functions (or others, with more parameters, that do not read their
// input either) and only pure built-ins, and have no with. It returns how
// many it marked (function.shared is each one's index).
func findShared(pol *ir.Policy, funcs []*function, custom map[string]bool) int {
	if pol.Funcs == nil || mutatesCallResults(pol) {
		return 0
	}
	index := map[string]int{}
	for i, f := range pol.Funcs.Funcs {
		index[f.Name] = i
	}
	infos := make([]funcInfo, len(pol.Funcs.Funcs))
	for i, f := range pol.Funcs.Funcs {
		info := &infos[i]
		if len(f.Params) == 0 {
			info.impure = true
			continue
		}
		in := f.Params[0]
		for _, b := range f.Blocks {
			_ = ir.Walk(stmtVisitor(func(s ir.Stmt) {
				switch s := s.(type) {
				case *ir.CallStmt:
					j, user := index[s.Func]
					switch {
					case user:
						info.callees = append(info.callees, j)
					case custom[s.Func] || !pureBuiltins[s.Func]:
						info.impure = true
					}
					for k, a := range s.Args {
						if l, ok := a.Value.(ir.Local); ok && l == in && (k != 0 || !user) {
							info.readsInput = true
						}
					}
				case *ir.CallDynamicStmt, *ir.WithStmt:
					info.impure = true
				default:
					if namesLocal(s, in) {
						info.readsInput = true
					}
				}
			}), b)
		}
	}
	// state: 0 unknown, 1 visiting, 2 safe, 3 unsafe. A cycle (which Rego
	// refuses) is unsafe.
	state := make([]uint8, len(infos))
	var safe func(i int) bool
	safe = func(i int) bool {
		switch state[i] {
		case 1, 3:
			return false
		case 2:
			return true
		}
		state[i] = 1
		ok := !infos[i].readsInput && !infos[i].impure
		for _, j := range infos[i].callees {
			if ok && !safe(j) {
				ok = false
			}
		}
		state[i] = 3
		if ok {
			state[i] = 2
		}
		return ok
	}
	n := 0
	for i, fn := range funcs {
		if fn.memo >= 0 && len(fn.params) == 2 && safe(i) {
			fn.shared = n
			n++
		}
	}
	return n
}

// stmtVisitor calls f for every statement ir.Walk visits (those of nested
// blocks included).
type stmtVisitor func(ir.Stmt)

func (v stmtVisitor) Before(any) {}
func (v stmtVisitor) After(any)  {}
func (v stmtVisitor) Visit(x any) (ir.Visitor, error) {
	if s, ok := x.(ir.Stmt); ok {
		v(s)
	}
	return v, nil
}

var (
	localType     = reflect.TypeFor[ir.Local]()
	operandType   = reflect.TypeFor[ir.Operand]()
	operandsType  = reflect.TypeFor[[]ir.Operand]()
	localsType    = reflect.TypeFor[[]ir.Local]()
	operandPtType = reflect.TypeFor[*ir.Operand]()
)

// namesLocal reports whether statement s names local l in one of its own
// fields (not those of its nested blocks), read or written. A field of a
// type it does not know counts as a mention: where in doubt, s reads l.
func namesLocal(s ir.Stmt, l ir.Local) bool {
	v := reflect.ValueOf(s)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return true
	}
	v = v.Elem()
	for i := 0; i < v.NumField(); i++ {
		f := v.Field(i)
		switch f.Type() {
		case localType:
			if ir.Local(f.Int()) == l {
				return true
			}
		case operandType:
			if isLocal(f.Interface().(ir.Operand), l) {
				return true
			}
		case operandPtType:
			if o, _ := f.Interface().(*ir.Operand); o != nil && isLocal(*o, l) {
				return true
			}
		case operandsType:
			for _, o := range f.Interface().([]ir.Operand) {
				if isLocal(o, l) {
					return true
				}
			}
		case localsType:
			for _, x := range f.Interface().([]ir.Local) {
				if x == l {
					return true
				}
			}
		default:
			switch f.Kind() {
			case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
				reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.String, reflect.Bool:
				// indices of strings, constants, names: no local
			case reflect.Pointer, reflect.Slice:
				// nested blocks (walked on their own) and locations
				if !isBlockOrLocation(f.Type()) {
					return true
				}
			case reflect.Struct:
				if f.Type() != reflect.TypeFor[ir.Location]() {
					return true
				}
			default:
				return true
			}
		}
	}
	return false
}

func isBlockOrLocation(t reflect.Type) bool {
	return t == reflect.TypeFor[*ir.Block]() || t == reflect.TypeFor[[]*ir.Block]() || t == reflect.TypeFor[*ir.Location]() ||
		t == reflect.TypeFor[[]int]() // WithStmt's path: indices of strings
}

func isLocal(o ir.Operand, l ir.Local) bool {
	x, ok := o.Value.(ir.Local)
	return ok && x == l
}

// mutatesCallResults reports whether some function or plan of pol may
// change in place (insert into, append to, add to) a value it did not make
// itself: a shared value (or anything reached from one) is read by
// evaluations on other goroutines and must never change. Every mutating
// statement must change a local that holds, on every path to it, a value
// a MakeObject, MakeArray or MakeSet of the same frame assigned (see
// madeOnEntry): no flow of values is followed, so a value put into a
// container and read back out (Dot, Scan, an assignment), a call's result,
// a parameter, or an ObjectMerge's result (which can be its first operand
// itself) never counts as made. The planner builds values that way;
// anything else (true) refuses every shared function. A rule of
// construction alone (a mutated local assigned only by Make statements
// anywhere in the function) refuses the planner's plans: it reuses locals
// across the rules of a function, a Dot in one and a Make in another.
func mutatesCallResults(pol *ir.Policy) bool {
	var bodies [][]*ir.Block
	for _, f := range pol.Funcs.Funcs {
		bodies = append(bodies, f.Blocks)
	}
	if pol.Plans != nil {
		for _, p := range pol.Plans.Plans {
			bodies = append(bodies, p.Blocks)
		}
	}
	for _, blocks := range bodies {
		// A frame's locals start unset; its parameters are not made.
		if !madeOnEntry(blocks, map[ir.Local]bool{}) {
			return true
		}
	}
	return false
}

// madeOnEntry checks a sequence of blocks (a function's, a BlockStmt's)
// whose first starts with made, the locals holding a value made in the
// frame, and returns false for a mutation of a local not made, or a
// statement it does not know. A block can stop (undefined, a break) and the
// next one starts: with what held wherever the one before could stop.
func madeOnEntry(blocks []*ir.Block, made map[ir.Local]bool) bool {
	for _, b := range blocks {
		ok, exit := madeInBlock(b, made)
		if !ok {
			return false
		}
		made = exit
	}
	return true
}

// madeInBlock walks b's statements in order from entry (not changed) and
// returns the locals made wherever b can stop: at any statement but a Make
// or a Nop (an undefined operand, a break), after a nested block (left by
// a break from within), and at its end.
func madeInBlock(b *ir.Block, entry map[ir.Local]bool) (bool, map[ir.Local]bool) {
	made := maps.Clone(entry)
	var exit map[ir.Local]bool // nil: no stop yet
	stop := func() {
		if exit == nil {
			exit = maps.Clone(made)
			return
		}
		maps.DeleteFunc(exit, func(l ir.Local, _ bool) bool { return !made[l] })
	}
	for _, s := range b.Stmts {
		switch s := s.(type) {
		case *ir.MakeObjectStmt:
			made[s.Target] = true
			continue
		case *ir.MakeArrayStmt:
			made[s.Target] = true
			continue
		case *ir.MakeSetStmt:
			made[s.Target] = true
			continue
		case *ir.NopStmt:
			continue
		}
		if l, ok := mutated(s); ok {
			if !made[l] {
				return false, nil
			}
			stop()
			continue
		}
		stop()
		var nested []*ir.Block
		switch s := s.(type) {
		case *ir.ScanStmt:
			// A loop: an iteration starts with what the one before left,
			// so only what nothing in the body assigns otherwise stays.
			delete(made, s.Key)
			delete(made, s.Value)
			unmake(made, s.Block)
			if ok, _ := madeInBlock(s.Block, made); !ok {
				return false, nil
			}
			nested = []*ir.Block{s.Block}
		case *ir.BlockStmt:
			if !madeOnEntry(s.Blocks, made) {
				return false, nil
			}
			nested = s.Blocks
		case *ir.NotStmt:
			if ok, _ := madeInBlock(s.Block, made); !ok {
				return false, nil
			}
			nested = []*ir.Block{s.Block}
		case *ir.WithStmt:
			delete(made, s.Local)
			if ok, _ := madeInBlock(s.Block, made); !ok {
				return false, nil
			}
			nested = []*ir.Block{s.Block}
		}
		// After a nested block (normally or by a break from anywhere in
		// it): what it assigned otherwise than by a Make is not made.
		for _, nb := range nested {
			unmake(made, nb)
		}
		ls, known := assigned(s)
		if !known {
			return false, nil
		}
		for _, l := range ls {
			delete(made, l)
		}
		if nested != nil {
			stop()
		}
	}
	stop()
	return true, exit
}

// mutated returns the local whose value statement s changes in place (a
// set added to, an object inserted into, an array appended to), if s is
// such a statement.
func mutated(s ir.Stmt) (ir.Local, bool) {
	switch s := s.(type) {
	case *ir.SetAddStmt:
		return s.Set, true
	case *ir.ObjectInsertStmt:
		return s.Object, true
	case *ir.ObjectInsertOnceStmt:
		return s.Object, true
	case *ir.ArrayAppendStmt:
		return s.Array, true
	}
	return 0, false
}

// unmake removes from made the locals b (nested blocks included) assigns
// otherwise than by a Make (all those a statement it does not know names).
func unmake(made map[ir.Local]bool, b *ir.Block) {
	_ = ir.Walk(stmtVisitor(func(s ir.Stmt) {
		ls, known := assigned(s)
		if !known {
			ls = allLocals(s)
		}
		for _, l := range ls {
			delete(made, l)
		}
	}), b)
}

// assigned lists the locals statement s (not its nested blocks) assigns
// otherwise than by a Make; known is false for a statement it does not know.
func assigned(s ir.Stmt) (_ []ir.Local, known bool) {
	switch s := s.(type) {
	case *ir.AssignVarStmt:
		return []ir.Local{s.Target}, true
	case *ir.AssignVarOnceStmt:
		return []ir.Local{s.Target}, true
	case *ir.DotStmt:
		return []ir.Local{s.Target}, true
	case *ir.CallStmt:
		return []ir.Local{s.Result}, true
	case *ir.CallDynamicStmt:
		return []ir.Local{s.Result}, true
	case *ir.ScanStmt:
		return []ir.Local{s.Key, s.Value}, true
	case *ir.LenStmt:
		return []ir.Local{s.Target}, true
	case *ir.ResetLocalStmt:
		return []ir.Local{s.Target}, true
	case *ir.AssignIntStmt:
		return []ir.Local{s.Target}, true
	case *ir.MakeNullStmt:
		return []ir.Local{s.Target}, true
	case *ir.MakeNumberIntStmt:
		return []ir.Local{s.Target}, true
	case *ir.MakeNumberRefStmt:
		return []ir.Local{s.Target}, true
	case *ir.ObjectMergeStmt:
		return []ir.Local{s.Target}, true
	case *ir.WithStmt:
		return []ir.Local{s.Local}, true
	case *ir.NopStmt, *ir.BlockStmt, *ir.BreakStmt, *ir.NotStmt, *ir.ReturnLocalStmt,
		*ir.EqualStmt, *ir.NotEqualStmt, *ir.IsArrayStmt, *ir.IsObjectStmt, *ir.IsSetStmt,
		*ir.IsDefinedStmt, *ir.IsUndefinedStmt, *ir.ResultSetAddStmt,
		*ir.SetAddStmt, *ir.ObjectInsertStmt, *ir.ObjectInsertOnceStmt, *ir.ArrayAppendStmt,
		*ir.MakeObjectStmt, *ir.MakeArrayStmt, *ir.MakeSetStmt:
		return nil, true
	}
	return nil, false
}

// allLocals lists the locals s names in its fields (see namesLocal).
func allLocals(s ir.Stmt) []ir.Local {
	var out []ir.Local
	v := reflect.ValueOf(s)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return nil
	}
	v = v.Elem()
	for i := 0; i < v.NumField(); i++ {
		f := v.Field(i)
		switch f.Type() {
		case localType:
			out = append(out, ir.Local(f.Int()))
		case operandType:
			if l, ok := f.Interface().(ir.Operand).Value.(ir.Local); ok {
				out = append(out, l)
			}
		case localsType:
			out = append(out, f.Interface().([]ir.Local)...)
		}
	}
	return out
}
