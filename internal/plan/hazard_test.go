package plan_test

import (
	"context"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"

	"github.com/acgs-lite/acgs/internal/jsoneq"
	"github.com/acgs-lite/acgs/internal/plan"
)

// topdown is the evaluator's answer for input at path, its error included.
func (f fixture) topdown(path string, input any) (any, bool, error) {
	rs, err := rego.New(rego.Query("data."+strings.ReplaceAll(path, "/", ".")), rego.Compiler(f.compiler),
		rego.Store(inmem.NewFromObject(f.data)), rego.Input(input)).Eval(context.Background())
	if err != nil || len(rs) == 0 {
		return nil, false, err
	}
	return rs[0].Expressions[0].Value, true, nil
}

// TestConstantsHideNoErrors (review): partial evaluation drops a branch
// that reads unknown fields when a later condition on a plan key fails,
// where topdown evaluates it and may raise a conflict. No constant may
// stand where topdown errs: every input tried either has a fallback or
// topdown's own answer. The policies are the review's, plus ones whose
// constants must survive (want constant).
func TestConstantsHideNoErrors(t *testing.T) {
	// blocked is only evaluated for its first condition when the action
	// is not a deletion; that condition reads unknown fields through lvl.
	const decision = `package p

decision := {"allow": input.action == "read"} if not blocked

blocked if { lvl > 3; lower(input.action) == "delete" }
`
	read := map[string]any{"action": "read"}
	cases := []struct {
		name, src, path string
		known           map[string]any
		inputs          []map[string]any // the known values are added to each
		wantConstant    bool
	}{
		{"two definitions of a complete rule", decision + `
lvl := input.user.level if input.user.kind == "human"

lvl := 9 if input.user.admin
`, "p/decision", read, []map[string]any{
			{"user": map[string]any{"kind": "human", "level": 1, "admin": true}},
			{"user": map[string]any{"kind": "human", "level": 1}},
		}, false},
		{"one definition that iterates", decision + `
lvl := x if { some x in input.levels }
`, "p/decision", read, []map[string]any{{"levels": []any{1, 2}}, {"levels": []any{1}}}, false},
		{"object comprehension with a repeated key", decision + `
lvl := o.k

o := {"k": v | some v in input.vals}
`, "p/decision", read, []map[string]any{{"vals": []any{1, 2}}, {"vals": []any{5}}}, false},
		{"object comprehension at the head of a reference", decision + `
lvl := {"k": v | some v in input.vals}.k
`, "p/decision", read, []map[string]any{{"vals": []any{1, 2}}, {"vals": []any{5}}}, false},
		{"function with two values", decision + `
lvl := f(1)

f(x) := 1 if input.a

f(x) := 2 if input.b
`, "p/decision", read, []map[string]any{{"a": true, "b": true}, {"a": true}}, false},
		{"partial object with two values for a key", decision + `
lvl := po.x

po[k] := 1 if { k := "x"; input.a }

po[k] := 2 if { k := "x"; input.b }
`, "p/decision", read, []map[string]any{{"a": true, "b": true}, {"b": true}}, false},
		{"undefined constant", `package p

allow if { c == 1; lower(input.action) == "read" }

c := 1 if input.a

c := 2 if input.b
`, "p/allow", map[string]any{"action": "write"}, []map[string]any{{"a": true, "b": true}, {"a": true}}, false},
		{"defined constant", `package p

d := "deny" if { c == 1; lower(input.action) == "read" }

d := "deny" if input.action == "write"

c := 1 if input.a

c := 2 if input.b
`, "p/d", map[string]any{"action": "write"}, []map[string]any{{"a": true, "b": true}, {"a": true}}, false},
		{"conflict in a rule of the keys alone", `package p

d := "deny" if { c == 1; lower(input.action) == "read" }

d := "deny" if input.action == "write"

c := 1 if input.action

c := 2 if input.action
`, "p/d", map[string]any{"action": "write"}, []map[string]any{{"a": true}}, false},
		// Rules of one path at two depths (review of d48f37b): equal head
		// values, but a scalar at one depth is an object at the other.
		{"single-value rules at two depths", decision + `
lvl := 5 if q.k == 1

q[x] := 1 if x := input.a

q[x].r := 1 if x := input.b
`, "p/decision", read, []map[string]any{{"a": "k", "b": "k"}, {"a": "k"}}, false},
		{"a ground rule and one with a variable at two depths", decision + `
lvl := 5 if q.k == 1

q.k := 1 if input.c

q[x].r := 1 if x := input.b
`, "p/decision", read, []map[string]any{{"c": true, "b": "k"}, {"c": true}}, false},
		{"multi-value rules at two depths", decision + `
lvl := 5 if 1 in q.k

q[x] contains 1 if x := input.a

q.k.m contains 1 if input.c
`, "p/decision", read, []map[string]any{{"a": "k", "c": true}, {"a": "k"}}, false},
		{"with a reachable with", decision + `
lvl := 1 if g with input.user as 2

g if input.user
`, "p/decision", read, []map[string]any{{"user": 1}}, false},

		// Precision: these stay constants.
		{"conflicting rule behind a failed key condition", `package p

decision := {"allow": false} if input.action == "rm"

decision := {"allow": lvl > 3} if { input.action != "rm"; input.type == "t" }

lvl := input.user.level if input.user.kind == "human"

lvl := 9 if input.user.admin
`, "p/decision", map[string]any{"action": "rm"}, []map[string]any{
			{"type": "t", "user": map[string]any{"kind": "human", "level": 1, "admin": true}},
			{"user": map[string]any{"kind": "human", "level": 1}},
		}, true},
		{"definitions with one value", decision + `
lvl := 1 if input.a

lvl := 1 if input.b
`, "p/decision", read, []map[string]any{{"a": true, "b": true}, {}}, true},
		{"one definition that cannot iterate", decision + `
lvl := x if { x := input.user.level; x > 0 }
`, "p/decision", read, []map[string]any{{"user": map[string]any{"level": 5}}, {}}, true},
		{"object comprehension over an object's keys", decision + `
lvl := count(o)

o := {k: v | some k, v in input.vals; is_number(v)}
`, "p/decision", read, []map[string]any{{"vals": map[string]any{"a": 1, "b": 2}}, {}}, true},
		{"rules of the keys alone", `package p

d := label if input.action == "rm"

d := input.other if input.action != "rm"

label := "string" if is_string(input.action)

label := "other" if not is_string(input.action)
`, "p/d", map[string]any{"action": "rm"}, []map[string]any{{"other": 1}}, true},
	}
	ctx := context.Background()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := compile(t, tc.src, nil)
			keys := make([]string, 0, len(tc.known))
			for k := range tc.known {
				keys = append(keys, "input."+k)
			}
			pl := f.planner(keys).Build(ctx, tc.path, tc.known)
			if pl == nil {
				t.Fatal("no plan")
			}
			if (pl.Kind() == plan.Constant) != tc.wantConstant {
				t.Errorf("plan %s, want constant %v", pl.Kind(), tc.wantConstant)
			}
			errs := 0
			for _, in := range tc.inputs {
				full := map[string]any{}
				for k, v := range in {
					full[k] = v
				}
				for k, v := range tc.known {
					full[k] = v
				}
				want, defined, err := f.topdown(tc.path, full)
				if err != nil {
					errs++
				}
				if pl.Kind() != plan.Constant {
					continue
				}
				if err != nil {
					t.Errorf("input %v: constant %v where topdown errs: %v", full, pl.Value, err)
				} else if pl.Defined != defined || !jsoneq.Equal(pl.Value, want) {
					t.Errorf("input %v: constant %v (defined %v), topdown %v (defined %v)", full, pl.Value, pl.Defined, want, defined)
				}
			}
			if !tc.wantConstant && errs == 0 && !strings.Contains(tc.name, "with") {
				t.Error("no input tried makes topdown err: the case tests nothing")
			}
		})
	}
}
