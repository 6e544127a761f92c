package gateway

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the gateway's Prometheus series (acgs_gateway_*), labelled by
// upstream and tool. Labels come only from the configuration and the
// upstreams' tool lists: a tool name an agent makes up is counted as
// "other", an unknown upstream as "unknown", so agents cannot create series.
type metrics struct {
	decisions   *prometheus.CounterVec   // upstream, tool, outcome: allow|deny|approval_required|error|overloaded|canceled
	shadow      *prometheus.CounterVec   // upstream, tool, outcome: what shadow mode forwarded anyway
	approvals   *prometheus.CounterVec   // upstream, tool, verdict
	pending     *prometheus.GaugeVec     // upstream, tool
	upstream    *prometheus.CounterVec   // upstream, tool, result: ok|tool_error|error_reply|failed
	proxied     *prometheus.CounterVec   // upstream, method, outcome: ok|error|failed|hidden|not_found
	overhead    *prometheus.HistogramVec // upstream
	upstreamDur *prometheus.HistogramVec // upstream
	up          *prometheus.GaugeVec     // upstream
	counterErrs prometheus.Counter
	// progressDropped counts upstreams' progress notifications dropped
	// because a newer one for the call superseded them before they were
	// sent, the call had been answered, or the write to the agent was
	// refused or failed (progress.go)
	progressDropped prometheus.Counter
}

// The results of acgs_gateway_upstream_calls_total. Only failed is an
// upstream that did not answer (ACGSGatewayUpstreamFailures).
const (
	resultOK         = "ok"
	resultToolError  = "tool_error"
	resultErrorReply = "error_reply"
	resultFailed     = "failed"
)

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "acgs_gateway_tool_calls_total",
			Help: "MCP tool calls through the gateway by the constitution's outcome (error: the decision failed and the call was denied; overloaded: the decision was shed for overload, the call not forwarded and the agent told to retry; canceled: the agent cancelled the call while its decision waited).",
		}, []string{"upstream", "tool", "outcome"}),
		shadow: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "acgs_gateway_shadow_forwarded_total",
			Help: "Tool calls in shadow mode that the constitution did not allow but the gateway forwarded anyway, by outcome (deny, approval_required, error, overloaded).",
		}, []string{"upstream", "tool", "outcome"}),
		approvals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "acgs_gateway_approvals_total",
			Help: "Held tool calls by how they ended: approved, refused, timed_out, cancelled.",
		}, []string{"upstream", "tool", "verdict"}),
		pending: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "acgs_gateway_approvals_pending",
			Help: "Tool calls waiting for approval now.",
		}, []string{"upstream", "tool"}),
		upstream: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "acgs_gateway_upstream_calls_total",
			Help: "Calls forwarded to upstreams by result: ok, tool_error (the tool answered isError), error_reply (the upstream answered a JSON-RPC error: an unknown tool, invalid parameters), failed (no answer: connection lost, call_timeout, the gateway stopping).",
		}, []string{"upstream", "tool", "result"}),
		proxied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "acgs_gateway_proxied_requests_total",
			Help: "Resources and prompts requests of agents (method: resources/list, resources/templates/list, resources/read, prompts/list, prompts/get) by upstream and outcome: ok (the upstream answered), error (it answered a JSON-RPC error, passed on unchanged), failed (no answer; a list then shows the upstream's last one), hidden (the constitution hides the upstream's resources or prompts from the agent; a read or get is refused, not forwarded), not_found (no upstream serves the URI or prompt name; upstream \"unknown\"). A list counts once for each upstream it asked: one that serves resources (prompts), or one that could not be reached (failed).",
		}, []string{"upstream", "method", "outcome"}),
		overhead: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "acgs_gateway_overhead_seconds",
			Help:    "Time a forwarded call spent in the gateway itself: the whole call minus the upstream's answer (and minus any wait for approval).",
			Buckets: []float64{25e-6, 50e-6, 100e-6, 200e-6, 500e-6, 1e-3, 2e-3, 5e-3, 10e-3, 25e-3, 100e-3},
		}, []string{"upstream"}),
		upstreamDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "acgs_gateway_upstream_duration_seconds",
			Help:    "Time upstreams took to answer forwarded calls.",
			Buckets: prometheus.ExponentialBuckets(100e-6, 4, 10),
		}, []string{"upstream"}),
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "acgs_gateway_upstream_up",
			Help: "1 when the gateway has a live session with the upstream.",
		}, []string{"upstream"}),
		counterErrs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "acgs_gateway_counter_errors_total",
			Help: "Redis errors of the per-agent call counters: a count answered from this replica's in-process count instead, or a give-back (a shed or cancelled call's) that Redis did not confirm.",
		}),
		progressDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "acgs_gateway_progress_dropped_total",
			Help: "Upstreams' progress notifications not sent to the agent: superseded, while waiting, by a newer one for the same call (an agent that does not read its call's stream, or an upstream sending faster than the agent's stream takes them), arrived just as the call ended (one arriving once it has ended is not counted), or the write to the agent's stream was refused (the call's answer had begun) or failed (the connection broken, its write timeout passed).",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.decisions, m.shadow, m.approvals, m.pending, m.upstream, m.proxied, m.overhead, m.upstreamDur, m.up, m.counterErrs, m.progressDropped)
	}
	return m
}

func (m *metrics) observeOverhead(upstream string, d time.Duration) {
	m.overhead.WithLabelValues(upstream).Observe(d.Seconds())
}

// RegisterExampleSeries registers the acgs_gateway_* series on reg with a
// child each, as a gateway that has seen every kind of call exposes them:
// for tests that check dashboards and alerts against the exposition.
func RegisterExampleSeries(reg prometheus.Registerer) {
	m := newMetrics(reg)
	m.decisions.WithLabelValues("files", "read_file", OutcomeAllow).Inc()
	m.shadow.WithLabelValues("files", "read_file", OutcomeDeny).Inc()
	m.approvals.WithLabelValues("db", "delete_record", string(Approved)).Inc()
	m.pending.WithLabelValues("db", "delete_record").Set(0)
	m.upstream.WithLabelValues("files", "read_file", "ok").Inc()
	m.proxied.WithLabelValues("files", methodResourcesRead, proxiedOK).Inc()
	m.observeOverhead("files", 50*time.Microsecond)
	m.upstreamDur.WithLabelValues("files").Observe(1e-3)
	m.up.WithLabelValues("files").Set(1)
	m.counterErrs.Add(0)
	m.progressDropped.Add(0)
}
