package readset_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"

	"github.com/acgs-lite/acgs/internal/readset"
)

// readSetCases are small policies with the read set each entry point must
// get: the precise cases, and every construct that must widen.
var smallPolicies = []struct {
	name    string
	modules map[string]string
	path    string   // entry point, data.<path>
	want    []string // paths, or "input (whole)"; nil: no input read
	nd      []string
	data    map[string]any // base documents
	seed    map[string]any // input fields that make the rules defined, put in half the generated inputs
}{
	{
		name: "fields by name",
		modules: map[string]string{"p.rego": `package p
allow if { input.user.role == "admin"; input.action == "read" }`},
		path: "p.allow",
		seed: map[string]any{"user": map[string]any{"role": "admin", "id": "u1"}, "action": "read"},
		want: []string{"input.action", "input.user.role"},
	},
	{
		name: "an ancestor read whole subsumes its fields",
		modules: map[string]string{"p.rego": `package p
allow if { input.user.role == "admin"; count(input.user) < 5 }`},
		path: "p.allow",
		seed: map[string]any{"user": map[string]any{"role": "admin"}},
		want: []string{"input.user"},
	},
	{
		name: "some ... in iterates the whole subtree",
		modules: map[string]string{"p.rego": `package p
allow if { some x in input.items; x == 1; input.n > 0 }`},
		path: "p.allow",
		seed: map[string]any{"items": []any{json.Number("1")}, "n": json.Number("2")},
		want: []string{"input.items", "input.n"},
	},
	{
		name: "every iterates the whole subtree",
		modules: map[string]string{"p.rego": `package p
allow if every x in input.xs { x > 0 }`},
		path: "p.allow",
		seed: map[string]any{"xs": []any{json.Number("1"), json.Number("3")}},
		want: []string{"input.xs"},
	},
	{
		name: "a variable key reads the whole object",
		modules: map[string]string{"p.rego": `package p
allow if { some k; input.m[k] == data.want }`},
		path: "p.allow",
		data: map[string]any{"want": json.Number("7")}, seed: map[string]any{"m": map[string]any{"x": json.Number("7")}},
		want: []string{"input.m"},
	},
	{
		name: "a computed key reads the whole object",
		modules: map[string]string{"p.rego": `package p
allow if input.m[concat("", ["a", "b"])] == 1`},
		path: "p.allow",
		seed: map[string]any{"m": map[string]any{"ab": json.Number("1")}},
		want: []string{"input.m"},
	},
	{
		name: "a key taken from the input itself",
		modules: map[string]string{"p.rego": `package p
allow if input.roles[input.user] == "admin"`},
		path: "p.allow",
		seed: map[string]any{"roles": map[string]any{"a": "admin"}, "user": "a"},
		want: []string{"input.roles", "input.user"},
	},
	{
		name: "walk of a subtree",
		modules: map[string]string{"p.rego": `package p
allow if { some path, v; walk(input.tree, [path, v]); v == "x" }`},
		path: "p.allow",
		seed: map[string]any{"tree": map[string]any{"k": []any{"x"}}},
		want: []string{"input.tree"},
	},
	{
		name: "walk of the whole input",
		modules: map[string]string{"p.rego": `package p
allow if { some path, v; walk(input, [path, v]); v == "x" }`},
		path: "p.allow",
		seed: map[string]any{"tree": "x"},
		want: []string{"input (whole)"},
	},
	{
		name: "json.marshal of a subtree",
		modules: map[string]string{"p.rego": `package p
allow if count(json.marshal(input.doc)) < 100`},
		path: "p.allow",
		seed: map[string]any{"doc": map[string]any{"a": "b"}},
		want: []string{"input.doc"},
	},
	{
		name: "bare input bound to a variable",
		modules: map[string]string{"p.rego": `package p
allow if { x := input; x.a == 1 }`},
		path: "p.allow",
		seed: map[string]any{"a": json.Number("1")},
		want: []string{"input (whole)"},
	},
	{
		name: "with input replaces the input: widen",
		modules: map[string]string{"p.rego": `package p
q if input.a == 1
allow if { q with input.a as 1; input.b }`},
		path: "p.allow",
		seed: map[string]any{"b": true},
		want: []string{"input (whole)"},
	},
	{
		name: "with on data only reads the value",
		modules: map[string]string{"p.rego": `package p
q if data.flag == input.a
allow if q with data.flag as input.b`},
		path: "p.allow",
		seed: map[string]any{"a": "x", "b": "x"},
		want: []string{"input.a", "input.b"},
	},
	{
		name: "with on a call reads the call's operands",
		modules: map[string]string{"p.rego": `package p
allow if { input.secret == 1 with data.z as 2 }`},
		path: "p.allow",
		seed: map[string]any{"secret": json.Number("1")},
		want: []string{"input.secret"},
	},
	{
		name: "with on an assignment reaches the rules it calls",
		modules: map[string]string{"p.rego": `package p
q if input.secret == 1
allow if { x := q with data.z as 2; x }`},
		path: "p.allow",
		seed: map[string]any{"secret": json.Number("1")},
		want: []string{"input.secret"},
	},
	{
		name: "a mocked type test reads its operand whole, in every rule",
		modules: map[string]string{"p.rego": `package p
t if is_object(input.x)
f(v) if v.secret == 1
allow if { t with is_object as f }`},
		path: "p.allow",
		seed: map[string]any{"x": map[string]any{"secret": json.Number("1")}},
		want: []string{"input.x"},
	},
	{
		name: "a mocked type_name reads its operand whole",
		modules: map[string]string{"p.rego": `package p
n := type_name(input.x)
out := m if { m := n with type_name as json.marshal }`},
		path: "p.out",
		seed: map[string]any{"x": map[string]any{"k": "v"}},
		want: []string{"input.x"},
	},
	{
		name: "a non-deterministic built-in as a mock value",
		modules: map[string]string{"p.rego": `package p
f(_, n) := n
r := x if { x := f("k", 1000000000) with f as rand.intn }`},
		path: "p.r",
		nd:   []string{"rand.intn"},
	},
	{
		name: "certificate verification depends on the clock",
		modules: map[string]string{"p.rego": `package p
valid if { [ok, _] := crypto.x509.parse_and_verify_certificates(input.chain); ok }`},
		path: "p.valid",
		want: []string{"input.chain"},
		nd:   []string{"crypto.x509.parse_and_verify_certificates"},
	},
	{
		name: "object.get on a subtree reads it whole",
		modules: map[string]string{"p.rego": `package p
allow if object.get(input.ctx, "k", 0) > 1`},
		path: "p.allow",
		seed: map[string]any{"ctx": map[string]any{"k": json.Number("5")}},
		want: []string{"input.ctx"},
	},
	{
		name: "a function given an input value, and one reading input itself",
		modules: map[string]string{"p.rego": `package p
f(x) := x.a
g(y) := y if input.z
allow if { f(input.obj) == 1; g(2) == 2 }`},
		path: "p.allow",
		seed: map[string]any{"obj": map[string]any{"a": json.Number("1")}, "z": true},
		want: []string{"input.obj", "input.z"},
	},
	{
		name: "a rule whose value is an input subtree",
		modules: map[string]string{"p.rego": `package p
r := input.obj
allow if r.k == 1`},
		path: "p.allow",
		seed: map[string]any{"obj": map[string]any{"k": json.Number("1")}},
		want: []string{"input.obj"},
	},
	{
		name: "rules and functions in other packages, through imports",
		modules: map[string]string{
			"p.rego": `package p
import data.lib
import data.lib.util.norm
allow if { lib.check; norm(input.name) == "x" }`,
			"lib.rego": `package lib
check if input.lib_field == 1
other if input.never_reached`,
			"util.rego": `package lib.util
norm(s) := lower(s) if input.locale == "en"`,
		},
		path: "p.allow",
		seed: map[string]any{"lib_field": json.Number("1"), "locale": "en", "name": "X"},
		want: []string{"input.lib_field", "input.locale", "input.name"},
	},
	{
		name: "a dynamic reference into data reaches every rule under its prefix",
		modules: map[string]string{
			"p.rego": `package p
allow if { some k; data.lib[k] == true }`,
			"lib.rego": `package lib
a if input.a
b if input.b`,
			"other.rego": `package other
c if input.c`,
		},
		path: "p.allow",
		seed: map[string]any{"a": true},
		want: []string{"input.a", "input.b"},
	},
	{
		name: "the whole data document reaches every rule",
		modules: map[string]string{
			"p.rego": `package p
allow if { some k; data[k].c }`,
			"other.rego": `package other
c if input.c`,
		},
		path: "p.allow",
		seed: map[string]any{"c": true},
		want: []string{"input.c"},
	},
	{
		name: "a package path reaches all of its rules",
		modules: map[string]string{"p.rego": `package p
a if input.a
b := input.b`},
		path: "p",
		seed: map[string]any{"a": true, "b": json.Number("3")},
		want: []string{"input.a", "input.b"},
	},
	{
		name: "rules not reachable contribute nothing",
		modules: map[string]string{"p.rego": `package p
allow if input.a
unrelated if input.secret`},
		path: "p.allow",
		seed: map[string]any{"a": true, "secret": true},
		want: []string{"input.a"},
	},
	{
		name: "integer indexes, keys that are not identifiers, negative index",
		modules: map[string]string{"p.rego": `package p
allow if { input.xs[0].name == "a"; input["odd key"] == 1; input.ys[-1] == 2 }`},
		path: "p.allow",
		seed: map[string]any{"xs": []any{map[string]any{"name": "a"}}, "odd key": json.Number("1"), "ys": []any{json.Number("2")}},
		want: []string{`input["odd key"]`, "input.xs[0].name", "input.ys"},
	},
	{
		name: "import of an input path",
		modules: map[string]string{"p.rego": `package p
import input.context as ctx
allow if ctx.agent.level > 2`},
		path: "p.allow",
		seed: map[string]any{"context": map[string]any{"agent": map[string]any{"level": json.Number("3")}}},
		want: []string{"input.context.agent.level"},
	},
	{
		name: "else chains, defaults and heads",
		modules: map[string]string{"p.rego": `package p
default level := 0
level := input.a if input.x else := input.b if input.y
out := {"v": input.v, "k": level}`},
		path: "p.out",
		seed: map[string]any{"x": true, "a": json.Number("1"), "v": "v"},
		want: []string{"input.a", "input.b", "input.v", "input.x", "input.y"},
	},
	{
		name: "comprehensions over a subtree",
		modules: map[string]string{"p.rego": `package p
names := {n | some e in input.list; n := e.name}
allow if count(names) > 0`},
		path: "p.allow",
		seed: map[string]any{"list": []any{map[string]any{"name": "n"}}},
		want: []string{"input.list"},
	},
	{
		name: "ref heads with variables are reached through their ground prefix",
		modules: map[string]string{"p.rego": `package p
a.b[k] := 1 if k := input.key
allow if data.p.a.b.x == 1`},
		path: "p.allow",
		seed: map[string]any{"key": "x"},
		want: []string{"input.key"},
	},
	{
		name: "a type test on a constant input path reads only the type",
		modules: map[string]string{"p.rego": `package p
present if is_object(input.request)
kind := type_name(input.other)
allow if { present; input.request.kind == "a"; kind == "string" }`},
		path: "p.allow",
		want: []string{"input.request.kind", "type of input.other", "type of input.request"},
		seed: map[string]any{"request": map[string]any{"kind": "a", "id": "r1"}, "other": "s"},
	},
	{
		name: "a variable given only to a type test reads only the type",
		modules: map[string]string{"p.rego": `package p
allow if { x := input.request; is_object(x) }`},
		path: "p.allow",
		want: []string{"type of input.request"},
		seed: map[string]any{"request": map[string]any{"kind": "a"}},
	},
	{
		name: "a variable given to a type test and used otherwise reads the value whole",
		modules: map[string]string{"p.rego": `package p
allow if { x := input.request; is_object(x); x.kind == "a" }
also if { y := input.other; is_string(y); count([z | z := y]) == 1 }`},
		path: "p",
		want: []string{"input.other", "input.request"},
		seed: map[string]any{"request": map[string]any{"kind": "a"}},
	},
	{
		name: "a variable given to a type test and used in a ref head reads the value whole",
		modules: map[string]string{"p.rego": `package p
grants[role].admin := true if { role := input.role; is_string(role) }
kinds[x] contains "s" if { x := input.a; is_string(x) }
deep[x][y] := 1 if { x := input.b; is_string(x); y := input.c; is_string(y) }
flat.s[x] := 1 if { x := input.d; is_number(x) }`},
		path: "p",
		want: []string{"input.a", "input.b", "input.c", "input.d", "input.role"},
		seed: map[string]any{"role": "root", "a": "k", "b": "b1", "c": "c1", "d": json.Number("2")},
	},
	{
		name: "a variable given to a type test and used in a ref head, looked up by a key",
		modules: map[string]string{"p.rego": `package p
grants[role].admin := true if { role := input.role; is_string(role) }`},
		path: "p.grants.root.admin",
		want: []string{"input.role"},
		seed: map[string]any{"role": "root"},
	},
	{
		name: "a type test inside a subtree read whole adds nothing",
		modules: map[string]string{"p.rego": `package p
allow if { is_array(input.r.list); count(input.r) > 1 }`},
		path: "p.allow",
		want: []string{"input.r"},
		seed: map[string]any{"r": map[string]any{"list": []any{}, "x": true}},
	},
	{
		name: "a type test with a computed key reads the prefix whole",
		modules: map[string]string{"p.rego": `package p
allow if { some k; is_string(input.m[k]) }`},
		path: "p.allow",
		want: []string{"input.m"},
		seed: map[string]any{"m": map[string]any{"a": "s"}},
	},
	{
		name: "no input read",
		modules: map[string]string{"p.rego": `package p
allow if data.flag`},
		path: "p.allow",
		data: map[string]any{"flag": true},
		want: nil,
	},
	{
		name: "non-deterministic built-ins are listed",
		modules: map[string]string{"p.rego": `package p
allow if { time.now_ns() > input.deadline; rand.intn("x", 10) > 1 }`},
		path: "p.allow",
		seed: map[string]any{"deadline": json.Number("1")},
		want: []string{"input.deadline"},
		nd:   []string{"rand.intn", "time.now_ns"},
	},
}

func compile(tb testing.TB, modules map[string]string) *ast.Compiler {
	tb.Helper()
	c, err := ast.CompileModules(modules)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

func TestReadSets(t *testing.T) {
	for _, tc := range smallPolicies {
		t.Run(tc.name, func(t *testing.T) {
			a := readset.New(compile(t, tc.modules))
			rs := a.Analyze(ast.MustParseRef("data." + tc.path))
			var got []string
			if rs.Whole {
				got = []string{"input (whole)"}
				if rs.WholeWhy == "" {
					t.Errorf("whole input without a reason")
				}
			}
			for _, p := range rs.Paths {
				got = append(got, p.String())
			}
			for _, p := range rs.Types {
				got = append(got, "type of "+p.String())
			}
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("read set:\n got %q\nwant %q", got, tc.want)
			}
			if strings.Join(rs.Nondeterministic, ",") != strings.Join(tc.nd, ",") {
				t.Errorf("non-deterministic: got %v, want %v", rs.Nondeterministic, tc.nd)
			}
			if rs.Cacheable() != (len(tc.nd) == 0) {
				t.Errorf("Cacheable() = %v", rs.Cacheable())
			}
		})
	}
}

func storeFor(tb testing.TB, data map[string]any) storage.Store {
	tb.Helper()
	if data == nil {
		data = map[string]any{}
	}
	return inmem.NewFromObject(data)
}
