// Package deploy holds no code: it is the home of the tests that keep the
// deployment files of this directory honest — the Prometheus configuration,
// recording rules and alerts (checked and unit-tested with the real promtool),
// and the Grafana dashboard, whose every PromQL expression must parse and
// name only metrics the service actually exposes or rules that exist.
// Nothing may import it.
package deploy
