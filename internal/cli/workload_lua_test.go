package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/acgs-lite/acgs/internal/cache"
	"github.com/acgs-lite/acgs/internal/engine"
	"github.com/acgs-lite/acgs/internal/inputgen"
	"github.com/acgs-lite/acgs/internal/loadgen"
	"github.com/acgs-lite/acgs/internal/testenv"
	"github.com/acgs-lite/acgs/policies"
)

// wrkCapture runs wrk (one thread, one connection) with script against a
// server that records the first max request bodies, and returns them with
// wrk's output.
func wrkCapture(t testing.TB, wrk, script string, max int) ([][]byte, string) {
	t.Helper()
	var mu sync.Mutex
	var bodies [][]byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || r.URL.Path != "/v1/data/acgs/main/decision" || r.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "unexpected request "+r.Method+" "+r.URL.Path, http.StatusBadRequest)
			return
		}
		mu.Lock()
		if len(bodies) < max {
			bodies = append(bodies, b)
		}
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{}`))
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, wrk, "-t1", "-c1", "-d3s", "-s", script, srv.URL+"/").CombinedOutput()
	if err != nil {
		t.Fatalf("wrk: %v\n%s", err, out)
	}
	mu.Lock()
	defer mu.Unlock()
	return bodies, string(out)
}

func decodeNumbers(b []byte) (map[string]any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		return nil, err
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, fmt.Errorf("trailing data after the JSON object")
	}
	return m, nil
}

// at reads a dotted path of decoded JSON; ok is false when it is missing.
func at(v any, path string) (any, bool) {
	for _, k := range strings.Split(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = m[k]; !ok {
			return nil, false
		}
	}
	return v, true
}

// TestWorkloadLuaVaried runs the --varied wrk scripts in wrk itself (the
// LuaJIT that compare.sh runs them in) and checks what they send: valid
// requests of every kind in their shares, the same requests in both
// dialects, every decision-relevant field taking many values, no two
// requests with the same read-set cache key (so an L1 keyed on what the
// constitution reads never hits), and, through the real engine, both
// allowed and denied decisions of every routed kind, for many reasons.
func TestWorkloadLuaVaried(t *testing.T) {
	wrk := testenv.RequireBinary(t, "wrk", "wrk")
	dir := t.TempDir()
	scripts := map[string]string{}
	for _, d := range []string{"acgs", "opa"} {
		out, code, err := perfRun(t, "workload-lua", "--varied", "--dialect", d)
		if code != 0 {
			t.Fatalf("workload-lua --varied --dialect %s: exit %d (%v)\n%s", d, code, err, out)
		}
		scripts[d] = filepath.Join(dir, d+".lua")
		if err := os.WriteFile(scripts[d], []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, code, _ := perfRun(t, "workload-lua", "--varied", "--unique"); code == 0 {
		t.Errorf("--varied with --unique was accepted")
	}

	const want = 1500
	acgsBodies, acgsOut := wrkCapture(t, wrk, scripts["acgs"], want)
	opaBodies, opaOut := wrkCapture(t, wrk, scripts["opa"], want)
	if len(acgsBodies) < 500 || len(opaBodies) < 500 {
		t.Fatalf("wrk sent only %d and %d requests in 3s", len(acgsBodies), len(opaBodies))
	}
	// The script says how many requests of each kind it generated.
	sentRE := regexp.MustCompile(regexp.QuoteMeta(loadgen.VariedSentPrefix) + ` constitutional (\d+), evolution (\d+), data_access (\d+), prohibited (\d+)`)
	for _, out := range []string{acgsOut, opaOut} {
		if !sentRE.MatchString(out) {
			t.Errorf("wrk output has no %q line:\n%s", loadgen.VariedSentPrefix, out)
		}
	}

	// Both dialects send the same requests, in the same order (one seed,
	// one thread): OPA's bodies are {"input": the ACGS body}.
	for i := range min(len(acgsBodies), len(opaBodies)) {
		if want := `{"input":` + string(acgsBodies[i]) + `}`; string(opaBodies[i]) != want {
			t.Fatalf("request %d differs between the dialects:\nacgs %s\nopa  %s", i, acgsBodies[i], opaBodies[i])
		}
		if i == 0 {
			var env map[string]json.RawMessage
			if err := json.Unmarshal(opaBodies[i], &env); err != nil || len(env) != 1 || env["input"] == nil {
				t.Fatalf("OPA body is not {\"input\": ...}: %s", opaBodies[i])
			}
		}
	}

	e, err := engine.New(context.Background(), engine.FSSource{FS: policies.FS, Name: "embedded"}, engine.Options{ConstitutionalHash: inputgen.Hash, EvalTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	const path = "acgs/main/decision"
	rs, ok := e.ReadSet(path)
	if !ok || rs.Whole || !rs.Cacheable() {
		t.Fatalf("the decision's read set is not a cacheable projection: %+v", rs)
	}
	keys := map[cache.Key]int{}
	type tally struct{ n, allow int }
	kinds := map[string]*tally{}
	reasons := map[string]int{}
	paths := map[string]int{}
	values := map[string]map[string]bool{}
	digits := regexp.MustCompile(`-?[0-9][0-9.e+-]*`)
	fields := []string{
		"action",
		"context.agent.trust_level", "context.agent.requested_resources", "context.current_usage_count",
		"context.benefit_assessment", "context.harm_risk_assessment", "context.fairness_assessment",
		"context.explanation", "context.responsible_party",
		"evolution_request.type", "evolution_request.changes", "evolution_request.mitigations",
		"evolution_request.performance_analysis", "evolution_request.rollback_plan",
		"data_request.data_fields", "data_request.data_subjects", "data_request.consent_records",
		"data_request.timestamp", "data_request.retention_policy", "data_request.record_count",
		"data_request.requester_clearance_level",
	}
	for i, b := range acgsBodies {
		in, err := decodeNumbers(b)
		if err != nil {
			t.Fatalf("request %d is not a JSON object (%v): %s", i, err, b)
		}
		if in["constitutional_hash"] != inputgen.Hash {
			t.Fatalf("request %d: constitutional_hash %v", i, in["constitutional_hash"])
		}
		kind, _ := in["type"].(string)
		switch kind {
		case "constitutional_evaluation", "action_authorization":
			kind = "constitutional"
			if slices.Contains(inputgen.Prohibited, in["action"].(string)) {
				kind = "prohibited"
			}
		case "evolution_approval":
			kind = "evolution"
		case "data_access":
		default:
			t.Fatalf("request %d: type %q", i, kind)
		}
		for _, f := range fields {
			if v, ok := at(in, f); ok {
				j, _ := json.Marshal(v)
				if values[f] == nil {
					values[f] = map[string]bool{}
				}
				values[f][string(j)] = true
			}
		}
		k, err := cache.NewProjectedKey("r", path, rs, in)
		if err != nil {
			t.Fatal(err)
		}
		if j, dup := keys[k]; dup {
			t.Errorf("requests %d and %d have the same read-set cache key:\n%s\n%s", j, i, acgsBodies[j], b)
		}
		keys[k] = i

		d, err := e.Decide(context.Background(), path, in)
		if err != nil {
			t.Fatalf("request %d: %v\n%s", i, err, b)
		}
		res, _ := d.Result.(map[string]any)
		allow, ok := res["allow"].(bool)
		if !ok {
			t.Fatalf("request %d: decision without allow: %v", i, d.Result)
		}
		if kinds[kind] == nil {
			kinds[kind] = &tally{}
		}
		kinds[kind].n++
		if allow {
			kinds[kind].allow++
		}
		if p, ok := res["approval_path"].(string); ok {
			paths[p]++
		}
		rr, _ := res["reasons"].([]any)
		for _, r := range rr {
			reasons[digits.ReplaceAllString(fmt.Sprint(r), "N")]++
		}
	}

	n := len(acgsBodies)
	allowed := 0
	for _, k := range loadgen.VariedKinds {
		c := kinds[k.Name]
		if c == nil {
			t.Errorf("no %s request in %d", k.Name, n)
			continue
		}
		allowed += c.allow
		share := float64(c.n) / float64(n)
		t.Logf("%s: %d requests (%.1f%%, weight %d%%), %.1f%% allowed", k.Name, c.n, 100*share, k.Weight, 100*float64(c.allow)/float64(c.n))
		if d := share - float64(k.Weight)/100; d < -0.05 || d > 0.05 {
			t.Errorf("%s: share %.3f, weight %d%%", k.Name, share, k.Weight)
		}
		a := float64(c.allow) / float64(c.n)
		switch {
		case k.Name == "prohibited" && c.allow > 0:
			t.Errorf("%d prohibited actions allowed", c.allow)
		case k.Name != "prohibited" && (a < 0.2 || a > 0.8):
			t.Errorf("%s: %.1f%% allowed; want both decisions common (20-80%%)", k.Name, 100*a)
		}
	}
	t.Logf("%d requests, %.1f%% allowed, %d distinct read-set keys, %d kinds of reason, approval paths %v", n, 100*float64(allowed)/float64(n), len(keys), len(reasons), paths)
	if len(reasons) < 25 {
		t.Errorf("only %d kinds of reason: %v", len(reasons), reasons)
	}
	for _, p := range []string{"auto_approve", "fast_track", "human_review"} {
		if paths[p] == 0 {
			t.Errorf("no evolution request took the %s path: %v", p, paths)
		}
	}
	for _, f := range fields {
		if got := len(values[f]); got < 20 && f != "action" && f != "evolution_request.type" && f != "data_request.requester_clearance_level" {
			t.Errorf("%s took %d values in %d requests", f, got, n)
		}
	}
	// Small domains are covered whole.
	if got, want := len(values["action"]), len(inputgen.Ordinary)+len(inputgen.NeedsExplanation)+len(inputgen.Prohibited); got < want-2 {
		t.Errorf("%d distinct actions, want about %d", got, want)
	}
	if got := len(values["data_request.requester_clearance_level"]); got != 5 {
		t.Errorf("clearance levels: %d distinct, want 5", got)
	}
	if got := len(values["evolution_request.type"]); got < len(inputgen.EvolutionTypes)+1 {
		t.Errorf("evolution types: %d distinct", got)
	}
}

// BenchmarkVariedEvaluators: the decision alone, in process, on requests
// the --varied script sent (captured from wrk), by kind: the compiled
// evaluator (engine.Decide with Compiled, no cache) against topdown
// (EvaluateFull). With the HTTP figures of scripts/compare.sh it tells how
// much of a varied request's cost is the evaluator's.
//
//	go test ./internal/cli -run '^$' -bench VariedEvaluators -benchmem -benchtime 2000x -count 2
func BenchmarkVariedEvaluators(b *testing.B) {
	wrk := testenv.RequireBinary(b, "wrk", "wrk")
	script, err := loadgen.VariedLua("/v1/data/acgs/main/decision", "acgs", 1)
	if err != nil {
		b.Fatal(err)
	}
	p := filepath.Join(b.TempDir(), "varied.lua")
	if err := os.WriteFile(p, []byte(script), 0o644); err != nil {
		b.Fatal(err)
	}
	bodies, _ := wrkCapture(b, wrk, p, 2000)
	kinds := map[string][]any{}
	for _, body := range bodies {
		in, err := decodeNumbers(body)
		if err != nil {
			b.Fatal(err)
		}
		k, _ := in["type"].(string)
		switch a, _ := in["action"].(string); {
		case slices.Contains(inputgen.Prohibited, a):
			k = "prohibited"
		case k == "action_authorization" || k == "constitutional_evaluation":
			k = "constitutional"
		}
		kinds[k] = append(kinds[k], in)
		kinds["all"] = append(kinds["all"], in)
	}
	ctx := context.Background()
	e, err := engine.New(ctx, engine.FSSource{FS: policies.FS, Name: "embedded"}, engine.Options{ConstitutionalHash: inputgen.Hash, EvalTimeout: time.Minute, Compiled: true})
	if err != nil {
		b.Fatal(err)
	}
	const path = "acgs/main/decision"
	for _, k := range []string{"all", "constitutional", "evolution_approval", "data_access", "prohibited"} {
		ins := kinds[k]
		if len(ins) == 0 {
			b.Fatalf("no %s request captured", k)
		}
		b.Run(k+"/vm", func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if _, err := e.Decide(ctx, path, ins[i%len(ins)]); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(k+"/topdown", func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if _, err := e.EvaluateFull(ctx, path, ins[i%len(ins)]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
