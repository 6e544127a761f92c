package jsoneq

import (
	"encoding/json"
	"testing"
)

func TestEqualAndSameText(t *testing.T) {
	for _, tc := range []struct {
		name     string
		a, b     any
		equal    bool
		sameText bool
	}{
		{"same integer", json.Number("1"), json.Number("1"), true, true},
		{"1 and 1.0: one value, two spellings", json.Number("1"), json.Number("1.0"), true, false},
		{"number kinds compare by value", 2, json.Number("2e0"), true, false},
		{"different numbers", json.Number("0.3"), json.Number("0.30000000000000004"), false, false},
		{"objects ignore key order", map[string]any{"a": 1, "b": "x"}, map[string]any{"b": "x", "a": 1}, true, true},
		{"nested spelling", []any{map[string]any{"w": json.Number("0.5")}}, []any{map[string]any{"w": json.Number("0.50")}}, true, false},
		{"missing key", map[string]any{"a": 1}, map[string]any{}, false, false},
		{"number and string", json.Number("1"), "1", false, false},
		{"nil and nil", nil, nil, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Equal(tc.a, tc.b); got != tc.equal {
				t.Errorf("Equal = %v, want %v (diff %q)", got, tc.equal, Diff(tc.a, tc.b))
			}
			if got := SameText(tc.a, tc.b); got != tc.sameText {
				t.Errorf("SameText = %v, want %v", got, tc.sameText)
			}
		})
	}
}
