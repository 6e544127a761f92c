package cli

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// perfRun runs the acgs command line and returns its output (stdout and
// stderr), exit code (as Execute maps it) and error. Every test's runner
// goes through it.
func perfRun(t *testing.T, args ...string) (string, int, error) {
	t.Helper()
	root := NewRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	return out.String(), exitCode(err), err
}

// perfServeFile serves a fixture file on loopback (a metrics endpoint
// stand-in for the slo command's parser, not a stand-in for the service).
func perfServeFile(t *testing.T, path string) string {
	t.Helper()
	body, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &httptest.Server{Listener: l, Config: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		_, _ = w.Write(body)
	})}}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestSLOCommandOnFixture(t *testing.T) {
	url := perfServeFile(t, filepath.Join("..", "loadgen", "testdata", "metrics.txt")) + "/metrics"
	t.Setenv("PERFORMANCE_TARGET_P99_MS", "")
	for _, tc := range []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"defaults: met with warnings", nil, 0, []string{"p99 latency", "4.4 ms", "WARNING", "0 violation(s), 3 warning(s)"}},
		{"p99 budget of 4 ms violated", []string{"--p99-ms", "4"}, 1, []string{"VIOLATION"}},
		{"hit rate 98% violated", []string{"--cache-hit-rate", "0.98"}, 1, []string{"cache hit rate", "VIOLATION"}},
		{"json", []string{"--json", "--p99-ms", "10", "--error-rate", "0.05", "--cache-hit-rate", "0.5"}, 0, []string{`"p99_ms": 4.4`, `"status": "ok"`}},
		{"renamed metric has no data", []string{"--duration-metric", "other_seconds"}, 1, []string{"NO-DATA"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, code, err := perfRun(t, append([]string{"slo", "--metrics-url", url}, tc.args...)...)
			if code != tc.code {
				t.Fatalf("exit %d (%v), want %d\n%s", code, err, tc.code, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
	t.Run("env sets the p99 objective", func(t *testing.T) {
		t.Setenv("PERFORMANCE_TARGET_P99_MS", "4")
		if _, code, _ := perfRun(t, "slo", "--metrics-url", url); code != 1 {
			t.Fatalf("exit %d with PERFORMANCE_TARGET_P99_MS=4, want 1", code)
		}
	})
}

func perfBenchFile(t *testing.T, dir, name string, seed uint64, nsCenter float64) string {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 99))
	var b strings.Builder
	for range 10 {
		fmt.Fprintf(&b, "BenchmarkHTTP/scenario=safe_action/c=10\t1000\t%.0f ns/op\t%.1f req/s\n",
			nsCenter*(1+0.01*rng.NormFloat64()), 1e9/nsCenter*10*(1+0.01*rng.NormFloat64()))
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRegressCommands(t *testing.T) {
	dir := t.TempDir()
	store := filepath.Join(dir, "history")
	base := perfBenchFile(t, dir, "base.txt", 1, 100000)
	same := perfBenchFile(t, dir, "same.txt", 2, 100000)
	slower := perfBenchFile(t, dir, "slower.txt", 3, 120000)
	regressEnv(t)

	if out, code, err := perfRun(t, "regress", "compare", "--store", store, "--input", base, "--allow-empty-history"); code != 0 || !strings.Contains(out, "no baseline") {
		t.Fatalf("compare with an empty store, allowed: exit %d %v\n%s", code, err, out)
	}
	for _, rec := range [][]string{
		{"--input", base, "--commit", "aaa", "--time", "2026-11-01T10:00:00Z"},
		{"--input", same, "--commit", "bbb", "--time", "2026-11-20T10:00:00Z"},
	} {
		if out, code, err := perfRun(t, append([]string{"regress", "record", "--store", store}, rec...)...); code != 0 {
			t.Fatalf("record: exit %d %v\n%s", code, err, out)
		}
	}
	md := filepath.Join(dir, "report.md")
	for _, tc := range []struct {
		name string
		args []string
		env  string
		code int
		want string
	}{
		{"noise is no regression", []string{"--input", same}, "", 0, "0 regression(s)"},
		{"20% slower regresses", []string{"--input", slower, "--markdown", md}, "", 1, "regression"},
		{"20% slower is within a 25% threshold", []string{"--input", slower}, "25", 0, "within threshold"},
		{"baseline by commit", []string{"--input", slower, "--baseline-commit", "aaa"}, "", 1, "_aaa.txt"},
		{"bad input", []string{"--input", filepath.Join(dir, "missing.txt")}, "", 2, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("REGRESSION_THRESHOLD_PERCENT", tc.env)
			out, code, err := perfRun(t, append([]string{"regress", "compare", "--store", store}, tc.args...)...)
			if code != tc.code {
				t.Fatalf("exit %d (%v), want %d\n%s", code, err, tc.code, out)
			}
			if !strings.Contains(out, tc.want) {
				t.Fatalf("output lacks %q:\n%s", tc.want, out)
			}
		})
	}
	b, err := os.ReadFile(md)
	if err != nil || !strings.Contains(string(b), "regression(s)** against") {
		t.Fatalf("markdown report: %v\n%s", err, b)
	}
	out, code, err := perfRun(t, "regress", "trend", "--store", store, "--days", "36500", "--markdown", filepath.Join(dir, "trend.md"))
	if code != 0 || !strings.Contains(out, "2 record(s)") || !strings.Contains(out, "HTTP/scenario=safe_action/c=10") {
		t.Fatalf("trend: exit %d %v\n%s", code, err, out)
	}
}

// A benchmark of error responses is not a benchmark: bench must fail.
func TestBenchFailsOnFailedRequests(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + l.Addr().String()
	l.Close() // nothing listens there: every request fails to connect
	out, code, err := perfRun(t, "bench", "--url", url, "--requests", "3", "--concurrency", "1", "--cold-samples", "1")
	if code != 1 || err == nil || !strings.Contains(err.Error(), "requests failed") {
		t.Fatalf("exit %d err %v, want exit 1 naming the failed requests\n%s", code, err, out)
	}
}

func TestLoadAndBenchRefuseBadTargets(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.json")
	if err := os.WriteFile(bad, []byte(`{"name": "x", "path": "/p", "scenarios": [{"name": "s", "weight": 0, "request": {}}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"remote host", []string{"load", "--host", "http://10.1.2.3:8004", "--run-time", "1s"}, "not a loopback address"},
		{"remote bench", []string{"bench", "--url", "http://192.168.0.1:8004"}, "not a loopback address"},
		{"no host", []string{"load"}, "--host is required"},
		{"bad workload", []string{"load", "--host", "http://127.0.0.1:1", "--workload", bad}, "weight must be > 0"},
		{"open and closed flags mixed", []string{"load", "--host", "http://127.0.0.1:1", "--rate", "10", "--users", "3"}, "cannot be combined"},
		{"open-loop flags without --rate", []string{"load", "--host", "http://127.0.0.1:1", "--duration", "5s"}, "for the open loop"},
		{"bench formats exclusive", []string{"bench", "--json", "--benchfmt"}, "exclusive"},
		{"slo needs one source", []string{"slo"}, "exactly one"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, code, err := perfRun(t, tc.args...)
			if code == 0 || err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("exit %d err %v, want an error containing %q", code, err, tc.want)
			}
		})
	}
}
