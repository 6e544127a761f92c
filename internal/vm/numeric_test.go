package vm

import (
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/topdown"
)

func numTerm(s string) *ast.Term { return ast.NewTerm(ast.Number(s)) }

// topdownCall runs OPA's own implementation of a built-in.
func topdownCall(name string, args ...*ast.Term) (string, bool) {
	var out *ast.Term
	err := topdown.GetBuiltin(name)(topdown.BuiltinContext{}, args, func(t *ast.Term) error {
		out = t
		return nil
	})
	if err != nil || out == nil {
		return "", false
	}
	return out.String(), true
}

// numberGen draws number texts of every shape topdown's arithmetic meets.
type numberGen struct{ r *rand.Rand }

func (g numberGen) next() string {
	r := g.r
	switch r.IntN(10) {
	case 0: // small integers and int32/int64 edges
		return g.pick("0", "-0", "1", "-1", "2", "10", "2147483647", "2147483648", "-2147483648", "-2147483649",
			"9223372036854775807", "-9223372036854775808", "9223372036854775808", "123456789012345678901234",
			"1.0", "2.50", "1e3", "1E+3", "-1.5e-7", "0.0", "-0.0", "1e0", "100", "0.5", "-0.5", "0.25")
	case 1: // scores with three decimals
		return strconv.FormatFloat(float64(r.IntN(1001))/1000, 'f', -1, 64)
	case 2: // decimals with a few digits
		v := r.IntN(2_000_001) - 1_000_000
		k := r.IntN(7)
		return decimalText(int64(v), k)
	case 3: // up to 19 significant digits, any exponent
		n := 1 + r.IntN(19)
		var b strings.Builder
		if r.IntN(2) == 0 {
			b.WriteByte('-')
		}
		b.WriteByte(byte('1' + r.IntN(9)))
		for i := 1; i < n; i++ {
			b.WriteByte(byte('0' + r.IntN(10)))
		}
		mant := b.String()
		e := r.IntN(60) - 30
		switch r.IntN(3) {
		case 0:
			return mant + "e" + strconv.Itoa(e)
		case 1:
			return mant + "E+" + strconv.Itoa(max(e, 0))
		default:
			digits := strings.TrimPrefix(mant, "-")
			k := r.IntN(len(digits) + 3)
			return strings.TrimSuffix(mant, digits) + decimalDigits(digits, k)
		}
	case 4: // more than 19 significant digits
		return "0." + strings.Repeat("3", 19+r.IntN(5)) + strconv.Itoa(r.IntN(10))
	case 5: // float64 values printed shortest
		return strconv.FormatFloat((r.Float64()-0.5)*pow(10, r.IntN(12)-6), 'g', -1, 64)
	case 6: // integers of any size
		return strconv.FormatInt(r.Int64N(1<<62)-(1<<61), 10)
	case 7: // powers and near-powers of two and ten
		p := []string{"0.1", "0.2", "0.3", "0.7", "0.9", "1.1", "0.01", "0.001", "1024", "0.125", "3.0517578125e-05", "1e-5", "9.999999999999999999"}
		return g.pick(p...)
	default: // the constitution's kind of values
		return g.pick("0.9", "0.3", "0.5", "0.8", "0.81", "0.79", "0.95", "0.2", "0.25", "0.15", "0.1", "0.05", "10000", "5", "0.6", "0.4")
	}
}

func (g numberGen) pick(xs ...string) string { return xs[g.r.IntN(len(xs))] }

func pow(b float64, n int) float64 {
	r := 1.0
	for ; n > 0; n-- {
		r *= b
	}
	for ; n < 0; n++ {
		r /= b
	}
	return r
}

// decimalText is v / 10^k written out.
func decimalText(v int64, k int) string {
	s := strconv.FormatInt(v, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	out := decimalDigits(s, k)
	if neg {
		return "-" + out
	}
	return out
}

func decimalDigits(s string, k int) string {
	if k == 0 {
		return s
	}
	for len(s) <= k {
		s = "0" + s
	}
	return s[:len(s)-k] + "." + s[len(s)-k:]
}

// TestArithmeticMatchesTopdown compares the VM's arithmetic with OPA's own
// built-ins on random and boundary operands: every result the fast path
// gives must be topdown's, printed the same.
func TestArithmeticMatchesTopdown(t *testing.T) {
	n := 300_000
	if testing.Short() {
		n = 20_000
	}
	g := numberGen{rand.New(rand.NewPCG(1, 2))}
	ops := []struct {
		name string
		op   arith
	}{{ast.Plus.Name, opAdd}, {ast.Minus.Name, opSub}, {ast.Multiply.Name, opMul}, {ast.Divide.Name, opQuo}}
	fast := map[string]int{}
	// Results of operations feed later ones, as in a policy's chains.
	var pool []string
	for i := 0; i < n; i++ {
		a, b := g.next(), g.next()
		if len(pool) > 0 && g.r.IntN(3) == 0 {
			a = pool[g.r.IntN(len(pool))]
		}
		o := ops[i%len(ops)]
		ta, tb := numTerm((a)), numTerm((b))
		want, wok := topdownCall(o.name, ta, tb)
		got, ok := arithmetic(o.op, ast.Number(a), ast.Number(b))
		if ok {
			fast[o.name]++
			if !wok || got.String() != want {
				t.Fatalf("%s(%s, %s) = %v, topdown %q (ok %v)", o.name, a, b, got, want, wok)
			}
		}
		if wok && len(pool) < 5000 {
			pool = append(pool, want)
		}
		// round
		want, wok = topdownCall(ast.Round.Name, ta)
		if got, ok := roundNumber(ast.Number(a)); ok {
			fast["round"]++
			if !wok || got.String() != want {
				t.Fatalf("round(%s) = %v, topdown %q", a, got, want)
			}
		}
		// sum of a few
		k := 1 + g.r.IntN(5)
		elems := make([]*ast.Term, k)
		for j := range elems {
			elems[j] = numTerm((g.next()))
			if g.r.IntN(3) == 0 {
				elems[j] = numTerm((g.pick("0", "0.5", "0.25", "1", "0.1")))
			}
		}
		arr := ast.NewArray(elems...)
		want, wok = topdownCall(ast.Sum.Name, ast.NewTerm(arr))
		if got, ok := sumNumbers(arr); ok {
			fast["sum"]++
			if !wok || got.String() != want {
				t.Fatalf("sum(%v) = %v, topdown %q", arr, got, want)
			}
		}
	}
	t.Logf("answered by the fast path (of %d each): %v", n/len(ops), fast)
	for _, name := range []string{ast.Plus.Name, ast.Multiply.Name, ast.Divide.Name} {
		if fast[name] < n/len(ops)/2 {
			t.Errorf("%s: the fast path answered only %d", name, fast[name])
		}
	}
}

func TestShortestKnown(t *testing.T) {
	for _, c := range [][3]string{
		{"plus", "0.1", "0.2"},
		{"minus", "1", "0.9"},
		{"mul", "0.9", "0.35"},
		{"div", "1", "3"},
		{"div", "2", "3"},
		{"div", "10", "4"},
		{"mul", "1234567.5", "1"},
		{"plus", "999999.5", "0.5"},
		{"mul", "0.001", "0.001"},
		{"div", "1", "1024"},
	} {
		want, _ := topdownCall(c[0], numTerm((c[1])), numTerm((c[2])))
		op := map[string]arith{"plus": opAdd, "minus": opSub, "mul": opMul, "div": opQuo}[c[0]]
		got, ok := arithmetic(op, ast.Number(c[1]), ast.Number(c[2]))
		if !ok || got.String() != want {
			t.Errorf("%s(%s, %s) = %v (%v), topdown %s", c[0], c[1], c[2], got, ok, want)
		}
	}
}
