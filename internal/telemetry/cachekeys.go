package telemetry

import "github.com/prometheus/client_golang/prometheus"

// CacheKeyKinds are the labels of acgs_cache_keys_total (engine.KeyKind).
var CacheKeyKinds = []string{"read_set", "whole_input", "uncached"}

// cacheKeys counts decisions by how their cache key was made; the counters
// are resolved once so the request path does no label lookup.
type cacheKeys struct {
	vec      *prometheus.CounterVec
	readSet  prometheus.Counter
	whole    prometheus.Counter
	uncached prometheus.Counter
}

func (m *Metrics) initCacheKeys() {
	c := &cacheKeys{vec: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "acgs_cache_keys_total",
		Help: "Decisions looked up in the cache, by what their key covers: read_set (only the input paths the policy can read, so ids and timestamps " +
			"outside them do not defeat the cache), whole_input (the policy may read the whole input), uncached (a non-deterministic built-in is reachable, " +
			"or the input cannot be encoded: never cached).",
	}, []string{"kind"})}
	c.readSet = c.vec.WithLabelValues("read_set")
	c.whole = c.vec.WithLabelValues("whole_input")
	c.uncached = c.vec.WithLabelValues("uncached")
	m.reg.MustRegister(c.vec)
	m.keys = c
}

// ObserveCacheKey counts one decision by the kind of its cache key
// (engine.KeyKind's String).
func (m *Metrics) ObserveCacheKey(kind string) {
	switch kind {
	case "read_set":
		m.keys.readSet.Inc()
	case "whole_input":
		m.keys.whole.Inc()
	default:
		m.keys.uncached.Inc()
	}
}

// evaluators counts evaluations by the evaluator that ran them.
type evaluators struct {
	vec     *prometheus.CounterVec
	vm      prometheus.Counter
	topdown prometheus.Counter
}

func (m *Metrics) initEvaluators() {
	e := &evaluators{vec: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "acgs_evaluations_total",
		Help: "Evaluations that no cache or constant plan answered, by evaluator: vm (the compiled evaluator, OPA's plan on the Rego VM) or topdown " +
			"(OPA's interpreter: EVALUATOR=topdown, or a policy path the VM cannot run, logged at preparation).",
	}, []string{"evaluator"})}
	e.vm = e.vec.WithLabelValues("vm")
	e.topdown = e.vec.WithLabelValues("topdown")
	m.reg.MustRegister(e.vec)
	m.evals = e
}

// ObserveEvaluator counts one evaluation by its evaluator ("vm" or "topdown").
func (m *Metrics) ObserveEvaluator(name string) {
	if name == "vm" {
		m.evals.vm.Inc()
		return
	}
	m.evals.topdown.Inc()
}
