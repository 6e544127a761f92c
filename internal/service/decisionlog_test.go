package service_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/acgs-lite/acgs/internal/config"
	"github.com/acgs-lite/acgs/internal/service"
	"github.com/acgs-lite/acgs/internal/service/servicetest"
	"github.com/acgs-lite/acgs/internal/telemetry"
	"github.com/acgs-lite/acgs/internal/testenv"
)

// TestDecisionLogOneEventPerDecision runs the real service with a file
// decision log and a mask: every decision of a short run (single requests in
// both dialects and a batch) is logged exactly once under the decision_id its
// response carried, with the revision, cache tier and hash, and the masked
// field is erased.
func TestDecisionLogOneEventPerDecision(t *testing.T) {
	logPath := filepath.Join(t.TempDir(), "decisions.jsonl")
	in := servicetest.Start(t, func(c *config.Config) {
		c.Log.DecisionLog = "file:" + logPath
		c.Log.DecisionLogMask = []string{"/context/agent/id"}
	})
	root := testenv.ModuleRoot(t)
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(root, "testdata", "requests", name+".json"))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	ids := map[string]bool{}
	postJSON := func(path, body string) map[string]any {
		resp, err := http.Post(in.URL+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	for i := 0; i < 3; i++ { // repeats: cache hits are decisions too
		for _, name := range []string{"safe", "dangerous", "complex"} {
			ids[postJSON("/v1/data/acgs/main/decision", read(name))["decision_id"].(string)] = true
			ids[postJSON("/v1/data/acgs/main/decision", `{"input":`+read(name)+`}`)["decision_id"].(string)] = true
		}
	}
	batch := postJSON("/v1/batch/data/acgs/main/decision", `{"inputs":{"a":`+read("safe")+`,"b":`+read("data_access")+`}}`)
	for _, r := range batch["responses"].(map[string]any) {
		ids[r.(map[string]any)["decision_id"].(string)] = true
	}
	in.Stop() // drains the log

	f, err := os.Open(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	seen := map[string]int{}
	erased := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var ev map[string]any
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("log line is not JSON: %v", err)
		}
		id, _ := ev["decision_id"].(string)
		seen[id]++
		if ev["constitutional_hash"] != "cdd01ef066bc6cf2" || ev["path"] != "acgs/main/decision" || ev["cache_tier"] == nil || ev["bundles"] == nil {
			t.Errorf("incomplete event: %s", sc.Bytes())
		}
		if e, _ := ev["erased"].([]any); len(e) == 1 && e[0] == "/input/context/agent/id" {
			erased++
		}
		inp, _ := ev["input"].(map[string]any)
		ctx, _ := inp["context"].(map[string]any)
		if agent, ok := ctx["agent"].(map[string]any); ok {
			if _, leaked := agent["id"]; leaked {
				t.Errorf("masked /context/agent/id was logged: %s", sc.Bytes())
			}
		}
	}
	if erased == 0 {
		t.Errorf("no event reports the masked field as erased")
	}
	if len(seen) != len(ids) {
		t.Errorf("%d distinct decisions logged, %d answered", len(seen), len(ids))
	}
	for id := range ids {
		if seen[id] != 1 {
			t.Errorf("decision %s logged %d times", id, seen[id])
		}
	}
}

// TestDecisionLogClosedBeforeRemoteStop: stopping remote bundles can take
// its whole shutdown budget (it waits for the bundle loaders, and for an
// activation in progress). The decision log must not share that budget: it
// is closed first, with a deadline of its own, every queued event is
// written, and the close is logged with its counts.
func TestDecisionLogClosedBeforeRemoteStop(t *testing.T) {
	_, bundlesURL := bundleServer(t)
	_, pub := signingKeys(t)
	logPath := filepath.Join(t.TempDir(), "decisions.jsonl")
	cfg := config.Default()
	cfg.Log.Level = "info"
	cfg.Log.DecisionLog = "file:" + logPath
	cfg.Policy.ConfigFile = writeOPAConfig(t, bundlesURL, pub)
	cfg.Policy.PartialEval = false
	out := &testenv.SyncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	svc, err := service.New(ctx, cfg, service.Options{LogOutput: out})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.StartPolicy(ctx); err != nil {
		svc.Close()
		t.Fatal(err)
	}
	const n = 100
	for range n {
		svc.DLog.Log(&telemetry.DecisionEvent{Path: "acgs/main/decision", CacheTier: "none"})
	}
	svc.Close()

	closedAt, stopAt := -1, -1
	var closed map[string]any
	for i, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			continue
		}
		switch msg, _ := rec["msg"].(string); {
		case msg == "decision log closed" && closedAt < 0:
			closedAt, closed = i, rec
		case strings.Contains(msg, "Stopping bundle loader") && stopAt < 0:
			stopAt = i
		}
	}
	if closedAt < 0 || stopAt < 0 || closedAt > stopAt {
		t.Fatalf("want the decision log closed (line %d) before the remote bundles stop (line %d):\n%s", closedAt, stopAt, out.String())
	}
	if closed["written"] != float64(n) || closed["dropped"] != float64(0) || closed["failed"] != float64(0) || closed["level"] != "INFO" {
		t.Errorf("close logged as %v, want %d written, none dropped or failed", closed, n)
	}
	b, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(string(b), "\n"); got != n {
		t.Errorf("%d lines in the decision log, want %d", got, n)
	}
}
