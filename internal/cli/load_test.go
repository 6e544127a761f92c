package cli

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/acgs-lite/acgs/internal/service/servicetest"
)

// TestLoadFixedRequest runs `acgs load --request` against a loopback stand-in
// that answers allow and records what it was sent: every request is the file,
// byte for byte, at --path; the profile flag writes a profile.
func TestLoadFixedRequest(t *testing.T) {
	dir := t.TempDir()
	req := filepath.Join(dir, "req.json")
	body := "{\n  \"type\": \"constitutional_evaluation\",\n  \"action\": \"data.read_public\"\n}\n"
	if err := os.WriteFile(req, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[string]int{}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &httptest.Server{Listener: l, Config: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		seen[r.Method+" "+r.URL.Path+" "+string(b)]++
		mu.Unlock()
		_, _ = io.WriteString(w, `{"allow":true}`)
	})}}
	srv.Start()
	t.Cleanup(srv.Close)
	out := filepath.Join(dir, "out.json")
	prof := filepath.Join(dir, "cpu.pprof")
	text, code, err := perfRun(t, "load", "--host", srv.URL, "--request", req, "--path", "/v1/x", "--expect", "allow",
		"--rate", "200", "--duration", "250ms", "-q", "--json", out, "--cpuprofile", prof,
		"--p99-ms", "1e9") // no timing is asserted
	if code != 0 || err != nil {
		t.Fatalf("exit %d: %v\n%s", code, err, text)
	}
	if len(seen) != 1 || seen["POST /v1/x "+body] != 50 {
		t.Fatalf("server saw %v, want the file 50 times", seen)
	}
	var res struct {
		Workload   string   `json:"workload"`
		Compliance *float64 `json:"constitutional_compliance"`
		SendLag    *struct {
			Count int64 `json:"count"`
		} `json:"send_lag"`
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	if res.Workload != "fixed" || res.Compliance == nil || *res.Compliance != 1 || res.SendLag == nil || res.SendLag.Count != 50 {
		t.Fatalf("result %s", b)
	}
	if st, err := os.Stat(prof); err != nil || st.Size() == 0 {
		t.Fatalf("no CPU profile written: %v", err)
	}
	// Without --expect nothing judges compliance, and no objective fails
	// for want of it (review: every such run violated its SLO). A timed
	// closed loop, whose objectives are an open loop's but the achieved
	// rate, which a loaded machine can fail (CI at 78a162a: 130 of 200
	// req/s in 100 ms).
	if text, code, err := perfRun(t, "load", "--host", srv.URL, "--request", req, "--path", "/v1/x",
		"--users", "2", "--run-time", "100ms", "-q", "--p99-ms", "1e9"); code != 0 || err != nil {
		t.Fatalf("without --expect: exit %d: %v\n%s", code, err, text)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--workload", req}, "cannot be combined"},
		{[]string{"--expect", "maybe"}, "want allow or deny"},
	} {
		args := append([]string{"load", "--host", srv.URL, "--request", req, "--rate", "10", "--duration", "100ms", "-q"}, tc.args...)
		if _, code, err := perfRun(t, args...); code == 0 || err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: exit %d, %v; want an error naming %q", tc.args, code, err, tc.want)
		}
	}
}

// loadAgainstService starts the real service (in process) on loopback and writes a request
// file for acgs load --request that the constitution allows
// (testdata/requests/safe.json): the URL and the file's path.
func loadAgainstService(t *testing.T) (string, string) {
	t.Helper()
	req := filepath.Join("..", "..", "testdata", "requests", "safe.json")
	in := servicetest.Start(t)
	return in.URL, req
}

// acgs load's objectives go through loadgen.LoadSLO.Validate before the
// run, the error naming the flag: a NaN --max-error-rate passed a run of
// failures, a NaN or negative --p99-ms or --min-rps turned the objective
// off, and a --warn-fraction outside (0, 1] silently became 0.8.
//
// A PERFORMANCE_TARGET_P99_MS that is set but is not a finite latency > 0 is
// refused before the run too, naming the variable and its value: it fell
// back to 5 ms, so a typo gated on another objective than the one set (and
// "NaN" or "-1" on the default without a word).
func TestLoadRejectsBadObjectives(t *testing.T) {
	url, req := loadAgainstService(t)
	for _, tc := range []struct {
		name string
		env  string // PERFORMANCE_TARGET_P99_MS
		args []string
		want string // in the error; "" for a pass
	}{
		{"control: loose objectives", "", []string{"--p99-ms", "1e9"}, ""},
		{"p99 NaN", "", []string{"--p99-ms", "NaN"}, "--p99-ms NaN"},
		{"p99 Inf", "", []string{"--p99-ms", "Inf"}, "--p99-ms +Inf"},
		{"p99 negative", "", []string{"--p99-ms", "-1"}, "--p99-ms -1"},
		{"error rate NaN", "", []string{"--p99-ms", "1e9", "--max-error-rate", "NaN"}, "--max-error-rate NaN"},
		{"error rate in percent", "", []string{"--p99-ms", "1e9", "--max-error-rate", "5"}, "--max-error-rate 5"},
		{"shed rate negative", "", []string{"--p99-ms", "1e9", "--max-shed-rate", "-0.01"}, "--max-shed-rate -0.01"},
		{"min rps NaN", "", []string{"--p99-ms", "1e9", "--min-rps", "NaN"}, "--min-rps NaN"},
		{"min rps negative", "", []string{"--p99-ms", "1e9", "--min-rps", "-5"}, "--min-rps -5"},
		{"compliance NaN", "", []string{"--p99-ms", "1e9", "--expect", "allow", "--min-compliance", "NaN"}, "--min-compliance NaN"},
		{"warn fraction above 1", "", []string{"--p99-ms", "1e9", "--warn-fraction", "80"}, "--warn-fraction 80"},
		{"warn fraction 0", "", []string{"--p99-ms", "1e9", "--warn-fraction", "0"}, "--warn-fraction 0"},
		{"env: a loose target", "1e9", nil, ""},
		{"env: spaces and a CR trimmed, as the service's configuration does", " 1e9\r", nil, ""},
		{"env: not a number", "five", nil, `PERFORMANCE_TARGET_P99_MS="five"`},
		{"env: unit in the value", "5ms", nil, `PERFORMANCE_TARGET_P99_MS="5ms"`},
		{"env: negative", "-1", nil, `PERFORMANCE_TARGET_P99_MS="-1"`},
		{"env: zero", "0", nil, `PERFORMANCE_TARGET_P99_MS="0"`},
		{"env: NaN", "NaN", nil, `PERFORMANCE_TARGET_P99_MS="NaN"`},
		{"env: Inf", "Inf", nil, `PERFORMANCE_TARGET_P99_MS="Inf"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("PERFORMANCE_TARGET_P99_MS", tc.env)
			args := append([]string{"load", "--host", url, "--request", req, "--path", "/v1/data/acgs/main/decision",
				"--users", "1", "--run-time", "50ms", "-q"}, tc.args...)
			out, code, err := perfRun(t, args...)
			if tc.want == "" {
				if code != 0 || err != nil {
					t.Fatalf("exit %d (%v), want 0\n%s", code, err, out)
				}
				return
			}
			if code != 1 || err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("exit %d, error %v: want exit 1 naming %s\n%s", code, err, tc.want, out)
			}
			if strings.Contains(out, "OBJECTIVE") {
				t.Fatalf("the run went ahead before the refusal:\n%s", out)
			}
		})
	}
}
