package vm

import (
	"math/big"
	"math/bits"
	"strconv"

	"github.com/open-policy-agent/opa/v1/ast"
)

// This file computes OPA's arithmetic (topdown/arithmetic.go and sum in
// topdown/aggregates.go) without math/big for the common operands, with
// exactly topdown's results, including how they print:
//
//   - integers in the int32 window are combined as machine integers, as
//     topdown does;
//   - other integers that fit an int64 (topdown: big.Int) are combined with
//     overflow checks;
//   - anything else is what topdown computes with big.Float: each operand
//     correctly rounded (to nearest, ties to even) to a 64-bit mantissa, the
//     result correctly rounded to 64 bits, printed as the shortest decimal
//     that reads back as it at 64 bits (FloatToNumber: Text('g' or 'f', -1)).
//     xfloat does that rounding on machine words, and shortest repeats
//     math/big's digit walk (roundShortest) on the same decimal digits,
//     computed from a 192-bit product instead of a full decimal expansion.
//
// Whatever falls outside what this file handles exactly (more than 38
// significant digits, large exponents, zeros in a float operation, results
// outside 1e-19..1e38, division by zero, ...) returns ok == false, and the
// caller runs topdown's own implementation. TestArithmeticMatchesTopdown
// compares the two on random and boundary operands.

// xfloat is a nonzero binary floating-point number with a 64-bit mantissa:
// (-1)^neg * mant * 2^exp, mant's top bit set.
type xfloat struct {
	neg  bool
	mant uint64
	exp  int
}

const maxExp = 1 << 20

// decimalNum is a parsed ast.Number: (-1)^neg * m * 10^e10 with m a
// 128-bit integer (hi, lo) without trailing zeros (zero for zero).
type decimalNum struct {
	neg    bool
	hi, lo uint64
	e10    int
}

func (d decimalNum) zero() bool  { return d.hi == 0 && d.lo == 0 }
func (d decimalNum) isInt() bool { return d.zero() || d.e10 >= 0 }

// parseNumber reads a JSON-style number with at most 38 significant digits.
func parseNumber(s string) (d decimalNum, ok bool) {
	i := 0
	if i < len(s) && s[i] == '-' {
		d.neg = true
		i++
	}
	if i >= len(s) || s[i] < '0' || s[i] > '9' {
		return d, false
	}
	if s[i] == '0' && i+1 < len(s) && s[i+1] >= '0' && s[i+1] <= '9' {
		return d, false // leading zero
	}
	var hi, lo uint64
	digits := 0 // significant digits taken
	e10 := 0
	add := func(c uint64) {
		h, l := bits.Mul64(lo, 10)
		l, carry := bits.Add64(l, c, 0)
		hi = hi*10 + h + carry
		lo = l
		digits++
	}
	for ; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
		c := uint64(s[i] - '0')
		if digits == 0 && c == 0 {
			continue
		}
		if digits == 38 {
			if c != 0 {
				return d, false
			}
			e10++ // a dropped trailing zero of the integer part
			continue
		}
		add(c)
	}
	if i < len(s) && s[i] == '.' {
		i++
		if i >= len(s) || s[i] < '0' || s[i] > '9' {
			return d, false
		}
		for ; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
			c := uint64(s[i] - '0')
			if digits == 0 && c == 0 {
				e10--
				continue
			}
			if digits == 38 {
				if c != 0 {
					return d, false
				}
				continue // a trailing zero of the fraction
			}
			add(c)
			e10--
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		eneg := false
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			eneg = s[i] == '-'
			i++
		}
		if i >= len(s) {
			return d, false
		}
		x := 0
		for ; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
			x = x*10 + int(s[i]-'0')
			if x > 10000 {
				return d, false
			}
		}
		if eneg {
			x = -x
		}
		e10 += x
	}
	if i != len(s) {
		return d, false
	}
	if hi == 0 && lo == 0 {
		return decimalNum{neg: d.neg}, true
	}
	for {
		qh, rh := bits.Div64(0, hi, 10)
		ql, r := bits.Div64(rh, lo, 10)
		if r != 0 {
			break
		}
		hi, lo = qh, ql
		e10++
	}
	d.hi, d.lo, d.e10 = hi, lo, e10
	return d, true
}

var pow10 = func() (p [20]uint64) {
	p[0] = 1
	for i := 1; i < len(p); i++ {
		p[i] = p[i-1] * 10
	}
	return p
}()

// roundWords rounds the integer w (little-endian words), plus a fraction
// below it when sticky, to 64 bits, to nearest with ties to even: the
// result is mant*2^exp. With sticky set the integer must have at least 66
// bits (ok is false otherwise).
func roundWords(w []uint64, sticky bool) (mant uint64, exp int, ok bool) {
	t := len(w) - 1
	for t >= 0 && w[t] == 0 {
		t--
	}
	if t < 0 {
		return 0, 0, false
	}
	n := t*64 + bits.Len64(w[t]) // bit length
	if n <= 64 {
		if sticky {
			return 0, 0, false
		}
		s := 64 - n
		return w[0] << uint(s), -s, true
	}
	if sticky && n < 66 {
		return 0, 0, false
	}
	// window returns the 64 bits of w starting at bit position p >= 0.
	window := func(p int) uint64 {
		k, b := p/64, uint(p%64)
		v := w[k] >> b
		if b != 0 && k+1 < len(w) {
			v |= w[k+1] << (64 - b)
		}
		return v
	}
	drop := n - 64 // bits below the mantissa, >= 1
	mant = window(drop)
	guard := window(drop-1)&1 != 0
	rest := sticky
	for p := 0; p < drop-1 && !rest; p += 64 {
		v := window(p)
		if left := drop - 1 - p; left < 64 {
			v &= 1<<uint(left) - 1
		}
		rest = v != 0
	}
	if guard && (rest || mant&1 != 0) {
		mant++
		if mant == 0 {
			mant = 1 << 63
			drop++
		}
	}
	return mant, drop, true
}

// round128 is roundWords of hi*2^64 + lo.
func round128(hi, lo uint64, sticky bool) (uint64, int, bool) {
	w := [2]uint64{lo, hi}
	return roundWords(w[:], sticky)
}

// toX rounds d (nonzero) to 64 bits as big.Float.SetString does: the
// correctly rounded value of the exact decimal.
func (d decimalNum) toX() (xfloat, bool) {
	if d.zero() {
		return xfloat{}, false
	}
	var mant uint64
	var e int
	var ok bool
	switch {
	case d.e10 >= 0:
		if d.e10 >= len(pow10) {
			return xfloat{}, false
		}
		p := pow10[d.e10]
		h0, l0 := bits.Mul64(d.lo, p)
		h1, l1 := bits.Mul64(d.hi, p)
		w1, c := bits.Add64(h0, l1, 0)
		w := [3]uint64{l0, w1, h1 + c}
		mant, e, ok = roundWords(w[:], false)
	default:
		k := -d.e10
		if k > 38 {
			return xfloat{}, false
		}
		// The numerator m << s with its top bit at bit 255, divided by
		// 10^k in at most two steps (the floor of floors is the floor).
		bl := bits.Len64(d.lo)
		if d.hi != 0 {
			bl = 64 + bits.Len64(d.hi)
		}
		s := 256 - bl
		var w [4]uint64
		ws, bs := s/64, uint(s%64)
		src := [2]uint64{d.lo, d.hi}
		for j := 0; j < 2; j++ {
			if ws+j < 4 {
				w[ws+j] |= src[j] << bs
			}
			if bs != 0 && ws+j+1 < 4 {
				w[ws+j+1] |= src[j] >> (64 - bs)
			}
		}
		sticky := false
		for k > 0 {
			step := min(k, 19)
			den := pow10[step]
			var r uint64
			for j := 3; j >= 0; j-- {
				w[j], r = bits.Div64(r, w[j], den)
			}
			sticky = sticky || r != 0
			k -= step
		}
		mant, e, ok = roundWords(w[:], sticky)
		e -= s
	}
	if !ok {
		return xfloat{}, false
	}
	return xfloat{neg: d.neg, mant: mant, exp: e}, true
}

func (x xfloat) valid() bool { return x.mant != 0 && x.exp > -maxExp && x.exp < maxExp }

func mulX(a, b xfloat) (xfloat, bool) {
	hi, lo := bits.Mul64(a.mant, b.mant)
	m, e, ok := round128(hi, lo, false)
	r := xfloat{neg: a.neg != b.neg, mant: m, exp: a.exp + b.exp + e}
	return r, ok && r.valid()
}

// addX is a+b rounded to 64 bits; ok is false for a zero result or
// exponents too far apart.
func addX(a, b xfloat) (xfloat, bool) {
	if a.exp < b.exp || (a.exp == b.exp && a.mant < b.mant) {
		a, b = b, a
	}
	d := a.exp - b.exp
	if d >= 64 {
		return xfloat{}, false
	}
	// Both as 128-bit integers times 2^(a.exp-64): exact.
	ahi, alo := a.mant, uint64(0)
	var bhi, blo uint64
	if d == 0 {
		bhi, blo = b.mant, 0
	} else {
		bhi, blo = b.mant>>uint(d), b.mant<<uint(64-d)
	}
	var m uint64
	var e int
	var ok bool
	if a.neg == b.neg {
		lo, c := bits.Add64(alo, blo, 0)
		hi, carry := bits.Add64(ahi, bhi, c)
		if carry != 0 {
			sticky := lo&1 != 0
			lo = lo>>1 | hi<<63
			hi = hi>>1 | 1<<63
			m, e, ok = round128(hi, lo, sticky)
			e++
		} else {
			m, e, ok = round128(hi, lo, false)
		}
	} else {
		// |a| >= |b| here (a has the larger exponent, or the larger mantissa).
		lo, br := bits.Sub64(alo, blo, 0)
		hi, _ := bits.Sub64(ahi, bhi, br)
		if hi == 0 && lo == 0 {
			return xfloat{}, false
		}
		m, e, ok = round128(hi, lo, false)
	}
	r := xfloat{neg: a.neg, mant: m, exp: a.exp - 64 + e}
	return r, ok && r.valid()
}

func negX(a xfloat) xfloat { a.neg = !a.neg; return a }

// quoX is a/b rounded to 64 bits.
func quoX(a, b xfloat) (xfloat, bool) {
	// a.mant * 2^128 / b.mant: a quotient of 128 or 129 bits.
	qt, r := uint64(0), a.mant
	if r >= b.mant {
		qt, r = 1, r-b.mant
	}
	q1, r1 := bits.Div64(r, 0, b.mant)
	q0, r0 := bits.Div64(r1, 0, b.mant)
	sticky := r0 != 0
	shift := 0
	if qt != 0 {
		sticky = sticky || q0&1 != 0
		q0 = q0>>1 | q1<<63
		q1 = q1>>1 | 1<<63
		shift = 1
	}
	m, e, ok := round128(q1, q0, sticky)
	res := xfloat{neg: a.neg != b.neg, mant: m, exp: a.exp - b.exp - 128 + e + shift}
	return res, ok && res.valid()
}

// isInt reports whether x is an integer.
func (x xfloat) isInt() bool {
	return x.exp >= 0 || bits.TrailingZeros64(x.mant) >= -x.exp
}

// truncInt is x truncated toward zero, if it fits an int64.
func (x xfloat) truncInt() (int64, bool) {
	if x.exp >= 0 {
		return 0, false // at least 2^63
	}
	if x.exp <= -64 {
		return 0, true
	}
	v := x.mant >> uint(-x.exp)
	if v > 1<<62 {
		return 0, false
	}
	if x.neg {
		return -int64(v), true
	}
	return int64(v), true
}

// pow10x[q] is 10^q as a 192-bit integer (little-endian words), q <= 57.
var pow10x = func() (t [58][3]uint64) {
	p := big.NewInt(1)
	ten := big.NewInt(10)
	mask := new(big.Int).SetUint64(^uint64(0))
	for q := range t {
		v := new(big.Int).Set(p)
		for w := 0; w < 3; w++ {
			t[q][w] = new(big.Int).And(v, mask).Uint64()
			v.Rsh(v, 64)
		}
		p.Mul(p, ten)
	}
	return t
}()

// digits is a prefix of the decimal expansion of a positive number:
// 0.d[0]d[1]... * 10^exp, and whether more (nonzero) digits follow.
type digits struct {
	d     [40]byte
	n     int
	exp   int
	more  bool // the expansion continues past d[:n]
	exact bool // d[:n] is the whole expansion, trailing zeros trimmed
}

func (x *digits) at(i int) byte {
	if i < x.n {
		return x.d[i]
	}
	return '0'
}

// expand writes the leading decimal digits of m * 2^e (m < 2^66, m > 0).
func expand(m0, m1 uint64, e int, out *digits) bool {
	// m = m1*2^64 + m0
	bm := bits.Len64(m1)
	if bm > 0 {
		bm += 64
	} else {
		bm = bits.Len64(m0)
	}
	var ihi, ilo uint64
	sticky := false
	q := 0
	if e >= 0 {
		if bm+e > 127 {
			return false
		}
		// m << e
		if e >= 64 {
			ihi, ilo = m0<<uint(e-64), 0
		} else if e > 0 {
			ihi = m1<<uint(e) | m0>>uint(64-e)
			ilo = m0 << uint(e)
		} else {
			ihi, ilo = m1, m0
		}
	} else {
		n := -e
		// Upper bound of the count of integer digits of m*2^e.
		lg := bm - n
		dInt := (lg*30103 + 99999) / 100000
		if lg < 0 {
			dInt = -((-lg * 30102) / 100000)
		}
		q = 37 - dInt
		if q < 0 || q >= len(pow10x) {
			return false
		}
		w := mul2x3(m0, m1, pow10x[q])
		// I = w >> n; sticky = low n bits nonzero
		if n >= 320 {
			return false
		}
		word, bit := n/64, uint(n%64)
		for k := 0; k < word; k++ {
			if w[k] != 0 {
				sticky = true
			}
		}
		if bit != 0 && w[word]<<(64-bit) != 0 {
			sticky = true
		}
		get := func(k int) uint64 {
			if k < 5 {
				return w[k]
			}
			return 0
		}
		if bit == 0 {
			ilo, ihi = get(word), get(word+1)
			if get(word+2) != 0 {
				return false
			}
		} else {
			ilo = get(word)>>bit | get(word+1)<<(64-bit)
			ihi = get(word+1)>>bit | get(word+2)<<(64-bit)
			if get(word+2)>>bit != 0 || get(word+3) != 0 {
				return false
			}
		}
	}
	// Decimal digits of I = ihi*2^64 + ilo (< 10^38).
	const e19 = 10_000_000_000_000_000_000
	if ihi >= e19 {
		return false
	}
	var buf [40]byte
	var s []byte
	if ihi == 0 && ilo < e19 {
		s = strconv.AppendUint(buf[:0], ilo, 10)
	} else {
		top, bot := bits.Div64(ihi, ilo, e19)
		s = strconv.AppendUint(buf[:0], top, 10)
		var b2 [20]byte
		t := strconv.AppendUint(b2[:0], bot, 10)
		for k := len(t); k < 19; k++ {
			s = append(s, '0')
		}
		s = append(s, t...)
	}
	if len(s) == 0 || s[0] == '0' {
		return false
	}
	out.exp = len(s) - q
	if !sticky {
		for len(s) > 0 && s[len(s)-1] == '0' {
			s = s[:len(s)-1]
		}
	}
	out.n = copy(out.d[:], s)
	out.more = sticky
	out.exact = !sticky
	return true
}

// mul2x3 is (m1*2^64 + m0) * p.
func mul2x3(m0, m1 uint64, p [3]uint64) (w [5]uint64) {
	for i, a := range [2]uint64{m0, m1} {
		if a == 0 {
			continue
		}
		var carry uint64
		for j := 0; j < 3; j++ {
			hi, lo := bits.Mul64(a, p[j])
			var c uint64
			lo, c = bits.Add64(lo, carry, 0)
			hi += c
			w[i+j], c = bits.Add64(w[i+j], lo, 0)
			carry = hi + c
		}
		for k := i + 3; carry != 0 && k < len(w); k++ {
			w[k], carry = bits.Add64(w[k], carry, 0)
		}
	}
	return w
}

// appendShortest appends x as builtins.FloatToNumber prints the same value
// held in a big.Float of precision 64.
func appendShortest(buf []byte, x xfloat) ([]byte, bool) {
	var d, lower, upper digits
	if !expand(x.mant, 0, x.exp, &d) {
		return buf, false
	}
	// roundShortest: bounds at half an ulp, from the mantissa shifted to 65 bits.
	m2lo := x.mant << 1
	m2hi := x.mant >> 63
	llo, b := bits.Sub64(m2lo, 1, 0)
	lhi := m2hi - b
	ulo, c := bits.Add64(m2lo, 1, 0)
	uhi := m2hi + c
	if !expand(llo, lhi, x.exp-1, &lower) || !expand(ulo, uhi, x.exp-1, &upper) {
		return buf, false
	}
	inclusive := x.mant&1 == 0
	// The lengths roundShortest compares against: exact ones, or "longer".
	lowerLen := func() int {
		if lower.more {
			return 1 << 30
		}
		return lower.n
	}
	upperLen := func() int {
		if upper.more {
			return 1 << 30
		}
		return upper.n
	}
	decided := false
	for i := 0; i < d.n; i++ {
		m := d.d[i]
		l := lower.at(i)
		u := upper.at(i)
		if (i >= lower.n && lower.more) || (i >= upper.n && upper.more) {
			return buf, false
		}
		okdown := l != m || inclusive && i+1 == lowerLen()
		okup := m != u && (inclusive || m+1 < u || i+1 < upperLen())
		switch {
		case okdown && okup:
			d.round(i + 1)
		case okdown:
			d.roundDown(i + 1)
		case okup:
			d.roundUp(i + 1)
		default:
			continue
		}
		decided = true
		break
	}
	if !decided {
		if d.more {
			return buf, false // ran out of the digits computed
		}
		// the digit walk ended without rounding: d as it is
	}
	if x.neg {
		buf = append(buf, '-')
	}
	mant := d.d[:d.n]
	if x.isInt() {
		// 'f' with the shortest precision: max(len-exp, 0) fraction digits.
		return fmtF(buf, max(len(mant)-d.exp, 0), mant, d.exp), true
	}
	// 'g' shortest: %e when exp < -4 || exp >= 6.
	exp := d.exp - 1
	if exp < -4 || exp >= 6 {
		buf = append(buf, mant[0])
		if len(mant) > 1 {
			buf = append(buf, '.')
			buf = append(buf, mant[1:]...)
		}
		buf = append(buf, 'e')
		if exp < 0 {
			buf = append(buf, '-')
			exp = -exp
		} else {
			buf = append(buf, '+')
		}
		if exp < 10 {
			buf = append(buf, '0')
		}
		return strconv.AppendInt(buf, int64(exp), 10), true
	}
	prec := len(mant)
	return fmtF(buf, max(prec-d.exp, 0), mant, d.exp), true
}

func fmtF(buf []byte, prec int, mant []byte, exp int) []byte {
	at := func(i int) byte {
		if 0 <= i && i < len(mant) {
			return mant[i]
		}
		return '0'
	}
	if exp > 0 {
		m := min(len(mant), exp)
		buf = append(buf, mant[:m]...)
		for ; m < exp; m++ {
			buf = append(buf, '0')
		}
	} else {
		buf = append(buf, '0')
	}
	if prec > 0 {
		buf = append(buf, '.')
		for i := 0; i < prec; i++ {
			buf = append(buf, at(exp+i))
		}
	}
	return buf
}

// The rounding of math/big's decimal type, on digits.

func (x *digits) shouldRoundUp(n int) bool {
	if x.d[n] == '5' && n+1 == x.n && !x.more {
		return n > 0 && (x.d[n-1]-'0')&1 != 0
	}
	return x.d[n] >= '5'
}

func (x *digits) round(n int) {
	if n < 0 || n >= x.n {
		return
	}
	if x.shouldRoundUp(n) {
		x.roundUp(n)
	} else {
		x.roundDown(n)
	}
}

func (x *digits) roundUp(n int) {
	if n < 0 || n >= x.n {
		return
	}
	for n > 0 && x.d[n-1] >= '9' {
		n--
	}
	x.more = false
	if n == 0 {
		x.d[0] = '1'
		x.n = 1
		x.exp++
		return
	}
	x.d[n-1]++
	x.n = n
}

func (x *digits) roundDown(n int) {
	if n < 0 || n >= x.n {
		return
	}
	x.n = n
	x.more = false
	for x.n > 0 && x.d[x.n-1] == '0' {
		x.n--
	}
	if x.n == 0 {
		x.exp = 0
	}
}

// numberOf returns x printed as topdown prints a big.Float result.
func numberOf(x xfloat) (ast.Number, bool) {
	var buf [48]byte
	b, ok := appendShortest(buf[:0], x)
	if !ok {
		return "", false
	}
	return ast.Number(b), true
}

// arith is a binary arithmetic built-in.
type arith int

const (
	opAdd arith = iota
	opSub
	opMul
	opQuo
)

// arithmetic is topdown's plus, minus, mul or div of two numbers; ok is
// false when the caller must run topdown's implementation.
func arithmetic(op arith, n1, n2 ast.Number) (*ast.Term, bool) {
	// topdown: ints in the int32 window.
	if x, ok := smallInt(n1); ok {
		if y, ok := smallInt(n2); ok {
			switch op {
			case opAdd:
				return ast.InternedTerm(int(x + y)), true
			case opSub:
				return ast.InternedTerm(int(x - y)), true
			case opMul:
				return ast.InternedTerm(int(x * y)), true
			case opQuo:
				if y == 0 {
					return nil, false
				}
				if x != 0 && x%y == 0 {
					return ast.InternedTerm(int(x / y)), true
				}
				// a float quotient, below
			}
		}
	}
	a, ok1 := parseNumber(string(n1))
	b, ok2 := parseNumber(string(n2))
	if !ok1 || !ok2 {
		return nil, false
	}
	if op != opQuo && a.isInt() && b.isInt() {
		// topdown: exact on big.Int.
		x, ok1 := a.int64()
		y, ok2 := b.int64()
		if !ok1 || !ok2 {
			return nil, false
		}
		var r int64
		var ok bool
		switch op {
		case opAdd:
			r, ok = addInt64(x, y)
		case opSub:
			r, ok = addInt64(x, -y)
			if y == -1<<63 {
				ok = false
			}
		case opMul:
			r, ok = mulInt64(x, y)
		}
		if !ok {
			return nil, false
		}
		return ast.NewTerm(ast.Number(strconv.FormatInt(r, 10))), true
	}
	if za, zb := a.zero(), b.zero(); za || zb {
		// big.Float: x ± 0 is x rounded; a product or quotient with a
		// zero is a zero signed by the operands' signs ("-0" prints).
		var x xfloat
		var ok bool
		switch {
		case za && zb, op == opQuo && zb:
			return nil, false
		case op == opMul || op == opQuo:
			if a.neg != b.neg {
				return ast.NewTerm(ast.Number("-0")), true
			}
			return ast.InternedTerm(0), true
		case zb:
			x, ok = a.toX()
		default:
			x, ok = b.toX()
			if op == opSub {
				x = negX(x)
			}
		}
		if !ok {
			return nil, false
		}
		num, ok := numberOf(x)
		if !ok {
			return nil, false
		}
		return ast.NewTerm(num), true
	}
	xa, ok1 := a.toX()
	xb, ok2 := b.toX()
	if !ok1 || !ok2 {
		return nil, false
	}
	var r xfloat
	var ok bool
	switch op {
	case opAdd:
		r, ok = addX(xa, xb)
	case opSub:
		r, ok = addX(xa, negX(xb))
	case opMul:
		r, ok = mulX(xa, xb)
	case opQuo:
		r, ok = quoX(xa, xb)
	}
	if !ok {
		return nil, false
	}
	num, ok := numberOf(r)
	if !ok {
		return nil, false
	}
	return ast.NewTerm(num), true
}

// smallInt is topdown's: an integer (as ast.Number.Int64 reads it) in the
// int32 window.
func smallInt(n ast.Number) (int64, bool) {
	i, ok := n.Int64()
	return i, ok && -1<<31 <= i && i <= 1<<31-1
}

func (d decimalNum) int64() (int64, bool) {
	if d.zero() {
		return 0, true
	}
	if d.hi != 0 || d.e10 >= len(pow10) {
		return 0, false
	}
	hi, lo := bits.Mul64(d.lo, pow10[d.e10])
	if hi != 0 || lo > 1<<63-1 {
		return 0, false
	}
	if d.neg {
		return -int64(lo), true
	}
	return int64(lo), true
}

func addInt64(x, y int64) (int64, bool) {
	r := x + y
	return r, (r > x) == (y > 0)
}

func mulInt64(x, y int64) (int64, bool) {
	if x == 0 || y == 0 {
		return 0, true
	}
	r := x * y
	if r/y != x || (x == -1 && y == -1<<63) || (y == -1 && x == -1<<63) {
		return 0, false
	}
	return r, true
}

// roundNumber is topdown's round of a number.
func roundNumber(n ast.Number) (*ast.Term, bool) {
	if x, ok := smallInt(n); ok {
		return ast.InternedTerm(int(x)), true
	}
	a, ok := parseNumber(string(n))
	if !ok {
		return nil, false
	}
	x, ok := a.toX()
	if !ok {
		return nil, false
	}
	// arithRound: x ± 0.5 at 64 bits, truncated toward zero.
	half := xfloat{neg: x.neg, mant: 1 << 63, exp: -64}
	s, ok := addX(x, half)
	if !ok {
		return nil, false
	}
	i, ok := s.truncInt()
	if !ok || i > 1<<53 || i < -(1<<53) {
		return nil, false
	}
	return ast.InternedTerm(int(i)), true
}

// sumNumbers is topdown's sum of an array of numbers.
func sumNumbers(arr *ast.Array) (*ast.Term, bool) {
	n := arr.Len()
	// topdown: machine ints (ast.Number.Int), then big.Int, then big.Float.
	var is int
	intsOK := true
	for i := 0; i < n && intsOK; i++ {
		num, ok := arr.Elem(i).Value.(ast.Number)
		if !ok {
			return nil, false
		}
		v, ok := num.Int()
		if !ok {
			intsOK = false
			break
		}
		s, ok := addInt(is, v)
		if !ok {
			return nil, false
		}
		is = s
	}
	if intsOK {
		return ast.InternedTerm(is), true
	}
	// All integers, but not all machine ints: topdown sums them exactly on
	// big.Int; leave those to it.
	allInt := true
	for i := 0; i < n && allInt; i++ {
		d, ok := parseNumber(string(arr.Elem(i).Value.(ast.Number)))
		if !ok {
			return nil, false
		}
		allInt = d.isInt()
	}
	if allInt {
		return nil, false
	}
	// big.Float from +0, adding each element at 64 bits: a zero term
	// changes nothing (the sum cannot become -0 from +0).
	var acc xfloat
	have := false
	for i := 0; i < n; i++ {
		d, ok := parseNumber(string(arr.Elem(i).Value.(ast.Number)))
		if !ok {
			return nil, false
		}
		if d.zero() {
			continue
		}
		x, ok := d.toX()
		if !ok {
			return nil, false
		}
		if !have {
			acc, have = x, true
			continue
		}
		if acc, ok = addX(acc, x); !ok {
			return nil, false
		}
	}
	if !have {
		return nil, false
	}
	num, ok := numberOf(acc)
	if !ok {
		return nil, false
	}
	return ast.NewTerm(num), true
}

func addInt(a, b int) (int, bool) {
	c := a + b
	return c, (c > a) == (b > 0)
}
