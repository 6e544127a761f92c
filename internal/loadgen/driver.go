package loadgen

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// MinAchievedRatio is the share of the target rate an open-loop run must
// achieve to be valid. Below it the generator (or the server) could not keep
// the schedule and the latencies describe a different load than the one asked
// for, so they are not reported as the answer.
const MinAchievedRatio = 0.95

// Target is where and how requests are sent.
type Target struct {
	BaseURL string // e.g. http://127.0.0.1:8004
	// Client, if set, sends every request. If nil, the load drivers give
	// each sender a keep-alive HTTP/1.1 connection of its own that it
	// writes and reads itself (directConn; wrk's way), for an http URL; an
	// https URL gets NewHTTPClient sized to the run's concurrency.
	Client *http.Client
	// Timeout bounds each request (default 10s); a Client has its own.
	Timeout time.Duration
}

// Progress is a live snapshot handed to Options.OnProgress.
type Progress struct {
	Elapsed   time.Duration
	Total     time.Duration // planned run length including warm-up; 0 if bounded by count
	Completed int64
	Failed    int64
	Shed      int64   // refused for overload (503 overloaded): not decisions, not failures
	LastP99Ms float64 // p99 of the last complete second
}

// Options are shared by both drivers.
type Options struct {
	Target   Target
	Workload *Workload
	// Scenario restricts the run to one scenario (by name); empty means the
	// weighted mix.
	Scenario string
	// Seed makes scenario and key choice reproducible.
	Seed uint64
	// KeySuffix is appended to every varied value (see Scenario.AppendBody).
	KeySuffix string
	// Body, if set, is sent byte for byte as every request's body instead
	// of the workload's rendered bodies (the workload still names the path,
	// the method and the scenario the requests are counted under): one fixed
	// request, as another load tool would send it. See FixedWorkload.
	Body []byte
	// OnProgress, if set, is called about every ProgressEvery (default
	// 250ms) from a separate goroutine.
	OnProgress    func(Progress)
	ProgressEvery time.Duration
}

// ClosedLoop drives Users concurrent users, each sending a request, waiting
// for the answer and sending the next (Locust's model). Throughput is what the
// server gives back; latency is service time.
type ClosedLoop struct {
	Users     int
	SpawnRate float64       // users started per second; <= 0 starts all at once
	Duration  time.Duration // total run time including warm-up; 0 with MaxRequests
	// Warmup: requests started before this are not recorded (those of a
	// timed run answered after it still count in its rates: RunClosed).
	Warmup time.Duration
	// MaxRequests stops the run after this many requests (0: unbounded).
	MaxRequests int64
}

// OpenLoop sends at a constant Rate whatever the server does (wrk2's model).
// Each request has a scheduled send time; latency is measured from it, so a
// server stall shows as latency of every request that should have been sent
// during the stall instead of as a pause in sending (coordinated omission).
type OpenLoop struct {
	Rate        float64       // requests per second
	Duration    time.Duration // measured time, after Warmup
	Warmup      time.Duration // sent at Rate but not recorded
	Connections int           // concurrent senders (max in flight); default 64
	// MaxLag abandons the run when sending falls this far behind schedule
	// (default 10s): the run is then reported invalid rather than left to
	// hammer a dead server with a backlog.
	MaxLag time.Duration
}

// ScenarioStats are the results of one scenario (or of all, as Total).
// Requests = Allowed + Denied + Failures + Shed. Shed requests (503
// overloaded with Retry-After) are neither decisions nor failures: they are
// out of the compliance figure, of ErrorRate (numerator and denominator:
// it is Failures over the answered requests, the figure the error-rate
// objective judges) and of Latency, which describes the answered requests.
// ShedRate is over all requests.
type ScenarioStats struct {
	Name        string         `json:"name"`
	ExpectAllow *bool          `json:"expect_allow,omitempty"`
	Requests    int64          `json:"requests"`
	Failures    int64          `json:"failures"`
	Allowed     int64          `json:"allowed"`
	Denied      int64          `json:"denied"`
	Shed        int64          `json:"shed"`
	ErrorRate   float64        `json:"error_rate"`
	ShedRate    float64        `json:"shed_rate"`
	RPS         float64        `json:"rps"`
	Latency     LatencySummary `json:"latency"`
	// Window (timed closed loop only) holds what the rates count: RPS is
	// Window.Answered over the measured window, not Requests (RunClosed).
	Window *WindowCounts `json:"window,omitempty"`
}

// WindowCounts are the requests a timed closed loop's rates count: those
// answered within the measured window, wherever they were sent. They differ
// from the recorded requests (Requests, the decisions and failures, the
// latency) by the two ends of the window: Answered = Requests - AfterEnd +
// FromWarmup.
type WindowCounts struct {
	Answered int64 `json:"answered"` // answered within the window: RPS × duration
	Decided  int64 `json:"decided"`  // of them allowed or denied: goodput × duration (Total)
	// AfterEnd were sent in the window and answered after its end: in
	// Requests and the latency, not in the rates.
	AfterEnd int64 `json:"answered_after_end"`
	// FromWarmup were sent in the warm-up and answered in the window: in
	// the rates, not in Requests or the latency.
	FromWarmup int64 `json:"sent_in_warmup"`
}

// Decided is the number of requests decided (allowed or denied): neither
// failed nor shed. Throughput figures count these.
func (s ScenarioStats) Decided() int64 { return s.Allowed + s.Denied }

// Answered is the number of requests the service answered rather than
// shed: decided or failed.
func (s ScenarioStats) Answered() int64 { return s.Requests - s.Shed }

// errorRate is the one definition of the error rate, reported as ErrorRate
// and judged by LoadSLO: failures over the answered requests. ok is false
// when nothing was answered (a run all shed has no error rate, not 0).
func (s ScenarioStats) errorRate() (rate float64, ok bool) {
	if n := s.Answered(); n > 0 {
		return float64(s.Failures) / float64(n), true
	}
	return 0, false
}

// Result is the outcome of a load run.
type Result struct {
	Workload     string    `json:"workload"`
	Mode         string    `json:"mode"` // "closed" or "open"
	URL          string    `json:"url"`
	StartedAt    time.Time `json:"started_at"`
	WarmupSec    float64   `json:"warmup_seconds"`
	DurationSec  float64   `json:"duration_seconds"` // measured window, that of every rate (RunOpen, RunClosed)
	Users        int       `json:"users,omitempty"`
	Connections  int       `json:"connections,omitempty"`
	TargetRate   float64   `json:"target_rate,omitempty"`
	AchievedRate float64   `json:"achieved_rate"`
	// Goodput is decisions (allowed or denied) per second of the measured
	// window (DurationSec): AchievedRate less the failed and the shed
	// requests. For a timed closed loop these are the decisions answered
	// in the window (Total.Window.Decided).
	Goodput       float64 `json:"goodput"`
	Unsent        int64   `json:"unsent,omitempty"`
	Valid         bool    `json:"valid"`
	InvalidReason string  `json:"invalid_reason,omitempty"`
	// FirstError is the first failure of the run, warm-up included, so
	// that a run whose measured part is clean still shows a startup error.
	FirstError string        `json:"first_error,omitempty"`
	Total      ScenarioStats `json:"total"`
	// ServiceLatency (open loop only) is measured from the actual send time,
	// the figure a tool with coordinated omission would report.
	ServiceLatency *LatencySummary `json:"service_latency,omitempty"`
	// SendLag (open loop only) is how late requests were sent after their
	// scheduled time: waiting for a free connection while the server is
	// slow, and the load tool's own lateness. It is part of Latency.
	SendLag *LatencySummary `json:"send_lag,omitempty"`
	// ShedLatency is how long the shed requests took to be refused.
	ShedLatency  *LatencySummary   `json:"shed_latency,omitempty"`
	Scenarios    []ScenarioStats   `json:"scenarios"`
	Compliance   *float64          `json:"constitutional_compliance,omitempty"`
	Timeline     []TimelinePoint   `json:"timeline,omitempty"`
	Distribution []PercentilePoint `json:"distribution,omitempty"`

	// Hist is the merged latency histogram of all measured requests (ns).
	Hist *hdrhistogram.Histogram `json:"-"`
}

// run is the state shared by the workers of one run.
type run struct {
	opts      Options
	direct    *url.URL      // if set, senders use their own connections (directConn)
	timeout   time.Duration // per request, for direct connections
	conns     []*directConn
	scenarios []int // indices the run may pick from
	recs      []*recorder
	tl        *timeline
	// windowed: the rates count the requests answered in the window
	// (recorder.answeredInWindow), not the recorded ones: a timed closed
	// loop.
	windowed  bool
	completed atomic.Int64
	failed    atomic.Int64
	shed      atomic.Int64
	firstErr  atomic.Pointer[string]
}

func (o *Options) prepare(concurrency int) (*run, error) {
	if o.Workload == nil {
		return nil, errors.New("loadgen: no workload")
	}
	if o.Target.BaseURL == "" {
		return nil, errors.New("loadgen: no target URL")
	}
	timeout := o.Target.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	var direct *url.URL
	if o.Target.Client == nil {
		if u, err := url.Parse(o.Target.BaseURL); err == nil && u.Scheme == "http" {
			direct = u
		} else {
			o.Target.Client = NewHTTPClient(concurrency, timeout)
		}
	}
	r := &run{opts: *o, direct: direct, timeout: timeout}
	if o.Scenario != "" {
		found := false
		for i, s := range o.Workload.Scenarios {
			if s.Name == o.Scenario {
				r.scenarios = []int{i}
				found = true
			}
		}
		if !found {
			return nil, fmt.Errorf("loadgen: workload %q has no scenario %q", o.Workload.Name, o.Scenario)
		}
	}
	return r, nil
}

func (r *run) pick(rng *rand.Rand) int {
	if len(r.scenarios) == 1 {
		return r.scenarios[0]
	}
	return r.opts.Workload.Pick(rng)
}

func (r *run) newWorker(ctx context.Context, id int) (*recorder, *requester, *rand.Rand) {
	rec := newRecorder(len(r.opts.Workload.Scenarios))
	r.recs[id] = rec
	rq := newRequester(r.opts.Target.Client, r.opts.Target.BaseURL, r.opts.Workload)
	rq.fixed = r.opts.Body
	if r.direct != nil {
		w := r.opts.Workload
		rq.direct = newDirectConn(ctx, r.direct, w.Method, w.Path, r.timeout)
		r.conns = append(r.conns, rq.direct)
	}
	rng := rand.New(rand.NewPCG(r.opts.Seed, uint64(id)+1))
	return rec, rq, rng
}

// closeConns closes the senders' own connections after a run.
func (r *run) closeConns() {
	for _, d := range r.conns {
		d.close()
	}
}

func (r *run) send(ctx context.Context, rq *requester, rng *rand.Rand) (int, Outcome) {
	si := r.pick(rng)
	s := &r.opts.Workload.Scenarios[si]
	o, err := rq.do(ctx, s, rng.Int64N(s.KeySpace()), r.opts.KeySuffix)
	if err != nil {
		msg := fmt.Sprintf("%s: %v", s.Name, err)
		r.firstErr.CompareAndSwap(nil, &msg)
	}
	return si, o
}

func (r *run) progressLoop(ctx context.Context, start time.Time, total time.Duration) func() {
	if r.opts.OnProgress == nil {
		return func() {}
	}
	every := r.opts.ProgressEvery
	if every <= 0 {
		every = 250 * time.Millisecond
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				r.opts.OnProgress(Progress{
					Elapsed: time.Since(start), Total: total,
					Completed: r.completed.Load(), Failed: r.failed.Load(), Shed: r.shed.Load(),
					LastP99Ms: r.tl.lastP99(),
				})
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// RunClosed runs a closed-loop test.
func RunClosed(ctx context.Context, cfg ClosedLoop, opts Options) (*Result, error) {
	if cfg.Users < 1 {
		return nil, errors.New("loadgen: users must be >= 1")
	}
	if cfg.Duration <= 0 && cfg.MaxRequests <= 0 {
		return nil, errors.New("loadgen: closed loop needs a run time or a request count")
	}
	if cfg.Duration > 0 && cfg.Warmup >= cfg.Duration {
		return nil, errors.New("loadgen: warm-up must be shorter than the run time")
	}
	r, err := opts.prepare(cfg.Users)
	if err != nil {
		return nil, err
	}
	r.recs = make([]*recorder, cfg.Users)
	start := time.Now()
	measureFrom := start.Add(cfg.Warmup)
	r.tl = newTimeline(measureFrom)
	var end time.Time
	if cfg.Duration > 0 {
		end = start.Add(cfg.Duration)
		r.windowed = true
	}
	var issued atomic.Int64
	var lastDone atomic.Int64 // unix nanos of the last measured completion
	stopProgress := r.progressLoop(ctx, start, cfg.Duration)

	var wg sync.WaitGroup
	defer r.closeConns()
	for u := 0; u < cfg.Users; u++ {
		rec, rq, rng := r.newWorker(ctx, u)
		var delay time.Duration
		if cfg.SpawnRate > 0 {
			delay = time.Duration(float64(u) / cfg.SpawnRate * float64(time.Second))
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if delay > 0 && !sleepUntil(ctx, start.Add(delay)) {
				return
			}
			for ctx.Err() == nil {
				if cfg.MaxRequests > 0 && issued.Add(1) > cfg.MaxRequests {
					return
				}
				t0 := time.Now()
				if !end.IsZero() && !t0.Before(end) {
					return
				}
				si, o := r.send(ctx, rq, rng)
				t1 := time.Now()
				if ctx.Err() != nil {
					return // an interrupted request is not a measurement
				}
				r.count(o)
				if !rec.tallyClosed(si, o, t0, t1, measureFrom, end, r.windowed) {
					continue
				}
				if o != OutcomeShed {
					r.tl.record(t1, t1.Sub(t0), o == OutcomeFailure)
				}
				storeMax(&lastDone, t1.UnixNano())
			}
		}()
	}
	wg.Wait()
	stopProgress()
	// A closed loop has no schedule: what it measures is the rate the
	// server answers its users at. The window of a timed run is its run
	// time after the warm-up, ending at the planned end, not at the last
	// answer (one slow answer after the end does not stretch a window in
	// which nothing else was sent), and its rates (req/s, goodput, the
	// achieved rate) count the requests answered within it, wherever they
	// were sent: not the requests sent in it, which counted every user's
	// last request, still in flight at the end, without anything to
	// balance it when there is no warm-up (10 users of a 400 ms service
	// for 1 s read 30/s, the service answering 25/s at most). A request
	// sent in the warm-up and answered in the window is in the rates.
	// What is recorded is unchanged: the requests sent in the window, with
	// their decisions, failures and latency, the ones answered after the
	// end included, so that a service stalling at the end shows in the
	// latency and the error rate rather than vanishing from both; each
	// row's Window says how many of them are not in the rates and how many
	// answers from the warm-up are. If the run also had a request count
	// and reached it first, its window ends at its last answer.
	//
	// A run bounded by a request count alone has no planned end: it lasts
	// until its last answer, the time the batch took (ending it at the
	// last start would leave out the last round trip of every user), and
	// its rates count its recorded requests.
	finish := time.Unix(0, lastDone.Load())
	if lastDone.Load() == 0 {
		finish = time.Now()
	}
	if !end.IsZero() && finish.After(end) {
		finish = end
	}
	res := r.result(opts, "closed", start, measureFrom, finish)
	res.Users = cfg.Users
	res.Valid = true
	if ctx.Err() != nil {
		res.Valid, res.InvalidReason = false, "interrupted"
	}
	return res, nil
}

// tallyClosed counts in rec a closed loop's request of scenario si, sent at
// t0 and answered at t1 with outcome o, for a run measured from measureFrom
// and, if end is not zero, up to end; windowed says the run's rates count
// the answers within that window (a timed run). A request sent from
// measureFrom on is recorded, and in a windowed run counted as answered in
// the window or after its end; one sent before (in the warm-up) is not
// recorded, but counted in a windowed run's rates if answered in the
// window. It reports whether the request was recorded.
func (rec *recorder) tallyClosed(si int, o Outcome, t0, t1, measureFrom, end time.Time, windowed bool) bool {
	answered := !t1.Before(measureFrom) && (end.IsZero() || !t1.After(end))
	if t0.Before(measureFrom) {
		if windowed && answered {
			rec.answeredInWindow(si, o, true)
		}
		return false
	}
	rec.record(si, t1.Sub(t0), o)
	if windowed {
		if answered {
			rec.answeredInWindow(si, o, false)
		} else {
			rec.answeredAfterEnd(si)
		}
	}
	return true
}

// RunOpen runs an open-loop constant-rate test.
func RunOpen(ctx context.Context, cfg OpenLoop, opts Options) (*Result, error) {
	if !(cfg.Rate > 0) {
		return nil, errors.New("loadgen: rate must be > 0")
	}
	if cfg.Duration <= 0 {
		return nil, errors.New("loadgen: duration must be > 0")
	}
	if cfg.Connections <= 0 {
		cfg.Connections = 64
	}
	if cfg.MaxLag <= 0 {
		cfg.MaxLag = 10 * time.Second
	}
	r, err := opts.prepare(cfg.Connections)
	if err != nil {
		return nil, err
	}
	r.recs = make([]*recorder, cfg.Connections)
	interval := float64(time.Second) / cfg.Rate
	warmN := int64(cfg.Warmup.Seconds() * cfg.Rate)
	// Rounded up: rounded down, a short run at a low rate sends fewer
	// requests than its duration holds and looks slower than it was.
	totalN := warmN + int64(math.Ceil(cfg.Duration.Seconds()*cfg.Rate-1e-9))
	if totalN == warmN {
		totalN++ // at least one measured request
	}
	// Start slightly in the future so that all senders are parked on their
	// first slot before the schedule begins.
	start := time.Now().Add(5 * time.Millisecond)
	measureFrom := start.Add(time.Duration(float64(warmN) * interval))
	r.tl = newTimeline(measureFrom)
	var next, sent atomic.Int64
	var abandoned atomic.Bool
	var measuredSent, lastSent atomic.Int64 // after the warm-up: sends, and the last one's time
	stopProgress := r.progressLoop(ctx, start, cfg.Warmup+cfg.Duration)

	// Each sender waits for its slot with a waiter of its own (a timerfd on
	// Linux: a Go timer would wake it up to a millisecond late, and that
	// lateness would be counted as the service's latency). A cancelled run
	// fires them all at once.
	waiters := make([]waiter, cfg.Connections)
	for c := range waiters {
		if w, err := newWaiter(); err == nil {
			waiters[c] = w
		}
	}
	woken := make(chan struct{})
	stopWake := context.AfterFunc(ctx, func() {
		defer close(woken)
		for c := range waiters {
			waiters[c].wake()
		}
	})
	defer func() {
		if !stopWake() {
			<-woken
		}
		for c := range waiters {
			waiters[c].close()
		}
	}()

	// Which senders hold the coming slots: a few, the most recently used
	// first (relay.go).
	rl := newRelay(time.Duration(interval), cfg.Connections)
	var wg sync.WaitGroup
	defer r.closeConns()
	for c := 0; c < cfg.Connections; c++ {
		rec, rq, rng := r.newWorker(ctx, c)
		wt := &waiters[c]
		me := make(chan struct{}, 1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer rl.finish() // a sender leaves only when the run is over
			for ctx.Err() == nil && !abandoned.Load() && rl.take(ctx, me) {
				i := next.Add(1) - 1
				if i >= totalN {
					return
				}
				sched := start.Add(time.Duration(float64(i) * interval))
				if lag := time.Since(sched); lag > cfg.MaxLag {
					abandoned.Store(true)
					return
				}
				if !wt.wait(ctx, sched) {
					return
				}
				rl.fired()
				sent.Add(1)
				t0 := time.Now()
				if i >= warmN {
					measuredSent.Add(1)
					storeMax(&lastSent, t0.UnixNano())
				}
				si, o := r.send(ctx, rq, rng)
				t1 := time.Now()
				if ctx.Err() != nil {
					return // an interrupted request is not a measurement
				}
				r.count(o)
				if i < warmN {
					continue
				}
				lat := t1.Sub(sched) // from the scheduled time, not the actual send
				rec.record(si, lat, o)
				recordLatency(rec.lag, t0.Sub(sched))
				if o != OutcomeShed {
					recordLatency(rec.svc, t1.Sub(t0))
					r.tl.record(t1, lat, o == OutcomeFailure)
				}
			}
		}()
	}
	wg.Wait()
	stopProgress()
	// Every rate of the run (achieved, goodput, req/s) is over the window
	// the measured requests were sent in: the planned duration, or up to
	// the last send if sending fell behind; never up to the last answer,
	// or one slow answer at the end would make a run that kept its
	// schedule look like one that fell behind, and its goodput a fraction
	// of what the service decided. The requests in flight when sending
	// ends are counted, as the warm-up's in flight at the start are not;
	// if the service let a backlog grow instead, this counts at most
	// Connections requests more than it answered in the window, and their
	// latency shows it.
	sendEnd := measureFrom.Add(cfg.Duration)
	if last := time.Unix(0, lastSent.Load()); last.After(sendEnd) {
		sendEnd = last
	}
	res := r.result(opts, "open", start, measureFrom, sendEnd)
	res.Connections = cfg.Connections
	res.TargetRate = cfg.Rate
	// Sends rather than recorded requests: an interrupted one was sent.
	res.AchievedRate = float64(measuredSent.Load()) / res.DurationSec
	svc, lag := NewHistogram(), NewHistogram()
	for _, rec := range r.recs {
		if rec != nil {
			svc.Merge(rec.svc)
			lag.Merge(rec.lag)
		}
	}
	sl, ll := Summarize(svc), Summarize(lag)
	res.ServiceLatency, res.SendLag = &sl, &ll
	res.Unsent = totalN - sent.Load()
	res.Valid = true
	switch {
	case ctx.Err() != nil:
		res.Valid, res.InvalidReason = false, "interrupted"
	case abandoned.Load():
		res.Valid, res.InvalidReason = false, fmt.Sprintf("fell more than %s behind schedule; %d requests never sent", cfg.MaxLag, res.Unsent)
	case res.AchievedRate < MinAchievedRatio*cfg.Rate:
		res.Valid, res.InvalidReason = false, fmt.Sprintf("achieved %.1f req/s, below %.0f%% of the target %.1f req/s", res.AchievedRate, MinAchievedRatio*100, cfg.Rate)
	}
	return res, nil
}

// count tallies one completed request for the progress line.
func (r *run) count(o Outcome) {
	r.completed.Add(1)
	switch o {
	case OutcomeFailure:
		r.failed.Add(1)
	case OutcomeShed:
		r.shed.Add(1)
	}
}

// result sums up the run; its rates are over the window from measureFrom
// to windowEnd.
func (r *run) result(opts Options, mode string, start, measureFrom, windowEnd time.Time) *Result {
	w := opts.Workload
	total := newRecorder(len(w.Scenarios))
	for _, rec := range r.recs {
		if rec != nil {
			total.merge(rec)
		}
	}
	window := windowEnd.Sub(measureFrom).Seconds()
	if window <= 0 {
		window = 1e-9
	}
	res := &Result{
		Workload:    w.Name,
		Mode:        mode,
		URL:         opts.Target.BaseURL,
		StartedAt:   start.UTC(),
		WarmupSec:   measureFrom.Sub(start).Seconds(),
		DurationSec: window,
		Hist:        NewHistogram(),
		Timeline:    r.tl.points(),
	}
	if p := r.firstErr.Load(); p != nil {
		res.FirstError = *p
	}
	all := ScenarioStats{Name: "total"}
	if r.windowed {
		all.Window = &WindowCounts{}
	}
	var expAllowN, expAllowOK, expDenyN, expDenyOK int64
	for i, c := range total.scen {
		s := w.Scenarios[i]
		if len(r.scenarios) == 1 && r.scenarios[0] != i {
			continue
		}
		st := ScenarioStats{
			Name: s.Name, Requests: c.requests, Failures: c.failures,
			Allowed: c.allowed, Denied: c.denied, Shed: c.shed,
			RPS: float64(c.requests) / window, Latency: Summarize(c.hist),
		}
		if r.windowed {
			st.Window = &WindowCounts{Answered: c.winAnswered, Decided: c.winDecided, AfterEnd: c.afterEnd, FromWarmup: c.fromWarmup}
			st.RPS = float64(c.winAnswered) / window
		}
		st.ErrorRate, _ = st.errorRate()
		if c.requests > 0 {
			st.ShedRate = float64(c.shed) / float64(c.requests)
		}
		if s.Expect != nil && s.Expect.Allow != nil {
			v := *s.Expect.Allow
			st.ExpectAllow = &v
			if v {
				expAllowN += c.allowed + c.denied
				expAllowOK += c.allowed
			} else {
				expDenyN += c.allowed + c.denied
				expDenyOK += c.denied
			}
		}
		res.Scenarios = append(res.Scenarios, st)
		res.Hist.Merge(c.hist)
		all.Requests += c.requests
		all.Failures += c.failures
		all.Allowed += c.allowed
		all.Denied += c.denied
		all.Shed += c.shed
		if all.Window != nil {
			all.Window.Answered += c.winAnswered
			all.Window.Decided += c.winDecided
			all.Window.AfterEnd += c.afterEnd
			all.Window.FromWarmup += c.fromWarmup
		}
	}
	all.RPS = float64(all.Requests) / window
	decided := all.Decided()
	if all.Window != nil {
		all.RPS = float64(all.Window.Answered) / window
		decided = all.Window.Decided
	}
	all.ErrorRate, _ = all.errorRate()
	if all.Requests > 0 {
		all.ShedRate = float64(all.Shed) / float64(all.Requests)
	}
	if all.Shed > 0 {
		sl := Summarize(total.shed)
		res.ShedLatency = &sl
	}
	all.Latency = Summarize(res.Hist)
	res.Total = all
	res.AchievedRate = all.RPS
	res.Goodput = float64(decided) / window
	res.Compliance = Compliance(expAllowOK, expAllowN, expDenyOK, expDenyN)
	res.Distribution = PercentileCurve(res.Hist)
	return res
}

// Compliance is the constitutional compliance of a run: the mean of the share
// of expect-allow decisions that were allows and the share of expect-deny
// decisions that were denies, so that a mix with 10% dangerous requests cannot
// hide a policy that allows all of them. A class with no decisions is left
// out; nil means neither class had any. Failed requests are not decisions:
// they count against the error-rate objective instead; nor are shed ones
// (the service refused them for overload), which the shed-rate objective
// judges.
func Compliance(allowOK, allowN, denyOK, denyN int64) *float64 {
	var parts []float64
	if allowN > 0 {
		parts = append(parts, float64(allowOK)/float64(allowN))
	}
	if denyN > 0 {
		parts = append(parts, float64(denyOK)/float64(denyN))
	}
	if len(parts) == 0 {
		return nil
	}
	sum := 0.0
	for _, p := range parts {
		sum += p
	}
	v := sum / float64(len(parts))
	return &v
}

func storeMax(a *atomic.Int64, v int64) {
	for {
		cur := a.Load()
		if v <= cur || a.CompareAndSwap(cur, v) {
			return
		}
	}
}

// sleepUntil waits for t or for ctx; it reports false if ctx ended first.
func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}
