package server_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/acgs-lite/acgs/internal/config"
	"github.com/acgs-lite/acgs/internal/engine"
	"github.com/acgs-lite/acgs/internal/server"
	"github.com/acgs-lite/acgs/internal/telemetry"
)

// TestNoActivePolicyIsUnavailable is the regression test for an instance
// with remote bundles before its first bundle (found by the SIGTERM fault
// scenario: the restarted instance behind nginx answered 525 requests with
// a fail-closed 200 deny, which nginx passed on as the constitution's
// answer). Every decision endpoint answers 503 unavailable, which proxies
// retry on another instance, and never an allow.
func TestNoActivePolicyIsUnavailable(t *testing.T) {
	cfg := config.Default()
	e, err := engine.New(context.Background(), nil, engine.Options{ConstitutionalHash: hash, EvalTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	s, err := server.New(server.Deps{Config: cfg, Engine: e, Metrics: telemetry.NewMetrics(telemetry.BuildInfo{}), Window: telemetry.NewWindow(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{srv: s, eng: e}
	safe := request(t, "safe")
	for _, c := range []struct{ name, method, path, body string }{
		{"ACGS decision", "POST", "/v1/data/acgs/main/decision", safe},
		{"ACGS decision, pretty", "POST", "/v1/data/acgs/main/decision?pretty", safe},
		{"ACGS batch", "POST", "/v1/acgs/batch", `{"requests":[` + safe + `,` + safe + `]}`},
		{"ACGS allow", "GET", "/v1/data/acgs/main/allow?type=constitutional_evaluation&constitutional_hash=" + hash + "&action=data.read_public", ""},
		{"OPA decision", "POST", "/v1/data/acgs/main/decision", `{"input":` + safe + `}`},
		{"OPA batch", "POST", "/v1/batch/data/acgs/main/decision", `{"inputs":{"a":` + safe + `,"b":` + safe + `}}`},
		{"default decision", "POST", "/", safe},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := h.do(t, c.method, c.path, strings.NewReader(c.body), nil)
			if r.code != 503 || r.obj["code"] != "unavailable" {
				t.Fatalf("status %d: %s", r.code, r.body)
			}
			if strings.Contains(string(r.body), `"allow":true`) {
				t.Fatalf("an allow without a policy: %s", r.body)
			}
		})
	}
}
