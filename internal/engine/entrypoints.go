package engine

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/acgs-lite/acgs/internal/datapath"
	"github.com/acgs-lite/acgs/internal/plan"
)

// entryPoint is a document the bundle declares an entry point with OPA's
// own annotation (`entrypoint: true`, as `opa build -e` reads it): the
// engine prepares it, computes its read set and builds its seed plans at
// activation, so that its first request pays for none of that. Everything
// the engine knows of a policy comes from such declarations; none of the
// constitution's names is written in the engine.
type entryPoint struct {
	path string // slash-separated, as in the API: "acgs/main/decision"
	// keys are the plan keys declared under custom.plans (input refs such
	// as input.type), sorted; nil: the engine's default keys apply.
	keys []string
	// seeds are, per key, the values to build plans for at activation.
	seeds map[string][]any
}

// maxSeedPlans bounds the plans built at activation for one entry point
// (the product of its seed lists).
const maxSeedPlans = 4096

// entryPoints reads the entry points the bundle's annotations declare, with
// their plan keys and seeds resolved against the bundle's data:
//
//	# METADATA
//	# entrypoint: true
//	# custom:
//	#   plans:
//	#     input.type: [constitutional_evaluation, action_authorization]
//	#     input.action:
//	#       - data: acgs.config.prohibited_actions
//
// A seed is a JSON scalar, or {data: dotted.path} naming a scalar or an
// array of scalars in the bundle's data. A malformed declaration refuses the
// bundle: an operator would otherwise lose a fast path without a word.
func entryPoints(c *ast.Compiler, data map[string]any) ([]entryPoint, error) {
	var out []entryPoint
	for _, ar := range c.GetAnnotationSet().Flatten() {
		a := ar.Annotations
		if a == nil || !a.Entrypoint {
			continue
		}
		path, err := datapath.Of(ar.Path)
		if err != nil {
			return nil, fmt.Errorf("entry point %s: %w", ar.Path, err)
		}
		if slices.ContainsFunc(out, func(e entryPoint) bool { return e.path == path }) {
			continue // several definitions of one document, each annotated
		}
		ep := entryPoint{path: path}
		if raw, ok := a.Custom["plans"]; ok {
			if ep.keys, ep.seeds, err = planSeeds(raw, data); err != nil {
				return nil, fmt.Errorf("entry point %s: custom.plans: %w", path, err)
			}
		}
		out = append(out, ep)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].path < out[j].path })
	return out, nil
}

func planSeeds(raw any, data map[string]any) ([]string, map[string][]any, error) {
	m, ok := raw.(map[string]any)
	if !ok {
		return nil, nil, fmt.Errorf("must map input refs (input.type, ...) to seed lists, not %T", raw)
	}
	keys := make([]string, 0, len(m))
	seeds := make(map[string][]any, len(m))
	for k, v := range m {
		ref, err := ast.ParseRef(k)
		if err != nil || !ref.HasPrefix(ast.InputRootRef) || len(ref) < 2 || !ref.IsGround() {
			return nil, nil, fmt.Errorf("%q is not an input field (accepted: refs such as input.type)", k)
		}
		for _, t := range ref[1:] {
			if _, ok := t.Value.(ast.String); !ok {
				return nil, nil, fmt.Errorf("%q: every part of a plan key must be a string", k)
			}
		}
		keys = append(keys, k)
		list, ok := v.([]any)
		if !ok {
			list = []any{v}
		}
		for _, item := range list {
			vals, err := seedValues(item, data)
			if err != nil {
				return nil, nil, fmt.Errorf("%s: %w", k, err)
			}
			seeds[k] = append(seeds[k], vals...)
		}
	}
	sort.Strings(keys)
	return keys, seeds, nil
}

func seedValues(item any, data map[string]any) ([]any, error) {
	switch x := item.(type) {
	case string, bool, nil:
		return []any{x}, nil
	case float64, int, int64, uint64:
		// As the engine's inputs spell numbers (json.Number), so that a
		// seed's plan key is the key of a request with that number.
		b, _ := json.Marshal(x)
		return []any{json.Number(b)}, nil
	case map[string]any:
		p, ok := x["data"].(string)
		if !ok || len(x) != 1 {
			return nil, fmt.Errorf("a seed object must be {data: dotted.path}, not %v", x)
		}
		var v any = data
		for _, part := range strings.Split(strings.TrimPrefix(p, "data."), ".") {
			obj, ok := v.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("data.%s is not in the bundle's data", strings.TrimPrefix(p, "data."))
			}
			if v, ok = obj[part]; !ok {
				return nil, fmt.Errorf("data.%s is not in the bundle's data", strings.TrimPrefix(p, "data."))
			}
		}
		list, ok := v.([]any)
		if !ok {
			list = []any{v}
		}
		for _, e := range list {
			switch e.(type) {
			case map[string]any, []any:
				return nil, fmt.Errorf("data.%s holds an object or array; seeds are scalars", strings.TrimPrefix(p, "data."))
			}
		}
		return list, nil
	}
	return nil, fmt.Errorf("a seed is a scalar or {data: dotted.path}, not %T", item)
}

// seedInputs is the product of ep's seed lists as inputs (at most
// maxSeedPlans; truncated says the product was larger).
func (ep entryPoint) seedInputs() (inputs []map[string]any, truncated bool) {
	inputs = []map[string]any{{}}
	for _, k := range ep.keys {
		vals := ep.seeds[k]
		if len(vals) == 0 {
			continue
		}
		parts := strings.Split(strings.TrimPrefix(k, "input."), ".")
		next := make([]map[string]any, 0, len(inputs)*len(vals))
		for _, in := range inputs {
			for _, v := range vals {
				if len(next) == maxSeedPlans {
					return next, true
				}
				c := deepCopyMap(in)
				plan.SetPath(c, parts, v)
				next = append(next, c)
			}
		}
		inputs = next
	}
	if len(inputs) == 1 && len(inputs[0]) == 0 {
		return nil, false
	}
	return inputs, false
}

func deepCopyMap(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		if sub, ok := v.(map[string]any); ok {
			v = deepCopyMap(sub)
		}
		out[k] = v
	}
	return out
}
