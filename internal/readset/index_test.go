package readset

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
)

// comparable is what the prefix index must answer: x and y equal term by
// term over their common length (one a prefix of the other).
func comparable(x, y ast.Ref) bool {
	n := min(len(x), len(y))
	for i := range n {
		if !x[i].Equal(y[i]) {
			return false
		}
	}
	return true
}

// TestPrefixIndexMatchesAScan: the prefix index gives, for random
// references, exactly the rules a scan of every rule with comparable
// gives, in the same order once sorted; among the terms are numbers that
// are equal but written differently (1 and 1.0), three numbers of which one
// is Equal to the two others and those two differ, strings that print like
// numbers and variables, and the empty prefix.
func TestPrefixIndexMatchesAScan(t *testing.T) {
	terms := []*ast.Term{
		ast.VarTerm("data"), ast.StringTerm("a"), ast.StringTerm("b"), ast.StringTerm("1"),
		ast.NumberTerm("1"), ast.NumberTerm("1.0"), ast.NumberTerm("2"), ast.BooleanTerm(true), ast.VarTerm("a"),
		// Equal is not transitive here: x equals y and z, y and z differ.
		ast.NumberTerm("0.1"), ast.NumberTerm("0.100000000000000005550"), ast.NumberTerm("0.10000000000000000000"),
	}
	rnd := rand.New(rand.NewPCG(2026, 12))
	ref := func(maxLen int) ast.Ref {
		r := make(ast.Ref, rnd.IntN(maxLen+1))
		for i := range r {
			r[i] = terms[rnd.IntN(len(terms))]
		}
		return r
	}
	for round := range 50 {
		var prefixes []ast.Ref
		index := &prefixNode{}
		for i := range 40 {
			p := ref(4)
			prefixes = append(prefixes, p)
			index.add(p, i)
		}
		for q := range 200 {
			probe := ref(5)
			var want []int
			for i, p := range prefixes {
				if comparable(probe, p) {
					want = append(want, i)
				}
			}
			got := index.match(probe, nil)
			slices.Sort(got)
			if !slices.Equal(got, want) {
				t.Fatalf("round %d probe %d %v: index %v, scan %v (prefixes %v)", round, q, probe, got, want, fmt.Sprint(prefixes))
			}
		}
	}
}
