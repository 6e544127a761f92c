package cli

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/acgs-lite/acgs/internal/perfhistory"
)

func init() { register(newRegressCmd) }

// regressThresholdDefault is REGRESSION_THRESHOLD_PERCENT, else 10. A value
// that is set but not a finite percentage >= 0 is an error: taking 10 (or
// Inf, which passes everything) in its place would gate on a threshold
// nobody chose.
func regressThresholdDefault() (float64, error) {
	return perfEnvFloat("REGRESSION_THRESHOLD_PERCENT", perfhistory.DefaultThresholdPct, false, perfNonNegative, regressThresholdWant)
}

const regressThresholdWant = "a finite percentage >= 0"

// regressThreshold is --threshold when given, else the environment's.
func regressThreshold(cmd *cobra.Command, flag float64) (float64, error) {
	if !cmd.Flags().Changed("threshold") {
		return regressThresholdDefault()
	}
	if !perfNonNegative(flag) {
		return 0, fmt.Errorf("--threshold %v: want %s", flag, regressThresholdWant)
	}
	return flag, nil
}

func regressReadInput(path string) ([]byte, error) {
	if path == "" {
		return nil, errors.New("--input is required (a Go benchmark format file, or - for stdin)")
	}
	if path == "-" {
		return io.ReadAll(os.Stdin)
	}
	return os.ReadFile(path)
}

// regressWriteMarkdown renders to a buffer first so that a failed report
// never leaves half a comment behind.
func regressWriteMarkdown(path string, write func(io.Writer) error) error {
	if path == "" {
		return nil
	}
	var buf bytes.Buffer
	if err := write(&buf); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

func newRegressCmd() *cobra.Command {
	var store string
	cmd := &cobra.Command{
		Use:   "regress",
		Short: "Record benchmark results over time and detect regressions (Mann-Whitney U, as benchstat)",
		Long: `regress keeps Go benchmark format results in a store, one file per record named
<time>_<commit>.txt, in a directory or an S3-compatible bucket
(--store s3://bucket/prefix; env AWS_REGION, S3_BUCKET, S3_ENDPOINT,
S3_INSECURE, S3_CREATE_BUCKET, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY).

A metric regresses only when the Mann-Whitney U test says the change is
significant (p < --alpha) and its median moved by more than --threshold
percent (REGRESSION_THRESHOLD_PERCENT, default 10) in the worse direction.
Better higher: the units listed here, which the project's benchmarks emit
(req/s, decisions/s, gateway-calls/s, direct-calls/s, B/s, speedup,
x-faster, throughput-ratio, l1hits/decision, l2hits/decision). Better lower:
every other unit (times, bytes, allocations, errors, errors/s, miss ratios).
A "Unit <unit> better=higher" line in the input overrides both; a unit that
is neither listed nor a known cost is judged lower-is-better and named in the
report's warnings. --commit and --baseline-commit match abbreviated SHAs
either way (a prefix of the record's, or a record's of 4+ characters).`,
	}
	cmd.PersistentFlags().StringVar(&store, "store", "", "directory or s3://bucket/prefix")
	openStore := func(cmd *cobra.Command) (perfhistory.Store, error) {
		if store == "" {
			return nil, errors.New("--store is required")
		}
		return perfhistory.OpenStore(cmd.Context(), store)
	}
	cmd.AddCommand(newRegressRecordCmd(openStore), newRegressCompareCmd(openStore), newRegressTrendCmd(openStore))
	return cmd
}

type regressStoreOpener func(*cobra.Command) (perfhistory.Store, error)

func newRegressRecordCmd(open regressStoreOpener) *cobra.Command {
	var input, commit, at string
	cmd := &cobra.Command{
		Use:   "record",
		Short: "Store a benchmark result for a commit",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			data, err := regressReadInput(input)
			if err != nil {
				return err
			}
			t := time.Now()
			if at != "" {
				if t, err = time.Parse(time.RFC3339, at); err != nil {
					return fmt.Errorf("--time: %w", err)
				}
			}
			if commit == "" {
				commit = os.Getenv("GITHUB_SHA")
			}
			rec, err := perfhistory.NewRecord(t, commit, data)
			if err != nil {
				return fmt.Errorf("%s: %w", input, err)
			}
			s, err := open(cmd)
			if err != nil {
				return err
			}
			if err := s.Put(cmd.Context(), rec); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "recorded %s\n", rec.Name)
			return nil
		},
	}
	cmd.Flags().StringVar(&input, "input", "", "Go benchmark format file (- for stdin)")
	cmd.Flags().StringVar(&commit, "commit", "", "commit of the result (default: $GITHUB_SHA, else unknown)")
	cmd.Flags().StringVar(&at, "time", "", "time of the result, RFC 3339 (default: now)")
	return cmd
}

// Exit codes of regress compare: 1 is a verdict on the input (it was judged
// and fails), 2 says it could not be judged (flags, input, store, no
// baseline), so a CI step can tell a regression from a broken setup.
const (
	regressExitFail  = 1
	regressExitError = 2
)

// regressNoBaselineTag begins the stderr line compare prints when the
// store holds no baseline and --allow-empty-history would have passed: a
// stable marker for scripts (ci-validate.sh's first-run hint), as exit 2
// has other causes.
const regressNoBaselineTag = "no-baseline:"

// regressCannotJudge marks err as exit status 2.
func regressCannotJudge(err error) error {
	var ee *ExitError
	if err == nil || errors.As(err, &ee) {
		return err
	}
	return &ExitError{Code: regressExitError, Err: err}
}

func newRegressCompareCmd(open regressStoreOpener) *cobra.Command {
	var (
		input, baselineCommit, commit, markdown string
		days                                    int
		opts                                    perfhistory.CompareOptions
		asJSON, allowEmpty, allowMissing        bool
		gateUnits                               []string
	)
	cmd := &cobra.Command{
		Use:   "compare",
		Short: "Compare a benchmark result with a stored baseline; exit 1 on a regression, 2 when it cannot compare",
		Long: `compare judges --input against a baseline: the newest record of
--baseline-commit, or the newest record at least --days old, or (default) the
newest record. Records of --commit (the input's own commit) are skipped.
Damaged records (empty, unparsable) are skipped, and named, for the next
one that fits.

Many metrics tested at --alpha each make false alarms likely: with CI's 48
metrics (6 samples a side, 10-20% noise) noise alone failed the gate in
about a third of runs. So only --gate-units (default sec/op and req/s)
gate, the other units' regressions are reported as informational, and
--holm (default on) adjusts the gated metrics' p-values with Holm's method,
keeping the chance that noise fails the gate at most --alpha (0-2% in
simulation) while a benchmark twice as slow is still caught. Metrics that
are one constant value on both sides (0 errors) cannot vary and do not
count. With 6+6 samples the smallest p-value is 2/924 = 0.00216, below
0.05/23 but not 0.05/24: Holm over 24 or more gated metrics could never
flag one, and 5+5 samples (0.0079) allow at most 6. Such a comparison is
exit 2, naming the rounds needed.

Exit status:
  0  no regression
  1  a regression; or the baseline shares no benchmark with the input
     (nothing was compared); or a shared metric had too few samples; or a
     metric of the baseline is missing from the input (a benchmark that
     crashed or was dropped), unless --allow-missing
  2  nothing could be judged: bad flags, arguments or input, a store that is missing or
     cannot be read, no baseline in it, or every record that fits damaged;
     or too few samples for Holm over this many gated metrics; or no
     metric of --gate-units (tidied: ns/op is sec/op) in both sides; or
     the report (stdout, --json, --markdown) could not be written: the
     verdict is printed on stderr first

A store that does not exist or holds no record of another commit (a mistyped
--store, a wrong S3 prefix, an evicted CI cache) is exit 2, unless
--allow-empty-history says an empty history is expected (a first run): then
it reports so and exits 0. Without that flag, stderr then has a line
beginning "no-baseline:", a stable marker for scripts. A --baseline-commit
or --days that matches no record is exit 2 whatever the flag says.

Benchmarks are matched by name without the "-N" GOMAXPROCS suffix, so a run
on a machine with another core count still compares; the report warns when
the two sides ran at different GOMAXPROCS.`,
		// Bad arguments are exit 2 like bad flags: 1 is a regression's.
		Args: func(cmd *cobra.Command, args []string) error { return regressCannotJudge(cobra.NoArgs(cmd, args)) },
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			var err error
			if opts.ThresholdPct, err = regressThreshold(cmd, opts.ThresholdPct); err != nil {
				return regressCannotJudge(err)
			}
			// NaN compares false with everything: an alpha of NaN would call
			// nothing significant and pass every regression.
			if !(opts.Alpha > 0 && opts.Alpha < 1) {
				return regressCannotJudge(fmt.Errorf("--alpha %v: want a significance level in (0, 1)", opts.Alpha))
			}
			if days < 0 {
				return regressCannotJudge(fmt.Errorf("--days %d: want >= 0 (0: the newest record)", days))
			}
			switch {
			case len(gateUnits) == 1 && gateUnits[0] == "all":
				opts.Gate = nil
			case len(gateUnits) == 0:
				return regressCannotJudge(errors.New("--gate-units: give units, or all"))
			default:
				// Compare tidies them as the parser tidies the input's
				// units: the ns/op of the user's file is sec/op, MB/s is B/s.
				opts.Gate = gateUnits
			}
			data, err := regressReadInput(input)
			if err != nil {
				return regressCannotJudge(err)
			}
			cur, err := perfhistory.ParseBenchmarks(data)
			if err != nil {
				return regressCannotJudge(fmt.Errorf("%s: %w", input, err))
			}
			if len(cur.Keys) == 0 {
				return regressCannotJudge(fmt.Errorf("%s: no benchmark results", input))
			}
			s, err := open(cmd)
			if err != nil {
				return regressCannotJudge(err)
			}
			storeName, _ := cmd.Flags().GetString("store")
			metas, err := s.List(ctx)
			if err != nil && !errors.Is(err, perfhistory.ErrStoreNotFound) {
				return regressCannotJudge(fmt.Errorf("store %s: %w", storeName, err))
			}
			listErr := err
			if commit == "" {
				commit = os.Getenv("GITHUB_SHA")
			}
			out := cmd.OutOrStdout()
			base, old, skipped, err := perfhistory.LoadBaseline(ctx, s, metas, baselineCommit, days, time.Now(), commit)
			if errors.Is(err, perfhistory.ErrNoBaseline) {
				if listErr != nil {
					err = listErr // the store itself is missing: say that
				}
				selected := baselineCommit != "" || days != 0
				if !allowEmpty || selected {
					hint := ""
					if !selected {
						hint = "; check --store, or pass --allow-empty-history if an empty history is expected (a first run)"
						// A stable line a script can check, to tell this
						// exit 2 (which --allow-empty-history would pass)
						// from the others without parsing free text.
						fmt.Fprintf(cmd.ErrOrStderr(), "%s store %s holds no baseline\n", regressNoBaselineTag, storeName)
					}
					err = fmt.Errorf("nothing to compare with in store %s: %w%s", storeName, err, hint)
					if asJSON {
						if jerr := regressWriteNoBaselineJSON(out, storeName, opts, err.Error(), false); jerr != nil {
							return regressCannotJudge(fmt.Errorf("%w; and writing the JSON: %w", err, jerr))
						}
					}
					return regressCannotJudge(err)
				}
				note := fmt.Sprintf("no baseline in store %s (%v): nothing to compare, as --allow-empty-history allows", storeName, err)
				if asJSON {
					err = regressWriteNoBaselineJSON(out, storeName, opts, note, true)
				} else {
					_, err = fmt.Fprintln(out, note)
				}
				if err == nil {
					empty := &perfhistory.Comparison{Alpha: opts.Alpha, ThresholdPct: opts.ThresholdPct}
					err = regressWriteMarkdown(markdown, func(w io.Writer) error { return perfhistory.WriteCompareMarkdown(w, empty) })
				}
				if err != nil {
					fmt.Fprintf(cmd.ErrOrStderr(), "verdict: %s\n", note)
					return regressCannotJudge(fmt.Errorf("writing the report: %w", err))
				}
				return nil
			}
			if err != nil {
				for _, sk := range skipped {
					fmt.Fprintf(cmd.ErrOrStderr(), "skipped %s\n", sk.Reason)
				}
				return regressCannotJudge(err)
			}
			opts.AllowMissing = allowMissing
			c := perfhistory.Compare(old, cur, opts)
			c.Baseline = &base
			c.Skipped = skipped
			for _, u := range c.Gate {
				if !regressHasUnit(old, u) && !regressHasUnit(cur, u) {
					c.Warnings = append(c.Warnings, fmt.Sprintf("--gate-units %s matches no metric of the run or the baseline", u))
				}
			}
			if asJSON {
				err = perfWriteJSON(out, c)
			} else {
				err = perfhistory.WriteCompareTable(out, c)
			}
			if err == nil {
				err = regressWriteMarkdown(markdown, func(w io.Writer) error { return perfhistory.WriteCompareMarkdown(w, c) })
			}
			verdict := regressVerdict(c, input)
			if err != nil {
				// A report that could not be written is exit 2 (1 is a
				// regression's), after the verdict, which is not lost.
				msg := "no regression"
				if verdict != nil {
					msg = verdict.Error()
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "verdict: %s\n", msg)
				return regressCannotJudge(fmt.Errorf("writing the report: %w", err))
			}
			return verdict
		},
	}
	f := cmd.Flags()
	f.StringVar(&input, "input", "", "new Go benchmark format file (- for stdin)")
	f.StringVar(&baselineCommit, "baseline-commit", "", "compare with the newest record of this commit (prefix)")
	f.IntVar(&days, "days", 0, "compare with the newest record at least this many days old")
	f.StringVar(&commit, "commit", "", "commit of the input, whose records are not used as baseline (default: $GITHUB_SHA)")
	f.Float64Var(&opts.ThresholdPct, "threshold", perfhistory.DefaultThresholdPct, "minimum worsening of the median, in percent (default: $REGRESSION_THRESHOLD_PERCENT or 10)")
	f.Float64Var(&opts.Alpha, "alpha", perfhistory.DefaultAlpha, "significance level of the Mann-Whitney U test")
	f.StringVar(&markdown, "markdown", "", "write a Markdown report (for a pull-request comment) to this file")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	f.BoolVar(&allowEmpty, "allow-empty-history", false, "exit 0 when the store is missing or holds no record of another commit (a first run); never with --baseline-commit or --days")
	f.StringSliceVar(&gateUnits, "gate-units", perfhistory.DefaultGateUnits, "units whose regressions fail the gate (comma-separated, or all; tidied as the input is: ns/op is sec/op, MB/s is B/s); other units are informational; none compared is exit 2")
	f.BoolVar(&opts.Holm, "holm", true, "adjust the gated metrics' p-values with Holm's method (family-wise false-alarm rate <= --alpha)")
	f.BoolVar(&allowMissing, "allow-missing", false, "pass when metrics of the baseline are missing from the input (benchmarks renamed or removed on purpose)")
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return regressCannotJudge(err) })
	return cmd
}

// regressWriteNoBaselineJSON is compare --json's document when there is no
// baseline: a reader of the JSON gets JSON, with "baseline": null, whether
// an empty history was allowed (passed) or not (error).
func regressWriteNoBaselineJSON(w io.Writer, store string, opts perfhistory.CompareOptions, msg string, passed bool) error {
	doc := struct {
		Baseline     *perfhistory.RecordMeta `json:"baseline"`
		Store        string                  `json:"store"`
		Alpha        float64                 `json:"alpha"`
		ThresholdPct float64                 `json:"threshold_pct"`
		Deltas       []perfhistory.Delta     `json:"deltas"`
		Passed       bool                    `json:"passed"`
		Note         string                  `json:"note,omitempty"`
		Error        string                  `json:"error,omitempty"`
	}{Store: store, Alpha: opts.Alpha, ThresholdPct: opts.ThresholdPct, Deltas: []perfhistory.Delta{}, Passed: passed}
	if passed {
		doc.Note = msg
	} else {
		doc.Error = msg
	}
	return perfWriteJSON(w, doc)
}

// regressVerdict is compare's exit on a comparison, from the same verdict
// as the Markdown report's headline: nil (exit 0), or an ExitError of code 1
// (regression, nothing compared, too few samples, metrics missing) or 2
// (the gate could not judge).
func regressVerdict(c *perfhistory.Comparison, input string) error {
	v := c.Verdict(input)
	if v.Passed() {
		return nil
	}
	return &ExitError{Code: v.Code, Err: errors.New(v.String())}
}

// regressHasUnit reports whether a metric of s is in the unit.
func regressHasUnit(s *perfhistory.Set, unit string) bool {
	for _, k := range s.Keys {
		if k.Unit == unit {
			return true
		}
	}
	return false
}

func newRegressTrendCmd(open regressStoreOpener) *cobra.Command {
	var (
		days      int
		threshold float64
		markdown  string
		asJSON    bool
	)
	cmd := &cobra.Command{
		Use:   "trend",
		Short: "Summarise each benchmark over the last days: first, last, min, max, median, direction",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if days < 1 {
				return errors.New("--days must be >= 1")
			}
			var err error
			if threshold, err = regressThreshold(cmd, threshold); err != nil {
				return err
			}
			s, err := open(cmd)
			if err != nil {
				return err
			}
			metas, sets, skipped, err := perfhistory.LoadSince(cmd.Context(), s, time.Now().Add(-time.Duration(days)*24*time.Hour))
			if err != nil {
				return err
			}
			ts := perfhistory.ComputeTrends(metas, sets, threshold)
			out := cmd.OutOrStdout()
			notes := out // skipped records, kept out of the JSON document
			if asJSON {
				notes = cmd.ErrOrStderr()
			}
			for _, sk := range skipped {
				fmt.Fprintf(notes, "skipped %s\n", sk.Reason)
			}
			if asJSON {
				err = perfWriteJSON(out, ts)
			} else {
				fmt.Fprintf(out, "%d record(s)\n", len(metas))
				err = perfhistory.WriteTrendTable(out, ts, days)
			}
			if err != nil {
				return err
			}
			return regressWriteMarkdown(markdown, func(w io.Writer) error {
				if err := perfhistory.WriteTrendMarkdown(w, ts, days); err != nil {
					return err
				}
				for _, sk := range skipped {
					fmt.Fprintf(w, "\nSkipped damaged record `%s`.\n", sk.Name)
				}
				return nil
			})
		},
	}
	f := cmd.Flags()
	f.IntVar(&days, "days", 30, "period, in days back from now")
	f.Float64Var(&threshold, "threshold", perfhistory.DefaultThresholdPct, "changes within this percent are flat (default: $REGRESSION_THRESHOLD_PERCENT or 10)")
	f.StringVar(&markdown, "markdown", "", "write a Markdown report to this file")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
