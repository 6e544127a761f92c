package remote_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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

const (
	wrongHash   = "0000000000000000"
	refusedHash = "constitutional hash " + wrongHash + " does not match"
)

// TestPersistedBundleIsTheLastAccepted: with persist: true, an instance
// restarted while its bundle server is down loads the last bundle the
// engine accepted. OPA persisted every bundle it took into its store,
// before the engine checked it, so a refused bundle (another
// constitutional hash) replaced the accepted one on disk and the restarted
// instance refused it again and served nothing (review). OPA's own file is
// handed to the engine first, before the plugin loads it: an instance
// restarted with the constitutional hash of the bundle it refused
// activates that bundle, where the accepted copy put back in its place
// was refused and nothing served (the limit of 0d6f3ff). A persisted
// bundle is hash-checked at start: one that was never accepted (no
// accepted copy, as an earlier version left it) is refused, once. The
// refusal of OPA's file that the accepted copy then stands in for is a
// warning, in the remote's log only, and no failed reload
// (acgs_policy_reloads_total{result="failure"}): the engine logged it at
// ERROR and counted it although the copy then served. A refusal that
// leaves no policy is an error of both, and counted.
func TestPersistedBundleIsTheLastAccepted(t *testing.T) {
	type pub struct{ rev, hash string }
	for _, tc := range []struct {
		name        string
		published   []pub  // in order, each activated or refused before the next
		restartHash string // the restarted engine's constitutional hash ("": the same)
		want        string // revision active after the restart, "" none
		refusals    int    // refusals at the restart
	}{
		{"refused after accepted", []pub{{"good", hash}, {"bad", wrongHash}}, "", "good", 0},
		{"accepted after refused", []pub{{"good", hash}, {"bad", wrongHash}, {"good2", hash}}, "", "good2", 0},
		{"never accepted", []pub{{"bad", wrongHash}}, "", "", 1},
		{"refused, restarted with its hash", []pub{{"old", hash}, {"new", wrongHash}}, wrongHash, "new", 0},
		{"accepted, restarted with another hash", []pub{{"old", hash}}, wrongHash, "", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			serveDir := t.TempDir()
			srv := newStoppableServer(t, serveDir)
			cfg := append([]byte("persistence_directory: "+t.TempDir()+"\n"), opaConfig(srv.url(), "", "    persist: true\n")...)
			e := newEngine(t)
			r := startRemoteWith(t, remote.Options{Config: cfg, Target: e})
			for _, p := range tc.published {
				publish(t, hashedConstitutionDir(t, p.rev, p.hash), serveDir, remote.BuildOptions{})
				if p.hash == hash {
					eventually(t, 20*time.Second, "revision "+p.rev+" active", func() bool { return e.revision() == p.rev })
				} else { // an activation clears the last error
					eventually(t, 20*time.Second, "revision "+p.rev+" refused", func() bool { return strings.Contains(e.lastError(), refusedHash) })
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			r.Stop(ctx)
			cancel()

			srv.stop() // the outage: the restarted instance has only what was persisted
			restartHash := tc.restartHash
			if restartHash == "" {
				restartHash = hash
			}
			e2 := newResultEngineFor(t, restartHash)
			var logs testenv.SyncBuffer
			startRemoteLogged(t, remote.Options{Config: cfg, Target: e2}, &logs) // persisted bundles are activated in Start
			if got := e2.revision(); got != tc.want {
				t.Fatalf("after a restart during an outage, revision %q is active (last error %q), want %q", got, e2.lastError(), tc.want)
			}
			// Start refused or activated the persisted bundles; the failed
			// downloads since are download_failure.
			if n := e2.count("failure"); n != tc.refusals {
				t.Errorf("after the restart, %d refusals, want %d", n, tc.refusals)
			}
			// A refusal is an error for the operator only if it leaves no
			// policy: one the accepted copy stands in for is a warning (it
			// was an error, followed by the copy's activation; review).
			got, refusedError := logs.String(), false
			for line := range strings.Lines(got) {
				refusedError = refusedError || strings.Contains(line, "level=ERROR") && strings.Contains(line, "remote bundle refused")
			}
			if wantError := tc.want == ""; refusedError != wantError {
				t.Fatalf("refusal logged at ERROR: %v, want %v (revision active after the restart: %q):\n%s", refusedError, wantError, tc.want, got)
			}
			engineErrors := e2.log.count("ERROR policy bundle refused; no policy is active") + e2.log.count(refusedMsg)
			if wantErrors := tc.refusals; engineErrors != wantErrors {
				t.Errorf("the engine logged %d refusals at ERROR, want %d (revision active after the restart: %q)", engineErrors, wantErrors, tc.want)
			}
		})
	}
}

// hashedConstitutionDir is constitutionDir with constitutional hash chash
// in the data too (data.acgs.config.constitutional_hash), so that an
// engine configured with chash accepts it.
func hashedConstitutionDir(tb testing.TB, revision, chash string) string {
	tb.Helper()
	data := string(testenv.ConstitutionFiles(tb, nil)["acgs/config/data.json"])
	if !strings.Contains(data, `"`+hash+`"`) {
		tb.Fatalf("acgs/config/data.json does not hold the constitutional hash %s", hash)
	}
	data = strings.ReplaceAll(data, `"`+hash+`"`, `"`+chash+`"`)
	return constitutionDir(tb, revision, chash, map[string]string{"acgs/config/data.json": data})
}

// TestDamagedPersistedBundleFallsBack: an OPA persisted file cut short
// (a power loss: OPA does not sync it) cannot be read at start; the last
// accepted copy is loaded instead, whether OPA's file held that bundle or
// a refused one. Handing OPA's file to the engine first must not leave
// the instance with no policy (b39990b did, reverted in 69242c3).
func TestDamagedPersistedBundleFallsBack(t *testing.T) {
	for _, tc := range []struct {
		name      string
		published []string // revisions, the last accepted one "good", any other refused
	}{
		{"accepted", []string{"good"}},
		{"refused after accepted", []string{"good", "bad"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			serveDir, persistDir := t.TempDir(), t.TempDir()
			srv := newStoppableServer(t, serveDir)
			cfg := append([]byte("persistence_directory: "+persistDir+"\n"), opaConfig(srv.url(), "", "    persist: true\n")...)
			e := newEngine(t)
			r := startRemoteWith(t, remote.Options{Config: cfg, Target: e})
			for _, rev := range tc.published {
				if rev == "good" {
					publish(t, constitutionDir(t, rev, hash, nil), serveDir, remote.BuildOptions{})
					eventually(t, 20*time.Second, "revision good active", func() bool { return e.revision() == "good" })
				} else {
					publish(t, constitutionDir(t, rev, wrongHash, nil), serveDir, remote.BuildOptions{})
					eventually(t, 20*time.Second, "revision "+rev+" refused", func() bool { return strings.Contains(e.lastError(), refusedHash) })
				}
			}
			accepted := filepath.Join(persistDir, "acgs-accepted", "acgs", "bundle.tar.gz")
			eventually(t, 20*time.Second, "the accepted copy written", func() bool { _, err := os.Stat(accepted); return err == nil })
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			r.Stop(ctx)
			cancel()
			srv.stop()

			opa := filepath.Join(persistDir, "bundles", "acgs", "bundle.tar.gz")
			raw, err := os.ReadFile(opa)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(opa, raw[:len(raw)/2], 0o600); err != nil { // cut short
				t.Fatal(err)
			}
			e2 := newResultEngine(t)
			startRemoteWith(t, remote.Options{Config: cfg, Target: e2})
			if got := e2.revision(); got != "good" {
				t.Fatalf("after a restart with OPA's persisted file cut short, revision %q is active (last error %q), want good", got, e2.lastError())
			}
		})
	}
}

// TestUnsyncedCopyCounts: a copy renamed into place whose directory then
// cannot be synced is in place all the same. At start, the accepted copy
// put in place of OPA's refused file counted as not restored when the
// directory sync failed: Start took the refused set for what the plugin
// loads and handed nothing over, so no policy was active during the
// outage, and the log said the persisted bundles were loaded as they
// were. An accepted copy kept with its directory unsynced was logged as
// not kept (review).
func TestUnsyncedCopyCounts(t *testing.T) {
	serveDir, persistDir := t.TempDir(), t.TempDir()
	srv := newStoppableServer(t, serveDir)
	cfg := append([]byte("persistence_directory: "+persistDir+"\n"), opaConfig(srv.url(), "", "    persist: true\n")...)
	acceptedDir := filepath.Join(persistDir, "acgs-accepted", "acgs")
	opaDir := filepath.Join(persistDir, "bundles", "acgs")
	var logs testenv.SyncBuffer
	remote.FailSyncDir(t, func(dir string) bool { return dir == acceptedDir || dir == opaDir })
	e := newEngine(t)
	r := startRemoteLogged(t, remote.Options{Config: cfg, Target: e}, &logs)
	publish(t, constitutionDir(t, "good", hash, nil), serveDir, remote.BuildOptions{})
	eventually(t, 20*time.Second, "revision good active", func() bool { return e.revision() == "good" })
	accepted := filepath.Join(acceptedDir, "bundle.tar.gz")
	eventually(t, 20*time.Second, "the accepted copy written", func() bool { _, err := os.Stat(accepted); return err == nil })
	eventually(t, 20*time.Second, "the unsynced copy logged", func() bool { return strings.Contains(logs.String(), "could not be synced") })
	if got := logs.String(); strings.Contains(got, "is not kept") {
		t.Fatalf("an accepted copy in place, its directory unsynced, was logged as not kept:\n%s", got)
	}
	publish(t, constitutionDir(t, "bad", wrongHash, nil), serveDir, remote.BuildOptions{})
	eventually(t, 20*time.Second, "revision bad refused", func() bool { return strings.Contains(e.lastError(), refusedHash) })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	r.Stop(ctx)
	cancel()
	srv.stop()

	var logs2 testenv.SyncBuffer
	e2 := newResultEngine(t)
	startRemoteLogged(t, remote.Options{Config: cfg, Target: e2}, &logs2)
	got := logs2.String()
	if rev := e2.revision(); rev != "good" {
		t.Fatalf("after a restart whose restored copy's directory could not be synced, revision %q is active (last error %q), want good:\n%s",
			rev, e2.lastError(), got)
	}
	if strings.Contains(got, "loaded as they are") || !strings.Contains(got, "could not be synced") {
		t.Fatalf("the restored copy, its directory unsynced, was not logged as restored with a warning:\n%s", got)
	}
}

// splitRestart runs the split constitution with "policy" polled from a
// server that stops and "config" from one that stays, persistence as
// given (extra lines of each bundle's block): it activates p1 and d1,
// has policy p2 (another constitutional hash) refused, and restarts the
// source during the policy server's outage. It returns the restarted
// engine and config's serving directory.
func splitRestart(t *testing.T, policyExtra, configExtra string) (*resultEngine, string) {
	t.Helper()
	pDir, cDir := t.TempDir(), t.TempDir()
	pSrv := newStoppableServer(t, pDir)
	cURL := bundleServer(t, cDir)
	sc := newSplitConstitution(t)
	sc.publish(t, "policy", "p1", hash, pDir)
	sc.publish(t, "config", "d1", hash, cDir)
	cfg := append([]byte("persistence_directory: "+t.TempDir()+"\n"), twoServerConfig(pSrv.url(), poll+policyExtra, cURL, poll+configExtra)...)
	e := newEngine(t)
	r := startRemoteWith(t, remote.Options{Config: cfg, Target: e})
	eventually(t, 20*time.Second, "p1 and d1 active", func() bool { return e.revision() == "config@d1,policy@p1" })
	sc.publish(t, "policy", "p2", wrongHash, pDir)
	eventually(t, 20*time.Second, "policy p2 refused", func() bool { return strings.Contains(e.lastError(), wrongHash) })
	return restartDuringOutage(t, r, cfg, pSrv), cDir
}

// TestPartlyPersistedSetFallsBack: with only some bundles persisted, the
// set cannot be handed to the engine before the plugin starts (a policy
// without its data never serves); the accepted copy of a persisted bundle
// whose OPA file holds a refused one is loaded all the same, and the set
// is activated once the other bundle downloads. b39990b never fell back
// for such a set (reverted in 69242c3).
func TestPartlyPersistedSetFallsBack(t *testing.T) {
	e, _ := splitRestart(t, "    persist: true\n", "")
	eventually(t, 20*time.Second, "p1 and d1 active after the restart", func() bool { return e.revision() == "config@d1,policy@p1" })
}

// TestOtherBundleUpdatesAfterFallback: after a restart that fell back to
// the accepted copy of a bundle (OPA's file held a refused one), another
// bundle's update is activated with it. b39990b handed the copies to the
// engine but left the refused bundle in the plugin's store, from which
// every later activation is read, so every update was refused (reverted
// in 69242c3).
func TestOtherBundleUpdatesAfterFallback(t *testing.T) {
	e, cDir := splitRestart(t, "    persist: true\n", "    persist: true\n")
	if got := e.revision(); got != "config@d1,policy@p1" {
		t.Fatalf("after the restart, revision %q is active (last error %q), want config@d1,policy@p1", got, e.lastError())
	}
	newSplitConstitution(t).publish(t, "config", "d2", hash, cDir)
	eventually(t, 20*time.Second, "config d2 active with policy p1", func() bool { return e.revision() == "config@d2,policy@p1" })
}

// TestMixedHashPersistedSetIsARefusal: persisted files that are a set of
// bundles declaring different constitutional hashes are refused at start,
// as activateStored refuses such a set: counted as a refusal (failure),
// once, when there are no accepted copies (the plugin loads the set
// refused), and only logged as refused when the accepted copies take
// their place (no failed reload: TestPersistedBundleIsTheLastAccepted).
// They were logged as files that could not be read, and no refusal was
// recorded (review).
func TestMixedHashPersistedSetIsARefusal(t *testing.T) {
	const persist = "    persist: true\n"
	for _, tc := range []struct {
		name     string
		accepted bool   // the accepted copies are kept
		want     string // revision active after the restart
	}{
		{"accepted copies restored", true, "config@d1,policy@p1"},
		{"no accepted copies", false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pDir, cDir, persistDir := t.TempDir(), t.TempDir(), t.TempDir()
			pSrv, cSrv := newStoppableServer(t, pDir), newStoppableServer(t, cDir)
			sc := newSplitConstitution(t)
			sc.publish(t, "policy", "p1", hash, pDir)
			sc.publish(t, "config", "d1", hash, cDir)
			cfg := append([]byte("persistence_directory: "+persistDir+"\n"), twoServerConfig(pSrv.url(), poll+persist, cSrv.url(), poll+persist)...)
			e := newEngine(t)
			r := startRemoteWith(t, remote.Options{Config: cfg, Target: e})
			eventually(t, 20*time.Second, "p1 and d1 active", func() bool { return e.revision() == "config@d1,policy@p1" })
			sc.publish(t, "policy", "p2", wrongHash, pDir) // config declares hash: the set is refused before the engine
			eventually(t, 20*time.Second, "policy p2 refused", func() bool { return strings.Contains(e.lastError(), "declares constitutional hash") })
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			r.Stop(ctx)
			cancel()
			pSrv.stop()
			cSrv.stop()
			if !tc.accepted {
				if err := os.RemoveAll(filepath.Join(persistDir, "acgs-accepted")); err != nil {
					t.Fatal(err)
				}
			}
			var logs testenv.SyncBuffer
			e2 := newResultEngine(t)
			startRemoteLogged(t, remote.Options{Config: cfg, Target: e2}, &logs)
			if got := e2.revision(); got != tc.want {
				t.Fatalf("after the restart, revision %q is active (last error %q), want %q", got, e2.lastError(), tc.want)
			}
			if n, want := e2.count("failure"), map[bool]int{true: 0, false: 1}[tc.accepted]; n != want {
				t.Fatalf("after the restart with a mixed-hash persisted set, %d refusals, want %d:\n%s", n, want, logs.String())
			}
			if got := logs.String(); !strings.Contains(got, "remote bundle refused") && !strings.Contains(got, "persisted bundles were refused") {
				t.Fatalf("the refusal of a mixed-hash persisted set was not logged:\n%s", got)
			}
			if got := logs.String(); strings.Contains(got, "could not be read") {
				t.Fatalf("a mixed-hash persisted set was logged as unreadable:\n%s", got)
			}
		})
	}
}

// TestRefusedPolledBundleIsRetried: a polled bundle the engine refused
// for a passing reason is handed over again, by a later poll or by a
// reload, although its server answers 304 (OPA keeps its ETag). The
// refusal stood until another bundle was published, and a reload answered
// ErrPolled (review).
func TestRefusedPolledBundleIsRetried(t *testing.T) {
	for _, tc := range []struct {
		name    string
		polling string // long enough in "reload" that no poll retries first
		reload  bool
	}{
		{"by a later poll", poll, false},
		{"by a reload", "    polling:\n      min_delay_seconds: 600\n      max_delay_seconds: 900\n", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			serveDir := t.TempDir()
			url := bundleServer(t, serveDir)
			publish(t, constitutionDir(t, "a", hash, nil), serveDir, remote.BuildOptions{})
			ft := &flakyTarget{fleetEngine: newEngine(t)}
			ft.fail.Store(1) // the first activation is refused, the next ones are not
			cfg := strings.Replace(string(opaConfig(url, "", "")), poll, tc.polling, 1)
			r := startRemoteWith(t, remote.Options{Config: []byte(cfg), Target: ft})
			eventually(t, 20*time.Second, "the first activation refused", func() bool { return ft.lastError() != "" })
			if tc.reload {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				if err := r.Reload(ctx); err != nil {
					t.Fatalf("reload of the refused polled bundle: %v, want it activated", err)
				}
				if got := ft.revision(); got != "a" {
					t.Fatalf("revision %q active after the reload, want a", got)
				}
				// Nothing refused any more: a reload of polled bundles
				// downloads nothing.
				if err := r.Reload(ctx); !errors.Is(err, remote.ErrPolled) {
					t.Fatalf("second reload: %v, want ErrPolled", err)
				}
				return
			}
			eventually(t, 30*time.Second, "revision a active after a later poll", func() bool { return ft.revision() == "a" })
		})
	}
}

// TestReloadThatActivatesNothing: a manual reload that downloads its
// bundle while the first activation still waits for a polled bundle
// activates nothing, and says so (a DownloadError: the admin API's 503).
// It answered success, and the admin API {"reloaded": true} with no
// revision (review).
func TestReloadThatActivatesNothing(t *testing.T) {
	pDir, cDir := t.TempDir(), t.TempDir()
	pURL, cURL := bundleServer(t, pDir), bundleServer(t, cDir)
	sc := newSplitConstitution(t)
	sc.publish(t, "policy", "p1", hash, pDir) // "config" is not published: its server answers 404
	e := newEngine(t)
	r := startRemoteWith(t, remote.Options{Config: twoServerConfig(pURL, "    trigger: manual\n", cURL, poll), Target: e})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := r.Reload(ctx)
	var de *remote.DownloadError
	if !errors.As(err, &de) || !strings.Contains(err.Error(), "config") {
		t.Fatalf("reload with bundle config not downloaded: %v, want a DownloadError naming config", err)
	}
	if inf, ok := e.Info(); ok {
		t.Fatalf("revision %s active with only one of two bundles", inf.Revision)
	}
	sc.publish(t, "config", "d1", hash, cDir)
	eventually(t, 20*time.Second, "both bundles active once config is published", func() bool { return e.revision() == "config@d1,policy@p1" })
	if err := r.Reload(ctx); err != nil {
		t.Fatalf("reload once both are active: %v", err)
	}
}

// TestSignatureRequirementLogged: the start-up log says whether a bundle's
// signature is required as OPA enforces it. With keys but no "signing"
// block OPA verifies a signature when present and accepts an unsigned
// bundle; that is kept (OPA's configurations work unchanged) and warned
// about. The log said signed=true (review).
func TestSignatureRequirementLogged(t *testing.T) {
	priv, pub := keyPair(t, 0)
	const warning = "remote bundle signatures are not required"
	for _, tc := range []struct {
		name     string
		signing  bool // the bundle block has "signing"
		signed   bool // the published bundle is signed
		required string
		warned   bool
	}{
		{"keys and signing, signed", true, true, "signature_required=true", false},
		{"keys only, unsigned", false, false, "signature_required=false", true},
		{"keys only, signed", false, true, "signature_required=false", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			serveDir := t.TempDir()
			url := bundleServer(t, serveDir)
			o := remote.BuildOptions{}
			if tc.signed {
				o = remote.BuildOptions{SigningKey: priv, KeyID: "constitution"}
			}
			publish(t, constitutionDir(t, "r1", hash, nil), serveDir, o)
			cfg := string(opaConfig(url, pub, ""))
			if !tc.signing {
				cfg = strings.Replace(cfg, "    signing:\n      keyid: constitution\n", "", 1)
			}
			var logs testenv.SyncBuffer
			e := newEngine(t)
			r, err := remote.New(remote.Options{Config: []byte(cfg), Name: "c.yaml", ID: "t", Target: e,
				Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			if err != nil {
				t.Fatal(err)
			}
			if err := r.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				r.Stop(ctx)
			})
			var source string
			for _, line := range strings.Split(logs.String(), "\n") {
				if strings.Contains(line, `msg="remote bundle source"`) {
					source = line
				}
			}
			if !strings.Contains(source, tc.required) {
				t.Fatalf("start-up log %q, want %s", source, tc.required)
			}
			if got := strings.Contains(logs.String(), warning); got != tc.warned {
				t.Fatalf("warning %q logged: %v, want %v\n%s", warning, got, tc.warned, logs.String())
			}
			eventually(t, 20*time.Second, "revision r1 active", func() bool { return e.revision() == "r1" })
		})
	}
}

// revisionTarget refuses the revisions in refuse, as many times as given
// (-1: always), as an engine does whose activations run past their
// deadline on a busy machine.
type revisionTarget struct {
	*fleetEngine
	mu     sync.Mutex
	refuse map[string]int
}

func (rt *revisionTarget) Activate(ctx context.Context, b *bundle.Bundle, source string) error {
	rev := b.Manifest.Revision
	rt.mu.Lock()
	n := rt.refuse[rev]
	if n > 0 {
		rt.refuse[rev]--
	}
	rt.mu.Unlock()
	if n != 0 {
		err := fmt.Errorf("revision %s refused (a passing refusal)", rev)
		rt.RecordFailure(err)
		return err
	}
	return rt.fleetEngine.Activate(ctx, b, source)
}

// TestRefusedBundleRetryWaitIsPerBundle: a newly published bundle refused
// for a passing reason is retried by the polls after refusedRetry, however
// long the wait grew for the bundle refused before it. The wait was one
// for all bundles, reset only by an accepted activation, so after a
// lasting refusal a new bundle's passing refusal stood for the longest
// wait (review of 0d6f3ff).
func TestRefusedBundleRetryWaitIsPerBundle(t *testing.T) {
	serveDir := t.TempDir()
	url := bundleServer(t, serveDir)
	publish(t, constitutionDir(t, "a", hash, nil), serveDir, remote.BuildOptions{})
	rt := &revisionTarget{fleetEngine: newEngine(t), refuse: map[string]int{"a": -1, "b": 1}}
	r := startRemoteWith(t, remote.Options{Config: opaConfig(url, "", poll), Target: rt})
	eventually(t, 20*time.Second, "revision a refused", func() bool { return strings.Contains(rt.lastError(), "revision a refused") })
	// Every reload hands a over again at once and is refused: the wait
	// doubles each time, up to its bound.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := range 12 {
		if err := r.Reload(ctx); err == nil || !strings.Contains(err.Error(), "revision a refused") {
			t.Fatalf("reload %d: %v, want revision a refused", i, err)
		}
	}
	publish(t, constitutionDir(t, "b", hash, nil), serveDir, remote.BuildOptions{})
	eventually(t, 60*time.Second, "revision b, refused once, active after a later poll", func() bool { return rt.revision() == "b" })
}

// startRemoteLogged is startRemoteWith with the source's log kept in logs.
func startRemoteLogged(tb testing.TB, opts remote.Options, logs *testenv.SyncBuffer) *remote.Remote {
	tb.Helper()
	opts.Name, opts.ID, opts.Logger = "c.yaml", "t", slog.New(slog.NewTextHandler(logs, nil))
	r, err := remote.New(opts)
	if err != nil {
		tb.Fatal(err)
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

// TestReloadThatActivatesNothingIsLogged: a manual reload (SIGHUP, the
// admin API) that activates nothing says so in one line, and why: the
// first activation waits for a polled bundle not downloaded yet, or every
// bundle server answered 304 and the active bundles stay. Neither was
// logged: the target is not called, and SIGHUP logs only ErrPolled itself
// (review).
func TestReloadThatActivatesNothingIsLogged(t *testing.T) {
	const nothing = "reload: nothing changed"
	t.Run("waiting for another bundle", func(t *testing.T) {
		pDir, cDir := t.TempDir(), t.TempDir()
		pURL, cURL := bundleServer(t, pDir), bundleServer(t, cDir)
		sc := newSplitConstitution(t)
		sc.publish(t, "policy", "p1", hash, pDir) // "config" is not published: its server answers 404
		var logs testenv.SyncBuffer
		r := startRemoteLogged(t, remote.Options{Config: twoServerConfig(pURL, "    trigger: manual\n", cURL, poll), Target: newEngine(t)}, &logs)
		// Start's first download of the manual bundle is a reload of its
		// own, which logs its own line (and then stops: the set waits for
		// config): counted before the test's reload, not in it. Counting
		// at once, that line could land after and count twice (CI flake).
		eventually(t, 20*time.Second, "the first download's own reload logged", func() bool {
			return strings.Contains(logs.String(), nothing)
		})
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		before := strings.Count(logs.String(), nothing)
		var de *remote.DownloadError
		if err := r.Reload(ctx); !errors.As(err, &de) {
			t.Fatalf("reload with bundle config not downloaded: %v, want a DownloadError", err)
		}
		got := logs.String()
		if n := strings.Count(got, nothing); n != before+1 || !strings.Contains(got, "waits for the other bundles") {
			t.Fatalf("the reload that activated nothing logged %d lines %q (want 1, saying it waits):\n%s", n-before, nothing, got)
		}
	})
	t.Run("unchanged", func(t *testing.T) {
		serveDir := t.TempDir()
		url := bundleServer(t, serveDir)
		publish(t, constitutionDir(t, "a", hash, nil), serveDir, remote.BuildOptions{})
		var logs testenv.SyncBuffer
		e := newEngine(t)
		r := startRemoteLogged(t, remote.Options{Config: opaConfig(url, "", "    trigger: manual\n"), Target: e}, &logs)
		eventually(t, 20*time.Second, "revision a active", func() bool { return e.revision() == "a" })
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := r.Reload(ctx); err != nil {
			t.Fatalf("reload of an unchanged bundle: %v", err)
		}
		got := logs.String()
		if n := strings.Count(got, nothing); n != 1 || !strings.Contains(got, "304") {
			t.Fatalf("the reload that found the bundle unchanged logged %d lines %q (want 1, saying 304):\n%s", n, nothing, got)
		}
	})
}
