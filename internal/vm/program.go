package vm

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/ir"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/open-policy-agent/opa/v1/util"
)

// ErrUnsupported is wrapped by every error that says the VM cannot run a
// plan: the caller should evaluate the query with topdown instead.
var ErrUnsupported = errors.New("unsupported")

// unsupported returns an error wrapping ErrUnsupported ("unsupported: ...").
func unsupported(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrUnsupported, fmt.Sprintf(format, args...))
}

// ctl is what a statement tells the block running it: go on (ctlNext),
// leave n enclosing blocks counting the current one as 0 (n >= 0; an
// undefined statement is 0), the function returned, or evaluation failed
// (the error is in the state).
type ctl = int32

const (
	ctlNext   ctl = -1
	ctlReturn ctl = -2
	ctlErr    ctl = -3
)

// stmt is one lowered IR statement. l is the frame of the function (or
// plan) running it: one slot per IR local, nil while undefined.
type stmt func(st *state, l []*ast.Term) ctl

type block []stmt

// run executes b until a statement is not ctlNext.
func (b block) run(st *state, l []*ast.Term) ctl {
	for _, s := range b {
		if c := s(st, l); c != ctlNext {
			return c
		}
	}
	return ctlNext
}

// function is a planned Rego function (a rule, a set of rules sharing a
// path prefix, or a function with arguments).
type function struct {
	name     string
	params   []int32
	ret      int32
	nlocals  int
	blocks   []block
	memo     int    // index in the memo table; -1 when not memoised
	shared   int    // index in a sharedMemo's cells (/2); -1 when not shared (see findShared)
	conflict string // message of a conflicting assignment to the result
	callees  []*function
	depth    int // most frame slots a call can need, callees included (0: not computed)
	visiting bool
}

// plan is a planned query (the plugin path plans one, named "eval").
type plan struct {
	name    string
	nlocals int
	blocks  []block
	callees []*function
}

// dynNode is a level of the function tree that CallDynamic statements look
// functions up in (paths of strings: the generation "g0", then the rule path).
type dynNode struct {
	children map[string]*dynNode
	fn       *function
}

// Program is an ir.Policy lowered for execution. It is immutable after
// Compile and safe for concurrent evaluations.
type Program struct {
	plans     []*plan
	funcs     []*function
	dyn       *dynNode
	readsData bool // some statement reads the data document (not only passes it on)
	// dataSystemRisk: the plan copies data whole or replaces part of it
	// with `with`; with a top-level "system" document in the store the VM
	// would not drop it where topdown does, so preparation refuses then.
	dataSystemRisk bool
	// strictRisk: why an evaluation under strict built-in errors is
	// refused (a comprehension topdown indexes calls built-ins that may
	// fail in rows the VM does not evaluate); see findIndexRisk.
	strictRisk string
	nmemo      int
	nshared    int // functions of data only, shared across evaluations (findShared)
	maxFrame   int
	builtins   []*builtinSite
	caps       *ast.Capabilities // given to built-ins when the evaluation has none
	pool       sync.Pool
}

// Options configure Compile.
type Options struct {
	// Builtins are extra built-ins by name (rego.Function... declarations),
	// looked up before OPA's own.
	Builtins map[string]*topdown.Builtin
}

// compiler lowers one ir.Policy.
type compiler struct {
	pol      *ir.Policy
	opts     Options
	prog     *Program
	strs     []*ast.Term // string constants as terms
	nums     []*ast.Term // string constants read as numbers (lazily)
	files    []string
	byName   map[string]*function
	bis      map[string]*builtinImpl
	maxLocal int32
	conflict string         // message of a conflicting result of the function being lowered
	depth    int            // enclosing blocks of the statement being lowered
	base     map[int32]bool // locals holding base documents reached from data by dots and scans
	// Under `with data...` topdown reads the replaced documents with the
	// AST's key semantics (data.x[2] is not data.x["2"] there), elsewhere
	// with the store's; the VM does not track which is which, so it
	// refuses plans that replace data and look keys up that the two read
	// differently (a computed key, or a string that is an array index).
	withData, baseKeyed bool
	// A local set both by a CallDynamic (a rule's value: AST keys) and by
	// its fallback to the base documents (store keys) is mixed; a computed
	// key into it would be read one way by the VM and the other by topdown.
	dynResult, mixed map[int32]bool
	// Locals holding a rule's value, or reached from one by dots and
	// scans: topdown evaluates a partial rule referenced with a key with
	// that key bound, so it builds the value from the key as the
	// reference writes it, where the VM built the whole document from the
	// rule's own (1 for a reference's 1.0). Where two equal values written
	// otherwise meet there, the VM fails and topdown answers.
	ruleVal    map[int32]bool
	mixedKeyed bool
	mixedEnum  bool // an enumeration over rule and base documents (see scan)
	// The plan copies the data document or replaces part of it with
	// `with`: topdown's whole-data reads drop its system key, which the VM
	// only does where it reads data whole; see Program.dataSystemRisk.
	dataCopied bool

	lits         map[*ir.MakeArrayStmt]*literal // array literals of the blocks lowered
	litPos       map[*ir.ArrayAppendStmt]int
	constAppends map[*ir.ArrayAppendStmt]bool
	callees      []*function // functions the current function or plan calls
	// inserts counts, per local, the object inserts of the function or
	// plan being lowered: the capacity its MakeObject allocates.
	inserts map[ir.Local]int
	// comprehension holds the once-only inserts that build object
	// comprehensions (the others build rules' objects).
	comprehension map[*ir.ObjectInsertOnceStmt]bool
	// rulesInsert: more than one rule of the function being lowered
	// inserts into its object (see insertOnceKeepFirst).
	rulesInsert bool
}

// Compile lowers pol into a Program. An error wrapping ErrUnsupported says
// the policy needs something the VM does not do.
func Compile(pol *ir.Policy, opts Options) (prog *Program, err error) {
	if pol == nil || pol.Plans == nil || len(pol.Plans.Plans) == 0 {
		return nil, unsupported("policy has no plan")
	}
	c := &compiler{pol: pol, opts: opts, prog: &Program{}, byName: map[string]*function{}, bis: map[string]*builtinImpl{},
		lits: map[*ir.MakeArrayStmt]*literal{}, litPos: map[*ir.ArrayAppendStmt]int{}, constAppends: map[*ir.ArrayAppendStmt]bool{},
		comprehension: map[*ir.ObjectInsertOnceStmt]bool{}}
	if pol.Static != nil {
		for _, s := range pol.Static.Strings {
			c.strs = append(c.strs, ast.StringTerm(s.Value))
		}
		for _, f := range pol.Static.Files {
			c.files = append(c.files, f.Value)
		}
	}
	c.nums = make([]*ast.Term, len(c.strs))
	defer func() {
		// A malformed plan (an index out of range) is a reason to fall back,
		// never a crash of the caller.
		if r := recover(); r != nil {
			prog, err = nil, unsupported("malformed plan: %v", r)
		}
	}()

	var funcs []*ir.Func
	if pol.Funcs != nil {
		funcs = pol.Funcs.Funcs
	}
	c.prog.dyn = &dynNode{}
	for _, f := range funcs {
		if _, dup := c.byName[f.Name]; dup {
			return nil, unsupported("function %s planned twice", f.Name)
		}
		fn := &function{name: f.Name, ret: int32(f.Return), memo: -1, shared: -1}
		for _, p := range f.Params {
			fn.params = append(fn.params, int32(p))
		}
		// Functions of the input and data documents only are memoised per
		// evaluation, as OPA's wasm target does (and as topdown caches
		// complete rules), with the table reset inside every `with`.
		if len(f.Params) == 2 {
			fn.memo = c.prog.nmemo
			c.prog.nmemo++
		}
		path := strings.TrimPrefix(f.Name, "g")
		if i := strings.IndexByte(path, '.'); i >= 0 {
			path = path[i+1:]
		}
		if len(f.Params) > 2 {
			fn.conflict = "function " + path + " produced conflicting values for the same inputs"
		} else {
			fn.conflict = "rule " + path + " produced conflicting values"
		}
		c.byName[f.Name] = fn
		c.prog.funcs = append(c.prog.funcs, fn)
		if len(f.Path) > 0 {
			n := c.prog.dyn
			for _, seg := range f.Path {
				if n.children == nil {
					n.children = map[string]*dynNode{}
				}
				child := n.children[seg]
				if child == nil {
					child = &dynNode{}
					n.children[seg] = child
				}
				n = child
			}
			n.fn = fn
		}
	}
	for i, f := range funcs {
		fn := c.prog.funcs[i]
		c.maxLocal = int32(f.Return)
		for _, p := range fn.params {
			c.maxLocal = max(c.maxLocal, p)
		}
		c.callees = nil
		c.countInserts(f.Blocks)
		c.conflict = fn.conflict
		c.base = map[int32]bool{int32(ir.Data): true}
		c.dynResult, c.mixed, c.ruleVal = map[int32]bool{}, map[int32]bool{}, map[int32]bool{}
		for _, b := range f.Blocks {
			lb, err := c.topBlock(b)
			if err != nil {
				return nil, fmt.Errorf("function %s: %w", f.Name, err)
			}
			fn.blocks = append(fn.blocks, lb)
		}
		fn.nlocals = int(c.maxLocal) + 1
		fn.callees = c.callees
	}
	for _, p := range pol.Plans.Plans {
		c.maxLocal = int32(ir.Data)
		c.callees = nil
		c.countInserts(p.Blocks)
		c.conflict = ""
		c.base = map[int32]bool{int32(ir.Data): true}
		c.dynResult, c.mixed, c.ruleVal = map[int32]bool{}, map[int32]bool{}, map[int32]bool{}
		pl := &plan{name: p.Name}
		for _, b := range p.Blocks {
			lb, err := c.topBlock(b)
			if err != nil {
				return nil, fmt.Errorf("plan %s: %w", p.Name, err)
			}
			pl.blocks = append(pl.blocks, lb)
		}
		pl.nlocals = int(c.maxLocal) + 1
		pl.callees = c.callees
		c.prog.plans = append(c.prog.plans, pl)
	}
	if c.withData && c.baseKeyed {
		return nil, unsupported("with on data and a base document looked up by a computed key")
	}
	if c.mixedKeyed {
		return nil, unsupported("a computed key into a reference that is a rule's value or a base document")
	}
	if c.mixedEnum {
		return nil, unsupported("an iteration over both rules and base documents (topdown orders it differently)")
	}
	c.prog.dataSystemRisk = c.withData || c.dataCopied
	custom := map[string]bool{}
	for name := range opts.Builtins {
		custom[name] = true
	}
	c.prog.nshared = findShared(pol, c.prog.funcs, custom)
	for _, pl := range c.prog.plans {
		d := 0
		for _, f := range pl.callees {
			fd, err := f.frameDepth()
			if err != nil {
				return nil, err
			}
			d = max(d, fd)
		}
		c.prog.maxFrame = max(c.prog.maxFrame, pl.nlocals+d)
	}
	// The pool's New refers to the program, not to c: a closure over c
	// kept the lowering's state, the whole ir.Policy with it, for the
	// program's life (about twice the program's own heap for the
	// constitution: TestCompileKeepsNoIR).
	p := c.prog
	p.pool.New = func() any { return newState(p) }
	return p, nil
}

// countInserts records in c.inserts how many object insert statements
// each local is the object of, in blocks and the blocks nested in them,
// and in c.comprehension the inserts that build object comprehensions.
func (c *compiler) countInserts(blocks []*ir.Block) {
	c.inserts = map[ir.Local]int{}
	var once []*ir.ObjectInsertOnceStmt
	var walk func(bs []*ir.Block)
	walk = func(bs []*ir.Block) {
		for _, b := range bs {
			for i, s := range b.Stmts {
				switch x := s.(type) {
				case *ir.MakeObjectStmt:
					// The planner writes an object comprehension as a
					// MakeObject followed by the block of its body, which
					// inserts once into that object; a rule head's object
					// is made in a block of its own or by a DotStmt's
					// fallback, and never followed by such a block.
					if i+1 < len(b.Stmts) {
						if body, ok := b.Stmts[i+1].(*ir.BlockStmt); ok {
							c.markComprehension(body.Blocks, x.Target)
						}
					}
				case *ir.ObjectInsertStmt:
					c.inserts[x.Object]++
				case *ir.ObjectInsertOnceStmt:
					c.inserts[x.Object]++
					once = append(once, x)
				case *ir.BlockStmt:
					walk(x.Blocks)
				case *ir.ScanStmt:
					walk([]*ir.Block{x.Block})
				case *ir.NotStmt:
					walk([]*ir.Block{x.Block})
				case *ir.WithStmt:
					walk([]*ir.Block{x.Block})
				}
			}
		}
	}
	walk(blocks)
	heads := 0
	for _, x := range once {
		if !c.comprehension[x] {
			heads++
		}
	}
	c.rulesInsert = heads > 1
}

// markComprehension records the once-only inserts into obj in blocks: the
// inserts of an object comprehension. Topdown keeps the last of two equal
// values under one key there (1 and 1.0), and the first in a rule's object.
func (c *compiler) markComprehension(blocks []*ir.Block, obj ir.Local) {
	for _, b := range blocks {
		for _, s := range b.Stmts {
			switch x := s.(type) {
			case *ir.ObjectInsertOnceStmt:
				if x.Object == obj {
					c.comprehension[x] = true
				}
			case *ir.BlockStmt:
				c.markComprehension(x.Blocks, obj)
			case *ir.ScanStmt:
				c.markComprehension([]*ir.Block{x.Block}, obj)
			case *ir.NotStmt:
				c.markComprehension([]*ir.Block{x.Block}, obj)
			case *ir.WithStmt:
				c.markComprehension([]*ir.Block{x.Block}, obj)
			}
		}
	}
}

// frameDepth is the most frame slots a call of f can occupy.
func (f *function) frameDepth() (int, error) {
	if f.depth > 0 {
		return f.depth, nil
	}
	if f.visiting {
		// Rego has no recursion; should a plan have a cycle, frames
		// beyond this estimate are allocated as they are needed.
		return f.nlocals, nil
	}
	f.visiting = true
	defer func() { f.visiting = false }()
	d := 0
	for _, g := range f.callees {
		gd, err := g.frameDepth()
		if err != nil {
			return 0, err
		}
		d = max(d, gd)
	}
	f.depth = f.nlocals + d
	return f.depth, nil
}

func (c *compiler) local(l ir.Local) int32 {
	i := int32(l)
	if i < 0 {
		panic(fmt.Sprintf("negative local %d", i))
	}
	c.maxLocal = max(c.maxLocal, i)
	return i
}

// read marks a local as read by a statement other than a call; reading the
// data local means the program needs the data document.
func (c *compiler) read(l ir.Local) int32 {
	if l == ir.Data {
		c.prog.readsData = true
	}
	return c.local(l)
}

// operand is a lowered ir.Operand: a constant term, or a frame slot.
// whole marks a read of the entire data document, which topdown gives
// without its "system" key.
type operand struct {
	k     *ast.Term
	slot  int32
	whole bool
}

func (o operand) get(l []*ast.Term) *ast.Term {
	if o.k != nil {
		return o.k
	}
	if o.whole {
		return withoutSystem(l[o.slot])
	}
	return l[o.slot]
}

func (c *compiler) operand(o ir.Operand) (operand, error) {
	switch v := o.Value.(type) {
	case ir.Local:
		return operand{slot: c.read(v), whole: v == ir.Data}, nil
	case ir.StringIndex:
		return operand{k: c.strs[int(v)]}, nil
	case ir.Bool:
		return operand{k: ast.InternedTerm(bool(v))}, nil
	}
	return operand{}, unsupported("operand %T", o.Value)
}

func (c *compiler) location(l *ir.Location) *ast.Location {
	if l == nil || l.Row == 0 {
		return nil
	}
	file := ""
	if l.File >= 0 && l.File < len(c.files) {
		file = c.files[l.File]
	}
	return &ast.Location{File: file, Row: l.Row, Col: l.Col, Text: []byte(l.Text)}
}

func (c *compiler) topBlock(b *ir.Block) (block, error) {
	c.depth = 0
	return c.block(b)
}

// block lowers a nested block: breaks inside it may leave it and the blocks
// around it, but never the function.
func (c *compiler) block(b *ir.Block) (block, error) {
	c.depth++
	defer func() { c.depth-- }()
	c.scanLiterals(b)
	out := make(block, 0, len(b.Stmts))
	for _, s := range b.Stmts {
		ls, err := c.stmt(s)
		if err != nil {
			return nil, err
		}
		if ls != nil {
			out = append(out, ls)
		}
	}
	return out, nil
}

func (c *compiler) callee(name string) *function {
	fn := c.byName[name]
	if fn != nil {
		for _, g := range c.callees {
			if g == fn {
				return fn
			}
		}
		c.callees = append(c.callees, fn)
	}
	return fn
}

func (c *compiler) stmt(s ir.Stmt) (stmt, error) {
	switch s := s.(type) {
	case *ir.NopStmt:
		return nil, nil
	case *ir.BlockStmt:
		return c.blockStmt(s)
	case *ir.BreakStmt:
		if int(s.Index) >= c.depth {
			return nil, unsupported("break %d out of %d blocks", s.Index, c.depth)
		}
		n := ctl(s.Index)
		return func(*state, []*ast.Term) ctl { return n }, nil
	case *ir.ReturnLocalStmt:
		src := c.read(s.Source)
		return func(st *state, l []*ast.Term) ctl {
			st.ret = l[src]
			return ctlReturn
		}, nil
	case *ir.CallStmt:
		return c.call(s)
	case *ir.CallDynamicStmt:
		return c.callDynamic(s)
	case *ir.DotStmt:
		return c.dot(s)
	case *ir.LenStmt:
		return c.length(s)
	case *ir.ScanStmt:
		return c.scan(s)
	case *ir.NotStmt:
		return c.not(s)
	case *ir.AssignIntStmt:
		t := c.local(s.Target)
		v := ast.InternedTerm(int(s.Value))
		if int64(int(s.Value)) != s.Value {
			v = ast.NewTerm(ast.Number(fmt.Sprint(s.Value)))
		}
		return func(_ *state, l []*ast.Term) ctl {
			l[t] = v
			return ctlNext
		}, nil
	case *ir.AssignVarStmt:
		src, err := c.operand(s.Source)
		if err != nil {
			return nil, err
		}
		t := c.local(s.Target)
		if src.k != nil {
			k := src.k
			return func(_ *state, l []*ast.Term) ctl {
				l[t] = k
				return ctlNext
			}, nil
		}
		from := src.slot
		if s.Source.Value == ir.Data {
			c.dataCopied = true
		}
		if c.ruleVal[from] {
			c.ruleVal[t] = true
		}
		if c.base[from] && c.dynResult[t] {
			// The base-document fallback of a CallDynamic: the local holds
			// a base document or a rule's value, read differently below.
			c.mixed[t] = true
		}
		return func(_ *state, l []*ast.Term) ctl {
			l[t] = l[from]
			return ctlNext
		}, nil
	case *ir.AssignVarOnceStmt:
		return c.assignOnce(s)
	case *ir.ResetLocalStmt:
		t := c.local(s.Target)
		return func(_ *state, l []*ast.Term) ctl {
			l[t] = nil
			return ctlNext
		}, nil
	case *ir.MakeNullStmt:
		t := c.local(s.Target)
		v := ast.InternedNullTerm
		return func(_ *state, l []*ast.Term) ctl {
			l[t] = v
			return ctlNext
		}, nil
	case *ir.MakeNumberIntStmt:
		t := c.local(s.Target)
		v := ast.InternedTerm(int(s.Value))
		if int64(int(s.Value)) != s.Value {
			v = ast.NewTerm(ast.Number(fmt.Sprint(s.Value)))
		}
		return func(_ *state, l []*ast.Term) ctl {
			l[t] = v
			return ctlNext
		}, nil
	case *ir.MakeNumberRefStmt:
		t := c.local(s.Target)
		v := c.number(s.Index)
		return func(_ *state, l []*ast.Term) ctl {
			l[t] = v
			return ctlNext
		}, nil
	case *ir.MakeArrayStmt:
		return c.makeArray(s), nil
	case *ir.MakeObjectStmt:
		t := c.local(s.Target)
		// Allocated at the size its inserts give it (those of a loop
		// counted once): no growth of its key slice and map as it fills.
		n := min(c.inserts[s.Target], 32)
		return func(_ *state, l []*ast.Term) ctl {
			l[t] = ast.NewTerm(ast.NewObjectWithCapacity(n))
			return ctlNext
		}, nil
	case *ir.MakeSetStmt:
		t := c.local(s.Target)
		return func(_ *state, l []*ast.Term) ctl {
			l[t] = ast.NewTerm(ast.NewSet())
			return ctlNext
		}, nil
	case *ir.EqualStmt:
		return c.compare(s.A, s.B, true, c.location(s.GetLocation()))
	case *ir.NotEqualStmt:
		return c.compare(s.A, s.B, false, nil)
	case *ir.IsArrayStmt:
		return c.isType(s.Source, func(v ast.Value) bool { _, ok := v.(*ast.Array); return ok })
	case *ir.IsObjectStmt:
		return c.isType(s.Source, func(v ast.Value) bool { _, ok := v.(ast.Object); return ok })
	case *ir.IsSetStmt:
		return c.isType(s.Source, func(v ast.Value) bool { _, ok := v.(ast.Set); return ok })
	case *ir.IsDefinedStmt:
		return c.defined(s.Source, true), nil
	case *ir.IsUndefinedStmt:
		return c.defined(s.Source, false), nil
	case *ir.ArrayAppendStmt:
		return c.arrayAppend(s)
	case *ir.ObjectInsertStmt:
		return c.objectInsert(s.Object, s.Key, s.Value, "", nil, insertAlways)
	case *ir.ObjectInsertOnceStmt:
		mode := insertOnceKeepFirst
		switch {
		case c.comprehension[s]:
			mode = insertOnceKeepLast
		case c.rulesInsert:
			mode = insertOnceRules
		}
		return c.objectInsert(s.Object, s.Key, s.Value, "object keys must be unique", c.location(s.GetLocation()), mode)
	case *ir.ObjectMergeStmt:
		a, b, t := c.read(s.A), c.read(s.B), c.local(s.Target)
		whole := s.A == ir.Data
		return func(st *state, l []*ast.Term) ctl {
			x, y := l[a], l[b]
			if whole {
				// The whole data document, as topdown reads it, has no
				// "system": neither the base document's (x) nor the rules'
				// under package system (y).
				x, y = withoutSystem(x), withoutSystem(y)
			}
			if x == nil || y == nil {
				return st.fail(internalError(nil, "object merge of an undefined value"))
			}
			l[t] = ast.NewTerm(mergeValues(x.Value, y.Value))
			return ctlNext
		}, nil
	case *ir.SetAddStmt:
		v, err := c.operand(s.Value)
		if err != nil {
			return nil, err
		}
		set := c.local(s.Set)
		return func(st *state, l []*ast.Term) ctl {
			x := v.get(l)
			sv, ok := l[set].Value.(ast.Set)
			if !ok || x == nil {
				return st.fail(internalError(nil, "set add to a non-set"))
			}
			sv.Add(x)
			return ctlNext
		}, nil
	case *ir.ResultSetAddStmt:
		src := c.read(s.Value)
		return func(st *state, l []*ast.Term) ctl {
			if v := l[src]; v != nil {
				st.results.Add(v)
			}
			return ctlNext
		}, nil
	case *ir.WithStmt:
		return c.with(s)
	}
	return nil, unsupported("statement %T", s)
}

// compare lowers EqualStmt (equal) and NotEqualStmt (!equal): the block
// goes on when both operands are defined and are (not) equal.
func (c *compiler) compare(ao, bo ir.Operand, equal bool, loc *ast.Location) (stmt, error) {
	a, err := c.operand(ao)
	if err != nil {
		return nil, err
	}
	b, err := c.operand(bo)
	if err != nil {
		return nil, err
	}
	if !equal || (!c.isRuleVal(a) && !c.isRuleVal(b)) {
		return func(_ *state, l []*ast.Term) ctl {
			x, y := a.get(l), b.get(l)
			if x == nil || y == nil || termsEqual(x, y) != equal {
				return 0
			}
			return ctlNext
		}, nil
	}
	return func(st *state, l []*ast.Term) ctl {
		x, y := a.get(l), b.get(l)
		if x == nil || y == nil || !termsEqual(x, y) {
			return 0
		}
		if !sameText(x, y) {
			// A pattern matched against a member of a rule's set:
			// topdown evaluates the rule with the pattern's values
			// bound (see ruleVal).
			return st.fail(internalError(loc, "equal values written otherwise (1 and 1.0); topdown decides which text what follows reads"))
		}
		return ctlNext
	}, nil
}

// isRuleVal says whether o is a local holding (part of) a rule's value.
func (c *compiler) isRuleVal(o operand) bool {
	return o.k == nil && c.ruleVal[o.slot]
}

// defined lowers IsDefinedStmt (want) and IsUndefinedStmt (!want).
func (c *compiler) defined(src ir.Local, want bool) stmt {
	i := c.read(src)
	return func(_ *state, l []*ast.Term) ctl {
		if (l[i] != nil) != want {
			return 0
		}
		return ctlNext
	}
}

func (c *compiler) number(i int) *ast.Term {
	if t := c.nums[i]; t != nil {
		return t
	}
	t := ast.NewTerm(ast.Number(c.pol.Static.Strings[i].Value))
	c.nums[i] = t
	return t
}

func (c *compiler) isType(o ir.Operand, is func(ast.Value) bool) (stmt, error) {
	src, err := c.operand(o)
	if err != nil {
		return nil, err
	}
	return func(_ *state, l []*ast.Term) ctl {
		if t := src.get(l); t == nil || !is(t.Value) {
			return 0
		}
		return ctlNext
	}, nil
}

func (c *compiler) blockStmt(s *ir.BlockStmt) (stmt, error) {
	blocks := make([]block, 0, len(s.Blocks))
	for _, b := range s.Blocks {
		lb, err := c.block(b)
		if err != nil {
			return nil, err
		}
		blocks = append(blocks, lb)
	}
	if len(blocks) == 1 {
		b := blocks[0]
		return func(st *state, l []*ast.Term) ctl {
			switch c := b.run(st, l); {
			case c > 0:
				return c - 1
			case c < ctlNext:
				return c
			}
			return ctlNext
		}, nil
	}
	return func(st *state, l []*ast.Term) ctl {
		for _, b := range blocks {
			switch c := b.run(st, l); {
			case c > 0:
				return c - 1
			case c < ctlNext:
				return c
			}
		}
		return ctlNext
	}, nil
}

func (c *compiler) not(s *ir.NotStmt) (stmt, error) {
	b, err := c.block(s.Block)
	if err != nil {
		return nil, err
	}
	return func(st *state, l []*ast.Term) ctl {
		switch c := b.run(st, l); {
		case c == ctlNext:
			return 0 // the negated block held: not is undefined
		case c == 0:
			return ctlNext
		case c > 0:
			return c - 1
		default:
			return c
		}
	}, nil
}

func (c *compiler) assignOnce(s *ir.AssignVarOnceStmt) (stmt, error) {
	src, err := c.operand(s.Source)
	if err != nil {
		return nil, err
	}
	t := c.local(s.Target)
	loc := c.location(s.GetLocation())
	msg := "complete rules must not produce multiple outputs"
	if c.conflict != "" {
		msg = c.conflict
	}
	return func(st *state, l []*ast.Term) ctl {
		v := src.get(l)
		if cur := l[t]; cur != nil {
			if v == nil || !cur.Equal(v) {
				return st.fail(&topdown.Error{Code: topdown.ConflictErr, Location: loc, Message: msg})
			}
			return ctlNext
		}
		l[t] = v
		return ctlNext
	}, nil
}

// insertMode is how an object insert treats a key already present.
type insertMode uint8

const (
	insertAlways        insertMode = iota // replace the value
	insertOnceKeepFirst                   // a different value conflicts; an equal one is dropped (one rule's object)
	insertOnceRules                       // as insertOnceKeepFirst, but an equal value of another text is refused (several rules' object)
	insertOnceKeepLast                    // a different value conflicts; an equal one replaces it (a comprehension)
)

func (c *compiler) objectInsert(obj ir.Local, key, val ir.Operand, conflict string, loc *ast.Location, mode insertMode) (stmt, error) {
	k, err := c.operand(key)
	if err != nil {
		return nil, err
	}
	v, err := c.operand(val)
	if err != nil {
		return nil, err
	}
	o := c.local(obj)
	return func(st *state, l []*ast.Term) ctl {
		kt, vt := k.get(l), v.get(l)
		ov, ok := l[o].Value.(ast.Object)
		if !ok || kt == nil || vt == nil {
			return st.fail(internalError(nil, "object insert into a non-object"))
		}
		if mode != insertAlways {
			if cur := ov.Get(kt); cur != nil {
				if !cur.Equal(vt) {
					return st.fail(&topdown.Error{Code: topdown.ConflictErr, Location: loc, Message: conflict})
				}
				if mode != insertOnceKeepLast {
					// Within one rule topdown keeps the first value, as
					// here; across rules it keeps the value of the rule it
					// evaluates first, which is not the planner's order
					// (o.a[k] := v and o.a.b := 1.0). Where the two values
					// read differently, the VM cannot say which is kept.
					if mode == insertOnceRules && cur.Value.String() != vt.Value.String() {
						return st.fail(internalError(loc, "a rule's object got one key twice with equal values of different texts; topdown decides which it keeps"))
					}
					return ctlNext
				}
			}
		}
		ov.Insert(kt, vt)
		return ctlNext
	}, nil
}

func (c *compiler) dot(s *ir.DotStmt) (stmt, error) {
	src, err := c.operand(s.Source)
	if err != nil {
		return nil, err
	}
	src.whole = false // a dot into data reads below its root
	key, err := c.operand(s.Key)
	if err != nil {
		return nil, err
	}
	t := c.local(s.Target)
	if src.k != nil {
		// A constant source is a string or a boolean: nothing to look up.
		return func(*state, []*ast.Term) ctl { return 0 }, nil
	}
	from := src.slot
	get := lookup
	if c.mixed[from] {
		c.mixed[t] = true
		if key.k == nil {
			c.mixedKeyed = true
		} else if ks, ok := key.k.Value.(ast.String); !ok || isIndex(string(ks)) {
			c.mixedKeyed = true
		}
	}
	if c.base[from] {
		// Topdown reads a reference into the base documents from the
		// store, by a path of strings: data.x[2] is data.x["2"].
		get = lookupBase
		c.base[t] = true
		if key.k == nil {
			c.baseKeyed = true
		} else if ks, ok := key.k.Value.(ast.String); !ok || isIndex(string(ks)) {
			c.baseKeyed = true
		}
	}
	// A rule's object's value under a key that is not a string, where the
	// object holds that key written otherwise (1 for a lookup of 1.0), was
	// built from the object's text; topdown builds it from the lookup's.
	// (Only a rule's value, see ruleVal.)
	loc, ruleVal := c.location(s.GetLocation()), c.ruleVal[from]
	if ruleVal {
		c.ruleVal[t] = true
	}
	const written = "an object's key equal to the one looked up is written otherwise (1 and 1.0); topdown decides which text its value is built from"
	if key.k != nil {
		k := key.k
		_, str := k.Value.(ast.String)
		check := ruleVal && !str
		return func(st *state, l []*ast.Term) ctl {
			s := l[from]
			if s == nil {
				return 0
			}
			r := get(s, k)
			if r == nil {
				return 0
			}
			if check && keyWrittenOtherwise(s, k) {
				return st.fail(internalError(loc, written))
			}
			l[t] = r
			return ctlNext
		}, nil
	}
	return func(st *state, l []*ast.Term) ctl {
		s, k := l[from], key.get(l)
		if s == nil || k == nil {
			return 0
		}
		r := get(s, k)
		if r == nil {
			return 0
		}
		if ruleVal {
			if _, str := k.Value.(ast.String); !str && keyWrittenOtherwise(s, k) {
				return st.fail(internalError(loc, written))
			}
		}
		l[t] = r
		return ctlNext
	}, nil
}

// keyWrittenOtherwise says whether s is an object holding a key equal to k
// but written otherwise. It scans the object (its keys are hashed by value,
// so a lookup cannot tell the texts apart); only a rule's object looked up
// by a key that is not a string pays it.
func keyWrittenOtherwise(s, k *ast.Term) bool {
	o, ok := s.Value.(ast.Object)
	if !ok {
		return false
	}
	differs := false
	o.Until(func(key, _ *ast.Term) bool {
		if !termsEqual(key, k) {
			return false
		}
		differs = !sameText(key, k)
		return true
	})
	return differs
}

// lookup is s[k] as topdown reads a reference: an object's value, an
// array's element at an integer index, a set's member (the key itself).
func lookup(s, k *ast.Term) *ast.Term {
	switch v := s.Value.(type) {
	case ast.Object:
		return v.Get(k)
	case *ast.Array:
		return v.Get(k)
	case ast.Set:
		if v.Contains(k) {
			return k
		}
	}
	return nil
}

// lookupBase is s[k] as topdown reads a base document from the store: the
// key as a string (a number by its text, anything else not found), an
// array's element at the index that string spells.
func lookupBase(s, k *ast.Term) *ast.Term {
	var key string
	switch kv := k.Value.(type) {
	case ast.String:
		key = string(kv)
	case ast.Number:
		key = string(kv)
	default:
		if _, ok := s.Value.(ast.Set); ok {
			return lookup(s, k)
		}
		return nil
	}
	switch v := s.Value.(type) {
	case ast.Object:
		if _, ok := k.Value.(ast.String); ok {
			return v.Get(k)
		}
		return v.Get(ast.StringTerm(key))
	case *ast.Array:
		i, ok := util.Atoi(key)
		if !ok || i < 0 || i >= v.Len() {
			return nil
		}
		return v.Elem(i)
	case ast.Set:
		return lookup(s, k)
	}
	return nil
}

// excludesVirtual reports whether a scan's body skips the keys of a set
// (NotStmt { Dot(set, scan key) }): the planner's base scan after it has
// enumerated the rules under the same reference.
func excludesVirtual(s *ir.ScanStmt) bool {
	for _, st := range s.Block.Stmts {
		n, ok := st.(*ir.NotStmt)
		if !ok || len(n.Block.Stmts) != 1 {
			continue
		}
		d, ok := n.Block.Stmts[0].(*ir.DotStmt)
		if !ok {
			continue
		}
		if k, ok := d.Key.Value.(ir.Local); ok && k == s.Key {
			return true
		}
	}
	return false
}

// isIndex reports whether s reads as an array index in a storage path.
func isIndex(s string) bool {
	_, ok := util.Atoi(s)
	return ok
}

// withoutSystem is the data document as topdown reads it whole: without
// its top-level "system" key.
func withoutSystem(t *ast.Term) *ast.Term {
	if t == nil {
		return nil
	}
	obj, ok := t.Value.(ast.Object)
	if !ok || obj.Get(systemKey) == nil {
		return t
	}
	out := ast.NewObjectWithCapacity(obj.Len())
	obj.Foreach(func(k, v *ast.Term) {
		if !k.Equal(systemKey) {
			out.Insert(k, v)
		}
	})
	return ast.NewTerm(out)
}

var systemKey = ast.NewTerm(ast.SystemDocumentKey)

func (c *compiler) length(s *ir.LenStmt) (stmt, error) {
	src, err := c.operand(s.Source)
	if err != nil {
		return nil, err
	}
	t := c.local(s.Target)
	return func(st *state, l []*ast.Term) ctl {
		x := src.get(l)
		if x == nil {
			return 0
		}
		var n int
		switch v := x.Value.(type) {
		case *ast.Array:
			n = v.Len()
		case ast.Object:
			n = v.Len()
		case ast.Set:
			n = v.Len()
		case ast.String:
			n = utf8.RuneCountInString(string(v))
		default:
			return st.fail(internalError(nil, "length of a scalar"))
		}
		l[t] = ast.InternedTerm(n)
		return ctlNext
	}, nil
}

func (c *compiler) scan(s *ir.ScanStmt) (stmt, error) {
	src := c.read(s.Source)
	key, val := c.local(s.Key), c.local(s.Value)
	if c.base[src] {
		c.base[val] = true
	}
	if c.mixed[src] {
		// An iteration's keys are the collection's own: no conversion.
		c.mixed[val] = true
	}
	if c.ruleVal[src] {
		c.ruleVal[key], c.ruleVal[val] = true, true
	}
	whole := s.Source == ir.Data
	if c.base[src] && excludesVirtual(s) {
		// The planner enumerates a document that has rules and maybe base
		// documents as: each rule's key, then the base keys that are not
		// rule keys. Topdown goes base keys first, then the others, and
		// takes the base document for a key in both: an array built from
		// the enumeration would differ in order.
		c.mixedEnum = true
	}
	body, err := c.block(s.Block)
	if err != nil {
		return nil, err
	}
	return func(st *state, l []*ast.Term) ctl {
		x := l[src]
		if whole {
			x = withoutSystem(x)
		}
		if x == nil {
			return ctlNext
		}
		switch v := x.Value.(type) {
		case *ast.Array:
			for i := 0; i < v.Len(); i++ {
				if st.tick() {
					return ctlErr
				}
				l[key], l[val] = ast.InternedTerm(i), v.Elem(i)
				if c := body.run(st, l); c > 0 {
					return c - 1
				} else if c < ctlNext {
					return c
				}
			}
		case ast.Object:
			out := ctlNext
			v.Until(func(k, x *ast.Term) bool {
				if st.tick() {
					out = ctlErr
					return true
				}
				l[key], l[val] = k, x
				if c := body.run(st, l); c > 0 {
					out = c - 1
					return true
				} else if c < ctlNext {
					out = c
					return true
				}
				return false
			})
			return out
		case ast.Set:
			for _, e := range v.Slice() {
				if st.tick() {
					return ctlErr
				}
				l[key], l[val] = e, e
				if c := body.run(st, l); c > 0 {
					return c - 1
				} else if c < ctlNext {
					return c
				}
			}
		}
		return ctlNext
	}, nil
}

func (c *compiler) with(s *ir.WithStmt) (stmt, error) {
	if s.Local == ir.Data {
		c.withData = true
	}
	target := c.read(s.Local)
	val, err := c.operand(s.Value)
	if err != nil {
		return nil, err
	}
	path := make([]*ast.Term, len(s.Path))
	for i, p := range s.Path {
		path[i] = c.strs[p]
	}
	body, err := c.block(s.Block)
	if err != nil {
		return nil, err
	}
	return func(st *state, l []*ast.Term) ctl {
		// v is nil when the planner restores an undefined input or data
		// for what follows a with modifier.
		v := val.get(l)
		saved := l[target]
		if len(path) == 0 || v == nil {
			l[target] = v
		} else {
			l[target] = upsert(saved, path, v)
		}
		st.pushMemo()
		cr := body.run(st, l)
		st.popMemo()
		l[target] = saved
		switch {
		case cr == 0:
			return 0 // the block was undefined: so is the with statement
		case cr > 0:
			return cr - 1
		}
		return cr
	}, nil
}

func (c *compiler) call(s *ir.CallStmt) (stmt, error) {
	args := make([]operand, len(s.Args))
	for i, a := range s.Args {
		o, err := c.operandArg(a)
		if err != nil {
			return nil, err
		}
		args[i] = o
	}
	res := c.local(s.Result)
	if fn := c.callee(s.Func); fn != nil {
		if len(args) != len(fn.params) {
			return nil, unsupported("call of %s with %d arguments, it takes %d", s.Func, len(args), len(fn.params))
		}
		if len(fn.params) == 2 {
			c.ruleVal[res] = true
		}
		return func(st *state, l []*ast.Term) ctl {
			r, c := st.call(fn, args, l)
			if c != ctlNext {
				return c
			}
			if r == nil {
				return 0
			}
			l[res] = r
			return ctlNext
		}, nil
	}
	return c.builtinCall(s, args, res)
}

// operandArg lowers a call argument: passing the data local on to a
// function is not a read of data.
func (c *compiler) operandArg(o ir.Operand) (operand, error) {
	if l, ok := o.Value.(ir.Local); ok {
		return operand{slot: c.local(l)}, nil
	}
	return c.operand(o)
}

func (c *compiler) callDynamic(s *ir.CallDynamicStmt) (stmt, error) {
	// A function found that is undefined leaves the blocks the planner
	// built around the lookup (it falls back to the base documents only
	// when no function is found), as OPA's wasm target does.
	if c.depth < 4 {
		return nil, unsupported("call_dynamic outside the planner's block structure")
	}
	path := make([]operand, len(s.Path))
	for i, p := range s.Path {
		o, err := c.operand(p)
		if err != nil {
			return nil, err
		}
		path[i] = o
	}
	args := make([]operand, len(s.Args))
	for i, a := range s.Args {
		args[i] = operand{slot: c.local(a)}
	}
	res := c.local(s.Result)
	c.dynResult[res] = true
	c.ruleVal[res] = true
	c.dynCallees(c.prog.dyn, path)
	return func(st *state, l []*ast.Term) ctl {
		n := st.prog.dyn
		for _, p := range path {
			t := p.get(l)
			if t == nil {
				return 0
			}
			s, ok := t.Value.(ast.String)
			if !ok {
				return 0
			}
			if n = n.children[string(s)]; n == nil {
				return 0
			}
		}
		if n.fn == nil || len(n.fn.params) != len(args) {
			return 0
		}
		r, c := st.call(n.fn, args, l)
		if c != ctlNext {
			return c
		}
		if r == nil {
			return 3
		}
		l[res] = r
		return ctlNext
	}, nil
}

// dynCallees records as callees the functions a CallDynamic with this path
// can reach: constant segments pick a child, others any.
func (c *compiler) dynCallees(n *dynNode, path []operand) {
	if n == nil {
		return
	}
	if len(path) == 0 {
		if n.fn != nil {
			c.callee(n.fn.name)
		}
		return
	}
	if k := path[0].k; k != nil {
		if s, ok := k.Value.(ast.String); ok {
			c.dynCallees(n.children[string(s)], path[1:])
		}
		return
	}
	for _, child := range n.children {
		c.dynCallees(child, path[1:])
	}
}

func internalError(loc *ast.Location, msg string) error {
	return &topdown.Error{Code: topdown.InternalErr, Location: loc, Message: "vm: " + msg}
}
