package loadgen

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// BenchConfig configures `acgs bench`.
type BenchConfig struct {
	Requests    int   // per scenario, concurrency level and repetition
	Concurrency []int // levels, e.g. 10,50,100
	Count       int   // repetitions of each level (samples for benchstat)
	ColdSamples int   // unique inputs per repetition for cold versus warm; 0 skips it
	WarmRepeats int   // how many times the cold inputs are repeated warm
	Seed        uint64
	// Progress, if set, is told what is being measured.
	Progress func(msg string)
}

// BenchRun is one repetition of one concurrency level.
type BenchRun struct {
	Requests  int64          `json:"requests"`
	Failures  int64          `json:"failures"`
	Shed      int64          `json:"shed"`
	ElapsedMs float64        `json:"elapsed_ms"`
	RPS       float64        `json:"rps"` // decisions per second: failed and shed requests left out
	Latency   LatencySummary `json:"latency"`
}

// BenchLevel is a concurrency level, all repetitions merged.
type BenchLevel struct {
	Concurrency int   `json:"concurrency"`
	Requests    int64 `json:"requests"`
	Failures    int64 `json:"failures"`
	// Shed requests were refused for overload (503 overloaded): counted
	// apart from failures, and out of the latency figures.
	Shed    int64          `json:"shed"`
	RPS     float64        `json:"rps"` // decisions per second, as BenchRun's
	Latency LatencySummary `json:"latency"`
	// Efficiency is the scaling efficiency against the lowest level c0:
	// (rps(c)/rps(c0)) / (c/c0). 1 means throughput grew in proportion to
	// the workers; on a machine with fewer cores than workers it falls as
	// soon as the server saturates, which is the point of measuring it.
	Efficiency float64    `json:"scaling_efficiency"`
	Runs       []BenchRun `json:"runs"`
}

// ColdWarm compares the first request for unique inputs (cache misses: every
// varied value carries a run nonce) with repeats of the same inputs.
type ColdWarm struct {
	Samples int            `json:"samples"`
	Cold    LatencySummary `json:"cold"`
	Warm    LatencySummary `json:"warm"`
	// Speedup is cold p50 / warm p50.
	Speedup  float64       `json:"speedup"`
	Failures int64         `json:"failures"`
	Shed     int64         `json:"shed"`
	Note     string        `json:"note,omitempty"`
	Runs     []ColdWarmRun `json:"runs,omitempty"`
}

// ColdWarmRun is one repetition of the cold-versus-warm measurement.
type ColdWarmRun struct {
	Cold LatencySummary `json:"cold"`
	Warm LatencySummary `json:"warm"`
}

// BenchScenario is the benchmark of one scenario.
type BenchScenario struct {
	Name     string       `json:"name"`
	Levels   []BenchLevel `json:"levels"`
	ColdWarm *ColdWarm    `json:"cold_warm,omitempty"`
}

// BenchResult is the outcome of `acgs bench`.
type BenchResult struct {
	Workload  string          `json:"workload"`
	URL       string          `json:"url"`
	Nonce     string          `json:"nonce"`
	StartedAt time.Time       `json:"started_at"`
	Scenarios []BenchScenario `json:"scenarios"`
}

// RunBench measures every scenario of the workload alone: cold versus warm
// first, then a pass over the scenario's key space so caches are warm, then
// each concurrency level Count times with Requests requests.
func RunBench(ctx context.Context, target Target, w *Workload, cfg BenchConfig) (*BenchResult, error) {
	if cfg.Requests < 1 {
		return nil, errors.New("bench: requests must be >= 1")
	}
	if len(cfg.Concurrency) == 0 {
		cfg.Concurrency = []int{10, 50, 100}
	}
	for _, c := range cfg.Concurrency {
		if c < 1 {
			return nil, fmt.Errorf("bench: concurrency %d must be >= 1", c)
		}
	}
	levels := slices.Clone(cfg.Concurrency)
	slices.Sort(levels)
	levels = slices.Compact(levels)
	if cfg.Count < 1 {
		cfg.Count = 1
	}
	if cfg.WarmRepeats < 1 {
		cfg.WarmRepeats = 3
	}
	if target.Client == nil {
		target.Client = NewHTTPClient(levels[len(levels)-1], 10*time.Second)
	}
	progress := cfg.Progress
	if progress == nil {
		progress = func(string) {}
	}
	nonce := make([]byte, 6)
	_, _ = rand.Read(nonce)
	res := &BenchResult{Workload: w.Name, URL: target.BaseURL, Nonce: hex.EncodeToString(nonce), StartedAt: time.Now().UTC()}

	for si := range w.Scenarios {
		s := &w.Scenarios[si]
		bs := BenchScenario{Name: s.Name}
		if cfg.ColdSamples > 0 {
			progress(fmt.Sprintf("%s: cold versus warm (%d inputs)", s.Name, cfg.ColdSamples))
			cw, err := coldWarm(ctx, target, w, s, res.Nonce, cfg)
			if err != nil {
				return nil, err
			}
			bs.ColdWarm = cw
		}
		// Warm the scenario's key space so the levels measure warm caches.
		keys := min(s.KeySpace(), 5000)
		progress(fmt.Sprintf("%s: warming %d keys", s.Name, keys))
		if _, err := runSequentialKeys(ctx, target, w, s, keys, levels[len(levels)-1]); err != nil {
			return nil, err
		}
		for _, c := range levels {
			lvl := BenchLevel{Concurrency: c}
			merged := NewHistogram()
			var elapsed float64
			var decidedN int64
			for run := 0; run < cfg.Count; run++ {
				progress(fmt.Sprintf("%s: c=%d run %d/%d", s.Name, c, run+1, cfg.Count))
				r, err := RunClosed(ctx, ClosedLoop{Users: c, MaxRequests: int64(cfg.Requests)}, Options{
					Target: target, Workload: w, Scenario: s.Name,
					Seed: cfg.Seed + uint64(run)*1000 + uint64(c),
				})
				if err != nil {
					return nil, err
				}
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				merged.Merge(r.Hist)
				elapsed += r.DurationSec
				lvl.Requests += r.Total.Requests
				lvl.Failures += r.Total.Failures
				lvl.Shed += r.Total.Shed
				decidedN += r.Total.Decided()
				// Throughput is decisions: a change that starts failing or
				// shedding (503 overloaded) must not read as more req/s.
				lvl.Runs = append(lvl.Runs, BenchRun{
					Requests: r.Total.Requests, Failures: r.Total.Failures, Shed: r.Total.Shed,
					ElapsedMs: r.DurationSec * 1000, RPS: float64(r.Total.Decided()) / r.DurationSec, Latency: r.Total.Latency,
				})
			}
			lvl.Latency = Summarize(merged)
			if elapsed > 0 {
				lvl.RPS = float64(decidedN) / elapsed
			}
			bs.Levels = append(bs.Levels, lvl)
		}
		if base := bs.Levels[0]; base.RPS > 0 {
			for i := range bs.Levels {
				l := &bs.Levels[i]
				l.Efficiency = (l.RPS / base.RPS) / (float64(l.Concurrency) / float64(base.Concurrency))
			}
		}
		res.Scenarios = append(res.Scenarios, bs)
	}
	return res, nil
}

// runSequentialKeys sends keys 0..n-1 of s once each over c workers.
func runSequentialKeys(ctx context.Context, target Target, w *Workload, s *Scenario, n int64, c int) (int64, error) {
	var next, failures atomic.Int64
	var wg sync.WaitGroup
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rq := newRequester(target.Client, target.BaseURL, w)
			for ctx.Err() == nil {
				idx := next.Add(1) - 1
				if idx >= n {
					return
				}
				if o, _ := rq.do(ctx, s, idx, ""); o == OutcomeFailure {
					failures.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return failures.Load(), ctx.Err()
}

func coldWarm(ctx context.Context, target Target, w *Workload, s *Scenario, nonce string, cfg BenchConfig) (*ColdWarm, error) {
	cw := &ColdWarm{Samples: cfg.ColdSamples}
	if !s.Varies() {
		cw.Note = "scenario has no varied field, so no input can be made unique: cold not measured"
		return cw, nil
	}
	rq := newRequester(target.Client, target.BaseURL, w)
	cold, warm := NewHistogram(), NewHistogram()
	// One round per repetition, each with inputs of its own, so that the
	// regression detector gets a sample per round.
	for round := range cfg.Count {
		rc, rw := NewHistogram(), NewHistogram()
		measure := func(h *hdrhistogram.Histogram, i int) {
			// One suffix per input: unique across inputs, rounds and runs
			// (nonce), equal between the cold request and its warm repeats.
			suffix := fmt.Sprintf("-cold-%s-r%d-%d", nonce, round, i)
			t0 := time.Now()
			o, _ := rq.do(ctx, s, int64(i), suffix)
			switch o {
			case OutcomeFailure:
				cw.Failures++
			case OutcomeShed:
				cw.Shed++ // not a latency of a decision
				return
			}
			recordLatency(h, time.Since(t0))
		}
		// Sequential on purpose: one request at a time measures the cache,
		// not the contention between concurrent requests.
		for i := 0; i < cfg.ColdSamples && ctx.Err() == nil; i++ {
			measure(rc, i)
		}
		for range cfg.WarmRepeats {
			for i := 0; i < cfg.ColdSamples && ctx.Err() == nil; i++ {
				measure(rw, i)
			}
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		cold.Merge(rc)
		warm.Merge(rw)
		cw.Runs = append(cw.Runs, ColdWarmRun{Cold: Summarize(rc), Warm: Summarize(rw)})
	}
	cw.Cold, cw.Warm = Summarize(cold), Summarize(warm)
	if cw.Warm.P50Ms > 0 {
		cw.Speedup = cw.Cold.P50Ms / cw.Warm.P50Ms
	}
	return cw, nil
}

// Failures counts failed requests over all scenarios, levels and the
// cold-versus-warm rounds: a benchmark of error responses measures the
// error path, so the command treats any failure as a failed run. total is
// every request sent, shed ones included, as Shed's is, so that the two
// counts are of the same requests.
func (b *BenchResult) Failures() (failed, total int64) {
	for _, s := range b.Scenarios {
		for _, l := range s.Levels {
			failed += l.Failures
		}
		if cw := s.ColdWarm; cw != nil {
			failed += cw.Failures
		}
	}
	return failed, b.requests()
}

// Shed counts the requests refused for overload (503 overloaded) over all
// scenarios, levels and cold-versus-warm rounds. They are neither decisions
// nor failures; a run with many of them measured a saturated service.
func (b *BenchResult) Shed() (shed, total int64) {
	for _, s := range b.Scenarios {
		for _, l := range s.Levels {
			shed += l.Shed
		}
		if cw := s.ColdWarm; cw != nil {
			shed += cw.Shed
		}
	}
	return shed, b.requests()
}

// requests counts every request of the levels and of the cold-versus-warm
// rounds. A level's Requests include its shed ones; the cold and warm
// latencies hold the decided and the failed requests but not the shed.
func (b *BenchResult) requests() (total int64) {
	for _, s := range b.Scenarios {
		for _, l := range s.Levels {
			total += l.Requests
		}
		if cw := s.ColdWarm; cw != nil {
			total += cw.Cold.Count + cw.Warm.Count + cw.Shed
		}
	}
	return total
}

// WriteTable prints the benchmark as tables.
func (b *BenchResult) WriteTable(w io.Writer) error {
	fmt.Fprintf(w, "workload %s against %s (nonce %s)\n", b.Workload, b.URL, b.Nonce)
	for _, s := range b.Scenarios {
		fmt.Fprintf(w, "\nscenario %s\n", s.Name)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "c\trequests\tfailures\tshed\treq/s\tefficiency\tmin ms\tmean ms\tp50 ms\tp90 ms\tp95 ms\tp99 ms\tmax ms\t")
		for _, l := range s.Levels {
			x := l.Latency
			fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%.1f\t%.2f\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\t\n",
				l.Concurrency, l.Requests, l.Failures, l.Shed, l.RPS, l.Efficiency,
				x.MinMs, x.MeanMs, x.P50Ms, x.P90Ms, x.P95Ms, x.P99Ms, x.MaxMs)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		if cw := s.ColdWarm; cw != nil {
			if cw.Note != "" {
				fmt.Fprintf(w, "cold vs warm: %s\n", cw.Note)
				continue
			}
			fmt.Fprintf(w, "cold vs warm (%d unique inputs, sequential): cold p50 %.3f ms p99 %.3f ms, warm p50 %.3f ms p99 %.3f ms, speedup %.2fx",
				cw.Samples, cw.Cold.P50Ms, cw.Cold.P99Ms, cw.Warm.P50Ms, cw.Warm.P99Ms, cw.Speedup)
			if cw.Failures > 0 {
				fmt.Fprintf(w, " (%d failures)", cw.Failures)
			}
			if cw.Shed > 0 {
				fmt.Fprintf(w, " (%d shed for overload)", cw.Shed)
			}
			fmt.Fprintln(w)
		}
	}
	return nil
}

// WriteBenchfmt prints the benchmark in the Go benchmark format, one line per
// repetition so that benchstat and `acgs regress` get a sample per level:
//
//	BenchmarkHTTP/scenario=safe_action/c=10  1000  52345 ns/op  8123 req/s  48000 p50-ns/op  90000 p99-ns/op
//
// ns/op is the mean latency of a request (not elapsed/N as in a parallel Go
// benchmark: req/s already states throughput).
func (b *BenchResult) WriteBenchfmt(w io.Writer) error {
	fmt.Fprintf(w, "goos: %s\ngoarch: %s\npkg: github.com/acgs-lite/acgs/http\n", runtime.GOOS, runtime.GOARCH)
	fmt.Fprintf(w, "workload: %s\n", b.Workload)
	ns := func(ms float64) float64 { return math.Round(ms * 1e6) }
	for _, s := range b.Scenarios {
		scen := benchName(s.Name)
		for _, l := range s.Levels {
			for _, r := range l.Runs {
				fmt.Fprintf(w, "BenchmarkHTTP/scenario=%s/c=%d\t%d\t%.0f ns/op\t%.2f req/s\t%.0f p50-ns/op\t%.0f p99-ns/op\t%d errors\t%d shed\n",
					scen, l.Concurrency, r.Requests, ns(r.Latency.MeanMs), r.RPS, ns(r.Latency.P50Ms), ns(r.Latency.P99Ms), r.Failures, r.Shed)
			}
		}
		if cw := s.ColdWarm; cw != nil && cw.Note == "" {
			for _, r := range cw.Runs {
				fmt.Fprintf(w, "BenchmarkHTTPCold/scenario=%s\t%d\t%.0f ns/op\t%.0f p50-ns/op\n", scen, r.Cold.Count, ns(r.Cold.MeanMs), ns(r.Cold.P50Ms))
			}
			for _, r := range cw.Runs {
				fmt.Fprintf(w, "BenchmarkHTTPWarm/scenario=%s\t%d\t%.0f ns/op\t%.0f p50-ns/op\n", scen, r.Warm.Count, ns(r.Warm.MeanMs), ns(r.Warm.P50Ms))
			}
		}
	}
	return nil
}

// benchName makes a name usable as one benchmark name component (no spaces,
// no slashes).
func benchName(s string) string {
	return strings.Map(func(r rune) rune {
		if r == ' ' || r == '/' || r == '\t' {
			return '_'
		}
		return r
	}, s)
}
