package perfhistory

import (
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/perf/benchunit"
)

// FormatValue renders a value in its tidied unit with an SI prefix, the way
// benchstat prints it (52.3µ sec/op).
func FormatValue(v float64, unit string) string {
	if math.IsNaN(v) {
		return "-"
	}
	return benchunit.Scale(v, benchunit.ClassOf(unit)) + " " + unit
}

func formatPct(p float64) string {
	switch {
	case math.IsNaN(p):
		return "-"
	case math.IsInf(p, 0):
		return fmt.Sprintf("%c∞", map[bool]rune{true: '+', false: '-'}[p > 0])
	}
	return fmt.Sprintf("%+.2f%%", p)
}

func formatP(p float64) string {
	if math.IsNaN(p) {
		return "-"
	}
	return fmt.Sprintf("%.3f", p)
}

// WriteCompareTable prints a comparison for a terminal.
func WriteCompareTable(w io.Writer, c *Comparison) error {
	if c.Baseline != nil {
		fmt.Fprintf(w, "baseline: %s (commit %s, %s)\n", c.Baseline.Name, c.Baseline.Commit, c.Baseline.Time.Format(time.RFC3339))
	}
	for _, sk := range c.Skipped {
		fmt.Fprintf(w, "skipped %s\n", sk.Reason)
	}
	fmt.Fprintf(w, "regression = Mann-Whitney U p < %.2f and median worse by > %.1f%%%s\n", c.Alpha, c.ThresholdPct, gateText(c))
	for _, warn := range c.Warnings {
		fmt.Fprintf(w, "warning: %s\n", warn)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "BENCHMARK\tUNIT\tOLD\tNEW\tCHANGE\tP\tN\tVERDICT")
	for _, d := range c.Deltas {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d+%d\t%s\n", d.Name, d.Unit,
			fmtOpt(d.OldMedian, d.OldN, d.Unit), fmtOpt(d.NewMedian, d.NewN, d.Unit),
			formatPct(d.ChangePct), formatP(d.P), d.OldN, d.NewN, verdictText(d))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "%d regression(s), %d improvement(s), %d metric(s) with too few samples\n",
		len(c.Regressions()), c.Count(VerdictImprovement), c.Count(VerdictInsufficient))
	if n := c.Count(VerdictRegression) - len(c.Regressions()); n > 0 {
		fmt.Fprintf(w, "%d informational regression(s), in units not gated\n", n)
	}
	if n := c.Unreachable(); n > 0 {
		fmt.Fprintf(w, "%d gated metric(s) could not be flagged: Holm over %d needs p < %.2g, below the smallest p of their samples; %d samples a side are needed\n",
			n, c.HolmM, c.Alpha/float64(c.HolmM), RoundsNeeded(c.Alpha, c.HolmM))
	}
	if c.Baseline != nil && c.Compared() == 0 {
		fmt.Fprintf(w, "nothing compared: no benchmark of this run is in the baseline (%d new, %d missing)\n",
			c.Count(VerdictAdded), c.Count(VerdictRemoved))
	}
	return nil
}

func fmtOpt(v float64, n int, unit string) string {
	if n == 0 {
		return "-"
	}
	return FormatValue(v, unit)
}

// gateText says which units gate and how their p-values are adjusted.
func gateText(c *Comparison) string {
	s := ""
	if c.Holm {
		s = " (Holm-adjusted over the gated metrics)"
	}
	if c.Gate != nil {
		s += "; only " + strings.Join(c.Gate, ", ") + " gate, other units are informational"
	}
	return s
}

func verdictText(d Delta) string {
	s := string(d.Verdict)
	if d.Informational && d.Verdict == VerdictRegression {
		s += " (informational)"
	}
	if d.Verdict == VerdictInsufficient && d.Note != "" {
		s += " (" + d.Note + ")"
	}
	if d.ProcsChanged() {
		s += fmt.Sprintf(" (GOMAXPROCS %d→%d)", d.OldProcs, d.NewProcs)
	}
	return s
}

var verdictIcon = map[Verdict]string{
	VerdictRegression:   "🔴",
	VerdictImprovement:  "🟢",
	VerdictWithin:       "⚪",
	VerdictNoChange:     "⚪",
	VerdictInsufficient: "⚠️",
	VerdictUnreachable:  "⚠️",
	VerdictAdded:        "🆕",
	VerdictRemoved:      "➖",
}

// WriteCompareMarkdown writes a report fit for a pull-request comment:
// verdict first, regressions listed, full table folded.
func WriteCompareMarkdown(w io.Writer, c *Comparison) error {
	regs := c.Regressions()
	fmt.Fprintln(w, "## Performance regression check")
	fmt.Fprintln(w)
	if c.Baseline == nil {
		fmt.Fprintln(w, "No baseline record was found, so nothing was compared. This run is recorded as the first baseline.")
		return nil
	}
	// The headline is the gate's verdict, the one compare exits with.
	v := c.Verdict("this run")
	switch {
	case v.Passed():
		fmt.Fprintf(w, "🟢 **No regression** against `%s` (commit `%s`).\n", c.Baseline.Name, c.Baseline.Commit)
	case c.Compared() == 0:
		fmt.Fprintf(w, "🔴 **Nothing compared**: no benchmark of this run is in `%s` (commit `%s`): %d new, %d missing. Were the benchmarks renamed?\n",
			c.Baseline.Name, c.Baseline.Commit, c.Count(VerdictAdded), c.Count(VerdictRemoved))
	case len(regs) > 0:
		fmt.Fprintf(w, "🔴 **%d regression(s)** against `%s` (commit `%s`).\n", len(regs), c.Baseline.Name, c.Baseline.Commit)
	case v.Code == GateCannotJudge:
		fmt.Fprintf(w, "🔴 **Cannot judge** against `%s` (commit `%s`): the gate fails.\n", c.Baseline.Name, c.Baseline.Commit)
	default:
		fmt.Fprintf(w, "🔴 **Gate failed** against `%s` (commit `%s`).\n", c.Baseline.Name, c.Baseline.Commit)
	}
	if !v.Passed() && c.Compared() > 0 {
		fmt.Fprintln(w)
		for _, r := range v.Reasons {
			fmt.Fprintf(w, "- %s\n", r)
		}
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "A metric regresses when the Mann-Whitney U test gives p < %.2f **and** its median is worse by more than %.1f%%%s.", c.Alpha, c.ThresholdPct, gateText(c))
	if n := c.Count(VerdictInsufficient); n > 0 {
		fmt.Fprintf(w, " %d metric(s) had too few samples to decide (run the benchmark with more repetitions).", n)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w)
	for _, warn := range c.Warnings {
		fmt.Fprintf(w, "⚠️ %s.\n\n", warn)
	}
	writeSkippedMarkdown(w, c.Skipped)
	writeRows := func(ds []Delta) {
		fmt.Fprintln(w, "| | benchmark | unit | baseline | new | change | p | n |")
		fmt.Fprintln(w, "|---|---|---|--:|--:|--:|--:|--:|")
		for _, d := range ds {
			icon := verdictIcon[d.Verdict]
			if d.Informational && d.Verdict == VerdictRegression {
				icon = "🟡"
			}
			fmt.Fprintf(w, "| %s | `%s` | %s | %s | %s | %s | %s | %d+%d |\n", icon, d.Name, d.Unit,
				fmtOpt(d.OldMedian, d.OldN, d.Unit), fmtOpt(d.NewMedian, d.NewN, d.Unit),
				formatPct(d.ChangePct), formatP(d.P), d.OldN, d.NewN)
		}
	}
	if len(regs) > 0 {
		fmt.Fprintln(w, "### Regressions")
		fmt.Fprintln(w)
		writeRows(regs)
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w, "<details><summary>All metrics</summary>")
	fmt.Fprintln(w)
	writeRows(c.Deltas)
	fmt.Fprintln(w)
	fmt.Fprintln(w, "</details>")
	return nil
}

// writeSkippedMarkdown lists the damaged records passed over.
func writeSkippedMarkdown(w io.Writer, skipped []SkippedRecord) {
	for _, sk := range skipped {
		fmt.Fprintf(w, "⚠️ Skipped a damaged record: %s\n\n", sk.Reason) // the reason names the record
	}
}

// WriteTrendTable prints trends for a terminal.
func WriteTrendTable(w io.Writer, ts []Trend, days int) error {
	fmt.Fprintf(w, "last %d days, one point per record (median of its samples)\n", days)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "BENCHMARK\tUNIT\tN\tFIRST\tLAST\tMIN\tMAX\tMEDIAN\tCHANGE\tDIRECTION\tTREND")
	for _, t := range ts {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.Name, t.Unit, len(t.Points),
			FormatValue(t.First, t.Unit), FormatValue(t.Last, t.Unit), FormatValue(t.Min, t.Unit),
			FormatValue(t.Max, t.Unit), FormatValue(t.Median, t.Unit), formatPct(t.ChangePct), t.Direction, t.Sparkline())
	}
	return tw.Flush()
}

// WriteTrendMarkdown writes trends as a Markdown table.
func WriteTrendMarkdown(w io.Writer, ts []Trend, days int) error {
	fmt.Fprintf(w, "## Performance trend, last %d days\n\n", days)
	if len(ts) == 0 {
		_, err := fmt.Fprintln(w, "No records in this period.")
		return err
	}
	fmt.Fprintln(w, "| benchmark | unit | records | first | last | min | max | median | change | direction | trend |")
	fmt.Fprintln(w, "|---|---|--:|--:|--:|--:|--:|--:|--:|---|---|")
	for _, t := range ts {
		fmt.Fprintf(w, "| `%s` | %s | %d | %s | %s | %s | %s | %s | %s | %s | %s |\n", t.Name, t.Unit, len(t.Points),
			FormatValue(t.First, t.Unit), FormatValue(t.Last, t.Unit), FormatValue(t.Min, t.Unit),
			FormatValue(t.Max, t.Unit), FormatValue(t.Median, t.Unit), formatPct(t.ChangePct), t.Direction,
			strings.TrimSpace(t.Sparkline()))
	}
	return nil
}
