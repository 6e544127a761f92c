package loadgen

import (
	"math"
	"sync"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// Histogram bounds: latencies are recorded in nanoseconds from 1 ns to 60 s
// with 3 significant digits, so any recorded value is within 0.1% of the true
// one. Larger values are clamped to the maximum rather than dropped, because
// a dropped outlier is exactly the kind of lie a latency tool must not tell.
const (
	histLowest  = 1
	histHighest = int64(60 * time.Second)
	histSigFigs = 3
)

// NewHistogram returns an empty latency histogram with the toolkit's bounds.
func NewHistogram() *hdrhistogram.Histogram {
	return hdrhistogram.New(histLowest, histHighest, histSigFigs)
}

func recordLatency(h *hdrhistogram.Histogram, d time.Duration) {
	v := int64(d)
	if v < histLowest {
		v = histLowest
	}
	if v > histHighest {
		v = histHighest
	}
	_ = h.RecordValue(v) // cannot fail: v is clamped into range
}

// Outcome is what one request produced, as the drivers classify it.
type Outcome uint8

// Outcomes. Shed is a request the service refused for overload (503 with
// code "overloaded" and a Retry-After header): not a decision, and not a
// failure of the service either, so it is counted apart from both and kept
// out of compliance and of the decision latency. A failure is any other
// HTTP status than 200, a transport error, or a body that is not JSON with a
// boolean "allow".
const (
	OutcomeAllow Outcome = iota
	OutcomeDeny
	OutcomeFailure
	OutcomeShed
)

// counts is the per-scenario tally kept by one worker.
type counts struct {
	hist     *hdrhistogram.Histogram
	requests int64
	failures int64
	allowed  int64
	denied   int64
	shed     int64
	// Timed closed loop only (the rates' counts, see RunClosed): requests
	// answered within the measured window, sent in it or in the warm-up,
	// and of them decided; requests sent in the window but answered after
	// its end; requests sent in the warm-up and answered in the window.
	winAnswered, winDecided, afterEnd, fromWarmup int64
}

// recorder holds one worker's results. Each worker owns its recorder, so the
// hot path takes no lock; recorders are merged histogram-by-histogram at the
// end (percentiles are never averaged across workers).
type recorder struct {
	scen []counts
	// svc is the service time (from the actual send, not the schedule) of
	// open-loop requests: kept beside the corrected latency so that a report
	// shows how much of the latency was queueing behind a slow server.
	svc *hdrhistogram.Histogram
	// lag is how late open-loop requests were sent after their schedule.
	lag *hdrhistogram.Histogram
	// shed is the latency of shed requests: how quickly the service said
	// no. The scenarios' histograms hold the answered requests only.
	shed *hdrhistogram.Histogram
}

func newRecorder(nScenarios int) *recorder {
	r := &recorder{scen: make([]counts, nScenarios), svc: NewHistogram(), lag: NewHistogram(), shed: NewHistogram()}
	for i := range r.scen {
		r.scen[i].hist = NewHistogram()
	}
	return r
}

func (r *recorder) record(scenario int, latency time.Duration, o Outcome) {
	c := &r.scen[scenario]
	c.requests++
	if o == OutcomeShed {
		c.shed++
		recordLatency(r.shed, latency)
		return
	}
	recordLatency(c.hist, latency)
	switch o {
	case OutcomeAllow:
		c.allowed++
	case OutcomeDeny:
		c.denied++
	default:
		c.failures++
	}
}

// answeredInWindow counts, for the rates of a timed closed loop, a request
// answered within the measured window; fromWarmup says it was sent in the
// warm-up (so it is not among the recorded requests).
func (r *recorder) answeredInWindow(scenario int, o Outcome, fromWarmup bool) {
	c := &r.scen[scenario]
	c.winAnswered++
	if o == OutcomeAllow || o == OutcomeDeny {
		c.winDecided++
	}
	if fromWarmup {
		c.fromWarmup++
	}
}

// answeredAfterEnd counts a recorded request of a timed closed loop that was
// answered after the measured window.
func (r *recorder) answeredAfterEnd(scenario int) { r.scen[scenario].afterEnd++ }

func (r *recorder) merge(o *recorder) {
	r.svc.Merge(o.svc)
	r.lag.Merge(o.lag)
	r.shed.Merge(o.shed)
	for i := range r.scen {
		a, b := &r.scen[i], &o.scen[i]
		a.hist.Merge(b.hist)
		a.requests += b.requests
		a.failures += b.failures
		a.allowed += b.allowed
		a.denied += b.denied
		a.shed += b.shed
		a.winAnswered += b.winAnswered
		a.winDecided += b.winDecided
		a.afterEnd += b.afterEnd
		a.fromWarmup += b.fromWarmup
	}
}

// LatencySummary is a latency distribution in milliseconds.
type LatencySummary struct {
	Count  int64   `json:"count"`
	MinMs  float64 `json:"min_ms"`
	MeanMs float64 `json:"mean_ms"`
	P50Ms  float64 `json:"p50_ms"`
	P90Ms  float64 `json:"p90_ms"`
	P95Ms  float64 `json:"p95_ms"`
	P99Ms  float64 `json:"p99_ms"`
	P999Ms float64 `json:"p999_ms"`
	MaxMs  float64 `json:"max_ms"`
}

// Summarize reads a latency summary (in ms) from a nanosecond histogram.
func Summarize(h *hdrhistogram.Histogram) LatencySummary {
	if h == nil || h.TotalCount() == 0 {
		return LatencySummary{}
	}
	ms := func(ns int64) float64 { return float64(ns) / 1e6 }
	return LatencySummary{
		Count:  h.TotalCount(),
		MinMs:  ms(h.Min()),
		MeanMs: h.Mean() / 1e6,
		P50Ms:  ms(h.ValueAtQuantile(50)),
		P90Ms:  ms(h.ValueAtQuantile(90)),
		P95Ms:  ms(h.ValueAtQuantile(95)),
		P99Ms:  ms(h.ValueAtQuantile(99)),
		P999Ms: ms(h.ValueAtQuantile(99.9)),
		MaxMs:  ms(h.Max()),
	}
}

// PercentilePoint is one point of a latency distribution curve.
type PercentilePoint struct {
	Percentile float64 `json:"percentile"`
	LatencyMs  float64 `json:"latency_ms"`
}

// PercentileCurve samples the histogram at percentiles that get denser
// towards 100 (50, 75, 87.5, ...), as HdrHistogram's percentile
// distribution does, so the tail is visible on a plot.
func PercentileCurve(h *hdrhistogram.Histogram) []PercentilePoint {
	if h == nil || h.TotalCount() == 0 {
		return nil
	}
	var pts []PercentilePoint
	for _, p := range []float64{0, 10, 20, 30, 40} {
		pts = append(pts, PercentilePoint{p, float64(h.ValueAtQuantile(p)) / 1e6})
	}
	for k := 1; k <= 20; k++ {
		tail := math.Pow(0.5, float64(k))
		if tail*float64(h.TotalCount()) < 1 {
			break // beyond here every percentile is the maximum
		}
		p := 100 * (1 - tail)
		pts = append(pts, PercentilePoint{p, float64(h.ValueAtQuantile(p)) / 1e6})
	}
	pts = append(pts, PercentilePoint{100, float64(h.Max()) / 1e6})
	return pts
}

// timeline keeps one coarse histogram per second of the run for the
// latency-over-time plot. It is shared by all workers under a mutex: one
// uncontended lock per request is far cheaper than the HTTP round trip it
// accompanies, and per-second-per-worker histograms would cost far more
// memory.
type timeline struct {
	mu      sync.Mutex
	start   time.Time
	seconds []*hdrhistogram.Histogram
	fails   []int64
}

func newTimeline(start time.Time) *timeline { return &timeline{start: start} }

func (t *timeline) record(at time.Time, latency time.Duration, failed bool) {
	sec := int(at.Sub(t.start) / time.Second)
	if sec < 0 {
		sec = 0
	}
	t.mu.Lock()
	for len(t.seconds) <= sec {
		t.seconds = append(t.seconds, hdrhistogram.New(histLowest, histHighest, 2))
		t.fails = append(t.fails, 0)
	}
	recordLatency(t.seconds[sec], latency)
	if failed {
		t.fails[sec]++
	}
	t.mu.Unlock()
}

// TimelinePoint is the latency of the requests completed in one second.
type TimelinePoint struct {
	Second   int     `json:"second"`
	Requests int64   `json:"requests"`
	Failures int64   `json:"failures"`
	P50Ms    float64 `json:"p50_ms"`
	P99Ms    float64 `json:"p99_ms"`
	MaxMs    float64 `json:"max_ms"`
}

func (t *timeline) points() []TimelinePoint {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]TimelinePoint, 0, len(t.seconds))
	for i, h := range t.seconds {
		p := TimelinePoint{Second: i, Requests: h.TotalCount(), Failures: t.fails[i]}
		if h.TotalCount() > 0 {
			p.P50Ms = float64(h.ValueAtQuantile(50)) / 1e6
			p.P99Ms = float64(h.ValueAtQuantile(99)) / 1e6
			p.MaxMs = float64(h.Max()) / 1e6
		}
		out = append(out, p)
	}
	return out
}

// lastP99 is the p99 of the most recent complete second, for the live line.
func (t *timeline) lastP99() float64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := len(t.seconds) - 2; i >= 0; i-- {
		if h := t.seconds[i]; h.TotalCount() > 0 {
			return float64(h.ValueAtQuantile(99)) / 1e6
		}
	}
	return 0
}
