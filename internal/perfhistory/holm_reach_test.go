package perfhistory

import (
	"fmt"
	"strings"
	"testing"
)

// reachBench renders n rounds of benches benchmarks, each with a sec/op and
// a req/s metric and a constant "0 errors": the layout of acgs bench. The
// benchmark Slow is slow times slower. Values vary a little, evenly, so no
// sample has ties.
func reachBench(n, benches int, slow float64) string {
	var b strings.Builder
	for r := range n {
		for i := range benches {
			name, f := fmt.Sprintf("B%d", i), 1.0
			if i == 0 {
				name, f = "Slow", slow
			}
			ns := f * 1e6 * (1 + 0.01*float64(r) + 0.001*float64(i))
			fmt.Fprintf(&b, "Benchmark%s\t100\t%.0f ns/op\t%.3f req/s\t0 errors\n", name, ns, 1e9/ns)
		}
	}
	return b.String()
}

// Holm's first threshold is alpha/m; a gated metric whose smallest possible
// U-test p is not below it can never be flagged alone, so a comparison of
// such metrics must say it cannot judge (VerdictUnreachable), never pass. A
// constant, equal metric (0 errors on both sides) does not count in m.
func TestHolmUnreachable(t *testing.T) {
	for _, tc := range []struct {
		name        string
		n, benches  int
		gate        []string
		wantM       int
		unreachable bool
	}{
		// 6+6: smallest p 2/924 = 0.00216, 0.05/23 = 0.00217, 0.05/24 = 0.00208
		{"6+6, 23 gated", 6, 23, []string{"sec/op"}, 23, false},
		{"6+6, 24 gated", 6, 12, DefaultGateUnits, 24, true},
		{"6+6, 12 benchmarks, all units: constant errors not counted", 6, 12, nil, 24, true},
		{"6+6, 11 benchmarks, all units: constant errors not counted", 6, 11, nil, 22, false},
		// 5+5: smallest p 2/252 = 0.0079, above 0.05/7
		{"5+5, 6 gated", 5, 3, DefaultGateUnits, 6, false},
		{"5+5, 8 gated", 5, 4, DefaultGateUnits, 8, true},
		{"7+7, 48 gated", 7, 24, DefaultGateUnits, 48, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old := mustSet(t, []byte(reachBench(tc.n, tc.benches, 1)))
			cur := mustSet(t, []byte(reachBench(tc.n, tc.benches, 5)))
			opts := DefaultCompareOptions()
			opts.Gate, opts.Holm = tc.gate, true
			c := Compare(old, cur, opts)
			if c.HolmM != tc.wantM {
				t.Errorf("Holm over %d metrics, want %d", c.HolmM, tc.wantM)
			}
			regs := len(c.Regressions())
			if tc.unreachable {
				if regs != 0 || c.Unreachable() == 0 {
					t.Errorf("5x slower: %d regression(s), %d unreachable; want 0 and the gated metrics unreachable", regs, c.Unreachable())
				}
				return
			}
			if regs == 0 || c.Unreachable() != 0 {
				t.Errorf("5x slower: %d regression(s), %d unreachable; want the slowdown caught", regs, c.Unreachable())
			}
		})
	}
}

func TestRoundsNeeded(t *testing.T) {
	for _, tc := range []struct{ m, want int }{{1, 4}, {6, 5}, {7, 6}, {23, 6}, {24, 7}, {48, 7}, {85, 7}, {86, 8}} {
		if got := RoundsNeeded(0.05, tc.m); got != tc.want {
			t.Errorf("RoundsNeeded(0.05, %d) = %d, want %d", tc.m, got, tc.want)
		}
	}
}
