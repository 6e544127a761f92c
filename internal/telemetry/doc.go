// Package telemetry holds what the service tells operators about itself:
// the Prometheus collectors (Metrics), the rolling latency window behind the
// /v1/metrics JSON and the health "performance" block (Window), and the
// OPA-format decision log (DecisionLog).
//
// Everything here sits next to the request path, so the rule is: recording is
// cheap and never blocks a request, and anything costly (merging histograms,
// masking and encoding decision events, reading cache counters) happens when
// somebody reads — at scrape time, at snapshot time or in the decision-log
// writer goroutine. The package observes; it never decides, caches or
// evaluates anything, and it does not write HTTP responses (the server does).
package telemetry
