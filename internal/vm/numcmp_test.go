package vm

import (
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
)

// TestNumCompareMatchesNumberCompare: numCompare gives ast.NumberCompare's
// result on boundary numbers and on random pairs of every shape: integers
// in and out of int64, long fractions (the VM's arithmetic results, the
// perturbed inputs), exponents, zeros with signs, trailing zeros, and pairs
// equal or nearly equal.
func TestNumCompareMatchesNumberCompare(t *testing.T) {
	check := func(a, b string) {
		t.Helper()
		x, y := ast.Number(a), ast.Number(b)
		if got, want := numCompare(x, y), ast.NumberCompare(x, y); got != want {
			t.Fatalf("numCompare(%s, %s) = %d, ast.NumberCompare %d", a, b, got, want)
		}
		if got, want := termsEqual(ast.NewTerm(x), ast.NewTerm(y)), ast.NewTerm(x).Equal(ast.NewTerm(y)); got != want {
			t.Fatalf("termsEqual(%s, %s) = %v, Equal %v", a, b, got, want)
		}
	}
	fixed := []string{"0", "-0", "0.0", "-0.0", "0.00", "1", "-1", "1.0", "1.00", "1.5", "1.50", "0.1", "0.10", "0.3",
		"0.30000000000000004", "0.30000000000000000001", "0.29999999999999999999", "0.1000000000000000000001",
		"0.100000000000000000000", "1e2", "100", "100.0", "1E2", "1e-2", "0.01", "1e+2", "9223372036854775807",
		"9223372036854775808", "-9223372036854775808", "-9223372036854775809", "18446744073709551616",
		"123456789012345678901234567890", "123456789012345678901234567890.5", "1.2345678901234567890123456789e29",
		"99999999999999999999999999999999999999", "999999999999999999999999999999999999999", "1e38", "1e39", "1e-38",
		"0.9000000000987654321", "0.90000000009876543210", "0.9", "0.90", "2.5e-5", "0.000025", "0.0000250"}
	for _, a := range fixed {
		for _, b := range fixed {
			check(a, b)
		}
	}
	r := rand.New(rand.NewPCG(5, 55))
	digits := func(n int) string {
		var sb strings.Builder
		for range n {
			sb.WriteByte(byte('0' + r.IntN(10)))
		}
		return sb.String()
	}
	gen := func() string {
		var s string
		switch r.IntN(6) {
		case 0: // integer
			s = strconv.FormatInt(r.Int64N(2000)-1000, 10)
		case 1: // long integer
			s = strings.TrimLeft(digits(1+r.IntN(40)), "0")
			if s == "" {
				s = "0"
			}
		case 2: // fraction of up to 45 digits, maybe trailing zeros
			s = strconv.Itoa(r.IntN(3)) + "." + digits(1+r.IntN(45))
			if r.IntN(3) == 0 {
				s += strings.Repeat("0", 1+r.IntN(3))
			}
		case 3: // exponent
			s = strconv.Itoa(1+r.IntN(9)) + "." + digits(1+r.IntN(20)) + "e" + strconv.Itoa(r.IntN(60)-30)
		case 4: // short decimal
			s = strconv.FormatFloat(r.Float64()*10, 'f', r.IntN(6), 64)
		default: // a float's shortest text
			s = strconv.FormatFloat(r.NormFloat64(), 'g', -1, 64)
		}
		if r.IntN(4) == 0 && s != "0" && !strings.HasPrefix(s, "-") {
			s = "-" + s
		}
		return s
	}
	for range 300000 {
		a := gen()
		b := gen()
		check(a, b)
		// Nearly equal: the same digits with one more at the end, or a
		// trailing zero.
		check(a, a+"0")
		if strings.Contains(a, ".") && !strings.ContainsAny(a, "eE") {
			check(a, a+"1")
			check(a+"0", b+"0")
		}
	}
}
