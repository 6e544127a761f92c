package service_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/acgs-lite/acgs/internal/config"
	"github.com/acgs-lite/acgs/internal/remote"
	"github.com/acgs-lite/acgs/internal/service"
	"github.com/acgs-lite/acgs/internal/testenv"
)

const testHash = config.DefaultConstitutionalHash

// signingKeys returns a fresh RSA key pair as PEM.
func signingKeys(tb testing.TB) (priv, pub string) {
	tb.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		tb.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		tb.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})),
		string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

// publishConstitution builds the embedded constitution (without its Rego
// tests) with the given revision and hash, signed with priv, into
// serveDir/bundle.tar.gz.
func publishConstitution(tb testing.TB, serveDir, revision, chash, priv string) {
	tb.Helper()
	dir := testenv.WriteConstitution(tb, tb.TempDir(), func(m map[string]any) {
		m["revision"] = revision
		m["metadata"].(map[string]any)["constitutional_hash"] = chash
	}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := remote.BuildFile(ctx, dir, filepath.Join(serveDir, "bundle.tar.gz"), remote.BuildOptions{SigningKey: priv}); err != nil {
		tb.Fatal(err)
	}
}

// writeOPAConfig writes an OPA configuration polling url every 1-2s for a
// bundle signed by pub's key, and returns its path.
func writeOPAConfig(tb testing.TB, url, pub string) string {
	tb.Helper()
	var b strings.Builder
	b.WriteString("services:\n  bundles:\n    url: " + url + "\n")
	b.WriteString("keys:\n  constitution:\n    algorithm: RS256\n    key: |\n")
	for _, l := range strings.Split(strings.TrimSpace(pub), "\n") {
		b.WriteString("      " + l + "\n")
	}
	b.WriteString("bundles:\n  acgs:\n    service: bundles\n    resource: bundle.tar.gz\n" +
		"    polling:\n      min_delay_seconds: 1\n      max_delay_seconds: 2\n    signing:\n      keyid: constitution\n")
	p := filepath.Join(tb.TempDir(), "opa-config.yaml")
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		tb.Fatal(err)
	}
	return p
}

// bundleServer serves a fresh directory of bundles on loopback for the
// test's life: the directory, and the URL to configure.
func bundleServer(tb testing.TB) (dir, url string) {
	tb.Helper()
	dir = tb.TempDir()
	fsrv := &remote.FileServer{Dir: dir, Check: 20 * time.Millisecond}
	bs := httptest.NewServer(fsrv)
	tb.Cleanup(func() { bs.CloseClientConnections(); bs.Close(); fsrv.Close() })
	return dir, bs.URL
}

// runService starts the real wiring without waiting for readiness (which a
// remote-configured instance lacks until its first bundle).
func runService(tb testing.TB, cfg config.Config) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	cfg.Server.Port = ln.Addr().(*net.TCPAddr).Port
	ctx, cancel := context.WithCancel(context.Background())
	svc, err := service.New(ctx, cfg, service.Options{LogOutput: io.Discard, Listener: ln})
	if err != nil {
		cancel()
		ln.Close()
		tb.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			tb.Error("service did not stop")
		}
	})
	return "http://" + ln.Addr().String()
}

func httpDo(tb testing.TB, method, url, token string, body []byte) (int, map[string]any, string) {
	tb.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var doc map[string]any
	_ = json.Unmarshal(raw, &doc)
	return resp.StatusCode, doc, string(raw)
}

func waitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("after %s: %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// reloadFailures reads acgs_policy_reloads_total{result="failure"}.
func reloadFailures(tb testing.TB, base string) float64 {
	tb.Helper()
	_, _, text := httpDo(tb, http.MethodGet, base+"/metrics", "", nil)
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, `acgs_policy_reloads_total{result="failure"}`) {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			return v
		}
	}
	return 0
}

// TestServeRemoteBundles runs `acgs serve` with CONFIG_FILE: unready and
// failing closed until the bundle server has a bundle, then answering from
// it; a refused bundle keeps the old one serving and shows in health and
// metrics; a new one replaces it at the next poll.
func TestServeRemoteBundles(t *testing.T) {
	priv, pub := signingKeys(t)
	serveDir, bundlesURL := bundleServer(t)

	cfg := config.Default()
	cfg.Log.Level = "error"
	cfg.Server.Host = "127.0.0.1"
	cfg.Policy.ConfigFile = writeOPAConfig(t, bundlesURL, pub)
	cfg.AdminTok = []string{"admin-token-for-tests"}
	// Plans are not what this test is about, and building them at every
	// activation is slow under the race detector.
	cfg.Policy.PartialEval = false
	base := runService(t, cfg)
	safe, err := os.ReadFile(filepath.Join("..", "..", "testdata", "requests", "safe.json"))
	if err != nil {
		t.Fatal(err)
	}
	decide := func() (int, map[string]any) {
		code, doc, _ := httpDo(t, http.MethodPost, base+"/v1/data/acgs/main/decision", "", safe)
		return code, doc
	}

	// No bundle published yet: the bundle server answers 404.
	waitFor(t, 10*time.Second, "the 404 reported as the last reload error", func() bool {
		_, doc, _ := httpDo(t, http.MethodGet, base+"/v1/data/acgs/main/health", "", nil)
		msg, _ := doc["last_reload_error"].(string)
		return strings.Contains(msg, "404")
	})
	for _, p := range []string{"/health", "/health/ready"} {
		if code, _, _ := httpDo(t, http.MethodGet, base+p, "", nil); code == http.StatusOK {
			t.Errorf("%s answered 200 before any bundle was active", p)
		}
	}
	if code, doc := decide(); code == http.StatusOK && doc["allow"] == true {
		t.Fatalf("allowed with no active policy: %v", doc)
	}

	publishConstitution(t, serveDir, "remote-1", testHash, priv)
	waitFor(t, 90*time.Second, "ready on remote-1", func() bool {
		code, _, _ := httpDo(t, http.MethodGet, base+"/health/ready", "", nil)
		return code == http.StatusOK
	})
	if code, doc := decide(); code != http.StatusOK || doc["policy_revision"] != "remote-1" || doc["allow"] != true {
		t.Fatalf("decision %d %v, want allow from remote-1", code, doc)
	}

	failures := reloadFailures(t, base)
	publishConstitution(t, serveDir, "remote-2", "0123456789abcdef", priv)
	// The engine records the error before it reports the failure
	// (OnReload, which counts it): wait for both.
	waitFor(t, 90*time.Second, "the wrong hash reported in health and counted as a reload failure", func() bool {
		_, doc, _ := httpDo(t, http.MethodGet, base+"/v1/data/acgs/main/health", "", nil)
		msg, _ := doc["last_reload_error"].(string)
		return strings.Contains(msg, "constitutional hash 0123456789abcdef") && reloadFailures(t, base) > failures
	})
	if code, doc := decide(); code != http.StatusOK || doc["policy_revision"] != "remote-1" {
		t.Fatalf("decision %d %v after a refused bundle, want remote-1 still", code, doc)
	}

	// With polled bundles, the admin reload hands a refused bundle to the
	// engine again (0d6f3ff: a refusal for a passing reason would
	// otherwise stay until the server publishes another bundle): refused
	// again (500, as any refused bundle), and remote-1 stays.
	code, _, raw := httpDo(t, http.MethodPost, base+"/v1/admin/reload", "admin-token-for-tests", nil)
	if code != http.StatusInternalServerError || !strings.Contains(raw, "constitutional hash 0123456789abcdef") {
		t.Fatalf("admin reload with a refused polled bundle: %d %s, want 500 naming the hash", code, raw)
	}
	if code, doc := decide(); code != http.StatusOK || doc["policy_revision"] != "remote-1" {
		t.Fatalf("decision %d %v after a reload refused again, want remote-1 still", code, doc)
	}
	publishConstitution(t, serveDir, "remote-3", testHash, priv)
	waitFor(t, 90*time.Second, "remote-3 active", func() bool {
		_, doc := decide()
		return doc["policy_revision"] == "remote-3"
	})
	_, doc, _ := httpDo(t, http.MethodGet, base+"/v1/data/acgs/main/health", "", nil)
	if msg, ok := doc["last_reload_error"]; ok {
		t.Errorf("last_reload_error %v after a good bundle", msg)
	}
	// With nothing refused, polled bundles are not downloaded on demand
	// (OPA's downloader cannot be triggered while it polls): the admin
	// reload says so and changes nothing.
	code, _, raw = httpDo(t, http.MethodPost, base+"/v1/admin/reload", "admin-token-for-tests", nil)
	if code != http.StatusBadRequest || !strings.Contains(raw, "trigger: manual") {
		t.Fatalf("admin reload with polled bundles: %d %s, want 400 naming trigger: manual", code, raw)
	}
}

// TestServeRefusesBadConfigFile checks CONFIG_FILE problems stop the start.
func TestServeRefusesBadConfigFile(t *testing.T) {
	dir := t.TempDir()
	noBundles := filepath.Join(dir, "empty.yaml")
	if err := os.WriteFile(noBundles, []byte("services:\n  s:\n    url: http://127.0.0.1:1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, path, want string }{
		{"missing file", filepath.Join(dir, "nope.yaml"), "no such file"},
		{"no bundles", noBundles, "configures no bundles"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config.Default()
			cfg.Policy.ConfigFile = tc.path
			_, err := service.New(context.Background(), cfg, service.Options{LogOutput: io.Discard})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// TestStartPolicyWithoutRun: acgs gateway runs the engine without the HTTP
// API, so StartPolicy alone must download, verify and activate remote
// bundles (CONFIG_FILE), with every decision denied until the first one.
func TestStartPolicyWithoutRun(t *testing.T) {
	priv, pub := signingKeys(t)
	serveDir, bundlesURL := bundleServer(t)

	cfg := config.Default()
	cfg.Log.Level = "error"
	cfg.Policy.ConfigFile = writeOPAConfig(t, bundlesURL, pub)
	cfg.Policy.PartialEval = false
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	svc, err := service.New(ctx, cfg, service.Options{LogOutput: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	if err := svc.StartPolicy(ctx); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join("..", "..", "testdata", "requests", "safe.json"))
	if err != nil {
		t.Fatal(err)
	}
	var safe map[string]any
	if err := json.Unmarshal(raw, &safe); err != nil {
		t.Fatal(err)
	}
	if d, err := svc.Engine.Decide(ctx, "acgs/main/decision", safe); err == nil {
		t.Fatalf("decided with no bundle active: %v", d.Result)
	}
	publishConstitution(t, serveDir, "remote-gw", testHash, priv)
	waitFor(t, 90*time.Second, "remote-gw active", func() bool {
		info, ok := svc.Engine.Info()
		return ok && info.Revision == "remote-gw"
	})
	d, err := svc.Engine.Decide(ctx, "acgs/main/decision", safe)
	if err != nil || d.Result.(map[string]any)["allow"] != true {
		t.Fatalf("safe request under the remote bundle: %v (%v)", d.Result, err)
	}
}
