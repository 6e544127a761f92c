package vm

import (
	"math/bits"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
)

// Number comparison as ast.NumberCompare gives it (what topdown's <, >, ==,
// max, min and every Term.Equal of two numbers use), without its math/big
// fallback for numbers of more than 18 significant digits, which the VM's
// own arithmetic produces (its results print up to 20 digits) and inputs
// carry. ast.NumberCompare is exact except in one case: two numbers that
// both end in a zero or a dot after a fractional part ("0.50") and that it
// cannot compare as int64s or small decimals are equal when their float64
// values are; that case, and whatever parseNumber does not read, is left to
// it. TestNumCompareMatchesNumberCompare compares the two.

// pow10w[k] is 10^k as a 128-bit integer (hi, lo), k <= 38.
var pow10w = func() (t [39][2]uint64) {
	t[0] = [2]uint64{0, 1}
	for k := 1; k < len(t); k++ {
		hi, lo := bits.Mul64(t[k-1][1], 10)
		t[k] = [2]uint64{t[k-1][0]*10 + hi, lo}
	}
	return t
}()

func less128(ahi, alo, bhi, blo uint64) bool { return ahi < bhi || (ahi == bhi && alo < blo) }

// ndigits is the number of decimal digits of a nonzero 128-bit integer.
func ndigits(hi, lo uint64) int {
	n := 1
	for n < len(pow10w) && !less128(hi, lo, pow10w[n][0], pow10w[n][1]) {
		n++
	}
	return n
}

// cmpDecimal compares two parsed numbers exactly.
func cmpDecimal(x, y decimalNum) int {
	sx, sy := sign(x), sign(y)
	if sx != sy {
		if sx < sy {
			return -1
		}
		return 1
	}
	if sx == 0 {
		return 0
	}
	c := cmpMagnitude(x, y)
	if sx < 0 {
		return -c
	}
	return c
}

func sign(d decimalNum) int {
	switch {
	case d.zero():
		return 0
	case d.neg:
		return -1
	}
	return 1
}

// cmpMagnitude compares |x| and |y|, both nonzero.
func cmpMagnitude(x, y decimalNum) int {
	nx, ny := ndigits(x.hi, x.lo), ndigits(y.hi, y.lo)
	if ox, oy := nx+x.e10, ny+y.e10; ox != oy {
		if ox < oy {
			return -1
		}
		return 1
	}
	// Same order of magnitude: scale the one with the larger exponent to
	// the other's; it then has as many digits as the other (<= 38).
	xh, xl, yh, yl := x.hi, x.lo, y.hi, y.lo
	switch {
	case x.e10 > y.e10:
		xh, xl = mul128(xh, xl, pow10w[x.e10-y.e10])
	case y.e10 > x.e10:
		yh, yl = mul128(yh, yl, pow10w[y.e10-x.e10])
	}
	switch {
	case less128(xh, xl, yh, yl):
		return -1
	case less128(yh, yl, xh, xl):
		return 1
	}
	return 0
}

// mul128 is (hi, lo) * p, which the caller knows fits 128 bits.
func mul128(hi, lo uint64, p [2]uint64) (uint64, uint64) {
	h, l := bits.Mul64(lo, p[1])
	return h + hi*p[1] + lo*p[0], l
}

// trailingFraction is ast.NumberCompare's test for a non-integral value
// written with a trailing zero or dot.
func trailingFraction(s string) bool {
	if strings.IndexByte(s, '.') == -1 {
		return false
	}
	t := strings.TrimRight(s, ".0")
	return t != s && strings.IndexByte(t, '.') != -1
}

// numCompare is ast.NumberCompare(x, y).
func numCompare(x, y ast.Number) int {
	xs, ys := string(x), string(y)
	if xs == ys {
		return 0
	}
	dx, ok1 := parseNumber(xs)
	dy, ok2 := parseNumber(ys)
	if !ok1 || !ok2 || (trailingFraction(xs) && trailingFraction(ys)) {
		return ast.NumberCompare(x, y)
	}
	return cmpDecimal(dx, dy)
}

// compareValues is a.Compare(b), with numCompare for two numbers.
func compareValues(a, b ast.Value) int {
	if x, ok := a.(ast.Number); ok {
		if y, ok := b.(ast.Number); ok {
			return numCompare(x, y)
		}
	}
	return a.Compare(b)
}

// termsEqual is x.Equal(y), with numCompare for two numbers.
func termsEqual(x, y *ast.Term) bool {
	if x == y {
		return true
	}
	if x == nil || y == nil {
		return false
	}
	if a, ok := x.Value.(ast.Number); ok {
		if b, ok := y.Value.(ast.Number); ok {
			return numCompare(a, b) == 0
		}
		return false
	}
	return x.Equal(y)
}

// sameText says whether x and y, equal by termsEqual, are also written
// alike: numbers equal by value can differ in text (1 and 1.0, 100 and
// 1e2), and where topdown keeps one text and the VM another, a rule built
// from the value reads differently (json.marshal, sprintf, a result).
func sameText(x, y *ast.Term) bool {
	if x == y {
		return true
	}
	switch a := x.Value.(type) {
	case ast.Number:
		b, ok := y.Value.(ast.Number)
		return ok && a == b
	case *ast.Array:
		b, ok := y.Value.(*ast.Array)
		if !ok || a.Len() != b.Len() {
			return false
		}
		for i := range a.Len() {
			if !sameText(a.Elem(i), b.Elem(i)) {
				return false
			}
		}
		return true
	case ast.Set:
		b, ok := y.Value.(ast.Set)
		if !ok || a.Len() != b.Len() {
			return false
		}
		// Sorted by value, equal members stand at the same places.
		as, bs := a.Slice(), b.Slice()
		for i := range as {
			if !sameText(as[i], bs[i]) {
				return false
			}
		}
		return true
	case ast.Object:
		b, ok := y.Value.(ast.Object)
		if !ok || a.Len() != b.Len() {
			return false
		}
		ai, bi := a.KeysIterator(), b.KeysIterator() // sorted by value
		for ak, ok := ai.Next(); ok; ak, ok = ai.Next() {
			bk, _ := bi.Next()
			if !sameText(ak, bk) || !sameText(a.Get(ak), b.Get(bk)) {
				return false
			}
		}
		return true
	}
	return true // strings, booleans and null are equal only when written alike
}
