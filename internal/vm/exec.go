package vm

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/open-policy-agent/opa/v1/topdown/builtins"
)

// checkEvery is how many loop iterations and function calls run between two
// looks at the context and the cancel signal.
const checkEvery = 256

type memoEntry struct {
	gen uint64
	val *ast.Term // nil: the function was undefined
}

// state is one evaluation in progress. States are pooled per Program.
type state struct {
	prog    *Program
	ctx     context.Context
	ectx    *rego.EvalContext
	ndb     builtins.NDBCache // the direct path's (Query.Eval); rego's is in ectx
	runtime *ast.Term
	strict  bool
	done    <-chan struct{}
	ext     topdown.Cancel
	budget  int
	err     error

	stack []*ast.Term
	sp    int
	high  int

	memo     []memoEntry
	calls    map[callKey]int32 // functions' results by arguments: the last entry of the key + 1
	entries  []callEntry       // the entries, chained by key
	kept     []*ast.Term       // the entries' arguments
	gen      uint64
	nextGen  uint64
	genStack []uint64
	// shared functions' values (see sharedMemo): the evaluation's key, and
	// the data document its plan was given (a function called with
	// another is not at the root).
	mk       memoKey
	rootData *ast.Term

	ret     *ast.Term
	results ast.Set

	// built-in calls
	args      []*ast.Term
	out       *ast.Term
	outs      []*ast.Term
	called    bool
	captureFn func(*ast.Term) error
	collectFn func(*ast.Term) error
	bctx      topdown.BuiltinContext
	bctxOK    bool
	now       time.Time // the evaluation's time, once bctxOK (bctx.Time is made from it when needed)
	cancel    ctxCancel
}

func newState(p *Program) *state {
	st := &state{
		prog:  p,
		stack: make([]*ast.Term, max(p.maxFrame, 8)),
		memo:  make([]memoEntry, p.nmemo),
		args:  make([]*ast.Term, 0, 8),
	}
	st.captureFn = func(t *ast.Term) error {
		if !st.called {
			st.out = t
		}
		st.called = true
		return nil
	}
	st.collectFn = func(t *ast.Term) error {
		st.called = true
		st.outs = append(st.outs, t)
		return nil
	}
	return st
}

func (st *state) reset(ctx context.Context, ectx *rego.EvalContext, rt ast.Value) {
	st.ctx, st.ectx = ctx, ectx
	st.done = ctx.Done()
	st.ext = nil
	st.strict = false
	if ectx != nil {
		st.ext = ectx.ExternalCancel()
		st.strict = ectx.StrictBuiltinErrors()
	}
	st.runtime = nil
	if rt != nil {
		st.runtime = ast.NewTerm(rt)
	}
	st.budget = checkEvery
	st.err = nil
	st.sp = 0
	st.nextGen++
	st.gen = st.nextGen
	st.genStack = st.genStack[:0]
	st.ret = nil
	st.results = ast.NewSet()
	st.bctxOK = false
	st.cancel = ctxCancel{done: st.done, ext: st.ext}
}

// release clears what the state holds of the evaluation and pools it.
func (st *state) release() {
	clear(st.stack[:min(st.high, len(st.stack))])
	st.high = 0
	clear(st.args[:cap(st.args)])
	clear(st.outs[:cap(st.outs)])
	st.out, st.ret, st.results = nil, nil, nil
	switch {
	case len(st.entries) > maxPooledCalls:
		// clear would walk the map's buckets at every evaluation
		st.calls, st.entries, st.kept = nil, nil, nil
	case len(st.entries) > 0:
		clear(st.calls)
		clear(st.entries)
		clear(st.kept)
		st.entries, st.kept = st.entries[:0], st.kept[:0]
	}
	st.ctx, st.ectx, st.runtime, st.done, st.ext, st.err = nil, nil, nil, nil, nil, nil
	st.mk, st.rootData = memoKey{}, nil
	st.ndb = nil
	st.bctx = topdown.BuiltinContext{}
	st.cancel = ctxCancel{}
	st.prog.pool.Put(st)
}

// fail records err as the evaluation's error.
func (st *state) fail(err error) ctl {
	if st.err == nil {
		st.err = err
	}
	return ctlErr
}

// tick counts a step; every checkEvery steps it looks whether the caller
// cancelled, and then fails the evaluation as topdown does.
func (st *state) tick() bool {
	st.budget--
	if st.budget > 0 {
		return false
	}
	st.budget = checkEvery
	if st.cancel.Cancelled() {
		st.fail(cancelled())
		return true
	}
	return false
}

func cancelled() error {
	return &topdown.Error{Code: topdown.CancelErr, Message: "caller cancelled query execution"}
}

func (st *state) argBuf(n int) []*ast.Term {
	if cap(st.args) < n {
		st.args = make([]*ast.Term, n)
	}
	return st.args[:n]
}

func (st *state) pushMemo() {
	st.genStack = append(st.genStack, st.gen)
	st.nextGen++
	st.gen = st.nextGen
}

func (st *state) popMemo() {
	st.gen = st.genStack[len(st.genStack)-1]
	st.genStack = st.genStack[:len(st.genStack)-1]
}

// frame returns n cleared slots on top of the stack.
func (st *state) frame(n int) []*ast.Term {
	top := st.sp + n
	if top > len(st.stack) {
		// Frames below keep their own slices of the old stack.
		st.stack = make([]*ast.Term, 2*top)
		st.high = 0
	}
	fl := st.stack[st.sp:top:top]
	clear(fl)
	st.sp = top
	st.high = max(st.high, top)
	return fl
}

// call runs fn with the arguments read from the caller's frame l. The
// result is nil when fn is undefined.
func (st *state) call(fn *function, args []operand, l []*ast.Term) (*ast.Term, ctl) {
	if fn.memo >= 0 {
		if e := st.memo[fn.memo]; e.gen == st.gen {
			return e.val, ctlNext
		}
	}
	var cell *atomic.Pointer[memoCell]
	if fn.shared >= 0 && st.mk.memo != nil && len(st.genStack) == 0 && args[1].get(l) == st.rootData {
		// Outside any with, on the data document the evaluation read:
		// another evaluation on the same data may have computed it.
		i := 2 * fn.shared
		if st.strict {
			i++
		}
		cell = &st.mk.memo.cells[i]
		if e := cell.Load(); e != nil && e.data == st.mk.data && e.epoch == st.mk.epoch {
			st.memo[fn.memo] = memoEntry{gen: st.gen, val: e.val}
			return e.val, ctlNext
		}
	}
	if st.tick() {
		return nil, ctlErr
	}
	var key callKey
	var head int32 // the key's last entry + 1, before this call's
	keep := false
	if fn.memo < 0 && len(args) > 2 {
		r, hit, defined, c := st.cachedCall(fn, args[2:], l, &key, &head)
		if hit || c != ctlNext {
			return r, c
		}
		keep = defined
	}
	base := st.sp
	fl := st.frame(fn.nlocals)
	for i, a := range args {
		fl[fn.params[i]] = a.get(l)
	}
	kept := int32(-1) // where the arguments are kept in st.kept
	if keep {
		kept = int32(len(st.kept))
		for _, p := range fn.params[2:] {
			st.kept = append(st.kept, fl[p])
		}
	}
	var r *ast.Term
	for _, b := range fn.blocks {
		c := b.run(st, fl)
		if c == ctlReturn {
			r = st.ret
			break
		}
		if c == ctlErr {
			st.sp = base
			return nil, ctlErr
		}
	}
	if kept >= 0 {
		if st.calls == nil {
			st.calls = make(map[callKey]int32)
		}
		st.entries = append(st.entries, callEntry{gen: st.gen, args: kept, val: r, prev: head})
		st.calls[key] = int32(len(st.entries))
	}
	st.sp = base
	if fn.memo >= 0 {
		st.memo[fn.memo] = memoEntry{gen: st.gen, val: r}
	}
	if cell != nil {
		// Only a value computed to its end: an error or a cancellation
		// returned above, and is raised again by every evaluation.
		cell.Store(&memoCell{data: st.mk.data, epoch: st.mk.epoch, val: r})
	}
	return r, ctlNext
}

// callKey and callEntry keep a function's results by its arguments for the
// evaluation, as topdown's virtual cache does: a helper called again with
// the same arguments (in a loop, or twice in each of a chain of helpers)
// is not run again, where running it again made the VM quadratic or
// exponential and past EVAL_TIMEOUT on policies topdown answers at once.
type callKey struct {
	fn *function
	h  int
}

type callEntry struct {
	gen  uint64 // the memo generation: a `with` starts another
	args int32  // where its arguments start in state.kept
	val  *ast.Term
	prev int32 // the key's entry before this one + 1; 0: none
}

// maxPooledCalls bounds the result table a pooled state keeps.
const maxPooledCalls = 256

// cachedCall looks up fn's result for the arguments args (after input and
// data) read from the caller's frame l, before any frame is made, and sets
// *key and *head for storing one; defined is false when an argument is
// undefined (nothing is kept). Topdown reuses the first result for
// arguments that are equal (1 and 1.0, [1] and [1.0]) where the VM's calls
// can come in another order: a call with arguments equal to an earlier
// call's but written otherwise fails, and topdown answers.
func (st *state) cachedCall(fn *function, args []operand, l []*ast.Term, key *callKey, head *int32) (r *ast.Term, hit, defined bool, c ctl) {
	h := 0
	for _, a := range args {
		t := a.get(l)
		if t == nil {
			return nil, false, false, ctlNext
		}
		h = h*31 + t.Hash()
	}
	*key = callKey{fn: fn, h: h}
	if len(st.entries) == 0 {
		return nil, false, true, ctlNext
	}
	*head = st.calls[*key]
next:
	for i := *head; i > 0; i = st.entries[i-1].prev {
		e := &st.entries[i-1]
		if e.gen != st.gen {
			continue
		}
		kept := st.kept[e.args : int(e.args)+len(args)]
		for j, a := range args {
			if !termsEqual(kept[j], a.get(l)) {
				continue next
			}
		}
		for j, a := range args {
			if !sameText(kept[j], a.get(l)) {
				return nil, false, true, st.fail(internalError(nil, "function "+fn.name+" called with equal arguments written otherwise; topdown decides which call's result both get"))
			}
		}
		return e.val, true, true, ctlNext
	}
	return nil, false, true, ctlNext
}

// runPlan evaluates a plan on input and data (nil when undefined) and
// returns its result set.
func (st *state) runPlan(pl *plan, input, data *ast.Term) (ast.Set, error) {
	if st.cancel.Cancelled() {
		return nil, cancelled()
	}
	l := st.frame(pl.nlocals)
	l[0], l[1] = input, data
	st.rootData = data
	for _, b := range pl.blocks {
		if c := b.run(st, l); c == ctlErr {
			return nil, st.err
		}
	}
	return st.results, nil
}

// ndbCache is the evaluation's cache of non-deterministic built-in
// results: rego's evaluation context's, or the direct path's.
func (st *state) ndbCache() builtins.NDBCache {
	if st.ectx != nil {
		return st.ectx.NDBCache()
	}
	return st.ndb
}

// builtinContext is the evaluation's BuiltinContext, made on first use:
// what topdown gives a built-in from the same EvalContext, except its Time
// (nil until a built-in that may read it is called: see callBuiltin, and
// st.now) and, without an EvalContext, its Metrics (a no-op: nothing reads
// an evaluation's metrics on that path).
func (st *state) builtinContext() *topdown.BuiltinContext {
	if st.bctxOK {
		return &st.bctx
	}
	st.bctxOK = true
	b := topdown.BuiltinContext{
		Context: st.ctx,
		Cancel:  &st.cancel,
		Runtime: st.runtime,
		Cache:   builtins.Cache{},
	}
	now := time.Time{}
	var seed io.Reader
	if e := st.ectx; e != nil {
		now = e.Time()
		seed = e.Seed()
		b.Metrics = e.Metrics()
		b.InterQueryBuiltinCache = e.InterQueryBuiltinCache()
		b.InterQueryBuiltinValueCache = e.InterQueryBuiltinValueCache()
		b.NDBuiltinCache = e.NDBCache()
		b.PrintHook = e.PrintHook()
		b.DistributedTracingOpts = e.TracingOpts()
		b.QueryTracers = e.QueryTracers()
		b.Capabilities = e.Capabilities()
	}
	if b.Capabilities == nil {
		b.Capabilities = st.prog.caps
	}
	if b.NDBuiltinCache == nil && st.ndb != nil {
		b.NDBuiltinCache = st.ndb
	}
	if b.Metrics == nil {
		b.Metrics = metrics.NoOp()
	}
	if now.IsZero() {
		now = time.Now()
	}
	if seed == nil {
		seed = rand.Reader
	}
	b.Seed = seed
	st.now = now
	st.bctx = b
	return &st.bctx
}

// timeTerm is the evaluation's time (st.now, set with the BuiltinContext)
// as topdown gives it to built-ins.
func (st *state) timeTerm() *ast.Term {
	return ast.NumberTerm(json.Number(strconv.FormatInt(st.now.UnixNano(), 10)))
}

// ctxCancel is the topdown.Cancel built-ins see: cancelled when the
// evaluation's context is done or the caller's external cancel fired.
type ctxCancel struct {
	done <-chan struct{}
	ext  topdown.Cancel
}

func (c *ctxCancel) Cancel() {}

func (c *ctxCancel) Cancelled() bool {
	if c.done != nil {
		select {
		case <-c.done:
			return true
		default:
		}
	}
	return c.ext != nil && c.ext.Cancelled()
}
