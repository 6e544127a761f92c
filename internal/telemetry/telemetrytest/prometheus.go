package telemetrytest

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/acgs-lite/acgs/internal/testenv"
)

// prometheusStartTimeout bounds how long StartPrometheus waits for the server
// to report ready; it is a failure bound, not a measurement.
const prometheusStartTimeout = 60 * time.Second

// StartPrometheus runs the real Prometheus server (Debian package
// prometheus) on a free loopback port, scraping scrapeTargets (host:port,
// path /metrics, job "acgs") every second and evaluating ruleFiles every
// second, with its data in a temporary directory. It returns the base URL of
// its HTTP API and stops the server when tb ends. Without the binary the
// test is skipped, or failed under ACGS_REQUIRE_SERVICES=1.
func StartPrometheus(tb testing.TB, scrapeTargets []string, ruleFiles ...string) string {
	tb.Helper()
	bin := testenv.RequireBinary(tb, "prometheus", "prometheus")
	dir := tb.TempDir()

	var cfg strings.Builder
	cfg.WriteString("global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n")
	if len(ruleFiles) > 0 {
		cfg.WriteString("rule_files:\n")
		for _, f := range ruleFiles {
			abs, err := filepath.Abs(f)
			if err != nil {
				tb.Fatal(err)
			}
			fmt.Fprintf(&cfg, "  - %q\n", abs)
		}
	}
	cfg.WriteString("scrape_configs:\n  - job_name: acgs\n    metrics_path: /metrics\n    static_configs:\n      - targets:\n")
	for _, t := range scrapeTargets {
		fmt.Fprintf(&cfg, "          - %q\n", t)
	}
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg.String()), 0o600); err != nil {
		tb.Fatal(err)
	}

	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(tb)))
	logPath := filepath.Join(dir, "prometheus.log")
	logf, err := os.Create(logPath)
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(bin,
		"--config.file="+cfgPath,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
		"--log.level=warn",
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		tb.Fatalf("starting prometheus: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	tb.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		logf.Close()
	})

	base := "http://" + addr
	deadline := time.Now().Add(prometheusStartTimeout)
	for {
		select {
		case err := <-exited:
			tb.Fatalf("prometheus exited before ready: %v\n%s", err, tail(logPath))
		default:
		}
		resp, err := http.Get(base + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return base
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("prometheus not ready after %v\n%s", prometheusStartTimeout, tail(logPath))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// freePort asks the kernel for a free loopback port. Another process could
// take it before Prometheus binds it; on this single-user test machine that
// is rare enough, and the start then fails loudly.
func freePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// Sample is one element of an instant-query result.
type Sample struct {
	Metric map[string]string
	Value  float64
}

// Query runs an instant PromQL query against the Prometheus at apiURL.
func Query(ctx context.Context, apiURL, expr string) ([]Sample, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, apiURL+"/api/v1/query?query="+url.QueryEscape(expr), nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, fmt.Errorf("query %q: %w", expr, err)
	}
	if body.Status != "success" {
		return nil, fmt.Errorf("query %q: %s", expr, body.Error)
	}
	if body.Data.ResultType != "vector" {
		return nil, fmt.Errorf("query %q: result type %s, want vector", expr, body.Data.ResultType)
	}
	out := make([]Sample, 0, len(body.Data.Result))
	for _, r := range body.Data.Result {
		s, _ := r.Value[1].(string)
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, fmt.Errorf("query %q: value %v: %w", expr, r.Value[1], err)
		}
		out = append(out, Sample{Metric: r.Metric, Value: v})
	}
	return out, nil
}

// WaitQuery repeats an instant query until it returns at least one sample or
// timeout passes (a failure bound for scrapes and rule evaluations to happen,
// not a measurement), and fails tb in the latter case.
func WaitQuery(tb testing.TB, apiURL, expr string, timeout time.Duration) []Sample {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var lastErr error
	for {
		got, err := Query(ctx, apiURL, expr)
		if err == nil && len(got) > 0 {
			return got
		}
		lastErr = err
		select {
		case <-ctx.Done():
			tb.Fatalf("query %q returned nothing within %v (last error: %v)", expr, timeout, lastErr)
			return nil
		case <-time.After(200 * time.Millisecond):
		}
	}
}
