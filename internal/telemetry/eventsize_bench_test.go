package telemetry

import (
	"encoding/json"
	"testing"
)

// BenchmarkEventSize measures eventSize, which Log runs on the request path
// for the queue's bound in bytes, on an event of the ACGS safe request
// (testdata/requests/safe.json) and a decision of the constitution's shape.
func BenchmarkEventSize(b *testing.B) {
	var in, res any
	if err := json.Unmarshal([]byte(`{"type":"constitutional_evaluation","constitutional_hash":"cdd01ef066bc6cf2","action":"data.read_public",
		"context":{"environment":{"sandbox_enabled":true,"audit_enabled":true},"agent":{"id":"agent-0","trust_level":0.9,"requested_resources":{"cpu_cores":1}},
		"responsible_party":"load_test_user","explanation":"Safe public data access for dashboard"}}`), &in); err != nil {
		b.Fatal(err)
	}
	if err := json.Unmarshal([]byte(`{"allow":true,"compliance_score":0.93,"reasons":["Action data.read_public complies with the constitution"],
		"constitutional_hash":"cdd01ef066bc6cf2","policy":"constitutional","evaluation_details":{"safety_score":0.95,"transparency_score":1,
		"accountability_score":1,"fairness_score":0.9,"risk_level":"low","sandbox":true,"audit":true}}`), &res); err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name      string
		inputSize int64
	}{
		{"input-walked", 0},                             // batch items, and handlers that do not count
		{"input-counted-by-the-decoder", ValueSize(in)}, // the server's single decisions
	} {
		b.Run(bc.name, func(b *testing.B) {
			e := &DecisionEvent{Path: "acgs/main/decision", Input: in, Result: res, CacheTier: "l1", InputSize: bc.inputSize}
			b.ReportAllocs()
			var n int64
			for b.Loop() {
				n += eventSize(e)
			}
			if n == 0 {
				b.Fatal("no size")
			}
		})
	}
}
