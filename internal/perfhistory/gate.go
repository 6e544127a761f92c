package perfhistory

import (
	"fmt"
	"strings"
)

// Gate outcomes, which are regress compare's exit codes.
const (
	GatePass        = 0
	GateFail        = 1
	GateCannotJudge = 2
)

// GateVerdict is the gate's decision on a comparison. compare's exit code
// and the Markdown report's headline both come from it, so the report
// cannot say "no regression" of a run the gate failed.
type GateVerdict struct {
	Code    int      // GatePass, GateFail or GateCannotJudge
	Reasons []string // why it did not pass, one a cause
}

// Passed reports whether the gate passed.
func (v GateVerdict) Passed() bool { return v.Code == GatePass }

// String joins the reasons.
func (v GateVerdict) String() string { return strings.Join(v.Reasons, "; ") }

// Verdict judges the comparison as the gate does; input names the new
// result in the reasons. Without a baseline it passes: whether a missing
// baseline is allowed is the caller's decision, made before comparing.
func (c *Comparison) Verdict(input string) GateVerdict {
	if c.Baseline == nil {
		return GateVerdict{}
	}
	base := c.Baseline.Name
	if c.Compared() == 0 {
		// A baseline sharing no benchmark with the input judges nothing;
		// passing would hide every regression.
		return GateVerdict{Code: GateFail, Reasons: []string{fmt.Sprintf("no benchmark of %s is in the baseline %s (%d new, %d missing): nothing was compared; were the benchmarks renamed?",
			input, base, c.Count(VerdictAdded), c.Count(VerdictRemoved))}}
	}
	// A gate that judged nothing would pass anything: a typo in
	// --gate-units, or a unit the benchmarks do not emit.
	if c.GatedCompared() == 0 {
		return GateVerdict{Code: GateCannotJudge, Reasons: []string{fmt.Sprintf("--gate-units %s: no metric of these units is in both %s and the baseline %s, so the gate judged nothing",
			strings.Join(c.Gate, ","), input, base)}}
	}
	v := GateVerdict{Code: GateFail}
	regs := len(c.Regressions())
	if regs > 0 {
		v.Reasons = append(v.Reasons, fmt.Sprintf("%d performance regression(s) against %s", regs, base))
	}
	// A gate that could not have failed cannot pass either: with 6+6
	// samples Holm over 24 gated metrics, or 5+5 over 7, can flag nothing,
	// and a 5x slowdown would pass.
	if n := c.Unreachable(); n > 0 {
		// The baseline's rounds are fixed (a history record cannot be
		// re-run): the advice is the new side's rounds against the
		// unreachable metric with the fewest baseline rounds.
		oldN := 0
		for _, d := range c.Deltas {
			if d.Verdict == VerdictUnreachable && !d.Informational && (oldN == 0 || d.OldN < oldN) {
				oldN = d.OldN
			}
		}
		both := RoundsNeeded(c.Alpha, c.HolmM)
		advice := fmt.Sprintf("the baseline has %d rounds, too few: more than %d rounds of this run would be needed; record a baseline with %d rounds (acgs bench --count %d, go test -count %d), or gate fewer units (--gate-units)",
			oldN, MaxAdvisedRounds, both, both, both)
		if need := RoundsNeededAgainst(c.Alpha, c.HolmM, oldN); need > 0 {
			advice = fmt.Sprintf("against the baseline's %d rounds run %d (acgs bench --count %d, go test -count %d; %d a side for a new baseline), or gate fewer units (--gate-units)",
				oldN, need, need, need, both)
		}
		v.Reasons = append(v.Reasons, fmt.Sprintf("the gate cannot judge %d of %d gated metric(s) against %s: Holm's adjustment over %d needs p < %.2g, below the smallest p-value their samples can give; %s",
			n, c.HolmM, base, c.HolmM, c.Alpha/float64(c.HolmM), advice))
		if regs == 0 {
			v.Code = GateCannotJudge
		}
	}
	if n := c.Undecided(); n > 0 {
		v.Reasons = append(v.Reasons, fmt.Sprintf("%d metric(s) had too few samples to compare with %s: run the benchmarks with more repetitions (-count 6, acgs bench --count 6)", n, base))
	}
	// A benchmark that crashed or was dropped measures nothing; passing it
	// would pass whatever it would have shown.
	if missing := c.missingNames(); len(missing) > 0 && !c.AllowMissing {
		v.Reasons = append(v.Reasons, fmt.Sprintf("%d metric(s) of the baseline %s are missing from this run (%s): pass --allow-missing if they were renamed or removed on purpose",
			c.Count(VerdictRemoved), base, strings.Join(missing, ", ")))
	}
	if len(v.Reasons) == 0 {
		return GateVerdict{}
	}
	return v
}

// missingNames names the baseline's metrics the new result lacks, at most 5.
func (c *Comparison) missingNames() []string {
	var out []string
	n := 0
	for _, d := range c.Deltas {
		if d.Verdict != VerdictRemoved {
			continue
		}
		if n++; n <= 5 {
			out = append(out, d.Name+" "+d.Unit)
		}
	}
	if n > 5 {
		out = append(out, fmt.Sprintf("and %d more", n-5))
	}
	return out
}
