package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"

	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// MetricNames names the service's Prometheus series. They are flags of
// `acgs slo` so the tool keeps working if a name changes, and so it can read
// another service's metrics.
type MetricNames struct {
	Duration    string // histogram, seconds, labels handler and code
	Requests    string // counter, labels handler and code
	CacheHits   string // counter, label tier
	CacheMisses string // counter, label tier
	// ExcludeHandlers is an RE2 pattern, anchored as PromQL anchors it, for
	// handler label values left out of every figure (latency, error rate,
	// refused rate, requests): scrapes and health probes are not user
	// traffic and would flatter the percentiles.
	ExcludeHandlers string
}

// RefusedCode is the status code of a request the service did not decide:
// shed for overload (503 overloaded, with Retry-After) or answered before any
// policy was active (503 unavailable). Such an answer is neither a decision
// nor an error of one: it is left out of the latency percentiles (most are
// answered at once and would pull p99 down exactly when the service is
// overloaded; those shed after waiting for a slot go too, which is why the
// refused rate is judged beside p99) and out of the error rate, and judged
// by the refused rate instead. A 503 of an admin endpoint counts as refused
// too: --exclude-handlers leaves such handlers out.
const RefusedCode = "503"

// AbandonedCode is the status code the service records for a request whose
// client went away before it was answered (nginx's 499; the client never
// sees it). It is neither an answer nor a refusal: left out of the latency
// percentiles (its duration is how long the client waited, not how long
// the service took to answer), of the error rate and of the refused rate's
// numerator, and counted among the requests.
const AbandonedCode = "499"

// unanswered reports whether a code is one of a request the service did not
// answer with a decision, an error or a redirect: refused or abandoned.
func unanswered(code string) bool { return code == RefusedCode || code == AbandonedCode }

// DefaultMetricNames are the names the ACGS service exports.
func DefaultMetricNames() MetricNames {
	return MetricNames{
		Duration:        "acgs_http_request_duration_seconds",
		Requests:        "acgs_http_requests_total",
		CacheHits:       "acgs_cache_hits_total",
		CacheMisses:     "acgs_cache_misses_total",
		ExcludeHandlers: ".*(metrics|health).*",
	}
}

// ServiceMetrics are the figures the slo command judges. A nil field had no
// data (no requests, no cache lookups, or no such series).
type ServiceMetrics struct {
	Requests *float64 `json:"requests"` // all of them, 503 included
	// Percentiles of the requests answered with another code than 503 (and
	// not abandoned by their client, 499).
	P50Ms *float64 `json:"p50_ms"`
	P95Ms *float64 `json:"p95_ms"`
	P99Ms *float64 `json:"p99_ms"`
	// ErrorRate is 5xx other than 503 over the requests neither answered
	// 503 nor abandoned (499); no data when there were none.
	ErrorRate *float64 `json:"error_rate"`
	// RefusedRate is 503 (shed for overload, or no policy active) over all
	// requests; 0 when there were requests but no 503 series.
	RefusedRate  *float64 `json:"refused_rate"`
	CacheHitRate *float64 `json:"cache_hit_rate"`
}

// Scrape is the part of one /metrics exposition the SLOs need, summed over
// all label sets that are not excluded.
type Scrape struct {
	buckets   map[float64]float64 // upper bound -> cumulative count, 503 and 499 left out
	requests  float64             // all, 503 and 499 included
	refused   float64             // 503
	abandoned float64             // 499
	errors    float64             // 5xx other than 503
	l1Hits    float64
	l2Hits    float64
	l1Misses  float64
	hasHist   bool
	hasReqs   bool
	hasCache  bool
	scrapedAt time.Time
	// series is every value summed above, by series (bucket bounds
	// included): a restart shows as one of them going down, which a sum
	// can hide when another grew (200s fewer, 503s more).
	series map[string]float64
}

// add notes the value of one series of family fam, extra naming a bucket.
func (s *Scrape) add(fam string, m *dto.Metric, extra string, v float64) {
	var b strings.Builder
	b.WriteString(fam)
	ls := slices.Clone(m.GetLabel())
	slices.SortFunc(ls, func(a, b *dto.LabelPair) int { return strings.Compare(a.GetName(), b.GetName()) })
	for _, l := range ls {
		b.WriteString("\xff" + l.GetName() + "\xfe" + l.GetValue())
	}
	b.WriteString("\xff" + extra)
	s.series[b.String()] += v
}

// ParseExposition reads Prometheus text exposition.
func ParseExposition(r io.Reader, names MetricNames) (*Scrape, error) {
	excl, err := regexp.Compile("^(?:" + names.ExcludeHandlers + ")$")
	if err != nil {
		return nil, fmt.Errorf("exclude-handlers pattern: %w", err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("parse metrics: %w", err)
	}
	s := &Scrape{buckets: map[float64]float64{}, scrapedAt: time.Now(), series: map[string]float64{}}
	excluded := func(m *dto.Metric) bool {
		return names.ExcludeHandlers != "" && excl.MatchString(label(m, "handler"))
	}
	if f := fams[names.Duration]; f != nil {
		if f.GetType() != dto.MetricType_HISTOGRAM {
			return nil, fmt.Errorf("%s is a %s, not a histogram", names.Duration, f.GetType())
		}
		for _, m := range f.GetMetric() {
			if excluded(m) || unanswered(label(m, "code")) {
				continue
			}
			s.hasHist = true
			h := m.GetHistogram()
			hasInf := false
			for _, b := range h.GetBucket() {
				s.buckets[b.GetUpperBound()] += float64(b.GetCumulativeCount())
				s.add(names.Duration, m, fmt.Sprint(b.GetUpperBound()), float64(b.GetCumulativeCount()))
				hasInf = hasInf || math.IsInf(b.GetUpperBound(), 1)
			}
			if !hasInf { // the +Inf bucket is implied by the count
				s.buckets[math.Inf(1)] += float64(h.GetSampleCount())
				s.add(names.Duration, m, "+Inf", float64(h.GetSampleCount()))
			}
		}
	}
	if f := fams[names.Requests]; f != nil {
		for _, m := range f.GetMetric() {
			if excluded(m) {
				continue
			}
			s.hasReqs = true
			v := counterValue(m)
			s.add(names.Requests, m, "", v)
			s.requests += v
			switch c := label(m, "code"); {
			case c == RefusedCode:
				s.refused += v
			case c == AbandonedCode:
				s.abandoned += v
			case len(c) == 3 && c[0] == '5':
				s.errors += v
			}
		}
	}
	for _, fam := range []struct {
		name string
		hit  bool
	}{{names.CacheHits, true}, {names.CacheMisses, false}} {
		f := fams[fam.name]
		if f == nil {
			continue
		}
		for _, m := range f.GetMetric() {
			s.hasCache = true
			v := counterValue(m)
			s.add(fam.name, m, "", v)
			switch tier := strings.ToLower(label(m, "tier")); {
			case fam.hit && tier == "l1":
				s.l1Hits += v
			case fam.hit && tier == "l2":
				s.l2Hits += v
			case !fam.hit && tier == "l1":
				s.l1Misses += v
			}
		}
	}
	return s, nil
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func counterValue(m *dto.Metric) float64 {
	switch {
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue()
	case m.GetUntyped() != nil:
		return m.GetUntyped().GetValue()
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue()
	}
	return 0
}

// ScrapeURL fetches and parses a /metrics endpoint.
func ScrapeURL(ctx context.Context, client *http.Client, url string, names MetricNames) (*Scrape, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	// Ask for the classic text format: it is what the parser reads.
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: HTTP %d", url, resp.StatusCode)
	}
	return ParseExposition(resp.Body, names)
}

// Sub returns the increase from prev to s: the traffic of the window between
// two scrapes, rather than everything since the process started. Any series
// that went down or went away (a restart) makes the later scrape the whole
// window, as Prometheus's rate() treats resets: a difference across a
// restart mixes two processes' counts into nonsense (more 503s than
// requests, negative buckets).
func (s *Scrape) Sub(prev *Scrape) *Scrape {
	if prev == nil {
		return s
	}
	for k, v := range prev.series { // every sum below is made of these series
		if s.series[k] < v {
			return s
		}
	}
	d := *s
	d.buckets = map[float64]float64{}
	for le, v := range s.buckets {
		d.buckets[le] = v - prev.buckets[le]
	}
	d.requests -= prev.requests
	d.refused -= prev.refused
	d.abandoned -= prev.abandoned
	d.errors -= prev.errors
	d.l1Hits -= prev.l1Hits
	d.l2Hits -= prev.l2Hits
	d.l1Misses -= prev.l1Misses
	return &d
}

// Metrics computes the SLO figures from the scrape.
func (s *Scrape) Metrics() ServiceMetrics {
	var m ServiceMetrics
	if s.hasHist {
		bs := make([]Bucket, 0, len(s.buckets))
		for le, c := range s.buckets {
			bs = append(bs, Bucket{UpperBound: le, Count: c})
		}
		for _, q := range []struct {
			q   float64
			dst **float64
		}{{0.5, &m.P50Ms}, {0.95, &m.P95Ms}, {0.99, &m.P99Ms}} {
			if v := BucketQuantile(q.q, bs); !math.IsNaN(v) {
				ms := v * 1000
				*q.dst = &ms
			}
		}
	}
	if s.hasReqs {
		n := s.requests
		m.Requests = &n
		if n > 0 {
			r := s.refused / n
			m.RefusedRate = &r
		}
		if answered := n - s.refused - s.abandoned; answered > 0 {
			e := s.errors / answered
			m.ErrorRate = &e
		}
	}
	if s.hasCache {
		if lookups := s.l1Hits + s.l1Misses; lookups > 0 {
			h := (s.l1Hits + s.l2Hits) / lookups
			m.CacheHitRate = &h
		}
	}
	return m
}

// Bucket is one cumulative histogram bucket.
type Bucket struct {
	UpperBound float64
	Count      float64
}

// BucketQuantile estimates quantile q from cumulative buckets exactly as
// PromQL's histogram_quantile does (linear interpolation inside the bucket
// holding the rank; the +Inf bucket answers with the highest finite bound),
// so the scrape path and the PromQL path agree. NaN means no observations.
func BucketQuantile(q float64, buckets []Bucket) float64 {
	if q < 0 {
		return math.Inf(-1)
	}
	if q > 1 {
		return math.Inf(1)
	}
	bs := slices.Clone(buckets)
	slices.SortFunc(bs, func(a, b Bucket) int {
		switch {
		case a.UpperBound < b.UpperBound:
			return -1
		case a.UpperBound > b.UpperBound:
			return 1
		}
		return 0
	})
	if len(bs) < 2 || !math.IsInf(bs[len(bs)-1].UpperBound, 1) {
		return math.NaN()
	}
	// Cumulative counts must not decrease; scrapes taken mid-update can
	// violate that, and PromQL fixes it the same way.
	for i := 1; i < len(bs); i++ {
		if bs[i].Count < bs[i-1].Count {
			bs[i].Count = bs[i-1].Count
		}
	}
	total := bs[len(bs)-1].Count
	if total == 0 {
		return math.NaN()
	}
	rank := q * total
	i, _ := slices.BinarySearchFunc(bs, rank, func(b Bucket, r float64) int {
		switch {
		case b.Count < r:
			return -1
		case b.Count > r:
			return 1
		}
		return 0
	})
	// BinarySearch finds the first bucket with Count >= rank.
	if i == len(bs)-1 {
		return bs[len(bs)-2].UpperBound
	}
	if i == 0 && bs[0].UpperBound <= 0 {
		return bs[0].UpperBound
	}
	start, prevCount := 0.0, 0.0
	if i > 0 {
		start, prevCount = bs[i-1].UpperBound, bs[i-1].Count
	}
	end, count := bs[i].UpperBound, bs[i].Count-prevCount
	if count == 0 {
		return end
	}
	return start + (end-start)*((rank-prevCount)/count)
}

// PromQLSource reads the same figures from a Prometheus server, over a
// window, with PromQL.
type PromQLSource struct {
	API    promv1.API
	Window time.Duration
	Names  MetricNames
	At     time.Time // zero: now
}

// Queries returns the PromQL expressions used, keyed by figure.
func (p *PromQLSource) Queries() map[string]string {
	w := model.Duration(p.Window).String()
	n := p.Names
	excl := ""
	if n.ExcludeHandlers != "" {
		excl = fmt.Sprintf(`handler!~%q`, n.ExcludeHandlers)
	}
	// sel joins label matchers, the handler exclusion first.
	sel := func(matchers ...string) string {
		return strings.Join(slices.DeleteFunc(append([]string{excl}, matchers...), func(m string) bool { return m == "" }), ",")
	}
	answered := fmt.Sprintf(`code!~%q`, RefusedCode+"|"+AbandonedCode)
	q := func(quantile float64) string {
		return fmt.Sprintf(`histogram_quantile(%g, sum by (le) (rate(%s_bucket{%s}[%s])))`, quantile, n.Duration, sel(answered), w)
	}
	return map[string]string{
		"p50":      q(0.5),
		"p95":      q(0.95),
		"p99":      q(0.99),
		"requests": fmt.Sprintf(`sum(increase(%s{%s}[%s]))`, n.Requests, sel(), w),
		// answered: the requests the error rate divides by (neither 503
		// nor 499), asked apart so an empty errors answer can be told
		// from "none answered" (every request a 499, or a 503).
		"answered": fmt.Sprintf(`sum(increase(%s{%s}[%s]))`, n.Requests, sel(answered), w),
		"errors": fmt.Sprintf(`sum(rate(%s{%s}[%s])) / sum(rate(%s{%s}[%s]))`,
			n.Requests, sel(`code=~"5.."`, answered), w, n.Requests, sel(answered), w),
		"refused": fmt.Sprintf(`sum(rate(%s{%s}[%s])) / sum(rate(%s{%s}[%s]))`,
			n.Requests, sel(fmt.Sprintf(`code=%q`, RefusedCode)), w, n.Requests, sel(), w),
		"cache_hit_rate": fmt.Sprintf(`sum(rate(%s{tier=~"l1|l2"}[%s])) / (sum(rate(%s{tier="l1"}[%s])) + sum(rate(%s{tier="l1"}[%s])))`,
			n.CacheHits, w, n.CacheHits, w, n.CacheMisses, w),
	}
}

// Metrics runs the queries. A query with an empty or NaN answer leaves its
// figure nil (no data); when there were requests, the refused rate is 0, not
// "no data", if there is no 503 series at all, and so is the error rate if
// there is no 5xx series other than 503 (unless no request was answered,
// every one a 503 or a 499: then the error rate has no data, as the scrape
// path says).
func (p *PromQLSource) Metrics(ctx context.Context) (ServiceMetrics, error) {
	if p.Window <= 0 {
		return ServiceMetrics{}, errors.New("promql: window must be > 0")
	}
	at := p.At
	if at.IsZero() {
		at = time.Now()
	}
	qs := p.Queries()
	get := func(name string) (*float64, error) {
		v, _, _, err := p.API.Query(ctx, qs[name], at)
		if err != nil {
			return nil, fmt.Errorf("promql %s: %w", qs[name], err)
		}
		return scalarOf(v), nil
	}
	var m ServiceMetrics
	var err error
	ms := func(v *float64) *float64 {
		if v == nil {
			return nil
		}
		x := *v * 1000
		return &x
	}
	var answered *float64
	for _, f := range []struct {
		name string
		dst  **float64
		conv func(*float64) *float64
	}{
		{"requests", &m.Requests, nil},
		{"answered", &answered, nil},
		{"p50", &m.P50Ms, ms},
		{"p95", &m.P95Ms, ms},
		{"p99", &m.P99Ms, ms},
		{"errors", &m.ErrorRate, nil},
		{"refused", &m.RefusedRate, nil},
		{"cache_hit_rate", &m.CacheHitRate, nil},
	} {
		var v *float64
		if v, err = get(f.name); err != nil {
			return m, err
		}
		if f.conv != nil {
			v = f.conv(v)
		}
		*f.dst = v
	}
	if m.Requests != nil && *m.Requests > 0 {
		if m.RefusedRate == nil {
			zero := 0.0
			m.RefusedRate = &zero
		}
		if m.ErrorRate == nil && answered != nil && *answered > 0 {
			zero := 0.0
			m.ErrorRate = &zero
		}
	}
	return m, nil
}

func scalarOf(v model.Value) *float64 {
	var f float64
	switch t := v.(type) {
	case model.Vector:
		if len(t) == 0 {
			return nil
		}
		f = float64(t[0].Value)
	case *model.Scalar:
		f = float64(t.Value)
	default:
		return nil
	}
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return nil
	}
	return &f
}

// ServiceSLO is the set of objectives `acgs slo` gates on; a zero limit is
// not checked (except the error and refused rates, whose zero limit means
// "none").
type ServiceSLO struct {
	P50Ms, P95Ms, P99Ms float64
	MaxErrorRate        float64
	// MaxRefusedRate bounds the share of 503 answers: without it a run the
	// service refused entirely would have no error to count.
	MaxRefusedRate  float64
	MinCacheHitRate float64
	WarnFraction    float64 // in [0, 1]; 0: 0.8
}

// Validate refuses a latency limit that is NaN, infinite or negative, and a
// rate, share or WarnFraction outside [0, 1], with a *LimitError naming the
// field.
func (s ServiceSLO) Validate() error {
	return validateLimits([]sloLimit{
		{"P50Ms", s.P50Ms, false}, {"P95Ms", s.P95Ms, false}, {"P99Ms", s.P99Ms, false},
		{"MaxErrorRate", s.MaxErrorRate, true}, {"MaxRefusedRate", s.MaxRefusedRate, true},
		{"MinCacheHitRate", s.MinCacheHitRate, true}, {"WarnFraction", s.WarnFraction, true},
	})
}

// Evaluate judges service metrics. Objectives that Validate refuses judge
// nothing: the report fails, saying why (a NaN limit compared false with
// every measurement and passed, a NaN latency limit was not even checked).
func (s ServiceSLO) Evaluate(m ServiceMetrics) *Report {
	if err := s.Validate(); err != nil {
		return &Report{Invalid: err.Error()}
	}
	wf := s.WarnFraction
	if wf == 0 {
		wf = 0.8
	}
	rep := &Report{}
	for _, l := range []struct {
		name  string
		limit float64
		v     *float64
	}{{"p50 latency", s.P50Ms, m.P50Ms}, {"p95 latency", s.P95Ms, m.P95Ms}, {"p99 latency", s.P99Ms, m.P99Ms}} {
		if l.limit > 0 {
			rep.Add(MaxObjective(l.name, "ms", l.limit, wf), l.v)
		}
	}
	rep.Add(MaxObjective("error rate", "ratio", s.MaxErrorRate, wf), m.ErrorRate)
	rep.Add(MaxObjective("refused rate (503)", "ratio", s.MaxRefusedRate, wf), m.RefusedRate)
	if s.MinCacheHitRate > 0 {
		rep.Add(MinRatioObjective("cache hit rate", s.MinCacheHitRate, wf), m.CacheHitRate)
	}
	return rep
}
