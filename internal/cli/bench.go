package cli

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/acgs-lite/acgs/internal/loadgen"
)

func init() { register(newBenchCmd) }

func newBenchCmd() *cobra.Command {
	var (
		url          string
		workloadPath string
		cfg          loadgen.BenchConfig
		asJSON       bool
		asBenchfmt   bool
		timeout      time.Duration
		allowRemote  bool
		saveJSON     string
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Benchmark each workload scenario over HTTP: latency, throughput per concurrency, cold versus warm cache",
		Long: `bench measures every scenario of a workload (default: the built-in acgs-mixed)
on its own against a running service:

  - per concurrency level: latency (min, mean, p50, p90, p95, p99, max), req/s
    and scaling efficiency = (rps(c)/rps(c0)) / (c/c0), where c0 is the lowest
    level (1.0 = throughput grew in proportion to the workers);
  - cold versus warm: the first request for unique inputs (varied fields carry
    a per-run nonce, so they miss every cache) against repeats of them,
    sequentially, with fresh inputs in each --count round;
    speedup = cold p50 / warm p50.

Caches are warmed over each scenario's key space before the levels run.
Requests the service shed for overload (503 overloaded with Retry-After) are
counted in their own column, apart from failures, and kept out of the latency
figures. Exit status 1 when any request failed (non-200 other than a shed,
transport error, no "allow").
--benchfmt prints Go benchmark format (one line per --count repetition) for
benchstat and "acgs regress".`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if asJSON && asBenchfmt {
				return errors.New("--json and --benchfmt are exclusive")
			}
			ctx := cmd.Context()
			if !allowRemote {
				if err := loadgen.CheckLoopback(ctx, url); err != nil {
					return err
				}
			}
			w, err := loadgen.LoadWorkload(workloadPath)
			if err != nil {
				return err
			}
			maxC := 1
			for _, c := range cfg.Concurrency {
				maxC = max(maxC, c)
			}
			target := loadgen.Target{BaseURL: url, Client: loadgen.NewHTTPClient(maxC, timeout)}
			if perfStderrIsTTY() {
				cfg.Progress = func(msg string) { fmt.Fprintf(os.Stderr, "\r\033[K%s", msg) }
			}
			res, err := loadgen.RunBench(ctx, target, w, cfg)
			if cfg.Progress != nil {
				fmt.Fprint(os.Stderr, "\r\033[K")
			}
			if err != nil {
				return err
			}
			if saveJSON != "" {
				if err := loadgen.WriteJSON(saveJSON, res); err != nil {
					return err
				}
			}
			out := cmd.OutOrStdout()
			switch {
			case asJSON:
				err = perfWriteJSON(out, res)
			case asBenchfmt:
				err = res.WriteBenchfmt(out)
			default:
				err = res.WriteTable(out)
			}
			if err != nil {
				return err
			}
			if shed, total := res.Shed(); shed > 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "note: %d of %d requests were shed for overload (503 overloaded): the service was saturated at some level; they are not in the latency figures\n", shed, total)
			}
			if failed, total := res.Failures(); failed > 0 {
				return &ExitError{Code: 1, Err: fmt.Errorf("%d of %d requests failed: the figures describe errors, not decisions", failed, total)}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&url, "url", "http://127.0.0.1:8004", "base URL of the service")
	f.StringVar(&workloadPath, "workload", "", "workload file (default: built-in acgs-mixed)")
	f.IntVar(&cfg.Requests, "requests", 1000, "requests per scenario, concurrency level and repetition")
	f.IntSliceVar(&cfg.Concurrency, "concurrency", []int{10, 50, 100}, "concurrency levels")
	f.IntVar(&cfg.Count, "count", 1, "repetitions of each level (samples for benchstat; regress compare, Holm-adjusted by default, needs >= 6 for up to 23 gated metrics, >= 7 for up to 85, and says how many when too few)")
	f.IntVar(&cfg.ColdSamples, "cold-samples", 100, "unique inputs for cold versus warm (0 skips it)")
	f.IntVar(&cfg.WarmRepeats, "warm-repeats", 3, "times the cold inputs are repeated warm")
	f.Uint64Var(&cfg.Seed, "seed", 1, "seed for key choice")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	f.BoolVar(&asBenchfmt, "benchfmt", false, "print Go benchmark format")
	f.StringVar(&saveJSON, "save-json", "", "also write the JSON result to this file")
	f.DurationVar(&timeout, "timeout", 10*time.Second, "per-request timeout")
	f.BoolVar(&allowRemote, "allow-remote", false, "allow a URL that is not a loopback address")
	return cmd
}
