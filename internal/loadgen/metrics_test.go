package loadgen

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/acgs-lite/acgs/internal/testenv"
)

func approx(t *testing.T, name string, got *float64, want float64) {
	t.Helper()
	if got == nil {
		t.Errorf("%s: no data, want %v", name, want)
		return
	}
	if math.Abs(*got-want) > 1e-9*math.Max(1, math.Abs(want)) {
		t.Errorf("%s = %v, want %v", name, *got, want)
	}
}

func fixtureMetrics(t *testing.T) ServiceMetrics {
	t.Helper()
	f, err := os.Open("testdata/metrics.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s, err := ParseExposition(f, DefaultMetricNames())
	if err != nil {
		t.Fatal(err)
	}
	return s.Metrics()
}

// The fixture's expected figures, worked by hand: buckets summed over the
// decision and batch handlers (metrics and health excluded) are
// 600, 950, 1070, 1095, 1100 at 0.5, 1, 2.5, 5, 10 ms.
func TestParseExpositionFixture(t *testing.T) {
	m := fixtureMetrics(t)
	approx(t, "p50 ms", m.P50Ms, 0.5*550/600)                    // rank 550 in the first bucket
	approx(t, "p95 ms", m.P95Ms, 1+1.5*(1045.0-950)/120)         // rank 1045 in (1, 2.5]
	approx(t, "p99 ms", m.P99Ms, 2.5+2.5*(1089.0-1070)/25)       // rank 1089 in (2.5, 5]
	approx(t, "error rate", m.ErrorRate, 10.0/1105)              // 5xx of non-excluded handlers
	approx(t, "cache hit rate", m.CacheHitRate, (900.0+50)/1000) // (l1+l2 hits) / l1 lookups
	approx(t, "requests", m.Requests, 1105)
}

func TestServiceSLOExitCodes(t *testing.T) {
	m := fixtureMetrics(t) // p99 4.4 ms, errors 0.905%, hit rate 95%
	for _, tc := range []struct {
		name     string
		slo      ServiceSLO
		exit     int
		statuses map[string]Status
	}{
		{"defaults: all met, all in the warning band", ServiceSLO{P99Ms: 5, MaxErrorRate: 0.01, MinCacheHitRate: 0.95, WarnFraction: 0.8}, 0,
			map[string]Status{"p99 latency": StatusWarning, "error rate": StatusWarning, "cache hit rate": StatusWarning}},
		{"loose: all ok", ServiceSLO{P99Ms: 10, MaxErrorRate: 0.05, MinCacheHitRate: 0.5, WarnFraction: 0.8}, 0,
			map[string]Status{"p99 latency": StatusOK, "error rate": StatusOK, "cache hit rate": StatusOK}},
		{"p99 violated", ServiceSLO{P99Ms: 4, MaxErrorRate: 0.05}, 1,
			map[string]Status{"p99 latency": StatusViolation, "error rate": StatusOK}},
		{"p50 and p95 checked", ServiceSLO{P50Ms: 0.4, P95Ms: 2.5, MaxErrorRate: 0.05}, 1,
			map[string]Status{"p50 latency": StatusViolation, "p95 latency": StatusWarning}},
		{"error rate violated", ServiceSLO{MaxErrorRate: 0.005}, 1,
			map[string]Status{"error rate": StatusViolation}},
		{"hit rate violated", ServiceSLO{MaxErrorRate: 0.05, MinCacheHitRate: 0.98}, 1,
			map[string]Status{"cache hit rate": StatusViolation}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep := tc.slo.Evaluate(m)
			if rep.ExitCode() != tc.exit {
				t.Errorf("exit %d, want %d", rep.ExitCode(), tc.exit)
			}
			got := map[string]Status{}
			for _, c := range rep.Checks {
				got[c.Name] = c.Status
			}
			for name, want := range tc.statuses {
				if got[name] != want {
					t.Errorf("%s: %s, want %s", name, got[name], want)
				}
			}
		})
	}
}

func TestBucketQuantile(t *testing.T) {
	inf := math.Inf(1)
	bs := []Bucket{{0.1, 10}, {0.2, 30}, {0.4, 40}, {inf, 50}}
	for _, tc := range []struct {
		name    string
		q       float64
		buckets []Bucket
		want    float64
	}{
		{"first bucket interpolates from 0", 0.05, bs, 0.05 * 50 / 10 * 0.1},
		{"middle bucket", 0.5, bs, 0.1 + 0.1*(25.0-10)/20},
		{"rank in +Inf bucket gives the highest finite bound", 0.99, bs, 0.4},
		{"unsorted input", 0.5, []Bucket{{inf, 50}, {0.4, 40}, {0.1, 10}, {0.2, 30}}, 0.1 + 0.1*(25.0-10)/20},
		{"no observations", 0.5, []Bucket{{0.1, 0}, {inf, 0}}, math.NaN()},
		{"no +Inf bucket", 0.5, []Bucket{{0.1, 1}, {0.2, 2}}, math.NaN()},
		{"non-monotonic counts are fixed", 0.5, []Bucket{{0.1, 10}, {0.2, 8}, {inf, 20}}, 0.1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := BucketQuantile(tc.q, tc.buckets)
			if math.IsNaN(tc.want) {
				if !math.IsNaN(got) {
					t.Fatalf("got %v, want NaN", got)
				}
				return
			}
			if math.Abs(got-tc.want) > 1e-12 {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// httpRegistry is a registry with the service's HTTP request histogram
// (a few of its buckets) and counter, labelled by handler and code.
func httpRegistry() (*prometheus.Registry, *prometheus.HistogramVec, *prometheus.CounterVec) {
	reg := prometheus.NewRegistry()
	dur := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "acgs_http_request_duration_seconds", Help: "h",
		Buckets: []float64{0.0005, 0.001, 0.0025, 0.005, 0.01},
	}, []string{"handler", "code"})
	reqs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "acgs_http_requests_total", Help: "r"}, []string{"handler", "code"})
	reg.MustRegister(dur, reqs)
	return reg, dur, reqs
}

// A real client_golang registry served on loopback, scraped the way `acgs
// slo --metrics-url` scrapes the service.
func TestScrapeLiveRegistry(t *testing.T) {
	reg, dur, reqs := httpRegistry()
	hits := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "acgs_cache_hits_total", Help: "h"}, []string{"tier"})
	misses := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "acgs_cache_misses_total", Help: "m"}, []string{"tier"})
	reg.MustRegister(hits, misses)
	observe := func(handler, code string, seconds float64, n int) {
		for range n {
			dur.WithLabelValues(handler, code).Observe(seconds)
			reqs.WithLabelValues(handler, code).Inc()
		}
	}
	observe("decision", "200", 0.0003, 80)
	observe("decision", "200", 0.0008, 15)
	observe("decision", "500", 0.004, 5)
	observe("metrics", "200", 0.05, 100) // excluded: would dominate p99
	hits.WithLabelValues("l1").Add(97)
	hits.WithLabelValues("l2").Add(1)
	misses.WithLabelValues("l1").Add(3)
	misses.WithLabelValues("l2").Add(2)

	srv := newLoopbackServer(t, promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	client := &http.Client{Timeout: 5 * time.Second}
	first, err := ScrapeURL(context.Background(), client, srv.URL, DefaultMetricNames())
	if err != nil {
		t.Fatal(err)
	}
	m := first.Metrics()
	approx(t, "p50 ms", m.P50Ms, 0.5*50/80)
	approx(t, "p99 ms", m.P99Ms, 2.5+2.5*(99.0-95)/5)
	approx(t, "error rate", m.ErrorRate, 0.05)
	approx(t, "cache hit rate", m.CacheHitRate, 0.98)

	// Traffic after the first scrape only: the difference of two scrapes.
	observe("decision", "200", 0.002, 10)
	hits.WithLabelValues("l1").Add(10)
	second, err := ScrapeURL(context.Background(), client, srv.URL, DefaultMetricNames())
	if err != nil {
		t.Fatal(err)
	}
	d := second.Sub(first).Metrics()
	approx(t, "window requests", d.Requests, 10)
	approx(t, "window p50 ms", d.P50Ms, 1+1.5*5/10)
	approx(t, "window error rate", d.ErrorRate, 0)
	approx(t, "window hit rate", d.CacheHitRate, 1)
}

// TestPromQLAgainstPrometheus runs a real Prometheus server (Debian's
// prometheus package) scraping a client_golang registry on loopback, and
// reads the SLO figures through PromQL the way `acgs slo --prometheus-url`
// does. Traffic is added in one burst between scrapes, so every rate() over
// the window sees whole increments and the ratios are exact.
func TestPromQLAgainstPrometheus(t *testing.T) {
	bin := testenv.RequireBinary(t, "prometheus", "prometheus")
	reg, dur, reqs := httpRegistry()
	hits := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "acgs_cache_hits_total", Help: "h"}, []string{"tier"})
	misses := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "acgs_cache_misses_total", Help: "m"}, []string{"tier"})
	reg.MustRegister(hits, misses)
	series := []struct{ handler, code string }{{"decision", "200"}, {"decision", "500"}, {"decision", "503"}, {"metrics", "200"}}
	for _, s := range series { // every series exists at 0 from the first scrape
		dur.WithLabelValues(s.handler, s.code)
		reqs.WithLabelValues(s.handler, s.code)
	}
	for _, tier := range []string{"l1", "l2"} {
		hits.WithLabelValues(tier)
		misses.WithLabelValues(tier)
	}
	target := newLoopbackServer(t, promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))

	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	conf := fmt.Sprintf("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: acgs\n    static_configs:\n      - targets: [%q]\n",
		strings.TrimPrefix(target.URL, "http://"))
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=warn")
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	c, err := api.NewClient(api.Config{Address: "http://" + addr})
	if err != nil {
		t.Fatal(err)
	}
	papi := promv1.NewAPI(c)
	// waitFor polls a query until cond holds for its scalar answer.
	waitFor := func(what, q string, cond func(float64) bool) {
		t.Helper()
		for {
			v, _, _, err := papi.Query(ctx, q, time.Now())
			if err == nil {
				if x := scalarOf(v); x != nil && cond(*x) {
					return
				}
			}
			select {
			case <-ctx.Done():
				t.Fatalf("prometheus: %s: %v\n%s", what, err, logs.String())
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	waitFor("two scrapes before the traffic", `count_over_time(up{job="acgs"}[1m])`, func(x float64) bool { return x >= 2 })

	for range 80 {
		dur.WithLabelValues("decision", "200").Observe(0.0003)
	}
	for range 10 {
		dur.WithLabelValues("decision", "200").Observe(0.004)
	}
	for range 10 {
		dur.WithLabelValues("decision", "500").Observe(0.004)
	}
	for range 50 { // shed, fast: left out of the percentiles
		dur.WithLabelValues("decision", "503").Observe(0.0001)
	}
	for range 50 {
		dur.WithLabelValues("metrics", "200").Observe(0.05) // excluded
	}
	// Request counters last: the wait below is on them, so a scrape that
	// sees them sees everything else too.
	hits.WithLabelValues("l1").Add(90)
	hits.WithLabelValues("l2").Add(5)
	misses.WithLabelValues("l1").Add(10)
	misses.WithLabelValues("l2").Add(5)
	reqs.WithLabelValues("decision", "200").Add(90)
	reqs.WithLabelValues("decision", "500").Add(10)
	reqs.WithLabelValues("decision", "503").Add(50)
	reqs.WithLabelValues("metrics", "200").Add(50)
	waitFor("the burst scraped", `sum(acgs_http_requests_total)`, func(x float64) bool { return x == 200 })

	src := &PromQLSource{API: papi, Window: time.Minute, Names: DefaultMetricNames()}
	m, err := src.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	near := func(name string, got *float64, want float64) {
		t.Helper()
		if got == nil || math.Abs(*got-want) > 0.01*want {
			t.Errorf("%s = %v, want %v (within 1%%)", name, got, want)
		}
	}
	// Buckets of the non-excluded handlers without the 503s: 80 of 100 at
	// <= 0.5 ms, the other 20 in (2.5, 5] ms.
	near("p50 ms", m.P50Ms, 0.5*50/80)
	near("p95 ms", m.P95Ms, 2.5+2.5*(95.0-80)/20)
	near("p99 ms", m.P99Ms, 2.5+2.5*(99.0-80)/20)
	near("error rate", m.ErrorRate, 0.1)          // 10 of the 100 not answered 503
	near("refused rate", m.RefusedRate, 50.0/150) // 50 of 100+50
	near("cache hit rate", m.CacheHitRate, 0.95)
	if m.Requests == nil || *m.Requests < 150 {
		t.Errorf("requests %v, want >= 150", m.Requests)
	}
	if rep := (ServiceSLO{P99Ms: 5, MaxErrorRate: 0.01, MaxRefusedRate: 0.01, MinCacheHitRate: 0.95, WarnFraction: 0.8}).Evaluate(m); rep.ExitCode() != 1 ||
		strings.Join(rep.Failed(), ",") != "error rate,refused rate (503)" {
		t.Errorf("SLO: exit %d, failed %v; want exit 1 on the error and refused rates", rep.ExitCode(), rep.Failed())
	}
}

func TestPromQLQueries(t *testing.T) {
	noExclusion := DefaultMetricNames()
	noExclusion.ExcludeHandlers = ""
	for _, tc := range []struct {
		name  string
		names MetricNames
		want  map[string]string
	}{
		{"default names", DefaultMetricNames(), map[string]string{
			"p99":            `histogram_quantile(0.99, sum by (le) (rate(acgs_http_request_duration_seconds_bucket{handler!~".*(metrics|health).*",code!~"503|499"}[5m])))`,
			"requests":       `sum(increase(acgs_http_requests_total{handler!~".*(metrics|health).*"}[5m]))`,
			"answered":       `sum(increase(acgs_http_requests_total{handler!~".*(metrics|health).*",code!~"503|499"}[5m]))`,
			"errors":         `sum(rate(acgs_http_requests_total{handler!~".*(metrics|health).*",code=~"5..",code!~"503|499"}[5m])) / sum(rate(acgs_http_requests_total{handler!~".*(metrics|health).*",code!~"503|499"}[5m]))`,
			"refused":        `sum(rate(acgs_http_requests_total{handler!~".*(metrics|health).*",code="503"}[5m])) / sum(rate(acgs_http_requests_total{handler!~".*(metrics|health).*"}[5m]))`,
			"cache_hit_rate": `sum(rate(acgs_cache_hits_total{tier=~"l1|l2"}[5m])) / (sum(rate(acgs_cache_hits_total{tier="l1"}[5m])) + sum(rate(acgs_cache_misses_total{tier="l1"}[5m])))`,
		}},
		{"no handler exclusion", noExclusion, map[string]string{
			"p50":      `histogram_quantile(0.5, sum by (le) (rate(acgs_http_request_duration_seconds_bucket{code!~"503|499"}[5m])))`,
			"requests": `sum(increase(acgs_http_requests_total{}[5m]))`,
			"errors":   `sum(rate(acgs_http_requests_total{code=~"5..",code!~"503|499"}[5m])) / sum(rate(acgs_http_requests_total{code!~"503|499"}[5m]))`,
			"refused":  `sum(rate(acgs_http_requests_total{code="503"}[5m])) / sum(rate(acgs_http_requests_total{}[5m]))`,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := (&PromQLSource{Window: 5 * time.Minute, Names: tc.names}).Queries()
			for name, want := range tc.want {
				if q[name] != want {
					t.Errorf("%s query:\n got %s\nwant %s", name, q[name], want)
				}
			}
		})
	}
}

// answers is n requests of one handler and status code, each observed in
// the duration histogram and counted in the request counter.
type answers struct {
	handler, code string
	seconds       float64
	n             int
}

// registryScrapes feeds each batch of answers to one client_golang registry
// (the service's own histogram buckets and counter) and parses the text
// exposition after each batch: one scrape per batch, cumulative.
func registryScrapes(t *testing.T, names MetricNames, batches ...[]answers) []*Scrape {
	t.Helper()
	reg, dur, reqs := httpRegistry()
	var out []*Scrape
	for _, batch := range batches {
		for _, a := range batch {
			for range a.n {
				dur.WithLabelValues(a.handler, a.code).Observe(a.seconds)
				reqs.WithLabelValues(a.handler, a.code).Inc()
			}
		}
		fams, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		for _, f := range fams {
			if _, err := expfmt.MetricFamilyToText(&b, f); err != nil {
				t.Fatal(err)
			}
		}
		s, err := ParseExposition(&b, names)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

// figure checks a figure that may have no data (want NaN).
func figure(t *testing.T, name string, got *float64, want float64) {
	t.Helper()
	if math.IsNaN(want) {
		if got != nil {
			t.Errorf("%s = %v, want no data", name, *got)
		}
		return
	}
	approx(t, name, got, want)
}

// TestScrapeRefusedAnswers: 503 answers (shed for overload, or no policy
// active) are neither latencies nor errors; they are the refused rate.
func TestScrapeRefusedAnswers(t *testing.T) {
	noData := math.NaN()
	noExclusion := DefaultMetricNames()
	noExclusion.ExcludeHandlers = ""
	for _, tc := range []struct {
		name    string
		file    string      // testdata exposition, or
		batches [][]answers // registry traffic; with two batches the window between them is judged
		names   MetricNames
		// want: requests, p50, p95, p99 (ms), error rate, refused rate; NaN: no data
		requests, p50, p95, p99, errRate, refused float64
	}{
		{
			// Summed over decision and batch without the 503 series: 500,
			// 800, 880, 995, 1100 at 0.5, 1, 2.5, 5, 10 ms. With the 1000
			// fast 503s in, p50 would read 0.35 ms and p99 9.0 ms.
			name: "200s, 500s and 503s (testdata/metrics-refused.txt)", file: "testdata/metrics-refused.txt",
			requests: 2100,                   // decision 200+500+503, batch 200; metrics and health_ready excluded
			p50:      0.5 + 0.5*50/300,       // rank 550 in (0.5, 1]
			p95:      5 + 5*(1045.0-995)/105, // rank 1045 in (5, 10]
			p99:      5 + 5*(1089.0-995)/105, // rank 1089 in (5, 10]
			errRate:  100.0 / 1100,           // 5xx other than 503 over requests not answered 503
			refused:  1000.0 / 2100,          // 503 over all
		},
		{
			name: "all 503: no latency, no error rate, all refused",
			batches: [][]answers{{
				{"decision", "503", 0.0001, 40},
				{"metrics", "200", 0.0003, 5},
			}},
			requests: 40, p50: noData, p95: noData, p99: noData, errRate: noData, refused: 1,
		},
		{
			name: "no 503 series: refused rate 0",
			batches: [][]answers{{
				{"decision", "200", 0.0003, 95},
				{"decision", "500", 0.004, 5},
			}},
			requests: 100, p50: 0.5 * 50 / 95, p95: 0.5 * 95 / 95, p99: 2.5 + 2.5*(99.0-95)/5, errRate: 0.05, refused: 0,
		},
		{
			name: "503s of excluded handlers are left out",
			batches: [][]answers{{
				{"decision", "200", 0.0003, 100},
				{"health_ready", "503", 0.0001, 30},
			}},
			requests: 100, p50: 0.25, p95: 0.475, p99: 0.495, errRate: 0, refused: 0,
		},
		{
			name: "without an exclusion they count",
			batches: [][]answers{{
				{"decision", "200", 0.0003, 100},
				{"health_ready", "503", 0.0001, 25},
			}},
			names:    noExclusion,
			requests: 125, p50: 0.25, p95: 0.475, p99: 0.495, errRate: 0, refused: 0.2,
		},
		{
			// A 499 is a request whose client went away before its answer
			// (after waiting for an evaluation slot, say): its duration is
			// the client's patience, not the service's answer.
			name: "499s are neither latencies, errors nor refusals",
			batches: [][]answers{{
				{"decision", "200", 0.0003, 98},
				{"decision", "499", 0.3, 2},
			}},
			requests: 100, p50: 0.25, p95: 0.475, p99: 0.495, errRate: 0, refused: 0,
		},
		{
			name: "all 499: no latency, no error rate, none refused",
			batches: [][]answers{{
				{"decision", "499", 0.3, 10},
			}},
			requests: 10, p50: noData, p95: noData, p99: noData, errRate: noData, refused: 0,
		},
		{
			name: "window between two scrapes",
			batches: [][]answers{
				{{"decision", "503", 0.0001, 100}, {"decision", "500", 0.004, 10}},
				{{"decision", "200", 0.0003, 10}, {"decision", "503", 0.0001, 10}},
			},
			requests: 20, p50: 0.25, p95: 0.475, p99: 0.495, errRate: 0, refused: 0.5,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			names := tc.names
			if names == (MetricNames{}) {
				names = DefaultMetricNames()
			}
			var s *Scrape
			if tc.file != "" {
				f, err := os.Open(tc.file)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				if s, err = ParseExposition(f, names); err != nil {
					t.Fatal(err)
				}
			} else {
				ss := registryScrapes(t, names, tc.batches...)
				s = ss[len(ss)-1]
				if len(ss) == 2 {
					s = s.Sub(ss[0])
				}
			}
			m := s.Metrics()
			figure(t, "requests", m.Requests, tc.requests)
			figure(t, "p50 ms", m.P50Ms, tc.p50)
			figure(t, "p95 ms", m.P95Ms, tc.p95)
			figure(t, "p99 ms", m.P99Ms, tc.p99)
			figure(t, "error rate", m.ErrorRate, tc.errRate)
			figure(t, "refused rate", m.RefusedRate, tc.refused)
		})
	}
}

// TestServiceSLORefusedRate: the refused-rate objective, and a run the
// service refused entirely failing on it.
func TestServiceSLORefusedRate(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	slo := ServiceSLO{MaxErrorRate: 0.01, MaxRefusedRate: 0.01, WarnFraction: 0.8}
	allRefused := registryScrapes(t, DefaultMetricNames(), []answers{{"decision", "503", 0.0001, 50}})[0].Metrics()
	noneRefused := registryScrapes(t, DefaultMetricNames(), []answers{{"decision", "200", 0.0003, 50}})[0].Metrics()
	for _, tc := range []struct {
		name   string
		slo    ServiceSLO
		m      ServiceMetrics
		status Status
		exit   int
	}{
		{"all 503 scraped", slo, allRefused, StatusViolation, 1},
		{"all 503 fails even with the error rate met", slo, ServiceMetrics{Requests: f(50), ErrorRate: f(0), RefusedRate: f(1)}, StatusViolation, 1},
		{"no 503 series scraped", slo, noneRefused, StatusOK, 0},
		{"in the warning band", slo, ServiceMetrics{Requests: f(1000), ErrorRate: f(0), RefusedRate: f(0.009)}, StatusWarning, 0},
		{"over the limit", slo, ServiceMetrics{Requests: f(1000), ErrorRate: f(0), RefusedRate: f(0.02)}, StatusViolation, 1},
		{"zero limit: none allowed", ServiceSLO{MaxErrorRate: 0.01}, ServiceMetrics{Requests: f(1000), ErrorRate: f(0), RefusedRate: f(0.001)}, StatusViolation, 1},
		{"no requests: no data", slo, ServiceMetrics{Requests: f(0)}, StatusNoData, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep := tc.slo.Evaluate(tc.m)
			var got *Check
			for i := range rep.Checks {
				if rep.Checks[i].Name == "refused rate (503)" {
					got = &rep.Checks[i]
				}
			}
			if got == nil {
				t.Fatalf("no refused-rate check in %+v", rep.Checks)
			}
			if got.Status != tc.status {
				t.Errorf("refused rate: %s, want %s", got.Status, tc.status)
			}
			if rep.ExitCode() != tc.exit {
				t.Errorf("exit %d, want %d (failed %v)", rep.ExitCode(), tc.exit, rep.Failed())
			}
		})
	}
}

// fakePromAPI answers instant queries from a table keyed by the figure the
// query is for (PromQLSource.Queries); a missing figure is an empty vector,
// as Prometheus answers a query over series that do not exist.
type fakePromAPI struct {
	promv1.API
	byQuery map[string]float64
}

func (f fakePromAPI) Query(_ context.Context, query string, _ time.Time, _ ...promv1.Option) (model.Value, promv1.Warnings, promv1.Infos, error) {
	if v, ok := f.byQuery[query]; ok {
		return model.Vector{{Value: model.SampleValue(v)}}, nil, nil, nil
	}
	return model.Vector{}, nil, nil, nil
}

func TestPromQLSourceRefused(t *testing.T) {
	noData := math.NaN()
	for _, tc := range []struct {
		name             string
		answers          map[string]float64 // by figure
		errRate, refused float64
	}{
		{"200s, 500s and 503s", map[string]float64{"requests": 200, "answered": 150, "p99": 0.004, "errors": 0.1, "refused": 0.25}, 0.1, 0.25},
		{"no 503 series: refused rate 0", map[string]float64{"requests": 100, "answered": 100, "p99": 0.004, "errors": 0.1}, 0.1, 0},
		{"no 5xx at all: both 0", map[string]float64{"requests": 100, "answered": 100, "p99": 0.004}, 0, 0},
		// errors divides by the requests not answered 503: none, so empty.
		{"all 503: error rate has no data", map[string]float64{"requests": 100, "refused": 1}, noData, 1},
		// 499s are neither answered nor refused: none answered, as above.
		{"all 499: error rate has no data", map[string]float64{"requests": 100}, noData, 0},
		{"503s and 499s only", map[string]float64{"requests": 100, "refused": 0.5}, noData, 0.5},
		{"no requests: no data", map[string]float64{"requests": 0}, noData, noData},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := &PromQLSource{Window: time.Minute, Names: DefaultMetricNames()}
			qs := src.Queries()
			api := fakePromAPI{byQuery: map[string]float64{}}
			for fig, v := range tc.answers {
				api.byQuery[qs[fig]] = v
			}
			src.API = api
			m, err := src.Metrics(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			figure(t, "error rate", m.ErrorRate, tc.errRate)
			figure(t, "refused rate", m.RefusedRate, tc.refused)
		})
	}
}
