package loadgen

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// WriteJSON writes v as indented JSON to path (creating its directory).
func WriteJSON(path string, v any) error {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// WriteReport writes results.json, latency-over-time.png and
// latency-distribution.png into dir, and returns the files written.
func WriteReport(dir string, res *Result, slo *Report) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	doc := struct {
		*Result
		SLO *Report `json:"slo,omitempty"`
	}{res, slo}
	files := []string{filepath.Join(dir, "results.json")}
	if err := WriteJSON(files[0], doc); err != nil {
		return nil, err
	}
	overTime := filepath.Join(dir, "latency-over-time.png")
	if err := PlotTimeline(overTime, res); err != nil {
		return files, fmt.Errorf("plot latency over time: %w", err)
	}
	dist := filepath.Join(dir, "latency-distribution.png")
	if err := PlotDistribution(dist, res); err != nil {
		return append(files, overTime), fmt.Errorf("plot latency distribution: %w", err)
	}
	return append(files, overTime, dist), nil
}

// PlotTimeline draws per-second p50 and p99 against time, which is where a
// stall, a GC storm or a cache flush shows up as a shape rather than a number.
func PlotTimeline(path string, res *Result) error {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("%s (%s loop): latency over time", res.Workload, res.Mode)
	p.X.Label.Text = "seconds since the end of warm-up"
	p.Y.Label.Text = "latency (ms)"
	var p50, p99 plotter.XYs
	for _, pt := range res.Timeline {
		if pt.Requests == 0 {
			continue
		}
		p50 = append(p50, plotter.XY{X: float64(pt.Second), Y: pt.P50Ms})
		p99 = append(p99, plotter.XY{X: float64(pt.Second), Y: pt.P99Ms})
	}
	if len(p50) == 0 {
		p50 = plotter.XYs{{}}
		p99 = plotter.XYs{{}}
	}
	if err := plotutil.AddLinePoints(p, "p50", p50, "p99", p99); err != nil {
		return err
	}
	p.Legend.Top = true
	p.Y.Min = 0
	return p.Save(8*vg.Inch, 4*vg.Inch, path)
}

// PlotDistribution draws the HDR percentile curve with the percentile axis
// stretched as 1/(1-p) on a log scale, the usual HdrHistogram view, so that
// 99%, 99.9% and 99.99% get equal room.
func PlotDistribution(path string, res *Result) error {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("%s (%s loop): latency by percentile", res.Workload, res.Mode)
	p.X.Label.Text = "percentile"
	p.Y.Label.Text = "latency (ms)"
	var xys plotter.XYs
	for _, pt := range res.Distribution {
		if pt.Percentile >= 100 {
			continue // 1/(1-p) is infinite at 100%
		}
		xys = append(xys, plotter.XY{X: 1 / (1 - pt.Percentile/100), Y: pt.LatencyMs})
	}
	if len(xys) == 0 {
		xys = plotter.XYs{{X: 1, Y: 0}}
	}
	if err := plotutil.AddLinePoints(p, "latency", xys); err != nil {
		return err
	}
	p.X.Scale = plot.LogScale{}
	p.X.Min = 1
	p.X.Max = math.Max(p.X.Max, 10)
	p.X.Tick.Marker = percentileTicks{}
	p.Y.Min = 0
	p.Legend.Top = true
	p.Legend.Left = true
	return p.Save(8*vg.Inch, 4*vg.Inch, path)
}

type percentileTicks struct{}

func (percentileTicks) Ticks(lo, hi float64) []plot.Tick {
	var ts []plot.Tick
	for _, pct := range []string{"0%", "90%", "99%", "99.9%", "99.99%", "99.999%", "99.9999%"} {
		var v float64
		_, _ = fmt.Sscanf(strings.TrimSuffix(pct, "%"), "%g", &v)
		x := 1 / (1 - v/100)
		if x >= lo*0.999 && x <= hi*1.001 {
			ts = append(ts, plot.Tick{Value: x, Label: pct})
		}
	}
	return ts
}

// WriteResultTable prints a load result as a human-readable table.
func WriteResultTable(w io.Writer, res *Result) error {
	valid := "valid"
	if !res.Valid {
		valid = "INVALID: " + res.InvalidReason
	}
	fmt.Fprintf(w, "workload %s, %s loop against %s: %.1fs measured after %.1fs warm-up (%s)\n",
		res.Workload, res.Mode, res.URL, res.DurationSec, res.WarmupSec, valid)
	if res.TargetRate > 0 {
		fmt.Fprintf(w, "target %.1f req/s, achieved %.1f req/s, %d connections\n", res.TargetRate, res.AchievedRate, res.Connections)
	} else {
		fmt.Fprintf(w, "%d users, %.1f req/s\n", res.Users, res.AchievedRate)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\trequests\tfailures\tshed\treq/s\tallow\tdeny\tmin ms\tp50 ms\tp90 ms\tp95 ms\tp99 ms\tmax ms\t")
	row := func(s ScenarioStats) {
		l := s.Latency
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%.1f\t%d\t%d\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\t\n",
			s.Name, s.Requests, s.Failures, s.Shed, s.RPS, s.Allowed, s.Denied, l.MinMs, l.P50Ms, l.P90Ms, l.P95Ms, l.P99Ms, l.MaxMs)
	}
	for _, s := range res.Scenarios {
		row(s)
	}
	row(res.Total)
	if err := tw.Flush(); err != nil {
		return err
	}
	// A timed closed loop's req/s counts the answers within the window, not
	// the requests of the rows: say how the two differ, so that requests
	// over req/s is not taken for the duration.
	if win := res.Total.Window; win != nil && (win.AfterEnd > 0 || win.FromWarmup > 0) {
		fmt.Fprintf(w, "req/s counts the %d requests answered within the %.1fs measured (%d decided): %d sent in it and answered after its end are in the requests and latency above but not in req/s",
			win.Answered, res.DurationSec, win.Decided, win.AfterEnd)
		if win.FromWarmup > 0 {
			fmt.Fprintf(w, "; %d sent in the warm-up and answered within the measured time are in req/s only", win.FromWarmup)
		}
		fmt.Fprintln(w)
	}
	if res.ServiceLatency != nil {
		fmt.Fprintf(w, "service time (from actual send, not corrected): p50 %.3f ms, p99 %.3f ms\n",
			res.ServiceLatency.P50Ms, res.ServiceLatency.P99Ms)
	}
	if res.SendLag != nil {
		fmt.Fprintf(w, "sent after the scheduled time by: p50 %.3f ms, p99 %.3f ms\n", res.SendLag.P50Ms, res.SendLag.P99Ms)
	}
	if res.Total.Shed > 0 {
		fmt.Fprintf(w, "shed (503 overloaded, Retry-After; not decisions, not in latency or compliance): %d (%.2f%%), refused in p50 %.3f ms, p99 %.3f ms; goodput %.1f decisions/s\n",
			res.Total.Shed, res.Total.ShedRate*100, res.ShedLatency.P50Ms, res.ShedLatency.P99Ms, res.Goodput)
	}
	if res.Compliance != nil {
		fmt.Fprintf(w, "constitutional compliance: %.2f%%\n", *res.Compliance*100)
	}
	if res.FirstError != "" {
		fmt.Fprintf(w, "first error (warm-up included): %s\n", res.FirstError)
	}
	return nil
}
