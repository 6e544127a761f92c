// Package vm runs OPA's intermediate representation (the ir.Policy that OPA's
// planner makes of a compiled Rego query, the plan `opa build -t plan` writes)
// on a small virtual machine, written here.
//
// Compile lowers an ir.Policy once into a Program: every local becomes a slot
// in a frame, every string and number constant a pre-built ast.Term, every
// call a direct reference to the planned function or to OPA's own built-in
// implementation (topdown's, called with a proper BuiltinContext), and every
// statement a Go closure. Evaluating a decision runs those closures over the
// input and data documents; the IR structs are not looked at again.
//
// The package registers itself as OPA's rego target plugin named Target,
// and Prepare prepares a query on it for a compiled ast.Compiler and a
// store: the result is an ordinary rego.PreparedEvalQuery, whose Eval runs
// the query on the VM with input handling, result sets and errors as rego
// gives them for topdown (PrepareQuery also evaluates without rego); the
// result set is topdown's for a query topdown gives at most one result,
// such as a ground reference, while several results come once each and
// sorted (see Prepare). Prepare is the only way in: it first checks the
// query against the compiler for what the VM would answer differently
// (comprehensions topdown indexes, comprehensions as body expressions),
// and the plugin refuses, with ErrUnsupported, a preparation that did not
// come through it, such as rego.New(..., rego.Target(vm.Target)) alone.
//
// A plan the VM cannot run exactly as topdown would (an unknown built-in, a
// statement it does not know) makes preparation fail with an error that
// wraps ErrUnsupported, so that the caller evaluates that query with topdown
// instead; the VM never answers differently from topdown by design, and the
// conformance test in this package holds it to that on OPA's own suite.
//
// The package must not know any policy: nothing in it names a package, a
// rule or a document of the bundle it runs.
package vm
