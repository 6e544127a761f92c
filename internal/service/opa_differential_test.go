package service_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/acgs-lite/acgs/internal/config"

	"github.com/acgs-lite/acgs/internal/inputgen"
	"github.com/acgs-lite/acgs/internal/jsoneq"
	"github.com/acgs-lite/acgs/internal/service/servicetest"
	"github.com/acgs-lite/acgs/internal/testenv"
)

// TestDifferentialAgainstStockOPA posts generated inputs (every request type
// and action class, missing and wrong-typed fields) to the stock `opa run
// --server` and to acgs serve on the same bundle: every decision must be
// identical, in the OPA dialect and, for valid envelopes, the ACGS dialect.
func TestDifferentialAgainstStockOPA(t *testing.T) {
	n := 5000
	if testing.Short() {
		n = 500
	}
	opaURL := testenv.StartOPA(t, filepath.Join(testenv.ModuleRoot(t), "policies"))
	// A loaded 2-core machine must not turn a slow evaluation into a (correct) fail-closed error here.
	acgs := servicetest.Start(t, func(c *config.Config) { c.Policy.EvalTimeout = 10 * time.Second })
	gen := inputgen.New(2)
	inputs := gen.Inputs(n)
	// Each input again with a never-repeated request id and other noise at
	// every level: most are answered from the cache through read-set keys,
	// and must still equal stock OPA's evaluation of the noisy input.
	for _, in := range inputs[:n] {
		inputs = append(inputs, gen.WithNoise(in))
	}
	// Non-object inputs too: the policy must answer them without error.
	extra := []any{nil, "x", json.Number("1"), []any{}, true, map[string]any{}}

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	var failures servicetest.Failures
	fail := failures.Add
	var acgsChecked sync.Map
	all := make([]any, 0, len(inputs)+len(extra))
	for _, in := range inputs {
		all = append(all, in)
	}
	servicetest.Each(append(all, extra...), 4, func(in any) {
		body := map[string]any{"input": in}
		c1, r1, err1 := servicetest.Post(client, opaURL+"/v1/data/acgs/main/decision", body)
		c2, r2, err2 := servicetest.Post(client, acgs.URL+"/v1/data/acgs/main/decision", body)
		if err1 != nil || err2 != nil || c1 != 200 || c2 != 200 {
			fail("transport: opa %d %v, acgs %d %v %v for %v", c1, err1, c2, err2, r2, in)
			return
		}
		if d := jsoneq.Diff(r1["result"], r2["result"]); d != "" {
			fail("OPA dialect differs at %s for input %v", d, in)
			return
		}
		obj, ok := in.(map[string]any)
		typ, tok := obj["type"].(string)
		h, hok := obj["constitutional_hash"].(string)
		if !ok || !tok || !hok || h != inputgen.Hash || typ == "" {
			return
		}
		if _, isObj := obj["context"].(map[string]any); obj["context"] != nil && !isObj {
			return
		}
		c3, r3, err3 := servicetest.Post(client, acgs.URL+"/v1/data/acgs/main/decision", obj)
		if err3 != nil || c3 != 200 {
			// The envelope check may refuse wrongly typed optional fields; that is a 4xx, never a 5xx.
			if c3 >= 500 || err3 != nil {
				fail("ACGS dialect: %d %v for %v", c3, err3, in)
			}
			return
		}
		want := r1["result"].(map[string]any)
		for _, f := range []string{"allow", "compliance_score", "reasons", "evaluation_details"} {
			if d := jsoneq.Diff(want[f], r3[f]); d != "" {
				fail("ACGS dialect %s differs at %s for input %v", f, d, in)
			}
		}
		acgsChecked.Store(fmt.Sprint(in), true)
	})
	failures.Report(t)
	count := 0
	acgsChecked.Range(func(any, any) bool { count++; return true })
	t.Logf("%d inputs compared in the OPA dialect (%d with noise), %d also in the ACGS dialect", len(inputs)+len(extra), n, count)
	if count < n/4 {
		t.Errorf("only %d inputs reached the ACGS dialect comparison", count)
	}
}
