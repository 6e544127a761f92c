package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/acgs-lite/acgs/internal/loadgen"
)

func init() { register(newLoadCmd) }

// perfP99DefaultMs is the p99 objective unless --p99-ms is given:
// PERFORMANCE_TARGET_P99_MS, else 5 ms (a loose bound for a shared 2-core CI
// machine; the spec's 1 ms target is checked by the comparison script). A
// value that is set but not a finite latency > 0 is an error: falling back
// to 5 ms gated a typo'd target ("1ms", "O.5") on another objective than the
// one the user set, and a NaN one would pass every run.
func perfP99DefaultMs() (float64, error) {
	// Trimmed as the service's configuration trims it (" 5", or "5\r"
	// from an env file with Windows line endings, is 5 there).
	return perfEnvFloat("PERFORMANCE_TARGET_P99_MS", 5, true, perfPositive, "a finite latency in ms > 0")
}

// perfEnvFloat is the number in the environment variable name, or def when
// it is unset or empty; trim drops white space around it first. A value
// that does not parse, or that ok refuses, is an error naming the variable
// and its value and saying what is wanted: NaN compares false with
// everything and Inf passes everything, and def in its place would judge
// by a figure nobody chose.
func perfEnvFloat(name string, def float64, trim bool, ok func(float64) bool, want string) (float64, error) {
	env, set := os.LookupEnv(name)
	if !set || env == "" {
		return def, nil
	}
	s := env
	if trim {
		s = strings.TrimSpace(env)
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || !ok(v) {
		return 0, fmt.Errorf("%s=%q: want %s", name, env, want)
	}
	return v, nil
}

// perfPositive reports whether v is finite and > 0 (NaN is not).
func perfPositive(v float64) bool { return v > 0 && !math.IsInf(v, 0) }

// perfNonNegative reports whether v is finite and >= 0 (NaN is not).
func perfNonNegative(v float64) bool { return v >= 0 && !math.IsInf(v, 0) }

// loadValidate refuses objectives that are NaN, infinite, negative or (rates,
// shares, --warn-fraction) above 1, naming the flag: a NaN limit compares
// false with every measurement and passed any run, and a NaN or negative
// --p99-ms or --min-rps turned its objective off. The check is
// loadgen.LoadSLO.Validate's.
func loadValidate(s loadgen.LoadSLO) error {
	return perfValidate(s.Validate(), s.WarnFraction, map[string]string{
		"P99Ms": "--p99-ms", "MaxErrorRate": "--max-error-rate", "MaxShedRate": "--max-shed-rate",
		"MinRPS": "--min-rps", "MinCompliance": "--min-compliance", "WarnFraction": "--warn-fraction",
	})
}

func perfStderrIsTTY() bool { return term.IsTerminal(int(os.Stderr.Fd())) }

func perfWriteJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newLoadCmd() *cobra.Command {
	var (
		host, workloadPath, scenario string
		requestPath, reqURLPath      string
		expect, cpuProfile           string
		users                        int
		spawnRate                    float64
		runTime                      time.Duration
		rate                         float64
		duration, warmup, timeout    time.Duration
		connections                  int
		reportDir, jsonPath          string
		slo                          loadgen.LoadSLO
		seed                         uint64
		allowRemote, quiet           bool
	)
	cmd := &cobra.Command{
		Use:   "load",
		Short: "Load-test a service with a workload, closed loop (users) or open loop (constant rate), and gate on SLOs",
		Long: `load sends a workload's scenarios, mixed by weight, to a running service.
Weights are relative (a scenario's share is its weight over their sum, so
70/20/10 and 7/2/1 are the same mix); each must be > 0.

Closed loop (default): --users users, started at --spawn-rate per second, each
sending a request and waiting for its answer, for --run-time.

Open loop (--rate): requests are scheduled at a constant rate for --duration
and latency is measured from each request's scheduled send time (wrk2's
method), so a stalled server shows up as latency instead of as fewer
requests. A run that achieves less than 95% of --rate is invalid.

--request FILE sends that one JSON body, byte for byte, to --path for every
request instead of a workload (to compare with another load tool sending the
same request); --expect allow|deny judges its decisions for compliance.

Requests sent during --warmup are not measured. Percentiles come from HDR
histograms merged across workers. Compliance = mean of the share of
expect-allow decisions that were allowed and of expect-deny decisions that
were denied. Requests the service shed for overload (503 overloaded with
Retry-After) are neither decisions nor failures: they are reported apart
(with goodput, the decisions per second), kept out of compliance and of the
latency figures, and judged by --max-shed-rate. Without --p99-ms the p99
objective is PERFORMANCE_TARGET_P99_MS, else 5 ms; a value of it that is not
a finite number > 0 is refused before the run, as are objectives that are
NaN, infinite, negative or (rates, shares, --warn-fraction) above 1. Exit
status 1 when the run is invalid or an SLO is violated, and on bad input.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			var err error
			if host == "" {
				return errors.New("--host is required")
			}
			// The objectives are checked before the run, not after it.
			if !cmd.Flags().Changed("p99-ms") {
				if slo.P99Ms, err = perfP99DefaultMs(); err != nil {
					return err
				}
			}
			if err := loadValidate(slo); err != nil {
				return err
			}
			if !allowRemote {
				if err := loadgen.CheckLoopback(ctx, host); err != nil {
					return err
				}
			}
			var (
				w    *loadgen.Workload
				body []byte
			)
			if requestPath != "" {
				if cmd.Flags().Changed("workload") || cmd.Flags().Changed("scenario") {
					return errors.New("--request (one fixed request) cannot be combined with --workload or --scenario")
				}
				var want *bool
				switch expect {
				case "":
				case "allow", "deny":
					v := expect == "allow"
					want = &v
				default:
					return fmt.Errorf("--expect %q: want allow or deny", expect)
				}
				if body, err = os.ReadFile(requestPath); err != nil {
					return err
				}
				if w, err = loadgen.FixedWorkload("POST", reqURLPath, body, want); err != nil {
					return fmt.Errorf("%s: %w", requestPath, err)
				}
				if want == nil && !cmd.Flags().Changed("min-compliance") {
					// Nothing to judge compliance by: not an objective,
					// where it was one that every run violated (review).
					slo.MinCompliance = 0
				}
			} else if w, err = loadgen.LoadWorkload(workloadPath); err != nil {
				return err
			}
			if cpuProfile != "" {
				pf, err := os.Create(cpuProfile)
				if err != nil {
					return err
				}
				if err := pprof.StartCPUProfile(pf); err != nil {
					pf.Close()
					return err
				}
				defer func() { pprof.StopCPUProfile(); pf.Close() }()
			}
			open := cmd.Flags().Changed("rate")
			if open && (cmd.Flags().Changed("users") || cmd.Flags().Changed("spawn-rate") || cmd.Flags().Changed("run-time")) {
				return errors.New("--rate (open loop) cannot be combined with --users, --spawn-rate or --run-time (closed loop)")
			}
			if !open && (cmd.Flags().Changed("duration") || cmd.Flags().Changed("connections")) {
				// They were ignored: --duration 5s ran a 30 s closed loop.
				return errors.New("--duration and --connections are for the open loop (--rate); the closed loop takes --run-time and --users")
			}
			opts := loadgen.Options{
				// No client: each sender keeps an HTTP/1.1 connection of its
				// own (net/http's client for an https host).
				Target:   loadgen.Target{BaseURL: host, Timeout: timeout},
				Workload: w, Scenario: scenario, Seed: seed, Body: body,
			}
			var bar *progressbar.ProgressBar
			if !quiet && perfStderrIsTTY() {
				total := runTime
				if open {
					total = warmup + duration
				}
				bar = progressbar.NewOptions64(total.Milliseconds(),
					progressbar.OptionSetWriter(os.Stderr),
					progressbar.OptionSetWidth(24),
					progressbar.OptionThrottle(200*time.Millisecond),
					progressbar.OptionClearOnFinish(),
					progressbar.OptionSetPredictTime(false),
				)
				opts.OnProgress = func(p loadgen.Progress) {
					bar.Describe(fmt.Sprintf("%d done, %d failed, %d shed, last-second p99 %.2f ms", p.Completed, p.Failed, p.Shed, p.LastP99Ms))
					_ = bar.Set64(min(p.Elapsed.Milliseconds(), total.Milliseconds()))
				}
			}
			var res *loadgen.Result
			if open {
				res, err = loadgen.RunOpen(ctx, loadgen.OpenLoop{Rate: rate, Duration: duration, Warmup: warmup, Connections: connections}, opts)
			} else {
				res, err = loadgen.RunClosed(ctx, loadgen.ClosedLoop{Users: users, SpawnRate: spawnRate, Duration: runTime, Warmup: warmup}, opts)
			}
			if bar != nil {
				_ = bar.Finish()
			}
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			rep := slo.Evaluate(res)
			if err := loadgen.WriteResultTable(out, res); err != nil {
				return err
			}
			fmt.Fprintln(out)
			if err := rep.WriteTable(out); err != nil {
				return err
			}
			if jsonPath != "" {
				doc := struct {
					*loadgen.Result
					SLO *loadgen.Report `json:"slo"`
				}{res, rep}
				if err := loadgen.WriteJSON(jsonPath, doc); err != nil {
					return err
				}
			}
			if reportDir != "" {
				files, err := loadgen.WriteReport(reportDir, res, rep)
				if err != nil {
					return err
				}
				fmt.Fprintf(out, "report: %s\n", strings.Join(files, ", "))
			}
			switch {
			case !res.Valid:
				return &ExitError{Code: 1, Err: fmt.Errorf("load run invalid: %s", res.InvalidReason)}
			case rep.ExitCode() != 0:
				return &ExitError{Code: 1, Err: fmt.Errorf("SLO violated: %s", strings.Join(rep.Failed(), ", "))}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&host, "host", "", "base URL of the service, e.g. http://127.0.0.1:8004")
	f.StringVar(&workloadPath, "workload", "", "workload file (default: built-in acgs-mixed)")
	f.StringVar(&scenario, "scenario", "", "run only this scenario of the workload")
	f.StringVar(&requestPath, "request", "", "send this JSON file, byte for byte, as every request's body (one fixed request instead of a workload)")
	f.StringVar(&reqURLPath, "path", "/v1/data/acgs/main/decision", "with --request: the URL path to POST it to")
	f.StringVar(&expect, "expect", "", "with --request: the decision it should get (allow or deny), for compliance")
	f.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the load tool itself to this file")
	_ = f.MarkHidden("cpuprofile")
	f.IntVar(&users, "users", 10, "closed loop: concurrent users")
	f.Float64Var(&spawnRate, "spawn-rate", 0, "closed loop: users started per second (0: all at once)")
	f.DurationVar(&runTime, "run-time", 30*time.Second, "closed loop: run time, warm-up included")
	f.Float64Var(&rate, "rate", 0, "open loop: requests per second (switches to open loop)")
	f.DurationVar(&duration, "duration", 30*time.Second, "open loop: measured duration after warm-up")
	f.IntVar(&connections, "connections", 64, "open loop: concurrent connections (max in flight)")
	f.DurationVar(&warmup, "warmup", 0, "time at the start that is not measured")
	f.DurationVar(&timeout, "timeout", 10*time.Second, "per-request timeout")
	f.StringVar(&reportDir, "report", "", "write results.json and PNG plots into this directory")
	f.StringVar(&jsonPath, "json", "", "write results as JSON to this file")
	f.Float64Var(&slo.MinRPS, "min-rps", 0, "SLO: minimum achieved req/s (0: not checked)")
	f.Float64Var(&slo.P99Ms, "p99-ms", 5, "SLO: maximum p99 latency in ms (default: $PERFORMANCE_TARGET_P99_MS or 5)")
	f.Float64Var(&slo.MaxErrorRate, "max-error-rate", 0.01, "SLO: maximum share of failed requests")
	f.Float64Var(&slo.MaxShedRate, "max-shed-rate", 0.01, "SLO: maximum share of requests shed for overload (503 overloaded) (0: not checked)")
	f.Float64Var(&slo.MinCompliance, "min-compliance", 0.95, "SLO: minimum constitutional compliance (0: not checked)")
	f.Float64Var(&slo.WarnFraction, "warn-fraction", 0.8, "warn once this share of an SLO's budget is used")
	f.Uint64Var(&seed, "seed", 1, "seed for scenario and key choice")
	f.BoolVar(&allowRemote, "allow-remote", false, "allow a host that is not a loopback address")
	f.BoolVarP(&quiet, "quiet", "q", false, "no live progress line")
	return cmd
}
