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

// A real client_golang registry served on loopback, scraped the way `acgs
// slo --metrics-url` scrapes the service.
func TestScrapeLiveRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	dur := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "acgs_http_request_duration_seconds", Help: "h",
		Buckets: []float64{0.0005, 0.001, 0.0025, 0.005, 0.01},
	}, []string{"handler", "code"})
	reqs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "acgs_http_requests_total", Help: "r"}, []string{"handler", "code"})
	hits := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "acgs_cache_hits_total", Help: "h"}, []string{"tier"})
	misses := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "acgs_cache_misses_total", Help: "m"}, []string{"tier"})
	reg.MustRegister(dur, reqs, hits, misses)
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
	reg := prometheus.NewRegistry()
	dur := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "acgs_http_request_duration_seconds", Help: "h",
		Buckets: []float64{0.0005, 0.001, 0.0025, 0.005, 0.01},
	}, []string{"handler", "code"})
	reqs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "acgs_http_requests_total", Help: "r"}, []string{"handler", "code"})
	hits := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "acgs_cache_hits_total", Help: "h"}, []string{"tier"})
	misses := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "acgs_cache_misses_total", Help: "m"}, []string{"tier"})
	reg.MustRegister(dur, reqs, hits, misses)
	series := []struct{ handler, code string }{{"decision", "200"}, {"decision", "500"}, {"metrics", "200"}}
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
	reqs.WithLabelValues("metrics", "200").Add(50)
	waitFor("the burst scraped", `sum(acgs_http_requests_total)`, func(x float64) bool { return x == 150 })

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
	// Buckets of the non-excluded handlers: 80 of 100 at <= 0.5 ms, the
	// other 20 in (2.5, 5] ms.
	near("p50 ms", m.P50Ms, 0.5*50/80)
	near("p95 ms", m.P95Ms, 2.5+2.5*(95.0-80)/20)
	near("p99 ms", m.P99Ms, 2.5+2.5*(99.0-80)/20)
	near("error rate", m.ErrorRate, 0.1)
	near("cache hit rate", m.CacheHitRate, 0.95)
	if m.Requests == nil || *m.Requests < 100 {
		t.Errorf("requests %v, want >= 100", m.Requests)
	}
	if rep := (ServiceSLO{P99Ms: 5, MaxErrorRate: 0.01, MinCacheHitRate: 0.95, WarnFraction: 0.8}).Evaluate(m); rep.ExitCode() != 1 || rep.Failed()[0] != "error rate" {
		t.Errorf("SLO: exit %d, failed %v; want exit 1 on the error rate", rep.ExitCode(), rep.Failed())
	}
}

func TestPromQLQueries(t *testing.T) {
	q := (&PromQLSource{Window: 5 * time.Minute, Names: DefaultMetricNames()}).Queries()
	for name, want := range map[string]string{
		"p99":            `histogram_quantile(0.99, sum by (le) (rate(acgs_http_request_duration_seconds_bucket{handler!~".*(metrics|health).*"}[5m])))`,
		"errors":         `sum(rate(acgs_http_requests_total{handler!~".*(metrics|health).*",code=~"5.."}[5m])) / sum(rate(acgs_http_requests_total{handler!~".*(metrics|health).*"}[5m]))`,
		"cache_hit_rate": `sum(rate(acgs_cache_hits_total{tier=~"l1|l2"}[5m])) / (sum(rate(acgs_cache_hits_total{tier="l1"}[5m])) + sum(rate(acgs_cache_misses_total{tier="l1"}[5m])))`,
	} {
		if q[name] != want {
			t.Errorf("%s query:\n got %s\nwant %s", name, q[name], want)
		}
	}
}
