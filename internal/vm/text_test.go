package vm_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/util"
)

// answer is evalText's text on the input written as JSON ("": none),
// numbers kept as written.
func answer(ctx context.Context, t *testing.T, pq rego.PreparedEvalQuery, in string) string {
	t.Helper()
	var v ast.Value
	if in != "" {
		var x any
		if err := util.UnmarshalJSON([]byte(in), &x); err != nil {
			t.Fatal(err)
		}
		var err error
		if v, err = ast.InterfaceToValue(x); err != nil {
			t.Fatal(err)
		}
	}
	s, _ := evalText(ctx, pq, v)
	return s
}

// TestEqualValuesWrittenOtherwise: numbers equal by value but written
// otherwise (1 and 1.0) are one value to topdown, which keeps the text it met
// first, or the lookup's when it evaluates a rule's object with the key
// bound. The VM meets them in another order, so where the two texts meet it
// fails with an internal error, which the engine answers with topdown; it
// never answers otherwise than topdown (review: each row but the last answered
// otherwise before).
func TestEqualValuesWrittenOtherwise(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name   string
		rules  string
		inputs []string // the VM may hand these to topdown
		same   []string // written alike: the VM answers them itself
	}{
		{"a function's result for equal arguments", `f(x) := json.marshal(x)
p if { f(input.a) != ""; f(input.b) == "1.0" }`, []string{`{"a":1,"b":1.0}`}, []string{`{"a":1.0,"b":1.0}`, `{"a":1,"b":1}`}},
		{"a function's result as a value", `f(x) := [x]
p := [f(input.a), f(input.b)]`, []string{`{"a":1,"b":1.0}`, `{"a":[1],"b":[1.0]}`, `{"a":{"k":1e2},"b":{"k":100}}`}, []string{`{"a":2,"b":2}`, `{"a":{"k":1},"b":{"k":1}}`}},
		{"a partial object looked up by its key", `o[k] := json.marshal(k) if some k in [1, 2, 3]
p if o[input.level] == "2.0"`, []string{`{"level":2.0}`}, []string{`{"level":2}`}},
		{"a partial object's value", `info[l] := {"level": l} if some l in [1, 2, 3]
p := info[input.level]`, []string{`{"level":2.0}`, `{"level":20e-1}`}, []string{`{"level":2}`}},
		{"a multi-part head", `o[k].v := [k] if some k in [1, 2]
p := o[input.a].v`, []string{`{"a":1.0}`}, []string{`{"a":1}`}},
		{"a key bound in a loop", `o[k] := [k] if some k in [1, 2]
p := [v | some k in [input.a]; v := o[k]]`, []string{`{"a":1.0}`}, []string{`{"a":1}`}},
		{"a constant key", `o[k] := [k] if some k in [1, 2]
p := o[1.0]`, []string{``}, nil},
		{"a partial set matched against a pattern", `s contains [k, [k]] if some k in [1, 2]
p := [v | s[[input.a, v]]]`, []string{`{"a":1.0}`}, []string{`{"a":1}`}},
		{"strings and sets are not numbers", `f(x) := count(x)
p := [f(input.s), f(input.s), f({1, 2}), f({2, 1})]`, nil, []string{`{"s":"abc"}`}},
	}
	for _, c := range cases {
		vmq, tdq := prepare(t, "package x\n"+c.rules, "data.x.p")
		for _, in := range c.inputs {
			want, got := answer(ctx, t, tdq, in), answer(ctx, t, vmq, in)
			if got != want && !strings.Contains(got, "eval_internal_error: vm: ") {
				t.Errorf("%s, input %s:\n topdown %s\n      vm %s", c.name, in, want, got)
			}
		}
		for _, in := range c.same {
			if want, got := answer(ctx, t, tdq, in), answer(ctx, t, vmq, in); got != want {
				t.Errorf("%s, input %s (written alike, not handed over):\n topdown %s\n      vm %s", c.name, in, want, got)
			}
		}
	}
}

// TestFunctionResultsAreKept: a function called again with the same
// arguments is not run again, as topdown keeps its results: a chain of
// helpers each calling the one below twice is 40 calls, not 2^40 (before,
// the VM ran past any deadline there, and a deadline passed is a denial
// topdown would not have made), and a helper called in a loop with one
// argument runs once; a result is not reused inside a `with`.
func TestFunctionResultsAreKept(t *testing.T) {
	var chain strings.Builder
	chain.WriteString("f0(x) := x + 1\n")
	for i := 1; i <= 40; i++ {
		fmt.Fprintf(&chain, "f%d(x) := f%d(x) + f%d(x)\n", i, i-1, i-1)
	}
	chain.WriteString("p := f40(input.a)")
	var xs strings.Builder
	for i := range 3000 {
		if i > 0 {
			xs.WriteByte(',')
		}
		fmt.Fprintf(&xs, `{"k":%d,"v":%d}`, i%7, i)
	}
	cases := []struct{ name, rules, input string }{
		{"a chain of doubling helpers", chain.String(), `{"a":1}`},
		{"a helper called in a loop", `f(u) := {y.v | some y in input.xs; y.k == u}
p := count([1 | some x in input.xs; f(3)[x.v]])`, `{"xs":[` + xs.String() + `]}`},
		{"with: results are not kept across it", `f(x) := [x, input.a]
p := [a, b, c] if { a := f(1); b := f(1) with input.a as 2; c := f(1) }`, `{"a":1}`},
	}
	for _, c := range cases {
		vmq, tdq := prepare(t, "package x\n"+c.rules, "data.x.p")
		// A bound for a test that would otherwise run for ever; no
		// timing is asserted.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		want, got := answer(ctx, t, tdq, c.input), answer(ctx, t, vmq, c.input)
		cancel()
		if got != want {
			t.Errorf("%s:\n topdown %.200s\n      vm %.200s", c.name, want, got)
		}
	}
}
