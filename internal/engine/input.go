package engine

import (
	"encoding/json"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/acgs-lite/acgs/internal/cache"
)

// maxInterned bounds the strings a snapshot interns for input conversion,
// and maxInternedLen their length.
const (
	maxInterned    = 4096
	maxInternedLen = 128
)

// internStrings returns the strings of the policy's modules and data
// (object keys and string values, up to maxInterned), each as one shared
// ast.String value: input conversion gives an input string that is one of
// them the shared value instead of a new one, and most of an input's keys
// and many of its values (actions, types, categories) are.
func internStrings(mods map[string]*ast.Module, data map[string]any) map[string]ast.Value {
	out := make(map[string]ast.Value, 256)
	add := func(s string) {
		if len(out) < maxInterned && len(s) <= maxInternedLen {
			if _, ok := out[s]; !ok {
				out[s] = ast.String(s)
			}
		}
	}
	for _, m := range mods {
		ast.WalkTerms(m, func(t *ast.Term) bool {
			if s, ok := t.Value.(ast.String); ok {
				add(string(s))
			}
			return false
		})
	}
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case string:
			add(x)
		case map[string]any:
			for k, e := range x {
				add(k)
				walk(e)
			}
		case []any:
			for _, e := range x {
				walk(e)
			}
		}
	}
	walk(data)
	return out
}

// inputValue converts a decoded JSON input to the AST value that
// ast.InterfaceToValue gives (an equal value, the same errors), sharing the
// snapshot's interned strings and allocating an object's terms in one block.
// Types other than those encoding/json decodes into go through
// ast.InterfaceToValue.
func (s *snapshot) inputValue(x any) (ast.Value, error) {
	switch x := x.(type) {
	case nil:
		return ast.NullValue, nil
	case bool:
		return ast.InternedTerm(x).Value, nil
	case string:
		return s.str(x), nil
	case json.Number:
		if t := ast.InternedIntNumberTermFromString(string(x)); t != nil {
			return t.Value, nil
		}
		return ast.NumberChecked(string(x))
	case []any:
		terms := make([]ast.Term, len(x))
		ptrs := make([]*ast.Term, len(x))
		for i, e := range x {
			v, err := s.inputValue(e)
			if err != nil {
				return nil, err
			}
			terms[i].Value = v
			ptrs[i] = &terms[i]
		}
		return ast.NewArray(ptrs...), nil
	case map[string]any:
		terms := make([]ast.Term, 2*len(x))
		items := make([][2]*ast.Term, len(x))
		i := 0
		for k, e := range x {
			v, err := s.inputValue(e)
			if err != nil {
				return nil, err
			}
			kt, vt := &terms[2*i], &terms[2*i+1]
			kt.Value, vt.Value = s.str(k), v
			items[i] = [2]*ast.Term{kt, vt}
			i++
		}
		return ast.NewObject(items...), nil
	default:
		return toValue(x)
	}
}

// NullInput is a request's input when the whole of it is JSON null: input
// is defined, and null; nil is no input (cache.NullInput says more).
var NullInput = cache.NullInput

// toValue is ast.InterfaceToValue, with NullInput as the null it stands for.
func toValue(x any) (ast.Value, error) {
	if x == NullInput {
		return ast.NullValue, nil
	}
	return ast.InterfaceToValue(x)
}

func (s *snapshot) str(x string) ast.Value {
	if v, ok := s.strs[x]; ok {
		return v
	}
	return ast.String(x)
}
