package service_test

import (
	"bytes"
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

func post(client *http.Client, url string, body any) (int, map[string]any, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return 0, nil, err
	}
	resp, err := client.Post(url, "application/json", bytes.NewReader(b))
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	dec.UseNumber()
	var out map[string]any
	if err := dec.Decode(&out); err != nil {
		return resp.StatusCode, nil, fmt.Errorf("decoding response: %w", err)
	}
	return resp.StatusCode, out, nil
}

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
	var mu sync.Mutex
	var failures []string
	fail := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if len(failures) < 10 {
			failures = append(failures, fmt.Sprintf(format, args...))
		}
	}
	work := make(chan any)
	var wg sync.WaitGroup
	var acgsChecked sync.Map
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for in := range work {
				body := map[string]any{"input": in}
				c1, r1, err1 := post(client, opaURL+"/v1/data/acgs/main/decision", body)
				c2, r2, err2 := post(client, acgs.URL+"/v1/data/acgs/main/decision", body)
				if err1 != nil || err2 != nil || c1 != 200 || c2 != 200 {
					fail("transport: opa %d %v, acgs %d %v %v for %v", c1, err1, c2, err2, r2, in)
					continue
				}
				if d := jsoneq.Diff(r1["result"], r2["result"]); d != "" {
					fail("OPA dialect differs at %s for input %v", d, in)
					continue
				}
				obj, ok := in.(map[string]any)
				typ, tok := obj["type"].(string)
				h, hok := obj["constitutional_hash"].(string)
				if !ok || !tok || !hok || h != inputgen.Hash || typ == "" {
					continue
				}
				if _, isObj := obj["context"].(map[string]any); obj["context"] != nil && !isObj {
					continue
				}
				c3, r3, err3 := post(client, acgs.URL+"/v1/data/acgs/main/decision", obj)
				if err3 != nil || c3 != 200 {
					// The envelope check may refuse wrongly typed optional fields; that is a 4xx, never a 5xx.
					if c3 >= 500 || err3 != nil {
						fail("ACGS dialect: %d %v for %v", c3, err3, in)
					}
					continue
				}
				want := r1["result"].(map[string]any)
				for _, f := range []string{"allow", "compliance_score", "reasons", "evaluation_details"} {
					if d := jsoneq.Diff(want[f], r3[f]); d != "" {
						fail("ACGS dialect %s differs at %s for input %v", f, d, in)
					}
				}
				acgsChecked.Store(fmt.Sprint(in), true)
			}
		}()
	}
	for _, in := range inputs {
		work <- in
	}
	for _, in := range extra {
		work <- in
	}
	close(work)
	wg.Wait()
	for _, f := range failures {
		t.Error(f)
	}
	count := 0
	acgsChecked.Range(func(any, any) bool { count++; return true })
	t.Logf("%d inputs compared in the OPA dialect (%d with noise), %d also in the ACGS dialect", len(inputs)+len(extra), n, count)
	if count < n/4 {
		t.Errorf("only %d inputs reached the ACGS dialect comparison", count)
	}
}
