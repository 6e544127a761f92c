package remote_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/bundle"

	"github.com/acgs-lite/acgs/internal/remote"
	"github.com/acgs-lite/acgs/internal/testenv"
)

const hash = "cdd01ef066bc6cf2"

var (
	keysMu sync.Mutex
	keys   = map[int][2]string{}
)

// keyPair returns RSA key number n as PEM (private PKCS#1, public PKIX),
// generated once per test binary: generation is slow under the race detector.
func keyPair(tb testing.TB, n int) (priv, pub string) {
	tb.Helper()
	keysMu.Lock()
	defer keysMu.Unlock()
	if k, ok := keys[n]; ok {
		return k[0], k[1]
	}
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		tb.Fatal(err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		tb.Fatal(err)
	}
	priv = string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}))
	pub = string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}))
	keys[n] = [2]string{priv, pub}
	return priv, pub
}

// constitutionDir writes the embedded constitution to a temporary directory
// with its manifest's revision and constitutional hash replaced, plus extra
// files (path → content).
func constitutionDir(tb testing.TB, revision, chash string, extra map[string]string) string {
	tb.Helper()
	return testenv.WriteConstitution(tb, tb.TempDir(), func(m map[string]any) {
		m["revision"] = revision
		m["metadata"].(map[string]any)["constitutional_hash"] = chash
	}, extra)
}

func writeFile(p, content string) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return os.WriteFile(p, []byte(content), 0o644)
}

// bundleServer serves dir with the FileServer on a loopback port.
func bundleServer(tb testing.TB, dir string) string {
	tb.Helper()
	return bundleServerVia(tb, dir, func(fs http.Handler) http.Handler { return fs })
}

// bundleServerVia serves dir with the FileServer behind the handler wrap
// makes of it (a slow or counting server) on a loopback port.
func bundleServerVia(tb testing.TB, dir string, wrap func(http.Handler) http.Handler) string {
	tb.Helper()
	fsrv := &remote.FileServer{Dir: dir, Check: 20 * time.Millisecond}
	srv := httptest.NewServer(wrap(fsrv))
	tb.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
		fsrv.Close()
	})
	return srv.URL
}

// publish builds srcDir into serveDir/bundle.tar.gz.
func publish(tb testing.TB, srcDir, serveDir string, o remote.BuildOptions) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := remote.BuildFile(ctx, srcDir, filepath.Join(serveDir, "bundle.tar.gz"), o); err != nil {
		tb.Fatal(err)
	}
}

// opaConfig is an OPA configuration polling url/bundle.tar.gz every 1-2s,
// verified with pub when it is set; extra is appended to the bundle block.
func opaConfig(url, pub, extra string) []byte {
	var b strings.Builder
	b.WriteString("services:\n  bundles:\n    url: " + url + "\n")
	if pub != "" {
		b.WriteString("keys:\n  constitution:\n    algorithm: RS256\n    key: |\n")
		for _, line := range strings.Split(strings.TrimSpace(pub), "\n") {
			b.WriteString("      " + line + "\n")
		}
	}
	b.WriteString("bundles:\n  acgs:\n    service: bundles\n    resource: bundle.tar.gz\n")
	b.WriteString("    polling:\n      min_delay_seconds: 1\n      max_delay_seconds: 2\n")
	if pub != "" {
		b.WriteString("    signing:\n      keyid: constitution\n")
	}
	b.WriteString(extra)
	return []byte(b.String())
}

// eventually polls cond every 20ms until it holds or timeout passes.
func eventually(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("after %s: %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// writeUncheckedBundle archives dir with OPA's bundle reader and writer
// only (parsing, no compilation), for bundles that `opa build` would refuse.
func writeUncheckedBundle(tb testing.TB, dir, out string) {
	tb.Helper()
	b, err := bundle.NewCustomReader(bundle.NewDirectoryLoader(dir)).Read()
	if err != nil {
		tb.Fatal(err)
	}
	var buf bytes.Buffer
	if err := bundle.NewWriter(&buf).Write(b); err != nil {
		tb.Fatal(err)
	}
	if err := remote.WriteFileAtomic(out, buf.Bytes()); err != nil {
		tb.Fatal(err)
	}
}

// splitConstitution is the constitution split into two bundles that are
// one policy only together: "policy" (the Rego) and "config" (its data).
type splitConstitution struct{ policy, config string }

func newSplitConstitution(tb testing.TB) splitConstitution {
	tb.Helper()
	full := constitutionDir(tb, "unused", hash, nil)
	sc := splitConstitution{policy: tb.TempDir(), config: tb.TempDir()}
	files := map[string]string{}
	for _, f := range []string{"main.rego", "constitutional.rego", "data_access.rego", "evolution.rego", "text.rego"} {
		files[filepath.Join(sc.policy, "acgs", f)] = filepath.Join(full, "acgs", f)
	}
	files[filepath.Join(sc.config, "acgs", "config", "data.json")] = filepath.Join(full, "acgs", "config", "data.json")
	for dst, src := range files {
		b, err := os.ReadFile(src)
		if err != nil {
			tb.Fatal(err)
		}
		if err := writeFile(dst, string(b)); err != nil {
			tb.Fatal(err)
		}
	}
	return sc
}

// publish builds bundle name ("policy" or "config") with revision rev and
// constitutional hash chash into serveDir/name.tar.gz.
func (sc splitConstitution) publish(tb testing.TB, name, rev, chash, serveDir string) {
	tb.Helper()
	dir, roots := sc.policy, []string{"acgs/main", "acgs/constitutional", "acgs/data", "acgs/evolution", "acgs/text"}
	if name == "config" {
		dir, roots = sc.config, []string{"acgs/config"}
	}
	m, err := json.Marshal(map[string]any{"revision": rev, "roots": roots, "metadata": map[string]any{"constitutional_hash": chash}})
	if err != nil {
		tb.Fatal(err)
	}
	if err := writeFile(filepath.Join(dir, ".manifest"), string(m)); err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := remote.BuildFile(ctx, dir, filepath.Join(serveDir, name+".tar.gz"), remote.BuildOptions{}); err != nil {
		tb.Fatal(err)
	}
}

// restartDuringOutage stops r, then srvs (its bundle servers: the outage),
// and starts a source with cfg again, into a new engine it returns: what
// that engine holds is what the persisted bundles gave it.
func restartDuringOutage(tb testing.TB, r *remote.Remote, cfg []byte, srvs ...*stoppableServer) *resultEngine {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	r.Stop(ctx)
	cancel()
	for _, s := range srvs {
		s.stop()
	}
	e := newResultEngine(tb)
	startRemoteWith(tb, remote.Options{Config: cfg, Target: e})
	return e
}
