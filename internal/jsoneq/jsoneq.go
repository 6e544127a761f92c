// Package jsoneq compares decoded JSON values the way a policy does: numbers
// by value (1, 1.0 and 1e0 are equal), everything else structurally. The
// differential tests use it to compare answers from different evaluators.
package jsoneq

import (
	"encoding/json"
	"fmt"
	"math/big"
	"sort"
	"strings"
)

// Equal reports whether a and b are the same JSON value.
func Equal(a, b any) bool { return Diff(a, b) == "" }

// Diff returns "" when a and b are equal, else the path of the first difference.
func Diff(a, b any) string { return diff("$", a, b) }

// SameText reports whether a and b encode to the same JSON text: Equal, and
// each number spelt the same (1 and 1.0 differ). A client reads the text, so
// fast paths that compute a number must print it as full evaluation does.
func SameText(a, b any) bool {
	ja, errA := json.Marshal(a)
	jb, errB := json.Marshal(b)
	return errA == nil && errB == nil && string(ja) == string(jb)
}

func num(v any) (*big.Float, bool) {
	var s string
	switch x := v.(type) {
	case json.Number:
		s = x.String()
	case float64:
		s = fmt.Sprint(x)
	case int:
		s = fmt.Sprint(x)
	case int64:
		s = fmt.Sprint(x)
	default:
		return nil, false
	}
	f, _, err := big.ParseFloat(s, 10, 200, big.ToNearestEven)
	return f, err == nil
}

func diff(path string, a, b any) string {
	if na, ok := num(a); ok {
		nb, ok := num(b)
		if !ok || na.Cmp(nb) != 0 {
			return fmt.Sprintf("%s: %v != %v", path, a, b)
		}
		return ""
	}
	switch x := a.(type) {
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok {
			return fmt.Sprintf("%s: object != %T", path, b)
		}
		keys := make([]string, 0, len(x)+len(y))
		for k := range x {
			keys = append(keys, k)
		}
		for k := range y {
			if _, ok := x[k]; !ok {
				keys = append(keys, k)
			}
		}
		sort.Strings(keys)
		for _, k := range keys {
			va, oka := x[k]
			vb, okb := y[k]
			if oka != okb {
				return fmt.Sprintf("%s.%s: present %v != %v", path, k, oka, okb)
			}
			if d := diff(path+"."+k, va, vb); d != "" {
				return d
			}
		}
		return ""
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return fmt.Sprintf("%s: %s != %s", path, short(a), short(b))
		}
		for i := range x {
			if d := diff(fmt.Sprintf("%s[%d]", path, i), x[i], y[i]); d != "" {
				return d
			}
		}
		return ""
	default:
		if a != b {
			return fmt.Sprintf("%s: %v != %v", path, a, b)
		}
		return ""
	}
}

func short(v any) string {
	b, _ := json.Marshal(v)
	s := string(b)
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return strings.TrimSpace(s)
}
