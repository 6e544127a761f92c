package vm

import "github.com/open-policy-agent/opa/v1/ast"

// mergeValues merges the base document a with the virtual document b as
// topdown does when a reference covers both: objects merge key by key,
// recursively; on any other overlap a's value wins.
func mergeValues(a, b ast.Value) ast.Value {
	ao, ok1 := a.(ast.Object)
	bo, ok2 := b.(ast.Object)
	if !ok1 || !ok2 {
		return a
	}
	out := ast.NewObjectWithCapacity(ao.Len() + bo.Len())
	ao.Foreach(func(k, v *ast.Term) {
		if w := bo.Get(k); w != nil {
			if _, ok := v.Value.(ast.Object); ok {
				if _, ok := w.Value.(ast.Object); ok {
					out.Insert(k, ast.NewTerm(mergeValues(v.Value, w.Value)))
					return
				}
			}
		}
		out.Insert(k, v)
	})
	bo.Foreach(func(k, v *ast.Term) {
		if ao.Get(k) == nil {
			out.Insert(k, v)
		}
	})
	return out
}

// upsert returns root with the value at path replaced by v, for
// `with input.a.b as v` (and data): intermediate values that are missing or
// not objects become objects, as topdown's with does. root is not modified:
// the objects along the path are copied.
func upsert(root *ast.Term, path []*ast.Term, v *ast.Term) *ast.Term {
	if len(path) == 0 {
		return v
	}
	if root == nil {
		return makeTree(path, v)
	}
	obj, ok := root.Value.(ast.Object)
	if !ok {
		return makeTree(path, v)
	}
	cpy := ast.NewObjectWithCapacity(obj.Len() + 1)
	obj.Foreach(func(k, x *ast.Term) { cpy.Insert(k, x) })
	if len(path) == 1 {
		cpy.Insert(path[0], v)
		return ast.NewTerm(cpy)
	}
	child := obj.Get(path[0])
	if child != nil {
		if _, ok := child.Value.(ast.Object); ok {
			cpy.Insert(path[0], upsert(child, path[1:], v))
			return ast.NewTerm(cpy)
		}
	}
	cpy.Insert(path[0], makeTree(path[1:], v))
	return ast.NewTerm(cpy)
}

// makeTree nests v in objects keyed by path.
func makeTree(path []*ast.Term, v *ast.Term) *ast.Term {
	for i := len(path) - 1; i >= 0; i-- {
		v = ast.ObjectTerm(ast.Item(path[i], v))
	}
	return v
}
