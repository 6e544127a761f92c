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

// A history baseline cannot be re-run: the rounds advised are the new
// side's against the baseline's. 5 baseline rounds over 18 gated metrics
// need 7 new ones (5+6 gives 2/462 = 0.0043 > 0.05/18); RoundsNeeded's 6 a
// side was wrong advice. 2 baseline rounds would need 37: too few.
func TestRoundsNeededAgainst(t *testing.T) {
	for _, tc := range []struct{ m, n1, want int }{
		{18, 6, 6}, {18, 5, 7}, {24, 6, 7}, {8, 5, 6}, {18, 2, 0}, {18, 1, 0}, {18, 0, 0},
	} {
		if got := RoundsNeededAgainst(0.05, tc.m, tc.n1); got != tc.want {
			t.Errorf("RoundsNeededAgainst(0.05, %d, %d) = %d, want %d", tc.m, tc.n1, got, tc.want)
		}
	}
	for _, tc := range []struct {
		name          string
		oldN, newN    int
		want, notWant string
	}{
		{"baseline 5, new 6, 18 gated", 5, 6, "against the baseline's 5 rounds run 7 ", "run 6 "},
		{"baseline 2, new 10, 18 gated", 2, 10, "the baseline has 2 rounds, too few", "against the baseline"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := DefaultCompareOptions()
			opts.Gate, opts.Holm = DefaultGateUnits, true
			c := Compare(mustSet(t, []byte(reachBench(tc.oldN, 9, 1))), mustSet(t, []byte(reachBench(tc.newN, 9, 5))), opts)
			c.Baseline = &RecordMeta{Name: "b.txt", Commit: "b"}
			v := c.Verdict("new.txt")
			if c.HolmM != 18 || c.Unreachable() == 0 || v.Code != GateCannotJudge {
				t.Fatalf("Holm over %d, %d unreachable, verdict %d: want 18, some, cannot judge", c.HolmM, c.Unreachable(), v.Code)
			}
			if !strings.Contains(v.String(), tc.want) || strings.Contains(v.String(), tc.notWant) {
				t.Errorf("verdict lacks %q or has %q: %s", tc.want, tc.notWant, v)
			}
		})
	}
}
