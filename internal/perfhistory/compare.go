package perfhistory

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"golang.org/x/perf/benchfmt"
	"golang.org/x/perf/benchmath"
	"golang.org/x/perf/benchunit"
)

// DefaultAlpha is benchstat's significance level.
const DefaultAlpha = 0.05

// DefaultThresholdPct is how far a median must move, in percent, before a
// significant change is called a regression: small significant shifts are
// usual between runs on a shared 2-core machine and are not worth a red PR.
const DefaultThresholdPct = 10.0

// Direction says which way a unit improves.
type Direction int

// Directions.
const (
	LowerIsBetter  Direction = -1
	HigherIsBetter Direction = 1
)

func (d Direction) String() string {
	if d == HigherIsBetter {
		return "higher is better"
	}
	return "lower is better"
}

// higherIsBetter are the units the project's benchmarks emit that improve
// upward (acgs bench's req/s, the Go benchmarks' ReportMetric calls, and
// B/s from SetBytes). A list, not a pattern: "errors/s" and "miss-ratio"
// match "/s" and "-ratio" but are better lower.
var higherIsBetter = map[string]bool{
	"req/s": true, "decisions/s": true, "gateway-calls/s": true, "direct-calls/s": true, "B/s": true,
	"speedup": true, "x-faster": true, "throughput-ratio": true,
	"l1hits/decision": true, "l2hits/decision": true,
}

// lowerIsBetter are the other units the project emits, costs all; times
// (…sec/op, …sec/decision, …-us, …-µs) are recognised by suffix.
var lowerIsBetter = map[string]bool{
	"B/op": true, "allocs/op": true, "B/entry": true, "json-B/entry": true,
	"entries": true, "stored-values": true, "roundtrips/decision": true,
	"dropped/op": true, "errors": true, "shed": true,
}

// KnownUnit reports whether the unit's direction is known: from a "better"
// unit metadata line, or as one of the units the project's benchmarks emit.
func KnownUnit(unit string, meta benchfmt.UnitMetadataMap) bool {
	if meta != nil && meta.Get(unit, "better") != nil && meta.GetBetter(unit) != 0 {
		return true
	}
	if higherIsBetter[unit] || lowerIsBetter[unit] {
		return true
	}
	for _, suf := range []string{"sec/op", "sec/decision", "-us", "-µs"} {
		if strings.HasSuffix(unit, suf) {
			return true
		}
	}
	return false
}

// UnitDirection decides how a unit improves: an explicit "better" unit
// metadata line wins; else the units in higherIsBetter (rates, speed-ups,
// cache hits) are better higher, and everything else (times, bytes,
// allocations, errors, and any unit not known, which KnownUnit tells and
// Compare warns about) lower.
func UnitDirection(unit string, meta benchfmt.UnitMetadataMap) Direction {
	if meta != nil && meta.Get(unit, "better") != nil {
		if meta.GetBetter(unit) > 0 {
			return HigherIsBetter
		}
		if meta.GetBetter(unit) < 0 {
			return LowerIsBetter
		}
	}
	if higherIsBetter[unit] {
		return HigherIsBetter
	}
	return LowerIsBetter
}

// unknownUnitsWarning names the units of cur whose direction is a guess.
func unknownUnitsWarning(cur *Set) []string {
	var unknown []string
	for _, k := range cur.Keys {
		if !KnownUnit(k.Unit, cur.Units) && !slices.Contains(unknown, k.Unit) {
			unknown = append(unknown, k.Unit)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	return []string{fmt.Sprintf("unit(s) of unknown direction, judged lower is better: %s (a \"Unit <unit> better=higher\" line in the input says otherwise)", strings.Join(unknown, ", "))}
}

// Verdict is the outcome for one metric.
type Verdict string

// Verdicts.
const (
	VerdictRegression   Verdict = "regression"
	VerdictImprovement  Verdict = "improvement"
	VerdictWithin       Verdict = "within threshold" // significant but small
	VerdictNoChange     Verdict = "no significant change"
	VerdictInsufficient Verdict = "too few samples"
	// VerdictUnreachable is a gated metric Holm's adjustment could never
	// flag on its own: its smallest possible p-value is not below alpha/m.
	VerdictUnreachable Verdict = "too few samples for Holm"
	VerdictAdded       Verdict = "new"
	VerdictRemoved     Verdict = "missing"
)

// Delta is the comparison of one metric.
type Delta struct {
	Key
	Direction Direction `json:"-"`
	OldMedian float64   `json:"old_median"`
	NewMedian float64   `json:"new_median"`
	OldN      int       `json:"old_n"`
	NewN      int       `json:"new_n"`
	P         float64   `json:"p"`
	// ChangePct is (new-old)/old in percent; +Inf when old is 0 and new is not.
	ChangePct float64 `json:"change_pct"`
	Verdict   Verdict `json:"verdict"`
	Note      string  `json:"note,omitempty"`
	// Informational says the metric's unit is not gated (CompareOptions.Gate):
	// its verdict is reported and fails nothing.
	Informational bool `json:"informational,omitempty"`
	// OldProcs and NewProcs are the GOMAXPROCS of each side (0 for the side
	// that lacks the metric).
	OldProcs int `json:"old_gomaxprocs,omitempty"`
	NewProcs int `json:"new_gomaxprocs,omitempty"`
}

// finite returns v, or nil for NaN and ±Inf, which JSON has no number for:
// the p-value and change of a metric on one side only, a change from a zero
// median. (Samples are finite: ParseBenchmarks refuses NaN and ±Inf.)
func finite(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}

// MarshalJSON writes the values that are NaN or infinite as null, and the
// median of a side without samples (a new or missing metric) too: the
// default encoder fails on NaN and ±Inf, and with it compare --json, exit
// code and all.
func (d Delta) MarshalJSON() ([]byte, error) {
	type plain Delta // without this method
	oldMedian, newMedian := finite(d.OldMedian), finite(d.NewMedian)
	if d.OldN == 0 {
		oldMedian = nil
	}
	if d.NewN == 0 {
		newMedian = nil
	}
	return json.Marshal(struct {
		plain
		OldMedian *float64 `json:"old_median"`
		NewMedian *float64 `json:"new_median"`
		P         *float64 `json:"p"`
		ChangePct *float64 `json:"change_pct"`
	}{plain(d), oldMedian, newMedian, finite(d.P), finite(d.ChangePct)})
}

// ProcsChanged reports whether both sides have the metric and ran it at
// different GOMAXPROCS.
func (d *Delta) ProcsChanged() bool {
	return d.OldProcs > 0 && d.NewProcs > 0 && d.OldProcs != d.NewProcs
}

// CompareOptions are the decision thresholds. ThresholdPct is taken as
// given (0 flags any significant worsening); start from
// DefaultCompareOptions.
type CompareOptions struct {
	Alpha        float64 // <= 0 means DefaultAlpha
	ThresholdPct float64
	// Gate lists the units whose regressions fail the comparison (a
	// benchmark's time and throughput: DefaultGateUnits); the other units'
	// verdicts are informational. Nil gates every unit. Each gated metric is
	// a test at Alpha, so the more of them, the more false alarms: CI's
	// bench emits 48 metrics, of which 18 are sec/op or req/s. Units are
	// tidied as ParseBenchmarks tidies the input's (ns/op is sec/op, MB/s
	// is B/s; white space around a unit and repeats are dropped), so a
	// unit as the benchmark printed it gates its metrics.
	Gate []string
	// Holm adjusts the gated metrics' significance with Holm's step-down
	// method, so that noise fails the comparison with probability at most
	// Alpha however many metrics are gated. With 6+6 samples the U test's
	// smallest p-value is 2/924 = 0.00216, below 0.05/23 but not 0.05/24:
	// over 24 or more gated metrics none could be flagged alone, which
	// Compare marks VerdictUnreachable (see RoundsNeeded).
	Holm bool
	// AllowMissing passes metrics of the baseline missing from the new
	// result (benchmarks renamed or removed on purpose).
	AllowMissing bool
}

// DefaultGateUnits are the units a regression gate judges by default: the
// time of an operation and the throughput (acgs bench's req/s, which is
// closed-loop, so nearly the reciprocal of its sec/op).
var DefaultGateUnits = []string{"sec/op", "req/s"}

// DefaultCompareOptions are benchstat's alpha and a 10% threshold.
func DefaultCompareOptions() CompareOptions {
	return CompareOptions{Alpha: DefaultAlpha, ThresholdPct: DefaultThresholdPct}
}

// Comparison is a new result judged against a baseline.
type Comparison struct {
	Baseline     *RecordMeta `json:"baseline,omitempty"`
	Alpha        float64     `json:"alpha"`
	ThresholdPct float64     `json:"threshold_pct"`
	Deltas       []Delta     `json:"deltas"`
	// Warnings say what makes the comparison less sound than usual, such as
	// a different GOMAXPROCS on the two sides.
	Warnings []string `json:"warnings,omitempty"`
	// Skipped are the damaged records passed over to reach the baseline.
	Skipped []SkippedRecord `json:"skipped_records,omitempty"`
	// Gate and Holm are the options the comparison was made with.
	Gate []string `json:"gate_units,omitempty"`
	Holm bool     `json:"holm,omitempty"`
	// HolmM is how many gated metrics Holm's adjustment was over (m).
	HolmM int `json:"holm_m,omitempty"`
	// AllowMissing is the option the comparison was made with.
	AllowMissing bool `json:"allow_missing,omitempty"`
}

// Unreachable is how many gated metrics Holm's adjustment could not have
// flagged alone, whatever the data (VerdictUnreachable): with them the
// gate cannot pass a run, as it could not have failed it.
func (c *Comparison) Unreachable() int { return c.gatedCount(VerdictUnreachable) }

// RoundsNeeded is the number of samples a side, both sides equal, whose
// smallest U-test p-value, 2/C(2n, n), is below alpha/m: the fewest with
// which Holm over m metrics can flag one of them.
func RoundsNeeded(alpha float64, m int) int {
	if m < 1 {
		m = 1
	}
	n := 1
	for minP(n, n) >= alpha/float64(m) {
		n++
	}
	return n
}

// MaxAdvisedRounds is the most rounds of the new side compare advises
// against a baseline: a baseline that needs more has too few rounds, and
// recording a new one costs less.
const MaxAdvisedRounds = 30

// RoundsNeededAgainst is the fewest samples of the new side whose smallest
// U-test p against a baseline of n1 samples, 2/C(n1+n2, n1), is below
// alpha/m; 0 when more than MaxAdvisedRounds would be needed. A history
// baseline cannot be re-run, so RoundsNeeded (both sides equal) is wrong
// advice when it has fewer rounds than that.
func RoundsNeededAgainst(alpha float64, m, n1 int) int {
	if m < 1 {
		m = 1
	}
	for n2 := 1; n2 <= MaxAdvisedRounds; n2++ {
		if n1 > 0 && minP(n1, n2) < alpha/float64(m) {
			return n2
		}
	}
	return 0
}

// Compared returns how many metrics are in both the baseline and the new
// result. None means the two share no benchmark (renamed, or another
// suite), so nothing was judged at all.
func (c *Comparison) Compared() int {
	return len(c.Deltas) - c.Count(VerdictAdded) - c.Count(VerdictRemoved)
}

// Undecided is how many gated metrics the input shares with the baseline
// had too few samples for the test to decide: a gate that passed them would
// pass any change (acgs bench --count 1 can never fail).
func (c *Comparison) Undecided() int { return c.gatedCount(VerdictInsufficient) }

// GatedCompared is how many gated metrics both sides have: none means the
// gate judged nothing (--gate-units naming no unit of the run).
func (c *Comparison) GatedCompared() int {
	n := 0
	for _, d := range c.Deltas {
		if !d.Informational && d.Verdict != VerdictAdded && d.Verdict != VerdictRemoved {
			n++
		}
	}
	return n
}

// gatedCount returns how many gated (not informational) deltas have the
// verdict.
func (c *Comparison) gatedCount(v Verdict) int {
	n := 0
	for _, d := range c.Deltas {
		if d.Verdict == v && !d.Informational {
			n++
		}
	}
	return n
}

// Count returns how many deltas have the verdict.
func (c *Comparison) Count(v Verdict) int {
	n := 0
	for _, d := range c.Deltas {
		if d.Verdict == v {
			n++
		}
	}
	return n
}

// Regressions returns the regressed gated metrics.
func (c *Comparison) Regressions() []Delta {
	var out []Delta
	for _, d := range c.Deltas {
		if d.Verdict == VerdictRegression && !d.Informational {
			out = append(out, d)
		}
	}
	return out
}

// Compare judges every metric of cur against old. A metric regresses only
// when both hold: the Mann-Whitney U test rejects "same distribution" at
// alpha (so noise is not a regression), and the median moved by more than the
// threshold in the worse direction (so a tiny but consistent shift is not
// one either).
func Compare(old, cur *Set, opts CompareOptions) *Comparison {
	if opts.Alpha <= 0 {
		opts.Alpha = DefaultAlpha
	}
	if opts.ThresholdPct < 0 {
		opts.ThresholdPct = 0
	}
	opts.Gate = tidyUnits(opts.Gate)
	th := benchmath.Thresholds{CompareAlpha: opts.Alpha}
	cmp := &Comparison{Alpha: opts.Alpha, ThresholdPct: opts.ThresholdPct}
	for _, k := range cur.Keys {
		nv := cur.Values[k]
		dir := UnitDirection(k.Unit, cur.Units)
		ov, ok := old.Values[k]
		if !ok {
			s := benchmath.NewSample(nv, &th)
			cmp.Deltas = append(cmp.Deltas, Delta{Key: k, Direction: dir, NewMedian: median(s), NewN: len(nv), P: math.NaN(), ChangePct: math.NaN(), Verdict: VerdictAdded, NewProcs: cur.Procs[k]})
			continue
		}
		d := compareSamples(k, dir, ov, nv, &th, opts.ThresholdPct)
		d.OldProcs, d.NewProcs = old.Procs[k], cur.Procs[k]
		cmp.Deltas = append(cmp.Deltas, d)
	}
	for _, k := range old.Keys {
		if _, ok := cur.Values[k]; !ok {
			s := benchmath.NewSample(old.Values[k], &th)
			cmp.Deltas = append(cmp.Deltas, Delta{Key: k, Direction: UnitDirection(k.Unit, old.Units), OldMedian: median(s), OldN: len(old.Values[k]), P: math.NaN(), ChangePct: math.NaN(), Verdict: VerdictRemoved, OldProcs: old.Procs[k]})
		}
	}
	if opts.Gate != nil {
		for i := range cmp.Deltas {
			cmp.Deltas[i].Informational = !slices.Contains(opts.Gate, cmp.Deltas[i].Unit)
		}
	}
	if opts.Holm {
		cmp.HolmM = holm(cmp.Deltas, old, cur, opts.Alpha, opts.ThresholdPct)
	}
	cmp.Gate, cmp.Holm, cmp.AllowMissing = opts.Gate, opts.Holm, opts.AllowMissing
	cmp.Warnings = append(unknownUnitsWarning(cur), procsWarnings(cmp.Deltas)...)
	return cmp
}

// tidyUnits is units as ParseBenchmarks tidies a metric's (benchunit.Tidy:
// ns/op is sec/op, MB/s is B/s), trimmed, each once, in their order; nil
// stays nil (every unit gated) and empty stays empty (none).
func tidyUnits(units []string) []string {
	if units == nil {
		return nil
	}
	out := make([]string, 0, len(units))
	for _, u := range units {
		_, tidy := benchunit.Tidy(1, strings.TrimSpace(u))
		if !slices.Contains(out, tidy) {
			out = append(out, tidy)
		}
	}
	return out
}

// procsWarnings says, once per pair of GOMAXPROCS, how many metrics ran at
// a different GOMAXPROCS than in the baseline: times and rates then change
// with the machine, not only with the code.
func procsWarnings(ds []Delta) []string {
	type pair struct{ old, cur int }
	var order []pair
	n := map[pair]int{}
	for _, d := range ds {
		if !d.ProcsChanged() {
			continue
		}
		p := pair{d.OldProcs, d.NewProcs}
		if n[p] == 0 {
			order = append(order, p)
		}
		n[p]++
	}
	var out []string
	for _, p := range order {
		out = append(out, fmt.Sprintf("%d metric(s) ran at GOMAXPROCS %d in the baseline and %d in this run: a change may come from the machine, not the code", n[p], p.old, p.cur))
	}
	return out
}

func median(s *benchmath.Sample) float64 {
	return benchmath.AssumeNothing.Summary(s, 0.95).Center
}

func compareSamples(k Key, dir Direction, ov, nv []float64, th *benchmath.Thresholds, thresholdPct float64) Delta {
	oldS, newS := benchmath.NewSample(ov, th), benchmath.NewSample(nv, th)
	c := benchmath.AssumeNothing.Compare(oldS, newS)
	d := Delta{Key: k, Direction: dir, OldMedian: median(oldS), NewMedian: median(newS), OldN: len(ov), NewN: len(nv), P: c.P}
	switch d.OldMedian {
	case d.NewMedian:
		d.ChangePct = 0
	case 0:
		d.ChangePct = math.Copysign(math.Inf(1), d.NewMedian)
	default:
		d.ChangePct = (d.NewMedian - d.OldMedian) / math.Abs(d.OldMedian) * 100
	}
	var notes []string
	for _, w := range c.Warnings {
		notes = append(notes, w.Error())
	}
	d.Note = strings.Join(notes, "; ")
	significant := c.P < c.Alpha
	if !significant && tooFewSamples(c) {
		d.Verdict = VerdictInsufficient
	} else {
		d.Verdict = judge(d, significant, thresholdPct)
	}
	return d
}

// judge is the verdict of a metric with enough samples: a significant
// change beyond the threshold regresses or improves, depending on its
// direction.
func judge(d Delta, significant bool, thresholdPct float64) Verdict {
	worse := float64(d.Direction) * -d.ChangePct // > 0 when the change is for the worse
	switch {
	case !significant:
		return VerdictNoChange
	case worse > thresholdPct:
		return VerdictRegression
	case -worse > thresholdPct:
		return VerdictImprovement
	}
	return VerdictWithin
}

// holm re-judges the gated metrics that both sides have, with enough
// samples, by Holm's step-down method: sorted by p, the i-th smallest of m
// is significant while every p before it and itself is below
// alpha/(m-i+1), which bounds the chance that noise makes any of them
// significant by alpha. It returns m.
//
// A metric whose samples are all one value on both sides (errors and shed
// of a healthy run: 0 each time) is left out of m. Its p is 1 whatever
// happens, so it can never be a false alarm, and counting it would only
// raise the others' bar: at 6+6 samples m = 24 makes every regression
// unflaggable. Leaving it out keeps the bound: whether a metric is
// constant depends only on its pooled values, and the U test's p is
// computed conditionally on those (a permutation of labels), so given the
// selection each kept metric's p is still valid and Holm over them still
// bounds the false alarms by alpha.
//
// A gated metric whose smallest possible p, 2/C(n1+n2, n1), is not below
// alpha/m (Holm's first threshold) cannot be flagged unless another metric
// is first, so a regression of it alone always passes: it is marked
// VerdictUnreachable unless it was flagged.
func holm(ds []Delta, old, cur *Set, alpha, thresholdPct float64) int {
	var idx []int
	for i, d := range ds {
		switch {
		case d.Informational, d.Verdict == VerdictAdded, d.Verdict == VerdictRemoved, d.Verdict == VerdictInsufficient:
			continue
		case constantAndEqual(old.Values[d.Key], cur.Values[d.Key]):
			continue
		}
		idx = append(idx, i)
	}
	m := len(idx)
	slices.SortStableFunc(idx, func(a, b int) int { return cmpFloat(ds[a].P, ds[b].P) })
	rejecting := true
	for rank, i := range idx {
		rejecting = rejecting && ds[i].P < alpha/float64(m-rank)
		ds[i].Verdict = judge(ds[i], rejecting, thresholdPct)
		if !rejecting && minP(ds[i].OldN, ds[i].NewN) >= alpha/float64(m) {
			ds[i].Verdict = VerdictUnreachable
		}
	}
	return m
}

// constantAndEqual reports whether every value of both samples is the same.
func constantAndEqual(a, b []float64) bool {
	if len(a) == 0 || len(b) == 0 {
		return false
	}
	for _, v := range slices.Concat(a, b) {
		if v != a[0] {
			return false
		}
	}
	return true
}

// minP is the two-sided U test's smallest p-value for samples of n1 and n2,
// reached when they do not overlap at all: 2/C(n1+n2, n1).
func minP(n1, n2 int) float64 {
	if n1 == 0 || n2 == 0 {
		return 1
	}
	comb := 1.0
	for i := 1; i <= n1; i++ {
		comb = comb * float64(n2+i) / float64(i)
	}
	return math.Min(1, 2/comb)
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// tooFewSamples reports whether the two-sided U test could not have reached
// significance whatever the data: its smallest possible p-value, when the
// samples do not overlap at all, is 2/C(n1+n2, n1) (0.1 for 3+3, 0.029 for
// 4+4), so below that a "no change" means "cannot tell".
func tooFewSamples(c benchmath.Comparison) bool {
	return minP(c.N1, c.N2) > c.Alpha
}

// ErrNoBaseline means the store has no record that fits the selection.
var ErrNoBaseline = errors.New("no baseline record")

// ErrEmptyHistory (an ErrNoBaseline) means no selection was asked for and
// the store holds no record of another commit: a first run, or a wrong
// store. Only the caller knows which.
var ErrEmptyHistory = fmt.Errorf("%w: the history holds no record of another commit", ErrNoBaseline)

// LoadBaseline selects the baseline among records (any order) and loads
// it: the newest record of the given commit (a prefix is enough) if commit
// is set; else the newest record at least `days` days older than now if
// days > 0; else the newest record. Records of excludeCommit are skipped (a
// run is not its own baseline). It passes over damaged records (ErrBadRecord: empty, unparsable, too large)
// to the next one that fits, and returning those it skipped. When every
// record that fits is damaged, it fails: that is not a store without a
// baseline, and passing would hide every regression.
func LoadBaseline(ctx context.Context, s Store, metas []RecordMeta, commit string, days int, now time.Time, excludeCommit string) (RecordMeta, *Set, []SkippedRecord, error) {
	ms := baselineCandidates(metas, commit, days, now, excludeCommit)
	if len(ms) == 0 {
		return RecordMeta{}, nil, nil, noBaselineError(len(metas), commit, days)
	}
	var skipped []SkippedRecord
	for _, m := range ms {
		set, err := loadOrSkip(ctx, s, m, &skipped)
		if err != nil {
			return RecordMeta{}, nil, skipped, err
		}
		if set != nil {
			return m, set, skipped, nil
		}
	}
	return RecordMeta{}, nil, skipped, fmt.Errorf("no usable baseline: all %d record(s) that fit are damaged (newest: %s)", len(skipped), skipped[0].Reason)
}

// baselineCandidates returns the records that fit the selection, best
// (newest) first.
func baselineCandidates(metas []RecordMeta, commit string, days int, now time.Time, excludeCommit string) []RecordMeta {
	ms := slices.Clone(metas)
	sortMetas(ms)
	var out []RecordMeta
	for i := len(ms) - 1; i >= 0; i-- {
		m := ms[i]
		if excludeCommit != "" && SameCommit(m.Commit, excludeCommit) {
			continue
		}
		switch {
		case commit != "":
			if SameCommit(m.Commit, commit) {
				out = append(out, m)
			}
		case days > 0:
			if !m.Time.After(now.Add(-time.Duration(days) * 24 * time.Hour)) {
				out = append(out, m)
			}
		default:
			out = append(out, m)
		}
	}
	return out
}

func noBaselineError(records int, commit string, days int) error {
	switch {
	case commit != "":
		return fmt.Errorf("%w for commit %s among %d record(s)", ErrNoBaseline, commit, records)
	case days > 0:
		return fmt.Errorf("%w at least %d days old among %d record(s)", ErrNoBaseline, days, records)
	}
	return fmt.Errorf("%w (%d record(s), none of another commit)", ErrEmptyHistory, records)
}

// SameCommit reports whether a record's commit is the given one, either
// abbreviated: the given name is a prefix of the record's (as
// --baseline-commit always matched), or the record's, at least 4 characters
// (git's shortest abbreviation), is a prefix of the given one.
// --baseline-commit and the exclusion of the input's own records both use
// it: the exclusion wanted an exact match, so a record stored under a short
// SHA was the baseline of a run given the full one, its own result.
func SameCommit(record, given string) bool {
	record, given = sanitizeCommit(record), sanitizeCommit(given)
	return strings.HasPrefix(record, given) || len(record) >= 4 && strings.HasPrefix(given, record)
}
