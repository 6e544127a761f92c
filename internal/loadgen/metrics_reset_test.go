package loadgen

import (
	"fmt"
	"math"
	"strings"
	"testing"
)

// exposition writes the service's series: requests by code of the decision
// handler (and of batch when batch > 0), the latency histogram of its 200s
// (cumulative counts at 1 ms, 10 ms and +Inf) and L1 cache lookups.
func exposition(codes map[string]float64, batch float64, le1ms, le10ms, inf float64, hits, misses float64) string {
	var b strings.Builder
	b.WriteString("# TYPE acgs_http_requests_total counter\n")
	for code, n := range codes {
		fmt.Fprintf(&b, "acgs_http_requests_total{code=%q,handler=\"decision\"} %v\n", code, n)
	}
	if batch > 0 {
		fmt.Fprintf(&b, "acgs_http_requests_total{code=\"200\",handler=\"batch\"} %v\n", batch)
	}
	b.WriteString("# TYPE acgs_http_request_duration_seconds histogram\n")
	for _, bk := range []struct {
		le string
		n  float64
	}{{"0.001", le1ms}, {"0.01", le10ms}, {"+Inf", inf}} {
		fmt.Fprintf(&b, "acgs_http_request_duration_seconds_bucket{code=\"200\",handler=\"decision\",le=%q} %v\n", bk.le, bk.n)
	}
	fmt.Fprintf(&b, "acgs_http_request_duration_seconds_sum{code=\"200\",handler=\"decision\"} 1\n")
	fmt.Fprintf(&b, "acgs_http_request_duration_seconds_count{code=\"200\",handler=\"decision\"} %v\n", inf)
	b.WriteString("# TYPE acgs_cache_hits_total counter\n")
	fmt.Fprintf(&b, "acgs_cache_hits_total{tier=\"l1\"} %v\n", hits)
	b.WriteString("# TYPE acgs_cache_misses_total counter\n")
	fmt.Fprintf(&b, "acgs_cache_misses_total{tier=\"l1\"} %v\n", misses)
	return b.String()
}

// TestScrapeSubResets: a window across a restart is judged on the later
// scrape alone whenever any series went down or went away, even when the
// sums of requests and of the +Inf bucket still grew; a window without one
// is the difference.
func TestScrapeSubResets(t *testing.T) {
	noData := math.NaN()
	for _, tc := range []struct {
		name        string
		first, then string
		// want: requests, refused rate, error rate, p50 (ms), cache hit rate
		requests, refused, errRate, p50, hitRate float64
	}{
		{
			name:  "no restart: the difference",
			first: exposition(map[string]float64{"200": 1000, "503": 10}, 0, 500, 900, 1000, 100, 100),
			then:  exposition(map[string]float64{"200": 1100, "503": 30}, 0, 550, 1000, 1100, 250, 150),
			// window: 100 200s (50 under 1 ms, 50 more under 10 ms), 20 503s
			requests: 120, refused: 20.0 / 120, errRate: 0, p50: 1, hitRate: 150.0 / 200,
		},
		{
			// the reviewer's numbers: the difference read 100 requests,
			// a refused rate of 2.0 and no error rate; the histogram does
			// not give the restart away (it had no observations before)
			name:     "200s down, 503s up, total up",
			first:    exposition(map[string]float64{"200": 1000, "503": 0}, 0, 0, 0, 0, 100, 100),
			then:     exposition(map[string]float64{"200": 900, "503": 200}, 0, 450, 800, 900, 300, 100),
			requests: 1100, refused: 200.0 / 1100, errRate: 0, p50: 1, hitRate: 300.0 / 400,
		},
		{
			// the difference read -400 under 1 ms
			name:     "a bucket down, +Inf and requests up",
			first:    exposition(map[string]float64{"200": 1000}, 0, 500, 900, 1000, 100, 100),
			then:     exposition(map[string]float64{"200": 1100}, 0, 100, 1000, 1100, 200, 200),
			requests: 1100, refused: 0, errRate: 0, p50: 1 + 9*(550.0-100)/900, hitRate: 0.5,
		},
		{
			name:     "cache misses down",
			first:    exposition(map[string]float64{"200": 1000}, 0, 500, 900, 1000, 100, 100),
			then:     exposition(map[string]float64{"200": 1100}, 0, 550, 1000, 1100, 300, 50),
			requests: 1100, refused: 0, errRate: 0, p50: 1, hitRate: 300.0 / 350,
		},
		{
			name:     "a series gone",
			first:    exposition(map[string]float64{"200": 1000, "500": 10}, 50, 500, 900, 1000, 100, 100),
			then:     exposition(map[string]float64{"200": 1100}, 0, 550, 1000, 1100, 200, 200),
			requests: 1100, refused: 0, errRate: 0, p50: 1, hitRate: 0.5,
		},
		{
			name:     "every request of the window refused",
			first:    exposition(map[string]float64{"200": 1000, "503": 5}, 0, 500, 900, 1000, 100, 100),
			then:     exposition(map[string]float64{"200": 1000, "503": 25}, 0, 500, 900, 1000, 100, 100),
			requests: 20, refused: 1, errRate: noData, p50: noData, hitRate: noData,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			first, err := ParseExposition(strings.NewReader(tc.first), DefaultMetricNames())
			if err != nil {
				t.Fatal(err)
			}
			then, err := ParseExposition(strings.NewReader(tc.then), DefaultMetricNames())
			if err != nil {
				t.Fatal(err)
			}
			m := then.Sub(first).Metrics()
			figure(t, "requests", m.Requests, tc.requests)
			figure(t, "refused rate", m.RefusedRate, tc.refused)
			figure(t, "error rate", m.ErrorRate, tc.errRate)
			figure(t, "p50 ms", m.P50Ms, tc.p50)
			figure(t, "cache hit rate", m.CacheHitRate, tc.hitRate)
		})
	}
}
