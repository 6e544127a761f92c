package inputgen

import (
	"context"
	"io/fs"
	"reflect"
	"regexp"
	"testing"

	"github.com/open-policy-agent/opa/v1/rego"

	"github.com/acgs-lite/acgs/policies"
)

// plainName is a name as the bundle's lists and the generator's domains
// write it: printable ASCII, lower-case.
var plainName = regexp.MustCompile(`^[a-z0-9_.]*$`)

// TestRespelledNamesAreGenerated: the inputs hold actions and tool names
// that are not spelled as any list writes them (case, whitespace,
// separators, invisible characters), prohibited ones among them, and tool
// calls, so that the differential tests compare the evaluators on the
// name key too.
func TestRespelledNamesAreGenerated(t *testing.T) {
	prohibited := map[string]bool{}
	for _, a := range Prohibited {
		prohibited[a] = true
	}
	var actions, respelledProhibited, toolCalls, respelledTools int
	for _, in := range New(1).Inputs(2000) {
		if a, ok := in["action"].(string); ok && !plainName.MatchString(a) {
			actions++
			if prohibited[nameKey(t, a)] {
				respelledProhibited++
			}
		}
		if tc, ok := in["tool_call"].(map[string]any); ok && in["type"] == "tool_call" {
			toolCalls++
			if n, ok := tc["name"].(string); ok && !plainName.MatchString(n) {
				respelledTools++
			}
		}
	}
	t.Logf("in 2,000 inputs: %d respelled actions (%d prohibited), %d tool calls (%d respelled names)", actions, respelledProhibited, toolCalls, respelledTools)
	if actions < 200 || respelledProhibited < 40 || toolCalls < 60 || respelledTools < 20 {
		t.Errorf("in 2,000 inputs: %d respelled actions (%d prohibited), %d tool calls (%d respelled names); want at least 200 (40), 60 (20)",
			actions, respelledProhibited, toolCalls, respelledTools)
	}
}

// TestRespellingsHaveTheNameKey: every respelling folds to the name it
// respells, by the bundle's own acgs.text.key, and most are not that name.
func TestRespellingsHaveTheNameKey(t *testing.T) {
	g := New(3)
	names := append(append(append([]string{}, Prohibited...), NeedsExplanation...), "data.read_public", "files__read_file", "shell__exec", "db__delete_record")
	same := 0
	for i := 0; i < 400; i++ {
		name := names[i%len(names)]
		r := g.Respell(name)
		if r == name {
			same++
		}
		if k := nameKey(t, r); k != name {
			t.Errorf("Respell(%q) = %q, whose key is %q", name, r, k)
		}
	}
	if same > 40 {
		t.Errorf("%d of 400 respellings are the name itself", same)
	}
}

// TestDeterministicPerSeed: a seed gives the same inputs every time (the
// respellings and tool calls included); another seed gives others.
func TestDeterministicPerSeed(t *testing.T) {
	a, b := New(9).Inputs(500), New(9).Inputs(500)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("two generators of seed 9 gave different inputs")
	}
	if reflect.DeepEqual(a, New(10).Inputs(500)) {
		t.Fatal("seeds 9 and 10 gave the same inputs")
	}
}

// TestNoiseDeterministicPerSeed: a seed gives the same noise every time,
// whatever order Go iterates the input's maps in (it added noise to the
// fields in map order, so two generators of one seed gave different noise,
// and from then on different random numbers).
func TestNoiseDeterministicPerSeed(t *testing.T) {
	for _, noise := range []struct {
		name string
		add  func(*Gen, map[string]any) map[string]any
	}{
		{"WithNoise", (*Gen).WithNoise},
		{"WithRequestNoise", (*Gen).WithRequestNoise},
	} {
		a, b := New(9), New(9)
		for i := range 1000 {
			in := a.Input()
			if !reflect.DeepEqual(in, b.Input()) {
				t.Fatalf("%s: input %d differs between two generators of seed 9", noise.name, i)
			}
			x, y := noise.add(a, in), noise.add(b, in)
			if !reflect.DeepEqual(x, y) {
				t.Fatalf("%s: input %d has different noise from two generators of seed 9:\n%v\n%v", noise.name, i, x, y)
			}
		}
	}
}

var keyQuery *rego.PreparedEvalQuery

// nameKey is acgs.text.key(s), evaluated on the bundle's text.rego.
func nameKey(t *testing.T, s string) string {
	t.Helper()
	if keyQuery == nil {
		src, err := fs.ReadFile(policies.FS, "acgs/text.rego")
		if err != nil {
			t.Fatal(err)
		}
		q, err := rego.New(rego.Query("data.acgs.text.key(input)"), rego.Module("text.rego", string(src))).PrepareForEval(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		keyQuery = &q
	}
	rs, err := keyQuery.Eval(context.Background(), rego.EvalInput(s))
	if err != nil || len(rs) != 1 {
		t.Fatalf("text.key(%q): %v %v", s, rs, err)
	}
	k, _ := rs[0].Expressions[0].Value.(string)
	return k
}
