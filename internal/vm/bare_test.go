package vm_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/topdown"

	"github.com/acgs-lite/acgs/internal/vm"
)

// TestBareComprehensions: OPA's plan skips a comprehension used as a body
// expression (`[y | y := f(1)]`, `not {k: v | ...}`) as always defined,
// where topdown evaluates it and fails on a conflict in it. vm.Prepare
// leaves a query to topdown when it or a rule it reaches holds one,
// wherever it is; a bound comprehension, or one in a rule the query does
// not reach, keeps the VM, which then answers as topdown does.
func TestBareComprehensions(t *testing.T) {
	const f = "f(x) := 1 if x == 1\nf(x) := 2 if x == 1\n"
	input := rego.EvalInput(map[string]any{"arr": []any{1, 2}})
	for _, tc := range []struct {
		name, mod string
		query     string // data.x.p when empty
		refused   bool   // vm.Prepare must leave it to topdown
	}{
		{"array comprehension", f + `p := 5 if { [y | y := f(1)] }`, "", true},
		{"object comprehension with a key twice", `p := 5 if { {k: v | some v in input.arr; k := "a"} }`, "", true},
		{"negated", f + `p := 5 if { not [y | y := f(1)] }`, "", true},
		{"set comprehension", f + `p := 5 if { {y | y := f(1)} }`, "", true},
		{"in a bound comprehension's body", f + `p := 5 if { x := [1 | [y | y := f(1)]]; count(x) > 0 }`, "", true},
		{"in a rule's head", f + `p := [1 | not {y | y := f(1)}]`, "", true},
		{"in an every body", f + `p := 5 if { every z in input.arr { [y | y := f(z)] } }`, "", true},
		{"in an else branch", f + "p := 4 if { input.none }\nelse := 5 if { [y | y := f(1)] }", "", true},
		{"in a function's body", f + "g(z) := 1 if { [y | y := f(z)] }\np := g(1)", "", true},
		{"in a rule reached through another", f + "q := 1 if { [y | y := f(1)] }\np := q + 1", "", true},
		{"in the query", f, `y := 1; not [z | z := data.x.f(1)]`, true},
		{"bound to a variable", f + `p := 5 if { x := [y | y := f(1)] }`, "", false},
		{"unified with a wildcard", `p := 5 if { _ = {k: v | some v in input.arr; k := "a"} }`, "", false},
		{"in a rule the query does not reach", f + "q := 5 if { [y | y := f(1)] }\np := 1", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			query := tc.query
			if query == "" {
				query = "data.x.p"
			}
			td, pq, err := prepareBoth(t, inmem.New(), map[string]string{"m.rego": "package x\n" + tc.mod}, query)
			want, terr := td.Eval(ctx, input)
			var te *topdown.Error
			if tc.refused {
				// Each refused case is one where the plan would answer and
				// topdown fails.
				if !errors.As(terr, &te) || te.Code != topdown.ConflictErr {
					t.Fatalf("topdown: %v %v, want a conflict", want, terr)
				}
			}
			switch {
			case errors.Is(err, vm.ErrUnsupported) && tc.refused:
				where := "m.rego:" // the rule's location
				if tc.query != "" {
					where = "the query has"
				}
				if !strings.Contains(err.Error(), "comprehension as a") || !strings.Contains(err.Error(), where) {
					t.Fatalf("refused for another reason: %v", err)
				}
				return // left to topdown, whose answer the engine gives
			case err != nil:
				t.Fatal(err)
			}
			got, gerr := pq.Eval(ctx, input)
			jw, _ := json.Marshal(want)
			jg, _ := json.Marshal(got)
			if tc.refused {
				t.Errorf("prepared on the VM, want it left to topdown:\ntopdown %s %v\nvm      %s %v", jw, terr, jg, gerr)
			}
			if string(jw) != string(jg) || (terr != nil) != (gerr != nil) {
				t.Fatalf("topdown %s %v\nvm      %s %v", jw, terr, jg, gerr)
			}
			if terr != nil && (!errors.As(gerr, &te) || te.Code != topdown.ConflictErr) {
				t.Fatalf("vm error %v, topdown %v", gerr, terr)
			}
		})
	}
}

// TestSeveralResults holds the VM to what Prepare documents of a query
// with several results: each distinct result once, sorted, where topdown
// gives them in order with repeats. A query of one ground reference, all
// the engine prepares, has at most one.
func TestSeveralResults(t *testing.T) {
	ctx := context.Background()
	mod := map[string]string{"m.rego": "package x\narr := [3, 1, 2, 1]"}
	td, pq, err := prepareBoth(t, inmem.New(), mod, "x := data.x.arr[_]")
	if err != nil {
		t.Fatal(err)
	}
	values := func(q rego.PreparedEvalQuery) string {
		rs, err := q.Eval(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, r := range rs {
			out = append(out, fmt.Sprint(r.Bindings["x"]))
		}
		return strings.Join(out, " ")
	}
	if got, want := values(td), "3 1 2 1"; got != want {
		t.Fatalf("topdown: %s, want %s", got, want)
	}
	if got, want := values(pq), "1 2 3"; got != want {
		t.Fatalf("vm: %s, want %s (as Prepare documents)", got, want)
	}
}
