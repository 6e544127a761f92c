package remote_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/bundle"

	"github.com/acgs-lite/acgs/internal/engine"
	"github.com/acgs-lite/acgs/internal/remote"
	"github.com/acgs-lite/acgs/internal/testenv"
)

// fleetEngine is an engine with no policy yet, as `acgs serve` starts one
// with CONFIG_FILE, counting reload results as the metrics do.
type fleetEngine struct {
	*engine.Engine
	successes, failures atomic.Int64
}

func newEngine(tb testing.TB) *fleetEngine {
	tb.Helper()
	fe := &fleetEngine{}
	e, err := engine.New(context.Background(), nil, engine.Options{
		ConstitutionalHash: hash, EvalTimeout: time.Second, Logger: testLogger(tb),
		OnReload: func(result string, _ engine.Info, _ error) {
			if result == "success" {
				fe.successes.Add(1)
			} else {
				fe.failures.Add(1)
			}
		},
	})
	if err != nil {
		tb.Fatal(err)
	}
	fe.Engine = e
	return fe
}

func (fe *fleetEngine) revision() string {
	inf, _ := fe.Info()
	return inf.Revision
}

func (fe *fleetEngine) lastError() string {
	inf, _ := fe.Info()
	if inf.LastError == nil {
		return ""
	}
	return inf.LastError.Error()
}

// allowSafe decides the safe request of testdata and returns the decision.
func (fe *fleetEngine) decideSafe(tb testing.TB) engine.Decision {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "requests", "safe.json"))
	if err != nil {
		tb.Fatal(err)
	}
	var in any
	if err := json.Unmarshal(b, &in); err != nil {
		tb.Fatal(err)
	}
	d, err := fe.Decide(context.Background(), "acgs/main/decision", in)
	if err != nil {
		tb.Fatalf("deciding the safe request: %v", err)
	}
	if allow, _ := d.Result.(map[string]any)["allow"].(bool); !allow {
		tb.Fatalf("safe request denied under revision %s: %v", d.Revision, d.Result)
	}
	return d
}

// testLogger logs into the test's output (shown with -v or on failure).
func testLogger(tb testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tb.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
}

func startRemote(tb testing.TB, e *fleetEngine, cfg []byte) *remote.Remote {
	tb.Helper()
	return startRemoteWith(tb, remote.Options{Config: cfg, Target: e})
}

// startRemoteWith starts a source with opts, named and logged as
// startRemote's are.
func startRemoteWith(tb testing.TB, opts remote.Options) *remote.Remote {
	tb.Helper()
	opts.Name, opts.ID, opts.Logger = "test-config.yaml", "test", testLogger(tb)
	r, err := remote.New(opts)
	if err != nil {
		tb.Fatalf("remote.New: %v\nconfig:\n%s", err, opts.Config)
	}
	if err := r.Start(context.Background()); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r.Stop(ctx)
	})
	return r
}

const poll = "    polling:\n      min_delay_seconds: 1\n      max_delay_seconds: 2\n"

// TestRemoteSignedBundles drives one instance through the bundle server's
// publications: each refused bundle (bad signature, no signature, wrong
// constitutional hash, Rego that does not compile) leaves the last good
// revision answering and is reported as the last reload error and a failure;
// a good one replaces it and clears the error.
func TestRemoteSignedBundles(t *testing.T) {
	priv, pub := keyPair(t, 0)
	otherPriv, _ := keyPair(t, 1)
	serveDir := t.TempDir()
	url := bundleServer(t, serveDir)
	publish(t, constitutionDir(t, "r1", hash, nil), serveDir, remote.BuildOptions{SigningKey: priv})

	e := newEngine(t)
	if _, ok := e.Info(); ok {
		t.Fatal("engine active before any remote bundle")
	}
	startRemote(t, e, opaConfig(url, pub, poll))
	eventually(t, 10*time.Second, "revision r1 active", func() bool { return e.revision() == "r1" })
	if d := e.decideSafe(t); d.Revision != "r1" {
		t.Fatalf("decision revision %q, want r1", d.Revision)
	}

	steps := []struct {
		name     string
		dir      string
		opts     remote.BuildOptions
		wantRev  string // active after the step
		wantErr  string // in the last reload error; "" = none
		failures bool   // a failure must have been counted
	}{
		{"signed by another key", constitutionDir(t, "r2", hash, nil), remote.BuildOptions{SigningKey: otherPriv}, "r1", "verif", true},
		{"unsigned", constitutionDir(t, "r3", hash, nil), remote.BuildOptions{}, "r1", ".signatures.json", true},
		{"wrong constitutional hash", constitutionDir(t, "r4", "0123456789abcdef", nil), remote.BuildOptions{SigningKey: priv}, "r1", "constitutional hash 0123456789abcdef", true},
		{"new revision", constitutionDir(t, "r5", hash, nil), remote.BuildOptions{SigningKey: priv}, "r5", "", false},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			failuresBefore, successesBefore := e.failures.Load(), e.successes.Load()
			publish(t, st.dir, serveDir, st.opts)
			if st.wantErr != "" {
				// The error is recorded before the failure is reported
				// (OnReload): wait for both.
				eventually(t, 10*time.Second, "last reload error containing "+st.wantErr, func() bool {
					return strings.Contains(e.lastError(), st.wantErr) && (!st.failures || e.failures.Load() > failuresBefore)
				})
			} else {
				// The engine swaps the snapshot in before it reports the
				// success (OnReload): wait for both.
				eventually(t, 10*time.Second, "revision "+st.wantRev+" and a counted success", func() bool {
					return e.revision() == st.wantRev && e.successes.Load() > successesBefore
				})
				if le := e.lastError(); le != "" {
					t.Errorf("last reload error %q after a good bundle, want none", le)
				}
			}
			t.Logf("last reload error: %s", e.lastError())
			if got := e.revision(); got != st.wantRev {
				t.Fatalf("active revision %q, want %q (last error: %s)", got, st.wantRev, e.lastError())
			}
			if d := e.decideSafe(t); d.Revision != st.wantRev {
				t.Fatalf("decision from revision %q, want %q", d.Revision, st.wantRev)
			}
			if st.failures && e.failures.Load() <= failuresBefore {
				t.Error("refused bundle not counted as a reload failure")
			}
		})
	}
}

// TestRemoteCompileError checks that Rego OPA cannot compile is refused
// before it reaches the engine, which keeps the good revision.
func TestRemoteCompileError(t *testing.T) {
	serveDir := t.TempDir()
	url := bundleServer(t, serveDir)
	publish(t, constitutionDir(t, "good", hash, nil), serveDir, remote.BuildOptions{})
	e := newEngine(t)
	startRemote(t, e, opaConfig(url, "", poll))
	eventually(t, 10*time.Second, "revision good active", func() bool { return e.revision() == "good" })

	// opa build refuses broken Rego, so the archive is made by hand from a
	// good build with one module replaced.
	bad := constitutionDir(t, "broken", hash, map[string]string{"acgs/broken.rego": "package acgs.broken\n\nallow if { undefined_function(1) }\n"})
	writeUncheckedBundle(t, bad, filepath.Join(serveDir, "bundle.tar.gz"))
	eventually(t, 10*time.Second, "compile error reported", func() bool {
		return strings.Contains(e.lastError(), "undefined_function")
	})
	if got := e.revision(); got != "good" {
		t.Fatalf("active revision %q after a broken bundle, want good", got)
	}
	e.decideSafe(t)
}

// TestRemoteLongPolling checks that with long polling a publication is
// active long before the polling interval (10s) would fetch it.
func TestRemoteLongPolling(t *testing.T) {
	serveDir := t.TempDir()
	url := bundleServer(t, serveDir)
	publish(t, constitutionDir(t, "lp1", hash, nil), serveDir, remote.BuildOptions{})
	e := newEngine(t)
	startRemote(t, e, opaConfig(url, "", "    polling:\n      min_delay_seconds: 10\n      max_delay_seconds: 20\n      long_polling_timeout_seconds: 10\n"))
	eventually(t, 10*time.Second, "revision lp1 active", func() bool { return e.revision() == "lp1" })
	time.Sleep(300 * time.Millisecond) // the next request is now held by the server
	start := time.Now()
	publish(t, constitutionDir(t, "lp2", hash, nil), serveDir, remote.BuildOptions{})
	eventually(t, 5*time.Second, "revision lp2 active through long polling", func() bool { return e.revision() == "lp2" })
	t.Logf("long poll delivered the new revision in %s", time.Since(start).Round(time.Millisecond))
}

// TestRemoteReload checks that with "trigger: manual" the first download
// happens at start and each reload downloads at once, returning the reason
// a bundle was refused (what POST /v1/admin/reload answers); and that polled
// bundles are not triggered (OPA's downloader would race with its loop).
func TestRemoteReload(t *testing.T) {
	serveDir := t.TempDir()
	url := bundleServer(t, serveDir)
	publish(t, constitutionDir(t, "a", hash, nil), serveDir, remote.BuildOptions{})
	polled, err := remote.New(remote.Options{Config: opaConfig(url, "", poll), Name: "polled.yaml", Target: newEngine(t), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := polled.Reload(context.Background()); !errors.Is(err, remote.ErrPolled) {
		t.Fatalf("reload of polled bundles: %v, want ErrPolled", err)
	}
	e := newEngine(t)
	r := startRemote(t, e, opaConfig(url, "", "    trigger: manual\n"))
	eventually(t, 10*time.Second, "revision a active (first manual download at start)", func() bool { return e.revision() == "a" })

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, tc := range []struct {
		rev, chash, wantRev, wantErr string
	}{
		{"b", "0123456789abcdef", "a", "does not match"},
		{"b", "0123456789abcdef", "a", "does not match"}, // unchanged: 304, still refused
		{"c", hash, "c", ""},
		{"c", hash, "c", ""}, // unchanged: 304, nothing to do, no error
	} {
		publish(t, constitutionDir(t, tc.rev, tc.chash, nil), serveDir, remote.BuildOptions{})
		err := r.Reload(ctx)
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("reload to %s: %v", tc.rev, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("reload to %s: error %v, want one containing %q", tc.rev, err, tc.wantErr)
		}
		if got := e.revision(); got != tc.wantRev {
			t.Errorf("after reload to %s: active %q, want %q", tc.rev, got, tc.wantRev)
		}
	}
	if !r.Active() {
		t.Error("Active() false after activations")
	}
}

// TestRemoteSeveralBundles splits the constitution into a policy bundle and
// a data bundle: nothing is activated until both have arrived, then the two
// are served as one policy whose revision names both.
func TestRemoteSeveralBundles(t *testing.T) {
	serveDir := t.TempDir()
	url := bundleServer(t, serveDir)
	sc := newSplitConstitution(t)
	sc.publish(t, "policy", "p1", hash, serveDir)
	cfg := "services:\n  s:\n    url: " + url + "\nbundles:\n" +
		"  policy:\n    resource: policy.tar.gz\n" + poll +
		"  config:\n    resource: config.tar.gz\n" + poll
	e := newEngine(t)
	startRemote(t, e, []byte(cfg))
	time.Sleep(2500 * time.Millisecond) // policy downloaded; config still 404
	if inf, ok := e.Info(); ok {
		t.Fatalf("activated %s with only one of two bundles", inf.Revision)
	}
	sc.publish(t, "config", "d1", hash, serveDir)
	eventually(t, 10*time.Second, "both bundles active", func() bool { return e.revision() == "config@d1,policy@p1" })
	e.decideSafe(t)
}

// TestNewRefusesConfig checks configurations that cannot be honoured fail
// at start with a message naming the problem.
func TestNewRefusesConfig(t *testing.T) {
	e := newEngine(t)
	for _, tc := range []struct{ name, config, want string }{
		{"no bundles", "services:\n  s:\n    url: http://127.0.0.1:1\n", "configures no bundles"},
		{"unknown service", "services:\n  s:\n    url: http://127.0.0.1:1\nbundles:\n  b:\n    service: nope\n", "service name \"nope\" not found"},
		{"discovery", "services:\n  s:\n    url: http://127.0.0.1:1\ndiscovery:\n  resource: /d.tar.gz\n", "discovery is not supported"},
		{"signing with unknown key", "services:\n  s:\n    url: http://127.0.0.1:1\nbundles:\n  b:\n    signing:\n      keyid: missing\n", "missing"},
		{"not YAML", "services: [", "CONFIG_FILE test-config.yaml"},
		{"OCI registry", "services:\n  s:\n    url: https://127.0.0.1:1\n    type: oci\nbundles:\n  b:\n    service: s\n    resource: 127.0.0.1:1/acgs:1\n",
			"service \"s\" is an OCI registry"},
		{"local file", "bundles:\n  b:\n    resource: file:///var/lib/acgs/bundle.tar.gz\n", "is a local file"},
		{"local directory", "services:\n  s:\n    url: http://127.0.0.1:1\nbundles:\n  b:\n    resource: FILE:/var/lib/acgs/bundle\n", "is a local file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := remote.New(remote.Options{Config: []byte(tc.config), Name: "test-config.yaml", Target: e, Logger: testLogger(t)})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// TestReadConfigSubstitutesEnv checks ${VAR} substitution as OPA does it.
func TestReadConfigSubstitutesEnv(t *testing.T) {
	t.Setenv("ACGS_TEST_TOKEN", "s3cret")
	p := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(p, []byte("token: ${ACGS_TEST_TOKEN}\nkeep: ${ACGS_TEST_UNSET_VAR}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := remote.ReadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	if want := "token: s3cret\nkeep: ${ACGS_TEST_UNSET_VAR}\n"; string(got) != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// TestRemoteRegoV0Bundle checks a bundle whose manifest declares Rego v0 is
// read back from the plugin's store with the version OPA recorded for it.
func TestRemoteRegoV0Bundle(t *testing.T) {
	serveDir, src := t.TempDir(), t.TempDir()
	url := bundleServer(t, serveDir)
	for p, content := range map[string]string{
		".manifest":      `{"revision": "v0", "roots": ["acgs"], "rego_version": 0, "metadata": {"constitutional_hash": "` + hash + `"}}`,
		"acgs/main.rego": "package acgs.main\n\ndecision = {\"allow\": true} { true }\n",
	} {
		if err := writeFile(filepath.Join(src, p), content); err != nil {
			t.Fatal(err)
		}
	}
	writeUncheckedBundle(t, src, filepath.Join(serveDir, "bundle.tar.gz"))
	e := newEngine(t)
	startRemote(t, e, opaConfig(url, "", poll))
	eventually(t, 10*time.Second, "the v0 bundle active", func() bool { return e.revision() == "v0" })
	d, err := e.Decide(context.Background(), "acgs/main/decision", map[string]any{})
	if err != nil || d.Result.(map[string]any)["allow"] != true {
		t.Fatalf("decision %v, %v", d.Result, err)
	}
}

// TestRemoteBundleSizeLimit serves archives past the bound on a downloaded
// bundle (1 MiB here, engine.MaxBundleBytes by default) whose members are
// each under it, so that OPA's own per-file size_limit_bytes lets them
// through and its loader would hold them all in memory: one whose members
// together decompress past the bound (a gzip bomb), and one larger than it
// compressed. Each is refused as a failed download naming the bound, the
// active revision keeps answering, and a good archive afterwards is
// activated.
func TestRemoteBundleSizeLimit(t *testing.T) {
	const limit = 1 << 20
	random := func(n int) []byte {
		b := make([]byte, n*3/4)
		if _, err := rand.Read(b); err != nil {
			t.Fatal(err)
		}
		return []byte(`"` + base64.StdEncoding.EncodeToString(b) + `"`)
	}
	zeros := []byte(`"` + strings.Repeat("0", 600<<10) + `"`)
	serveDir := t.TempDir()
	url := bundleServer(t, serveDir)
	publish(t, constitutionDir(t, "good", hash, nil), serveDir, remote.BuildOptions{})
	good, err := os.ReadFile(filepath.Join(serveDir, "bundle.tar.gz"))
	if err != nil {
		t.Fatal(err)
	}
	e := newEngine(t)
	startRemoteWith(t, remote.Options{Config: opaConfig(url, "", poll), Target: e, MaxBundleBytes: limit})
	eventually(t, 20*time.Second, "revision good active", func() bool { return e.revision() == "good" })
	for _, tc := range []struct {
		name    string
		extra   map[string][]byte
		wantErr string
	}{
		{"members under the bound, their sum past it", map[string][]byte{
			"/acgs/pad/a/data.json": zeros, "/acgs/pad/b/data.json": zeros,
		}, "decompresses to more than 1048576 bytes"},
		{"larger than the bound compressed", map[string][]byte{
			"/acgs/pad/a/data.json": random(600 << 10), "/acgs/pad/b/data.json": random(600 << 10), "/acgs/pad/c/data.json": random(600 << 10),
		}, "is larger than 1048576 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := remote.WriteFileAtomic(filepath.Join(serveDir, "bundle.tar.gz"), withMembers(t, good, tc.extra)); err != nil {
				t.Fatal(err)
			}
			eventually(t, 20*time.Second, "refusal reported", func() bool { return strings.Contains(e.lastError(), tc.wantErr) })
			if got := e.revision(); got != "good" {
				t.Fatalf("active revision %q after a refused archive, want good", got)
			}
			e.decideSafe(t)
		})
	}
	publish(t, constitutionDir(t, "good2", hash, nil), serveDir, remote.BuildOptions{})
	eventually(t, 20*time.Second, "revision good2 active", func() bool { return e.revision() == "good2" })

	// A size_limit_bytes given in the configuration raises the bound on
	// the whole archive to it: the first archive above is then taken.
	e2 := newEngine(t)
	startRemoteWith(t, remote.Options{Config: opaConfig(url, "", poll+"    size_limit_bytes: 2000000\n"), Target: e2, MaxBundleBytes: limit})
	eventually(t, 20*time.Second, "revision good2 active under the raised bound", func() bool { return e2.revision() == "good2" })
	withPads := withMembers(t, good, map[string][]byte{"/acgs/pad/a/data.json": zeros, "/acgs/pad/b/data.json": zeros})
	if err := remote.WriteFileAtomic(filepath.Join(serveDir, "bundle.tar.gz"), withPads); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "revision good active with its pads under the raised bound", func() bool { return e2.revision() == "good" })
	if msg := e2.lastError(); msg != "" {
		t.Fatalf("error under the raised bound: %s", msg)
	}
}

// withMembers returns the .tar.gz archive with extra members appended.
func withMembers(tb testing.TB, archive []byte, extra map[string][]byte) []byte {
	tb.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(archive))
	if err != nil {
		tb.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	tw := tar.NewWriter(zw)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			tb.Fatal(err)
		}
		if err := tw.WriteHeader(h); err != nil {
			tb.Fatal(err)
		}
		if _, err := io.Copy(tw, tr); err != nil {
			tb.Fatal(err)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(extra)) {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(extra[name])), Typeflag: tar.TypeReg}); err != nil {
			tb.Fatal(err)
		}
		if _, err := tw.Write(extra[name]); err != nil {
			tb.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		tb.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		tb.Fatal(err)
	}
	return out.Bytes()
}

// TestRemoteReloadOutlastingItsTimeout holds the bundle server's answers
// past ActivateTimeout: each reload (and the first download at start)
// returns the deadline, the active revision is left alone, and once the
// server answers in time reloads activate its bundle. Under the
// race detector it also runs the wait for OPA's abandoned download (which
// a reload must not run beside) on every timed-out reload.
func TestRemoteReloadOutlastingItsTimeout(t *testing.T) {
	serveDir := t.TempDir()
	publish(t, constitutionDir(t, "first", hash, nil), serveDir, remote.BuildOptions{})
	var slow atomic.Bool
	slow.Store(true)
	url := bundleServerVia(t, serveDir, func(fs http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if slow.Load() {
				select {
				case <-req.Context().Done():
					return
				case <-time.After(5 * time.Second):
				}
			}
			fs.ServeHTTP(w, req)
		})
	})
	e := newEngine(t)
	r := startRemoteWith(t, remote.Options{Config: opaConfig(url, "", "    trigger: manual\n"), Target: e, ActivateTimeout: time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range 2 {
		if err := r.Reload(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("reload %d against a server answering late: %v, want the deadline", i, err)
		}
		if got := e.revision(); got != "" {
			t.Fatalf("revision %q active after downloads that timed out", got)
		}
	}
	slow.Store(false)
	// On a loaded machine the activation alone can outlast the second
	// given: the bundle is then activated after the deadline, and the
	// next reload finds it unchanged and reports success.
	eventually(t, 20*time.Second, "a reload succeeds once the server answers in time", func() bool { return r.Reload(ctx) == nil })
	if got := e.revision(); got != "first" {
		t.Fatalf("active revision %q, want first", got)
	}
}

// flakyTarget refuses the next fail activations, as an engine does whose
// activation ran past its deadline on a busy machine.
type flakyTarget struct {
	*fleetEngine
	fail atomic.Int32
}

func (f *flakyTarget) Activate(ctx context.Context, b *bundle.Bundle, source string) error {
	if f.fail.Add(-1) >= 0 {
		err := errors.New("activation deadline exceeded (a passing refusal)")
		f.RecordFailure(err)
		return err
	}
	return f.fleetEngine.Activate(ctx, b, source)
}

// TestRemoteReloadRetriesARefusedBundle: a bundle the engine refused for a
// passing reason is handed over again by the next reload, although the
// server answers 304 (OPA counts it active already): without that, the
// instance would keep its old policy until a new revision is published.
func TestRemoteReloadRetriesARefusedBundle(t *testing.T) {
	serveDir := t.TempDir()
	url := bundleServer(t, serveDir)
	publish(t, constitutionDir(t, "a", hash, nil), serveDir, remote.BuildOptions{})
	ft := &flakyTarget{fleetEngine: newEngine(t)}
	r := startRemoteWith(t, remote.Options{Config: opaConfig(url, "", "    trigger: manual\n"), Target: ft})
	eventually(t, 10*time.Second, "revision a active", func() bool { return ft.revision() == "a" })

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	publish(t, constitutionDir(t, "b", hash, nil), serveDir, remote.BuildOptions{})
	ft.fail.Store(1)
	if err := r.Reload(ctx); err == nil || !strings.Contains(err.Error(), "passing refusal") {
		t.Fatalf("reload while the engine refuses: %v, want its refusal", err)
	}
	if got := ft.revision(); got != "a" {
		t.Fatalf("active %q after a refused activation, want a", got)
	}
	if err := r.Reload(ctx); err != nil {
		t.Fatalf("reload of the same bundle once the engine takes it: %v", err)
	}
	if got := ft.revision(); got != "b" {
		t.Fatalf("active %q after the reload, want b", got)
	}
}

// TestRemoteReloadsShareADownload: reloads asked for while a manual
// download runs share the next one instead of queueing one each (a burst
// of SIGHUPs or admin reloads during a slow download).
//
// The bundle server holds the first download of the burst until all the
// reloads are waiting in Reload, so none can come after the download they
// share has begun: with a fixed hold (500 ms), one reload goroutine
// scheduled late on a loaded machine asked for a third download.
func TestRemoteReloadsShareADownload(t *testing.T) {
	serveDir := t.TempDir()
	publish(t, constitutionDir(t, "a", hash, nil), serveDir, remote.BuildOptions{})
	var (
		gets     atomic.Int32
		armed    atomic.Bool // the next GET is held until release
		held     = make(chan struct{})
		release  = make(chan struct{})
		released sync.Once
	)
	url := bundleServerVia(t, serveDir, func(fs http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			gets.Add(1)
			if armed.CompareAndSwap(true, false) {
				close(held)
				<-release
			}
			fs.ServeHTTP(w, req)
		})
	})
	// Runs before the server's cleanup, which waits for its handlers.
	t.Cleanup(func() { released.Do(func() { close(release) }) })
	e := newEngine(t)
	r := startRemoteWith(t, remote.Options{Config: opaConfig(url, "", "    trigger: manual\n"), Target: e})
	eventually(t, 10*time.Second, "revision a active", func() bool { return e.revision() == "a" })
	before := gets.Load()
	armed.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const reloads = 10
	errs := make(chan error, reloads)
	for range reloads {
		go func() { errs <- r.Reload(ctx) }()
	}
	select {
	case <-held:
	case <-time.After(10 * time.Second):
		t.Fatal("no download began after 10s of reloads")
	}
	// Each reload has joined a batch once it waits in Reload's select (its
	// only one, after it leaves reloadMu); the held download keeps every
	// batch open, so none of them can return before release.
	eventually(t, 10*time.Second, fmt.Sprintf("%d reloads waiting for a download", reloads), func() bool {
		return waitingReloads() == reloads
	})
	released.Do(func() { close(release) })
	for range reloads {
		if err := <-errs; err != nil {
			t.Errorf("reload: %v", err)
		}
	}
	if n := gets.Load() - before; n < 1 || n > 2 {
		t.Fatalf("%d reloads at once made %d downloads, want 1 or 2 (the one running and the one they share)", reloads, n)
	}
}

// waitingReloads counts the goroutines started by
// TestRemoteReloadsShareADownload that are parked in the select of
// (*Remote).Reload, waiting for their download's outcome.
func waitingReloads() int {
	return testenv.Goroutines(func(g testenv.Goroutine) bool {
		return g.State == "select" && strings.Contains(g.Stack, "remote.(*Remote).Reload(") &&
			strings.Contains(g.Stack, "TestRemoteReloadsShareADownload")
	})
}

// TestManualFirstDownloadIsRetried: an instance started while its bundle
// server had no bundle (down, or not yet published) activates the bundle
// once it is there. The first manual download was tried once, and the
// instance stayed unready until a SIGHUP (review).
func TestManualFirstDownloadIsRetried(t *testing.T) {
	serveDir := t.TempDir()
	url := bundleServer(t, serveDir)
	e := newEngine(t)
	startRemote(t, e, opaConfig(url, "", "    trigger: manual\n"))
	eventually(t, 20*time.Second, "the first download failed", func() bool { return e.lastError() != "" })
	publish(t, constitutionDir(t, "late", hash, nil), serveDir, remote.BuildOptions{})
	eventually(t, 20*time.Second, "revision late active without a reload", func() bool { return e.revision() == "late" })
}

// TestRemoteStopEndsReloads: Stop ends a reload whose download is in
// flight and returns only once the reload goroutine has (it reads the
// plugin's loaders, which the plugin's Stop rewrites: the race detector
// caught a reload outliving TestRemoteReloadOutlastingItsTimeout), and a
// reload asked for after Stop is refused with ErrStopped, not started on a
// stopped plugin.
func TestRemoteStopEndsReloads(t *testing.T) {
	serveDir := t.TempDir()
	publish(t, constitutionDir(t, "first", hash, nil), serveDir, remote.BuildOptions{})
	asked := make(chan struct{}, 16)
	url := bundleServerVia(t, serveDir, func(http.Handler) http.Handler {
		return http.HandlerFunc(func(_ http.ResponseWriter, req *http.Request) {
			asked <- struct{}{}
			<-req.Context().Done() // never answers: held until the client gives up
		})
	})
	opts := remote.Options{Config: opaConfig(url, "", "    trigger: manual\n"), Target: newEngine(t), ActivateTimeout: time.Minute,
		Name: "test-config.yaml", ID: "test", Logger: testLogger(t)}
	r, err := remote.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	reloaded := make(chan error, 1)
	go func() { reloaded <- r.Reload(context.Background()) }()
	select {
	case <-asked:
	case <-time.After(30 * time.Second): // hang guard
		t.Fatal("no download started")
	}
	stopped := make(chan struct{})
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		r.Stop(ctx)
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(30 * time.Second): // hang guard
		t.Fatal("Stop did not return with a reload's download held")
	}
	select {
	case err := <-reloaded:
		if err == nil {
			t.Fatal("the reload whose download Stop ended reported success")
		}
	case <-time.After(30 * time.Second): // hang guard
		t.Fatal("the reload in flight did not return after Stop")
	}
	if err := r.Reload(context.Background()); !errors.Is(err, remote.ErrStopped) {
		t.Fatalf("reload after Stop: %v, want ErrStopped", err)
	}
}
