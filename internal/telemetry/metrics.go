package telemetry

import (
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// BuildInfo is what acgs_build_info reports, so a dashboard can tell which
// binary (and which embedded OPA) produced a series.
type BuildInfo struct {
	Version    string
	Commit     string
	GoVersion  string
	OPAVersion string
}

// Label values the service itself produces. They are listed here so that the
// series exist (at zero) from the first scrape: rate() and increase() cannot
// see the first event of a series that appears with it, which would hide the
// first policy-reload failure from the alert that watches for it.
var (
	decisionSources = []string{"l1", "l2", "plan_constant", "vm", "full"}
	partialOutcomes = []string{"constant", "fallback"}
	reloadResults   = []string{"success", "failure", "download_failure"}
	evalFailures    = []string{"timeout", "error"}
	// ShedReasons are the reason label values of acgs_decisions_shed_total.
	ShedReasons = []string{"queue_full", "queue_timeout", "deadline", "late"}
)

// maxPathLabels bounds the number of distinct values of the "path" label of
// acgs_decisions_total. The OPA dialect lets a client ask for any data path,
// and an unbounded label would let clients grow the registry (and every
// Prometheus that scrapes it) without limit; past the bound, paths are
// reported as otherPath.
const (
	maxPathLabels = 64
	otherPath     = "other"
)

// Bucket layouts. HTTP latency spans 25µs (a loopback L1 hit) to 1s (far past
// any deadline), with the 0.5/0.75/1/5 ms edges the SLOs and alerts name so
// that histogram_quantile is exact at the targets. Decisions start lower
// because an L1 hit without HTTP costs about a microsecond.
var (
	httpDurationBuckets = []float64{
		0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.00075, 0.001,
		0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
	}
	decisionDurationBuckets = []float64{
		0.000001, 0.0000025, 0.000005, 0.00001, 0.000025, 0.00005, 0.0001,
		0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
	}
	batchItemBuckets      = []float64{1, 2, 5, 10, 25, 50, 100, 250, 500, 1000}
	writeBatchBuckets     = []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024}
	statusCodeLabelValues = func() (s [600]string) {
		for i := range s {
			s[i] = strconv.Itoa(i)
		}
		return s
	}()
)

// Metrics owns the service's Prometheus registry. It uses its own registry
// rather than the global default one so that tests (and several servers in
// one process) do not collide, and so that /metrics shows exactly what is
// registered here. All methods are safe for concurrent use; the Observe*
// methods are on the request path and do no allocation beyond what
// client_golang's label lookup does.
type Metrics struct {
	reg *prometheus.Registry

	httpRequests     *prometheus.CounterVec
	httpDuration     *prometheus.HistogramVec
	decisions        *prometheus.CounterVec
	decisionDuration *prometheus.HistogramVec
	partialEval      *prometheus.CounterVec
	batchItems       prometheus.Histogram
	writeBatch       prometheus.Histogram
	hashMismatches   prometheus.Counter
	policyReloads    *prometheus.CounterVec
	policyInfo       *prometheus.GaugeVec
	evalFailures     *prometheus.CounterVec
	evalTimeout      prometheus.Counter
	evalError        prometheus.Counter
	shed             *prometheus.CounterVec
	canceled         prometheus.Counter
	rawHit, rawMiss  prometheus.Counter

	paths sync.Map // path label value -> struct{}; see maxPathLabels
	pathN sync.Mutex
	nPath int

	policyMu  sync.Mutex // orders SetActivePolicy calls
	policyCur []string   // label values of the series acgs_policy_info shows

	cacheOnce sync.Once
	cache     *cacheCollector
	logOnce   sync.Once
	declog    *decisionLogCollector

	admissionOnce sync.Once
	admission     *admissionCollector

	keys  *cacheKeys
	evals *evaluators
}

// NewMetrics builds the registry with the Go runtime and process collectors,
// acgs_build_info and every acgs_ collector of the request path.
func NewMetrics(info BuildInfo) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "acgs_build_info",
		Help: "Build of the running acgs binary; the value is always 1.",
		ConstLabels: prometheus.Labels{
			"version":     orUnknown(info.Version),
			"commit":      orUnknown(info.Commit),
			"goversion":   orUnknown(info.GoVersion),
			"opa_version": orUnknown(info.OPAVersion),
		},
	})
	buildInfo.Set(1)

	m.httpRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "acgs_http_requests_total",
		Help: "HTTP requests answered, by route handler and status code.",
	}, []string{"handler", "code"})
	m.httpDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "acgs_http_request_duration_seconds",
		Help:    "Server-side time to answer an HTTP request, by route handler and status code.",
		Buckets: httpDurationBuckets,
	}, []string{"handler", "code"})
	m.decisions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "acgs_decisions_total",
		Help: "Policy decisions, by policy path and outcome (allow, deny, undefined, defined: another value, error: the decision failed; " +
			"overloaded: not made, shed (acgs_decisions_shed_total), answered 503 or, by acgs gateway, its tool call refused to be retried; " +
			"canceled: not made, its client went away while it waited). Paths past the first 64 are reported as \"other\".",
	}, []string{"path", "outcome"})
	m.decisionDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "acgs_decision_duration_seconds",
		Help:    "Time to produce one decision inside the engine, by what produced it (l1, l2, plan_constant, vm: the compiled evaluator, full: topdown), or to fail to (shed: not made, see acgs_decisions_shed_total; canceled: its client went away while it waited; error: the decision failed).",
		Buckets: decisionDurationBuckets,
	}, []string{"source"})
	m.partialEval = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "acgs_partial_eval_plans_total",
		Help: "Decisions that reached the partial-evaluation stage, by what the plan did: constant (the plan answered), fallback (the plan keys do not settle the decision: the evaluator answered).",
	}, []string{"outcome"})
	m.batchItems = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "acgs_batch_request_items",
		Help:    "Items per batch request (ACGS and OPA batch APIs).",
		Buckets: batchItemBuckets,
	})
	m.writeBatch = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "acgs_cache_l2_write_batch_entries",
		Help:    "Decisions written to the L2 cache per write-behind pipeline; a pipeline that wrote none is not observed.",
		Buckets: writeBatchBuckets,
	})
	m.hashMismatches = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "acgs_constitutional_hash_mismatches_total",
		Help: "Requests refused because their constitutional_hash differs from the configured one.",
	})
	m.policyReloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "acgs_policy_reloads_total",
		Help: "Policy bundle activations, by result (success; failure: a bundle was refused, the previous one stays active; " +
			"download_failure: a remote bundle could not be downloaded, nothing was refused).",
	}, []string{"result"})
	m.policyInfo = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "acgs_policy_info",
		Help: "Active policy bundle: its revision, content digest (tells apart two bundles of one revision) and constitutional hash; the value is always 1.",
	}, []string{"revision", "content_digest", "constitutional_hash"})
	m.evalFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "acgs_evaluation_failures_total",
		Help: "Policy evaluations that failed and were answered fail-closed, by reason (timeout: EVAL_TIMEOUT exceeded; error: evaluation error).",
	}, []string{"reason"})

	m.shed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "acgs_decisions_shed_total",
		Help: "Decisions not made because no evaluation slot was free in time (admission control), or because the request came too late to be decided (reason late), " +
			"answered 503 overloaded with Retry-After; batch items count one by one. Reason: queue_full, queue_timeout, deadline (the request's deadline passed while it waited), " +
			"late (its body arrived too late for a decision to be made and answered before WRITE_TIMEOUT: a slow client, not overload; ACGSShedding leaves it out). " +
			"A request whose client went away while it waited is not shed: see acgs_decisions_canceled_total.",
	}, []string{"reason"})
	m.canceled = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "acgs_decisions_canceled_total",
		Help: "Decisions not made because the request was cancelled (its client went away) while it waited for an evaluation slot or a shared evaluation; " +
			"batch items count one by one. Not shed: the service refused nothing.",
	})

	raw := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "acgs_raw_body_lookups_total",
		Help: "Decision requests looked up by the exact bytes of their body (the raw-body tier, RAW_CACHE_SIZE): hit when they were answered from the L1 entry " +
			"of an identical earlier body without being decoded, miss when they were not and went the normal way (decoded, then decided or refused).",
	}, []string{"result"})
	m.rawHit, m.rawMiss = raw.WithLabelValues("hit"), raw.WithLabelValues("miss")

	m.reg.MustRegister(buildInfo, m.httpRequests, m.httpDuration, m.decisions,
		m.decisionDuration, m.partialEval, m.batchItems, m.writeBatch,
		m.hashMismatches, m.policyReloads, m.policyInfo, m.evalFailures, m.shed, m.canceled, raw)

	m.initCacheKeys()
	m.initEvaluators()
	for _, s := range decisionSources {
		m.decisionDuration.WithLabelValues(s)
	}
	for _, o := range partialOutcomes {
		m.partialEval.WithLabelValues(o)
	}
	for _, r := range reloadResults {
		m.policyReloads.WithLabelValues(r)
	}
	for _, r := range evalFailures {
		m.evalFailures.WithLabelValues(r)
	}
	for _, r := range ShedReasons {
		m.shed.WithLabelValues(r)
	}
	m.evalTimeout = m.evalFailures.WithLabelValues("timeout")
	m.evalError = m.evalFailures.WithLabelValues("error")
	return m
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// Registry returns the registry, for callers that add their own collectors
// and for tests that gather directly.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus exposition format, for
// /metrics and /v1/metrics?format=prometheus. Gathering errors are reported in
// the response rather than hidden, so a broken collector is seen at once.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorHandling: promhttp.ContinueOnError,
	})
}

// ObserveHTTP records one answered HTTP request. handler must be a route name
// from a fixed set (not the raw URL path), or the label would be unbounded.
func (m *Metrics) ObserveHTTP(handler string, code int, d time.Duration) {
	m.HTTPSeries(handler, code).Observe(d)
}

// HTTPSeries is the pair of series ObserveHTTP records one (handler, code)
// in, looked up once: a caller that answers many requests alike (a route's
// 200s) keeps it and skips the two label lookups (hashing the label values
// and a locked map read each) per request. The series is created by the
// lookup, as by ObserveHTTP: a caller resolves it when it has a request to
// record, not before (a series at zero would show a route never asked).
type HTTPSeries struct {
	dur prometheus.Observer
	n   prometheus.Counter
}

// HTTPSeries returns the series of handler and code; see ObserveHTTP.
func (m *Metrics) HTTPSeries(handler string, code int) HTTPSeries {
	c := codeLabel(code)
	return HTTPSeries{dur: m.httpDuration.WithLabelValues(handler, c), n: m.httpRequests.WithLabelValues(handler, c)}
}

// Observe records one request of the series' handler and code taking d, as
// ObserveHTTP does.
func (s HTTPSeries) Observe(d time.Duration) {
	// Duration first: a scrape that sees the request counted sees its
	// duration too (tests compare the two counts).
	s.dur.Observe(d.Seconds())
	s.n.Inc()
}

func codeLabel(code int) string {
	if code >= 0 && code < len(statusCodeLabelValues) {
		return statusCodeLabelValues[code]
	}
	return strconv.Itoa(code)
}

// ObserveDecision records one decision of the engine: outcome is allow, deny,
// undefined or error; source is where it came from (l1, l2, plan_constant,
// vm, full). Batch items are individual decisions and are
// recorded one by one.
func (m *Metrics) ObserveDecision(path, outcome, source string, d time.Duration) {
	m.decisions.WithLabelValues(m.pathLabel(path), outcome).Inc()
	m.decisionDuration.WithLabelValues(source).Observe(d.Seconds())
}

// DecisionSeries is the pair of series ObserveDecision records one (path,
// outcome, source) in, looked up once (the path's label, "other" past
// maxPathLabels, included): for a caller that records many decisions alike
// (the raw-body tier remembers one per body it answers). Resolve it only
// where ObserveDecision has recorded such a decision already: the lookup
// creates the series, and counts the path among the labels.
type DecisionSeries struct {
	n   prometheus.Counter
	dur prometheus.Observer
}

// DecisionSeries returns the series of path, outcome and source; see
// ObserveDecision.
func (m *Metrics) DecisionSeries(path, outcome, source string) DecisionSeries {
	return DecisionSeries{n: m.decisions.WithLabelValues(m.pathLabel(path), outcome), dur: m.decisionDuration.WithLabelValues(source)}
}

// Observe records one decision of the series taking d, as ObserveDecision
// does.
func (s DecisionSeries) Observe(d time.Duration) {
	s.n.Inc()
	s.dur.Observe(d.Seconds())
}

// pathLabel returns path while fewer than maxPathLabels distinct paths have
// been seen, and otherPath after that. The common case (a known path) is one
// lock-free map read.
func (m *Metrics) pathLabel(path string) string {
	if _, ok := m.paths.Load(path); ok {
		return path
	}
	m.pathN.Lock()
	defer m.pathN.Unlock()
	if _, ok := m.paths.Load(path); ok {
		return path
	}
	if m.nPath >= maxPathLabels {
		return otherPath
	}
	m.nPath++
	m.paths.Store(path, struct{}{})
	return path
}

// ObservePartialEval counts one decision that went through the plan cache,
// by what the plan did: constant or fallback. It counts decisions, not
// plans built, so that constant over both is the share of decisions
// partial evaluation served.
func (m *Metrics) ObservePartialEval(outcome string) {
	m.partialEval.WithLabelValues(outcome).Inc()
}

// ObserveBatch records the number of items of one batch request.
func (m *Metrics) ObserveBatch(size int) { m.batchItems.Observe(float64(size)) }

// ObserveWriteBehindBatch records the entries one write-behind pipeline
// wrote to L2. Its signature fits cache.Config.OnFlush.
func (m *Metrics) ObserveWriteBehindBatch(n int) { m.writeBatch.Observe(float64(n)) }

// RawLookup counts one lookup of a request body in the raw-body tier.
func (m *Metrics) RawLookup(hit bool) {
	if hit {
		m.rawHit.Inc()
		return
	}
	m.rawMiss.Inc()
}

// HashMismatch counts one request refused for a wrong constitutional hash.
func (m *Metrics) HashMismatch() { m.hashMismatches.Inc() }

// PolicyReload counts one bundle activation attempt; result is success,
// failure (refused) or download_failure (a remote bundle not downloaded).
func (m *Metrics) PolicyReload(result string) { m.policyReloads.WithLabelValues(result).Inc() }

// EvalTimeout counts one evaluation that exceeded EVAL_TIMEOUT.
func (m *Metrics) EvalTimeout() { m.evalTimeout.Inc() }

// EvalError counts one evaluation that failed with an error.
func (m *Metrics) EvalError() { m.evalError.Inc() }

// Shed counts one decision refused by admission control; reason is one of
// ShedReasons.
func (m *Metrics) Shed(reason string) { m.shed.WithLabelValues(reason).Inc() }

// Canceled counts one decision not made because its request was cancelled
// (its client went away) while it waited.
func (m *Metrics) Canceled() { m.canceled.Inc() }

// SetActivePolicy makes acgs_policy_info show exactly one series: the active
// revision, content digest and hash. The old label set is removed, not
// zeroed, so that a query for the current revision never returns a stale
// one; the new series is set before the old one goes, so a scrape never
// sees none.
func (m *Metrics) SetActivePolicy(revision, digest, hash string) {
	m.policyMu.Lock()
	defer m.policyMu.Unlock()
	cur := []string{revision, digest, hash}
	m.policyInfo.WithLabelValues(cur...).Set(1)
	if old := m.policyCur; old != nil && !slices.Equal(old, cur) {
		m.policyInfo.DeleteLabelValues(old...)
	}
	m.policyCur = cur
}
