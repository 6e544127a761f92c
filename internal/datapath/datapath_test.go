package datapath

import (
	"errors"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
)

func TestParseAndOf(t *testing.T) {
	for _, tc := range []struct {
		path string
		ref  string // "" when Parse refuses
	}{
		{"", "data"},
		{"acgs/main/decision", "data.acgs.main.decision"},
		{"/x/arr/1/", "data.x.arr[1]"},
		{"x/-2", "data.x[-2]"},
		{"x/1.5", `data.x["1.5"]`},
		{"x/01", `data.x[1]`},
		{"x//y", ""},
		{"//x", "data.x"},
		// Escapes are undone segment by segment, as OPA's server does.
		{"x/a%2Fb", `data.x["a/b"]`},
		{"x/a%2fb/c", `data.x["a/b"].c`},
		{"x/a%252Fb", `data.x["a%2Fb"]`},
		{"x/%31", "data.x[1]"},
		{"x/100%", `data.x["100%"]`},
		{"x/%zz", `data.x["%zz"]`},
	} {
		ref, err := Parse(tc.path)
		if cerr := Check(tc.path); (cerr == nil) != (err == nil) {
			t.Errorf("Check(%q) = %v, Parse refused with %v", tc.path, cerr, err)
		}
		if tc.ref == "" {
			if err == nil {
				t.Errorf("Parse(%q) = %v, want an error", tc.path, ref)
			}
			continue
		}
		if err != nil || ref.String() != tc.ref {
			t.Errorf("Parse(%q) = %v, %v; want %s", tc.path, ref, err, tc.ref)
		}
	}
	for _, tc := range []struct {
		ref, path string // path "" when no path names it
	}{
		{"data.acgs.main.decision", "acgs/main/decision"},
		{"data.x.arr[1]", "x/arr/1"},
		{`data.x["1"]`, ""},          // Parse would read 1 as a number
		{`data.x["a/b"]`, "x/a%2Fb"}, // one key holding a slash: one segment
		{`data.x["a/b"].c`, "x/a%2Fb/c"},
		{`data.x["100%"]`, "x/100%25"},
		{`data.x["a%2Fb"]`, "x/a%252Fb"},
		{`data.x["%31"]`, "x/%2531"},
		{`data.x[""]`, ""},
		{"data.x[1.5]", ""},
		{"data.x[y]", ""},
	} {
		got, err := Of(ast.MustParseRef(tc.ref))
		if tc.path == "" {
			if !errors.Is(err, ErrNoPath) {
				t.Errorf("Of(%s) = %q, %v; want ErrNoPath", tc.ref, got, err)
			}
			continue
		}
		if err != nil || got != tc.path {
			t.Errorf("Of(%s) = %q, %v; want %q", tc.ref, got, err, tc.path)
		}
		// Parse reads the path back as the same reference.
		if back, err := Parse(got); err != nil || !back.Equal(ast.MustParseRef(tc.ref)) {
			t.Errorf("Parse(Of(%s)) = %v, %v", tc.ref, back, err)
		}
	}
}
