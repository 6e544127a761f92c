package loadgen

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
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

// fakePrometheus answers the Prometheus HTTP API's instant queries from a
// table, recording the queries it was asked.
type fakePrometheus struct {
	mu      sync.Mutex
	answers map[string]string // substring of the query -> value ("" = empty vector)
	asked   []string
}

func (f *fakePrometheus) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/api/v1/query" {
		http.NotFound(w, r)
		return
	}
	q := r.FormValue("query")
	f.mu.Lock()
	f.asked = append(f.asked, q)
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	for sub, v := range f.answers {
		if strings.Contains(q, sub) {
			if v == "" {
				fmt.Fprint(w, `{"status":"success","data":{"resultType":"vector","result":[]}}`)
				return
			}
			fmt.Fprintf(w, `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1764201600,%q]}]}}`, v)
			return
		}
	}
	w.WriteHeader(http.StatusBadRequest)
	fmt.Fprintf(w, `{"status":"error","errorType":"bad_data","error":"unexpected query %s"}`, q)
}

func TestPromQLSource(t *testing.T) {
	fake := &fakePrometheus{answers: map[string]string{
		"histogram_quantile(0.5,":  "0.0004",
		"histogram_quantile(0.95,": "0.0021",
		"histogram_quantile(0.99,": "0.0044",
		"sum(increase(":            "12000",
		`code=~"5.."`:              "",
		"acgs_cache_hits_total":    "0.97",
	}}
	srv := newLoopbackServer(t, fake)
	c, err := api.NewClient(api.Config{Address: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	src := &PromQLSource{API: promv1.NewAPI(c), Window: 5 * time.Minute, Names: DefaultMetricNames()}
	m, err := src.Metrics(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	approx(t, "p50 ms", m.P50Ms, 0.4)
	approx(t, "p95 ms", m.P95Ms, 2.1)
	approx(t, "p99 ms", m.P99Ms, 4.4)
	approx(t, "requests", m.Requests, 12000)
	approx(t, "error rate (no 5xx series)", m.ErrorRate, 0)
	approx(t, "cache hit rate", m.CacheHitRate, 0.97)
	want := `histogram_quantile(0.99, sum by (le) (rate(acgs_http_request_duration_seconds_bucket{handler!~".*(metrics|health).*"}[5m])))`
	found := false
	for _, q := range fake.asked {
		found = found || q == want
	}
	if !found {
		t.Errorf("p99 query not asked as %s; asked %q", want, fake.asked)
	}
	if rep := (ServiceSLO{P99Ms: 5, MaxErrorRate: 0.01, MinCacheHitRate: 0.95}).Evaluate(m); rep.ExitCode() != 0 {
		t.Errorf("exit %d, want 0: %+v", rep.ExitCode(), rep.Checks)
	}
}
