package engine

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/acgs-lite/acgs/internal/inputgen"
	"github.com/acgs-lite/acgs/policies"
)

// TestInputValueEqualsInterfaceToValue: the engine's input conversion gives
// the value ast.InterfaceToValue gives, and fails where it fails, on
// generated inputs (with noise fields), on scalars and on invalid numbers.
func TestInputValueEqualsInterfaceToValue(t *testing.T) {
	ctx := context.Background()
	e, err := New(ctx, FSSource{FS: policies.FS, Name: "embedded"}, Options{ConstitutionalHash: inputgen.Hash, EvalTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	s := e.cur.Load()
	if len(s.strs) < 100 {
		t.Fatalf("only %d interned strings", len(s.strs))
	}
	check := func(x any) {
		t.Helper()
		want, werr := ast.InterfaceToValue(x)
		got, err := s.inputValue(x)
		if (werr != nil) != (err != nil) {
			t.Fatalf("%v: error %v, ast.InterfaceToValue's %v", x, err, werr)
		}
		if werr != nil {
			if err.Error() != werr.Error() {
				t.Fatalf("%v: error %q, ast.InterfaceToValue's %q", x, err, werr)
			}
			return
		}
		if ast.Compare(got, want) != 0 || got.String() != want.String() {
			t.Fatalf("got %v\nwant %v", got, want)
		}
	}
	for _, x := range []any{nil, true, false, "", "action", json.Number("0"), json.Number("1.50"), json.Number("-7"), json.Number("1e400"),
		json.Number("1e999999999999"), json.Number("12345678901234567890"), []any{}, map[string]any{}, 1.5, 3, []string{"a"},
		map[string]any{"a": []any{json.Number("1e99999999999999")}}, map[string]any{"f": 2.5, "m": map[string]string{"x": "y"}}} {
		check(x)
	}
	n := 10000
	if testing.Short() {
		n = 1000
	}
	g := inputgen.New(31)
	for _, in := range g.Inputs(n) {
		check(in)
		check(g.WithNoise(in))
	}
}
