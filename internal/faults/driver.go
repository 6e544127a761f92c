// Package faults runs the reliability scenarios of scripts/faults.sh: real
// acgs processes (and Redis, nginx, a bundle server) on loopback, a
// constant-rate load of the acgs-mixed workload, a fault injected while the
// load runs, and for every phase (before, during, after) the requests sent,
// failed and wrong with their latency percentiles. It is a test helper: it
// never talks to anything but 127.0.0.1, and every run is bounded in time and
// request count.
package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/acgs-lite/acgs/internal/loadgen"
)

// Sample is one request of a load run.
type Sample struct {
	Sched    time.Time     // when it was scheduled (open loop)
	Sent     time.Time     // when it was actually sent
	Done     time.Time     // when its answer was read
	Latency  time.Duration // Done - Sched: queueing behind a stall counts
	Status   int           // 0 for a transport error
	Err      string        // why it failed ("" when it did not)
	Allow    *bool
	Expect   *bool // the workload's expect.allow for its scenario
	Revision string
	Tier     string
	Reason   string // the first reason of the answer (why a deny, or a fail-closed evaluation)
}

// Failed is a transport error, a status other than 200, or an answer
// without a boolean allow (the load tool's definition).
func (s *Sample) Failed() bool { return s.Err != "" }

// Wrong is a decision that differs from the one the workload expects.
func (s *Sample) Wrong() bool {
	return !s.Failed() && s.Expect != nil && s.Allow != nil && *s.Allow != *s.Expect
}

// LoadConfig is a constant-rate load.
type LoadConfig struct {
	URL         string  // base URL, loopback only
	Rate        float64 // requests per second
	Duration    time.Duration
	Connections int // senders; default 64
	Seed        uint64
	Timeout     time.Duration // per request; default 10s
	Workload    *loadgen.Workload
}

// Load is a running load.
type Load struct {
	cfg     LoadConfig
	Start   time.Time
	cancel  context.CancelFunc
	done    chan struct{}
	mu      sync.Mutex
	samples []Sample
}

// StartLoad begins sending cfg.Rate requests per second for cfg.Duration.
// Requests are scheduled on a fixed grid; latency is measured from each
// request's scheduled time, so a stalled server shows as latency of every
// request that should have been sent during the stall.
func StartLoad(cfg LoadConfig) (*Load, error) {
	if err := loadgen.CheckLoopback(context.Background(), cfg.URL); err != nil {
		return nil, err
	}
	if cfg.Workload == nil {
		w, err := loadgen.DefaultWorkload()
		if err != nil {
			return nil, err
		}
		cfg.Workload = w
	}
	if cfg.Connections <= 0 {
		cfg.Connections = 64
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Rate <= 0 || cfg.Duration <= 0 {
		return nil, errors.New("faults: rate and duration must be positive")
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &Load{cfg: cfg, cancel: cancel, done: make(chan struct{})}
	total := int(cfg.Rate * cfg.Duration.Seconds())
	l.samples = make([]Sample, 0, total)
	jobs := make(chan time.Time, total)
	client := loadgen.NewHTTPClient(cfg.Connections, cfg.Timeout)
	l.Start = time.Now().Add(20 * time.Millisecond)
	interval := time.Duration(float64(time.Second) / cfg.Rate)
	go func() { // scheduler: the jobs channel holds the whole run, so it never blocks
		defer close(jobs)
		for i := 0; i < total; i++ {
			at := l.Start.Add(time.Duration(i) * interval)
			if d := time.Until(at); d > 0 {
				t := time.NewTimer(d)
				select {
				case <-ctx.Done():
					t.Stop()
					return
				case <-t.C:
				}
			}
			jobs <- at
		}
	}()
	var wg sync.WaitGroup
	var seq sync.Mutex
	n := uint64(0)
	for c := 0; c < cfg.Connections; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf []byte
			for at := range jobs {
				seq.Lock()
				n++
				rng := rand.New(rand.NewPCG(cfg.Seed, n))
				seq.Unlock()
				s := l.one(ctx, client, rng, &buf, at)
				l.mu.Lock()
				l.samples = append(l.samples, s)
				l.mu.Unlock()
			}
		}()
	}
	go func() {
		wg.Wait()
		client.CloseIdleConnections()
		close(l.done)
	}()
	return l, nil
}

type answer struct {
	Allow    *bool    `json:"allow"`
	Revision string   `json:"policy_revision"`
	Tier     string   `json:"cache_tier"`
	Reasons  []string `json:"reasons"`
	Code     string   `json:"code"`
	Message  string   `json:"message"`
}

func (l *Load) one(ctx context.Context, client *http.Client, rng *rand.Rand, buf *[]byte, at time.Time) (s Sample) {
	w := l.cfg.Workload
	sc := &w.Scenarios[w.Pick(rng)]
	// The key index also goes into a suffix, which perturbs the request's
	// decimal fractions (loadgen.Scenario.AppendBody): a varied id alone is
	// outside what the constitution reads, so without it the whole key space
	// would share one cache key and the L1 would never miss into L2.
	idx := rng.Int64N(sc.KeySpace())
	*buf = sc.AppendBody((*buf)[:0], idx, "-k"+strconv.FormatInt(idx, 10))
	s = Sample{Sched: at, Sent: time.Now()}
	if sc.Expect != nil {
		s.Expect = sc.Expect.Allow
	}
	defer func() {
		s.Done = time.Now()
		s.Latency = s.Done.Sub(s.Sched)
	}()
	req, err := http.NewRequestWithContext(ctx, w.Method, strings.TrimRight(l.cfg.URL, "/")+w.Path, bytes.NewReader(*buf))
	if err != nil {
		s.Err = err.Error()
		return s
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		s.Err = err.Error()
		return s
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	s.Status = resp.StatusCode
	if err != nil {
		s.Err = err.Error()
		return s
	}
	var a answer
	if err := json.Unmarshal(body, &a); err != nil {
		s.Err = fmt.Sprintf("HTTP %d, body not JSON: %.120s", resp.StatusCode, body)
		return s
	}
	s.Allow, s.Revision, s.Tier = a.Allow, a.Revision, a.Tier
	if len(a.Reasons) > 0 {
		s.Reason = a.Reasons[0]
	}
	switch {
	case resp.StatusCode != http.StatusOK:
		s.Err = fmt.Sprintf("HTTP %d %s: %.120s", resp.StatusCode, a.Code, a.Message)
	case a.Allow == nil:
		s.Err = "no boolean allow in the answer"
	}
	return s
}

// Wait blocks until every scheduled request has been answered and returns
// the samples in scheduled order.
func (l *Load) Wait() []Sample {
	<-l.done
	l.cancel()
	l.mu.Lock()
	defer l.mu.Unlock()
	out := slices.Clone(l.samples)
	sort.Slice(out, func(i, j int) bool { return out[i].Sched.Before(out[j].Sched) })
	return out
}

// At returns the time offset d into the run.
func (l *Load) At(d time.Duration) time.Time { return l.Start.Add(d) }

// SleepUntil waits until offset d of the run.
func (l *Load) SleepUntil(d time.Duration) { time.Sleep(time.Until(l.At(d))) }

// Phase is a named interval of a run, by scheduled time, as offsets from
// its start.
type Phase struct {
	Name     string
	From, To time.Duration
}

// PhaseStats summarise the requests scheduled within one phase.
type PhaseStats struct {
	Name      string         `json:"name"`
	FromS     float64        `json:"from_s"`
	ToS       float64        `json:"to_s"`
	Sent      int            `json:"sent"`
	Failed    int            `json:"failed"`
	Wrong     int            `json:"wrong"`
	P50Ms     float64        `json:"p50_ms"`
	P99Ms     float64        `json:"p99_ms"`
	MaxMs     float64        `json:"max_ms"`
	Errors    []string       `json:"first_errors,omitempty"`
	WrongWhy  []string       `json:"first_wrong_reasons,omitempty"`
	Revisions map[string]int `json:"revisions,omitempty"`
	Tiers     map[string]int `json:"cache_tiers,omitempty"`
}

// Summarize splits samples (from a run started at start) into phases.
func Summarize(start time.Time, samples []Sample, phases []Phase) []PhaseStats {
	out := make([]PhaseStats, 0, len(phases)+1)
	total := PhaseStats{Name: "total", Revisions: map[string]int{}, Tiers: map[string]int{}}
	var all []time.Duration
	for _, p := range phases {
		st := PhaseStats{Name: p.Name, FromS: p.From.Seconds(), ToS: p.To.Seconds(), Revisions: map[string]int{}, Tiers: map[string]int{}}
		var lat []time.Duration
		for i := range samples {
			s := &samples[i]
			off := s.Sched.Sub(start)
			if off < p.From || off >= p.To {
				continue
			}
			st.Sent++
			lat = append(lat, s.Latency)
			if s.Failed() {
				st.Failed++
				if len(st.Errors) < 3 {
					st.Errors = append(st.Errors, s.Err)
				}
			}
			if s.Wrong() {
				st.Wrong++
				if len(st.WrongWhy) < 3 {
					st.WrongWhy = append(st.WrongWhy, s.Reason)
				}
			}
			if s.Revision != "" {
				st.Revisions[s.Revision]++
			}
			if s.Tier != "" {
				st.Tiers[s.Tier]++
			}
		}
		st.P50Ms, st.P99Ms, st.MaxMs = percentiles(lat)
		all = append(all, lat...)
		total.Sent += st.Sent
		total.Failed += st.Failed
		total.Wrong += st.Wrong
		if len(total.Errors) < 3 {
			total.Errors = append(total.Errors, st.Errors[:min(len(st.Errors), 3-len(total.Errors))]...)
		}
		for k, v := range st.Revisions {
			total.Revisions[k] += v
		}
		for k, v := range st.Tiers {
			total.Tiers[k] += v
		}
		if len(phases) > 0 {
			total.FromS, total.ToS = phases[0].From.Seconds(), p.To.Seconds()
		}
		out = append(out, st)
	}
	total.P50Ms, total.P99Ms, total.MaxMs = percentiles(all)
	return append(out, total)
}

// percentiles returns p50, p99 and max in milliseconds (nearest rank).
func percentiles(lat []time.Duration) (p50, p99, mx float64) {
	if len(lat) == 0 {
		return 0, 0, 0
	}
	s := slices.Clone(lat)
	slices.Sort(s)
	rank := func(q float64) float64 {
		i := int(q*float64(len(s))+0.999999) - 1
		i = max(0, min(i, len(s)-1))
		return float64(s[i].Microseconds()) / 1e3
	}
	return rank(0.50), rank(0.99), float64(s[len(s)-1].Microseconds()) / 1e3
}

// Pooled summarises the requests of several phases together, e.g. every
// undisturbed phase of a run as the reference for the disturbed ones.
func Pooled(name string, start time.Time, samples []Sample, phases ...Phase) PhaseStats {
	var in []Sample
	for _, s := range samples {
		off := s.Sched.Sub(start)
		for _, p := range phases {
			if off >= p.From && off < p.To {
				in = append(in, s)
				break
			}
		}
	}
	st := Summarize(start, in, []Phase{{Name: name, From: 0, To: 1<<62 - 1}})[0]
	st.Name, st.FromS, st.ToS = name, 0, 0
	return st
}
