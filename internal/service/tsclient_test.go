package service_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/acgs-lite/acgs/internal/config"
	"github.com/acgs-lite/acgs/internal/service/servicetest"
	"github.com/acgs-lite/acgs/internal/testenv"
)

// tsTestRego is served next to the constitution so that the client's batch
// evaluation also meets a 207 (some items fail) and a 500 (all fail): t/x
// raises a conflict error when input.a and input.b are both true.
const tsTestRego = "package t\n\nx := 1 if input.a\nx := 2 if input.b\n"

// writeTestBundle writes the embedded constitution plus package t to a
// bundle directory.
func writeTestBundle(t *testing.T) string {
	t.Helper()
	return testenv.WriteConstitution(t, t.TempDir(), func(m map[string]any) {
		m["roots"] = []string{"acgs", "t"}
	}, map[string]string{"t/batch.rego": tsTestRego})
}

// installTSClient copies test/tsclient (package.json, package-lock.json,
// client.mjs) to a temporary directory and installs its pinned packages
// there with `npm ci`, so that concurrent runs never share a node_modules.
// It returns that directory and the pinned SDK version.
func installTSClient(t *testing.T, npm string) (string, string) {
	t.Helper()
	src := filepath.Join(testenv.ModuleRoot(t), "test", "tsclient")
	dir := t.TempDir()
	for _, f := range []string{"package.json", "package-lock.json", "client.mjs"} {
		b, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			if f == "package-lock.json" && os.IsNotExist(err) {
				continue
			}
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var pkg struct {
		Dependencies map[string]string `json:"dependencies"`
	}
	b, _ := os.ReadFile(filepath.Join(src, "package.json"))
	if err := json.Unmarshal(b, &pkg); err != nil {
		t.Fatalf("test/tsclient/package.json: %v", err)
	}
	version := pkg.Dependencies["@open-policy-agent/opa"]
	if version == "" || strings.ContainsAny(version, "^~*<> x") {
		t.Fatalf("test/tsclient/package.json must pin @open-policy-agent/opa to one version, got %q", version)
	}
	args := []string{"ci"}
	if _, err := os.Stat(filepath.Join(dir, "package-lock.json")); err != nil {
		args = []string{"install"}
	}
	args = append(args, "--no-audit", "--no-fund", "--prefer-offline", "--loglevel=error")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "npm_config_update_notifier=false")
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		msg := "npm " + strings.Join(args, " ") + " failed (is the npm registry reachable?): " + err.Error() + "\n" + string(out)
		if os.Getenv(testenv.RequireServicesEnv) == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return dir, version
}

type tsSummary struct {
	SDK        string `json:"sdk"`
	SDKVersion string `json:"sdk_version"`
	OK         bool   `json:"ok"`
	BatchCalls int    `json:"batch_calls"`
	Checks     []struct {
		Name  string `json:"name"`
		OK    bool   `json:"ok"`
		Error string `json:"error"`
	} `json:"checks"`
}

// TestOPATypeScriptClient runs the official OPA TypeScript SDK
// (@open-policy-agent/opa, the version pinned in test/tsclient) against the
// real service: single evaluation, evaluateDefault, and evaluateBatch over
// the Enterprise OPA batch API with its fallback to single requests off
// (200, 207 and 500 answers), all unchanged.
func TestOPATypeScriptClient(t *testing.T) {
	node := testenv.RequireBinary(t, "node", "nodejs")
	npm := testenv.RequireBinary(t, "npm", "npm")
	dir, version := installTSClient(t, npm)
	acgs := servicetest.Start(t, func(c *config.Config) {
		c.Policy.BundlePath = writeTestBundle(t)
		c.Policy.EvalTimeout = 10 * time.Second // a loaded machine must not turn a decision into a fail-closed error
	})

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "client.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"ACGS_URL="+acgs.URL,
		"ACGS_TEST_POLICY=t",
		"ACGS_REQUESTS_DIR="+filepath.Join(testenv.ModuleRoot(t), "testdata", "requests"),
	)
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	t.Logf("client.mjs summary:\n%s", stdout.String())
	if runErr != nil {
		t.Fatalf("client.mjs failed: %v\nstderr:\n%s", runErr, stderr.String())
	}

	var sum tsSummary
	if err := json.Unmarshal(stdout.Bytes(), &sum); err != nil {
		t.Fatalf("summary is not JSON: %v", err)
	}
	if !sum.OK || sum.SDK != "@open-policy-agent/opa" || sum.SDKVersion != version {
		t.Errorf("summary: ok=%v sdk=%s@%s, want ok with @open-policy-agent/opa@%s", sum.OK, sum.SDK, sum.SDKVersion, version)
	}
	passed := map[string]bool{}
	for _, c := range sum.Checks {
		if !c.OK {
			t.Errorf("check %q failed: %s", c.Name, c.Error)
		}
		passed[c.Name] = c.OK
	}
	for _, name := range []string{
		"evaluate: single decisions",
		"evaluateDefault: POST / answers the default decision",
		"evaluateBatch: fixtures through /v1/batch/data (no fallback)",
		"evaluateBatch: 100 distinct inputs keep their ids",
		"evaluateBatch: 207 mixed results",
		"evaluateBatch: 500 when every item fails",
	} {
		if !passed[name] {
			t.Errorf("check %q did not run or failed", name)
		}
	}
	// The batch calls really reached the batch API (no per-item fallback).
	byCode := batchRequestsByCode(t, acgs.URL)
	if total := byCode["200"] + byCode["207"] + byCode["500"]; total < sum.BatchCalls || byCode["207"] == 0 || byCode["500"] == 0 {
		t.Errorf("batch API requests by status %v, want %d in all with 207s and 500s", byCode, sum.BatchCalls)
	}
}

// batchRequestsByCode reads acgs_http_requests_total{handler="batch"} by status code.
func batchRequestsByCode(t *testing.T, base string) map[string]int {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]int{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "acgs_http_requests_total{") || !strings.Contains(line, `handler="batch"`) {
			continue
		}
		_, rest, _ := strings.Cut(line, `code="`)
		code, _, _ := strings.Cut(rest, `"`)
		fields := strings.Fields(line)
		v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		out[code] += int(v)
	}
	return out
}
