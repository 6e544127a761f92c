package cli

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/spf13/cobra"

	"github.com/acgs-lite/acgs/internal/loadgen"
)

func init() { register(newSLOCmd) }

// sloValidate refuses objectives that are not finite or out of range: NaN
// compares false with every measurement, so a NaN limit passed any p99 and
// any error rate, and an Inf one any latency. The check is
// loadgen.ServiceSLO.Validate's; the error names the flag.
func sloValidate(s loadgen.ServiceSLO) error {
	return perfValidate(s.Validate(), s.WarnFraction, map[string]string{
		"P50Ms": "--p50-ms", "P95Ms": "--p95-ms", "P99Ms": "--p99-ms",
		"MaxErrorRate": "--error-rate", "MaxRefusedRate": "--max-refused-rate",
		"MinCacheHitRate": "--cache-hit-rate", "WarnFraction": "--warn-fraction",
	})
}

// perfValidate is the objectives' check of load and slo: err, the
// objectives' Validate, with the flag of its field named (flags maps a
// field to its flag), and a --warn-fraction of 0 refused, which Evaluate
// would take as its default (0.8) in place of the 0 given.
func perfValidate(err error, warnFraction float64, flags map[string]string) error {
	if err := perfFlagError(err, flags); err != nil {
		return err
	}
	if warnFraction == 0 {
		return errors.New("--warn-fraction 0: want a share in (0, 1]")
	}
	return nil
}

// perfFlagError names the flag of a *loadgen.LimitError's field; other
// errors pass as they are.
func perfFlagError(err error, flags map[string]string) error {
	var le *loadgen.LimitError
	if errors.As(err, &le) {
		if flag, ok := flags[le.Field]; ok {
			return fmt.Errorf("%s %v: want %s", flag, le.Value, le.Want)
		}
	}
	return err
}

func newSLOCmd() *cobra.Command {
	var (
		metricsURL, promURL string
		slo                 loadgen.ServiceSLO
		names               = loadgen.DefaultMetricNames()
		window, interval    time.Duration
		timeout             time.Duration
		asJSON              bool
	)
	cmd := &cobra.Command{
		Use:   "slo",
		Short: "Check service-level objectives from the service's Prometheus metrics",
		Long: `slo reads the service's metrics and judges latency percentiles, error rate,
refused rate and cache hit rate against objectives.

--metrics-url scrapes a Prometheus text endpoint (the service's /metrics) and
computes p50/p95/p99 from the request-duration histogram buckets summed over
labels (handlers matching --exclude-handlers left out of every figure), the
error rate, the refused rate, and the cache hit rate as (l1 hits + l2 hits) /
(l1 hits + l1 misses). Figures are cumulative since the service started unless
--interval is set, in which case two scrapes are taken and their difference
is judged.

A 503 is not a decision: the service sheds a request it cannot admit in time
(503 overloaded, with Retry-After) and answers 503 unavailable while no policy
is active. 503 answers are left out of the percentiles (most are answered at
once and would pull p99 down during overload; a shed that waited for a slot
until ADMISSION_QUEUE_TIMEOUT or its deadline is left out too, so read the
refused rate beside p99) and out of the error rate (5xx other
than 503 over the requests not answered 503 or 499); the refused rate is 503 answers
over all requests, judged by --max-refused-rate, so a run refused entirely
fails rather than passing with no errors.

A 499 is a request whose client went away before it was answered (recorded,
never sent). It is counted among the requests and left out of the
percentiles (its duration is the client's patience) and the error rate, and
is not a 503 in the refused rate. When no request was answered (all 503 or
499), the error rate has no data and fails its objective.

--prometheus-url asks a Prometheus server the same through PromQL over --window.

Each objective has a warning level at --warn-fraction of its budget. Exit
status 1 when an objective is violated or has no data; warnings exit 0.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if (metricsURL == "") == (promURL == "") {
				return errors.New("give exactly one of --metrics-url and --prometheus-url")
			}
			if !cmd.Flags().Changed("p99-ms") {
				var err error
				if slo.P99Ms, err = perfP99DefaultMs(); err != nil {
					return err
				}
			}
			if err := sloValidate(slo); err != nil {
				return err
			}
			var m loadgen.ServiceMetrics
			source := ""
			if metricsURL != "" {
				client := &http.Client{Timeout: timeout}
				first, err := loadgen.ScrapeURL(ctx, client, metricsURL, names)
				if err != nil {
					return err
				}
				snap := first
				source = metricsURL + " (since start)"
				if interval > 0 {
					select {
					case <-time.After(interval):
					case <-ctx.Done():
						return ctx.Err()
					}
					second, err := loadgen.ScrapeURL(ctx, client, metricsURL, names)
					if err != nil {
						return err
					}
					snap = second.Sub(first)
					source = fmt.Sprintf("%s (over %s)", metricsURL, interval)
				}
				m = snap.Metrics()
			} else {
				c, err := api.NewClient(api.Config{Address: promURL})
				if err != nil {
					return fmt.Errorf("prometheus client: %w", err)
				}
				qctx, cancel := context.WithTimeout(ctx, timeout)
				defer cancel()
				src := &loadgen.PromQLSource{API: promv1.NewAPI(c), Window: window, Names: names}
				if m, err = src.Metrics(qctx); err != nil {
					return err
				}
				source = fmt.Sprintf("%s (PromQL over %s)", promURL, window)
			}
			rep := slo.Evaluate(m)
			out := cmd.OutOrStdout()
			if asJSON {
				if err := perfWriteJSON(out, struct {
					Source  string                 `json:"source"`
					Metrics loadgen.ServiceMetrics `json:"metrics"`
					*loadgen.Report
				}{source, m, rep}); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(out, "source: %s\n", source)
				if m.Requests != nil {
					fmt.Fprintf(out, "requests: %.0f\n", *m.Requests)
				}
				if err := rep.WriteTable(out); err != nil {
					return err
				}
			}
			if rep.ExitCode() != 0 {
				return &ExitError{Code: 1, Err: fmt.Errorf("SLO violated: %s", strings.Join(rep.Failed(), ", "))}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&metricsURL, "metrics-url", "", "Prometheus text endpoint to scrape, e.g. http://127.0.0.1:8004/metrics")
	f.StringVar(&promURL, "prometheus-url", "", "Prometheus server to query with PromQL, e.g. http://127.0.0.1:9090")
	f.Float64Var(&slo.P50Ms, "p50-ms", 0, "SLO: maximum p50 latency in ms (0: not checked)")
	f.Float64Var(&slo.P95Ms, "p95-ms", 0, "SLO: maximum p95 latency in ms (0: not checked)")
	f.Float64Var(&slo.P99Ms, "p99-ms", 5, "SLO: maximum p99 latency in ms (default: $PERFORMANCE_TARGET_P99_MS or 5)")
	f.Float64Var(&slo.MaxErrorRate, "error-rate", 0.01, "SLO: maximum share of 5xx responses other than 503, among requests not answered 503")
	f.Float64Var(&slo.MaxRefusedRate, "max-refused-rate", 0.01, "SLO: maximum share of requests answered 503 (shed for overload, or no policy active)")
	f.Float64Var(&slo.MinCacheHitRate, "cache-hit-rate", 0.95, "SLO: minimum cache hit rate (0: not checked)")
	f.Float64Var(&slo.WarnFraction, "warn-fraction", 0.8, "warn once this share of an SLO's budget is used")
	f.DurationVar(&window, "window", 5*time.Minute, "PromQL rate window")
	f.DurationVar(&interval, "interval", 0, "scrape twice this far apart and judge the difference (0: cumulative)")
	f.DurationVar(&timeout, "timeout", 10*time.Second, "timeout of each scrape or query")
	f.StringVar(&names.Duration, "duration-metric", names.Duration, "request duration histogram (seconds)")
	f.StringVar(&names.Requests, "requests-metric", names.Requests, "request counter with a code label")
	f.StringVar(&names.CacheHits, "cache-hits-metric", names.CacheHits, "cache hit counter with a tier label")
	f.StringVar(&names.CacheMisses, "cache-misses-metric", names.CacheMisses, "cache miss counter with a tier label")
	f.StringVar(&names.ExcludeHandlers, "exclude-handlers", names.ExcludeHandlers, "handler label values left out (anchored RE2)")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
