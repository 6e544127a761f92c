package remote_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/acgs-lite/acgs/internal/engine"
	"github.com/acgs-lite/acgs/internal/remote"
)

// stoppableServer serves a bundle directory on a fixed loopback address
// that it can stop (connections refused) and start again; down makes
// it answer 503 instead while it listens.
type stoppableServer struct {
	tb   testing.TB
	addr string
	fsrv *remote.FileServer
	down atomic.Bool
	mu   sync.Mutex
	srv  *http.Server
}

func newStoppableServer(tb testing.TB, dir string) *stoppableServer {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	s := &stoppableServer{tb: tb, addr: ln.Addr().String(), fsrv: &remote.FileServer{Dir: dir, Check: 20 * time.Millisecond}}
	s.serve(ln)
	tb.Cleanup(func() {
		s.stop()
		s.fsrv.Close()
	})
	return s
}

func (s *stoppableServer) url() string { return "http://" + s.addr }

func (s *stoppableServer) serve(ln net.Listener) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.srv = &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.down.Load() {
			http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
			return
		}
		s.fsrv.ServeHTTP(w, r)
	})}
	go func() { _ = s.srv.Serve(ln) }()
}

// stop closes the listener and every connection: requests are refused.
func (s *stoppableServer) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		_ = s.srv.Close()
		s.srv = nil
	}
}

// start listens on the same address again.
func (s *stoppableServer) start() {
	s.tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ln, err := net.Listen("tcp", s.addr)
		if err == nil {
			s.serve(ln)
			return
		}
		if time.Now().After(deadline) {
			s.tb.Fatalf("listening on %s again: %v", s.addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// logRecords keeps the level and message of every record logged.
type logRecords struct {
	mu   sync.Mutex
	recs []string // "LEVEL message"
}

func (l *logRecords) Enabled(context.Context, slog.Level) bool { return true }

func (l *logRecords) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.recs = append(l.recs, r.Level.String()+" "+r.Message)
	return nil
}

func (l *logRecords) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecords) WithGroup(string) slog.Handler      { return l }

func (l *logRecords) count(rec string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, r := range l.recs {
		if r == rec {
			n++
		}
	}
	return n
}

// resultEngine is an engine with no policy yet that counts the results
// it tells OnReload, and keeps its log records.
type resultEngine struct {
	*engine.Engine
	log     *logRecords
	mu      sync.Mutex
	results map[string]int
}

func newResultEngine(tb testing.TB) *resultEngine {
	tb.Helper()
	return newResultEngineFor(tb, hash)
}

// newResultEngineFor is newResultEngine configured with constitutional
// hash chash.
func newResultEngineFor(tb testing.TB, chash string) *resultEngine {
	tb.Helper()
	re := &resultEngine{log: &logRecords{}, results: map[string]int{}}
	e, err := engine.New(context.Background(), nil, engine.Options{
		ConstitutionalHash: chash, EvalTimeout: time.Second, Logger: slog.New(re.log),
		OnReload: func(result string, _ engine.Info, _ error) {
			re.mu.Lock()
			defer re.mu.Unlock()
			re.results[result]++
		},
	})
	if err != nil {
		tb.Fatal(err)
	}
	re.Engine = e
	return re
}

func (re *resultEngine) count(result string) int {
	re.mu.Lock()
	defer re.mu.Unlock()
	return re.results[result]
}

func (re *resultEngine) revision() string {
	inf, _ := re.Info()
	return inf.Revision
}

func (re *resultEngine) lastError() string {
	inf, _ := re.Info()
	if inf.LastError == nil {
		return ""
	}
	return inf.LastError.Error()
}

const refusedMsg = "ERROR policy bundle refused; the previous one stays active"

// TestRemoteUnreachableServer: a bundle server that refuses connections,
// or answers an error status, is a failed download, not a refused bundle:
// it is logged as such (a warning, the active policy stays), counted as
// download_failure (not failure, which the alerts take as a refused
// bundle) and shown in health until the server answers again, when a 304
// clears it. A download failure reported every failed download as a
// refused bundle, and health kept "connection refused" after the server
// was back until another bundle was published (review). A bundle refused
// meanwhile is still a refusal (failure), and its error comes back when a
// later download failure clears.
func TestRemoteUnreachableServer(t *testing.T) {
	serveDir := t.TempDir()
	srv := newStoppableServer(t, serveDir)
	publish(t, constitutionDir(t, "a", hash, nil), serveDir, remote.BuildOptions{})
	e := newResultEngine(t)
	startRemoteWith(t, remote.Options{Config: opaConfig(srv.url(), "", poll), Target: e})
	eventually(t, 20*time.Second, "revision a active", func() bool { return e.revision() == "a" })
	failures := e.count("failure")

	for _, tc := range []struct {
		name    string
		down    func()
		up      func()
		wantErr string
	}{
		{"connection refused", srv.stop, srv.start, "request failed: "},
		{"error status", func() { srv.down.Store(true) }, func() { srv.down.Store(false) }, "Service Unavailable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			downloads := e.count("download_failure")
			tc.down()
			eventually(t, 20*time.Second, "the failed download reported", func() bool {
				return strings.Contains(e.lastError(), tc.wantErr) && e.count("download_failure") > downloads
			})
			if got := e.count("failure"); got != failures {
				t.Fatalf("%d refusals counted for a failed download", got-failures)
			}
			if n := e.log.count(refusedMsg); n != 0 {
				t.Fatalf("a failed download logged %d times as a refused bundle", n)
			}
			if n := e.log.count("WARN policy bundle download failed; the active policy stays"); n == 0 {
				t.Fatal("the failed download was not logged as one")
			}
			if e.revision() != "a" {
				t.Fatalf("revision %q after a failed download, want a", e.revision())
			}
			tc.up()
			eventually(t, 20*time.Second, "the download error cleared once the server answers (304)", func() bool {
				return e.lastError() == ""
			})
			if e.revision() != "a" || e.count("failure") != failures {
				t.Fatalf("revision %q, %d refusals after the server came back", e.revision(), e.count("failure")-failures)
			}
		})
	}

	// A refused archive is a refusal, though this package's transport
	// refuses it as a failed request; its error outlives a failed download.
	if err := remote.WriteFileAtomic(filepath.Join(serveDir, "bundle.tar.gz"), []byte("not a gzip archive")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the refused archive reported", func() bool {
		return strings.Contains(e.lastError(), "not a gzip archive") && e.count("failure") > failures
	})
	downloads := e.count("download_failure")
	srv.stop()
	eventually(t, 20*time.Second, "the failed download reported", func() bool {
		return strings.Contains(e.lastError(), "request failed: ") && e.count("download_failure") > downloads
	})
	srv.start()
	eventually(t, 20*time.Second, "the refusal shown again once the server answers", func() bool {
		return strings.Contains(e.lastError(), "not a gzip archive")
	})
	publish(t, constitutionDir(t, "b", hash, nil), serveDir, remote.BuildOptions{})
	eventually(t, 20*time.Second, "revision b active", func() bool { return e.revision() == "b" })
	if msg := e.lastError(); msg != "" {
		t.Fatalf("last error %q after a good bundle", msg)
	}
}

// TestRemoteReloadDownloadError: a manual reload whose download failed
// returns a DownloadError (POST /v1/admin/reload answers 503 for it); one
// whose bundle was refused does not (500).
func TestRemoteReloadDownloadError(t *testing.T) {
	serveDir := t.TempDir()
	srv := newStoppableServer(t, serveDir)
	publish(t, constitutionDir(t, "a", hash, nil), serveDir, remote.BuildOptions{})
	e := newResultEngine(t)
	r := startRemoteWith(t, remote.Options{Config: opaConfig(srv.url(), "", "    trigger: manual\n"), Target: e})
	eventually(t, 20*time.Second, "revision a active", func() bool { return e.revision() == "a" })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var de *remote.DownloadError

	srv.stop()
	err := r.Reload(ctx)
	if !errors.As(err, &de) || !strings.Contains(err.Error(), "request failed: ") {
		t.Fatalf("reload with the server down: %v, want a DownloadError", err)
	}
	srv.down.Store(true)
	srv.start()
	if err := r.Reload(ctx); !errors.As(err, &de) {
		t.Fatalf("reload with the server answering 503: %v, want a DownloadError", err)
	}
	srv.down.Store(false)
	if err := r.Reload(ctx); err != nil || e.lastError() != "" {
		t.Fatalf("reload with the server back: %v, last error %q", err, e.lastError())
	}

	if err := remote.WriteFileAtomic(filepath.Join(serveDir, "bundle.tar.gz"), []byte("not a gzip archive")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "a reload of the refused archive fails", func() bool {
		err = r.Reload(ctx)
		return err != nil
	})
	if errors.As(err, &de) || !strings.Contains(err.Error(), "not a gzip archive") {
		t.Fatalf("reload of a refused archive: %v, want a refusal", err)
	}
	if e.revision() != "a" || !strings.Contains(e.lastError(), "not a gzip archive") {
		t.Fatalf("revision %q, last error %q after a refused archive", e.revision(), e.lastError())
	}
}

// twoServerConfig configures bundle "policy" from url p and "config" from
// url c, each with its own extra lines (trigger, polling).
func twoServerConfig(p, pExtra, c, cExtra string) []byte {
	return []byte("services:\n  p:\n    url: " + p + "\n  c:\n    url: " + c + "\nbundles:\n" +
		"  policy:\n    service: p\n    resource: policy.tar.gz\n" + pExtra +
		"  config:\n    service: c\n    resource: config.tar.gz\n" + cExtra)
}

// TestDownloadFailureClearedAfterARefusal: a bundle whose download failed
// and whose server then answered with a bundle that is refused is
// downloaded again (its server answers): another bundle's download failure
// clears once that one's server is back, and the refusal is shown again.
// The refused bundle stayed among the failed downloads, and health kept
// the other's "connection refused" for good after its server was back
// (review).
func TestDownloadFailureClearedAfterARefusal(t *testing.T) {
	pDir, cDir := t.TempDir(), t.TempDir()
	pSrv, cSrv := newStoppableServer(t, pDir), newStoppableServer(t, cDir)
	sc := newSplitConstitution(t)
	sc.publish(t, "policy", "p1", hash, pDir)
	sc.publish(t, "config", "d1", hash, cDir)
	e := newResultEngine(t)
	// policy downloads on reloads only, so that its refusal is reported
	// once and does not overwrite the error health shows for config.
	r := startRemoteWith(t, remote.Options{Config: twoServerConfig(pSrv.url(), "    trigger: manual\n", cSrv.url(), poll), Target: e})
	eventually(t, 20*time.Second, "both bundles active", func() bool { return e.revision() == "config@d1,policy@p1" })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var de *remote.DownloadError

	pSrv.down.Store(true)
	if err := r.Reload(ctx); !errors.As(err, &de) {
		t.Fatalf("reload with policy's server answering 503: %v, want a DownloadError", err)
	}
	pSrv.down.Store(false)
	if err := remote.WriteFileAtomic(filepath.Join(pDir, "policy.tar.gz"), []byte("not a gzip archive")); err != nil {
		t.Fatal(err)
	}
	if err := r.Reload(ctx); err == nil || errors.As(err, &de) || !strings.Contains(err.Error(), "not a gzip archive") {
		t.Fatalf("reload of policy's refused archive: %v, want a refusal", err)
	}
	downloads := e.count("download_failure")
	cSrv.stop()
	eventually(t, 20*time.Second, "config's failed download reported", func() bool {
		return strings.Contains(e.lastError(), "request failed: ") && e.count("download_failure") > downloads
	})
	cSrv.start()
	eventually(t, 20*time.Second, "config's download failure cleared once its server answers, policy's refusal shown again", func() bool {
		return strings.Contains(e.lastError(), "not a gzip archive")
	})
	if e.revision() != "config@d1,policy@p1" {
		t.Fatalf("revision %q, want config@d1,policy@p1", e.revision())
	}
}

// TestRemoteReloadRefusalOutweighsDownloadError: a reload of two manual
// bundles, one unreachable and the other downloaded and refused by the
// engine, returns both: the refusal, which POST /v1/admin/reload answers
// 500 (a refusal outweighs an unreachable source), and the DownloadError.
// It returned the DownloadError alone (503 "the bundle source is
// unavailable"), the refusal missing from its message.
func TestRemoteReloadRefusalOutweighsDownloadError(t *testing.T) {
	pDir, cDir := t.TempDir(), t.TempDir()
	pSrv, cSrv := newStoppableServer(t, pDir), newStoppableServer(t, cDir)
	sc := newSplitConstitution(t)
	sc.publish(t, "policy", "p1", hash, pDir)
	sc.publish(t, "config", "d1", hash, cDir)
	e := newResultEngine(t)
	manual := "    trigger: manual\n"
	r := startRemoteWith(t, remote.Options{Config: twoServerConfig(pSrv.url(), manual, cSrv.url(), manual), Target: e})
	eventually(t, 20*time.Second, "both bundles active", func() bool { return e.revision() == "config@d1,policy@p1" })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	cSrv.stop()
	sc.publish(t, "policy", "p2", "0123456789abcdef", pDir)
	err := r.Reload(ctx)
	var de *remote.DownloadError
	if err == nil || !errors.As(err, &de) || !strings.Contains(err.Error(), "request failed: ") {
		t.Fatalf("reload with config unreachable: %v, want its DownloadError", err)
	}
	if !strings.Contains(err.Error(), "declares constitutional hash 0123456789abcdef") {
		t.Fatalf("reload with policy refused: %v, want its refusal too", err)
	}
	// What the server's reloadError reads: a joined error one of whose
	// errors is no DownloadError is a refusal (500).
	joined, ok := err.(interface{ Unwrap() []error })
	if !ok || !slices.ContainsFunc(joined.Unwrap(), func(e error) bool { return !errors.As(e, &de) }) {
		t.Fatalf("reload error %v joins no refusal", err)
	}
	if e.revision() != "config@d1,policy@p1" {
		t.Fatalf("revision %q, want config@d1,policy@p1", e.revision())
	}
}
