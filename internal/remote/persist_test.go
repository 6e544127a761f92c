package remote_test

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/acgs-lite/acgs/internal/remote"
)

// TestNewRefusesPersistedBundleNames: a bundle with persist: true whose
// name would not be its own directory of the persistence directory (empty,
// absolute, an element empty, "." or "..", or "bundle.tar.gz", another
// bundle's file) is refused at start with an error naming it: the name was
// joined unchecked into the accepted copy's path, so "../../x" wrote
// outside the persistence directory and "." over another bundle's copy
// (review). A name that nests ("team/authz", "authz/v1") is persisted, as
// OPA persists it: it was refused too (review). A bundle that is not
// persisted keeps any name OPA takes.
func TestNewRefusesPersistedBundleNames(t *testing.T) {
	e := newEngine(t)
	dir := t.TempDir()
	config := func(name, extra string) []byte {
		return []byte("persistence_directory: " + dir + "\nservices:\n  s:\n    url: http://127.0.0.1:1\nbundles:\n" +
			"  '" + name + "':\n    service: s\n    resource: b.tar.gz\n" + extra)
	}
	for _, name := range []string{"..", ".", "", "../../etc/acgs", "team/../../x", "/var/lib/acgs", "a//b", "a/", "./a", "a/./b",
		"team/bundle.tar.gz", "team/Bundle.TAR.gz"} {
		t.Run(name, func(t *testing.T) {
			_, err := remote.New(remote.Options{Config: config(name, "    persist: true\n"), Name: "test-config.yaml", Target: e, Logger: testLogger(t)})
			want := fmt.Sprintf("bundle %q has persist: true, but its name", name)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("persisted bundle %q: error %v, want one containing %q", name, err, want)
			}
		})
	}
	accepted := []struct{ name, extra string }{
		{"acgs", "    persist: true\n"}, {"team/authz", "    persist: true\n"}, {"authz/v1", "    persist: true\n"},
		{"a//b", ""}, {"..", ""},
	}
	if runtime.GOOS != "windows" { // elsewhere \ is not a path separator
		accepted = append(accepted, struct{ name, extra string }{`a\b`, "    persist: true\n"})
	}
	for _, tc := range accepted {
		if _, err := remote.New(remote.Options{Config: config(tc.name, tc.extra), Name: "test-config.yaml", Target: e, Logger: testLogger(t)}); err != nil {
			t.Fatalf("bundle %q (%q): %v, want it accepted", tc.name, strings.TrimSpace(tc.extra), err)
		}
	}
}

// TestNestedPersistedBundleNames: bundles "team" and "team/authz", both
// persisted, keep their files and accepted copies apart (team/authz's in
// a directory inside team's), and an instance restarted during an outage
// activates them both.
func TestNestedPersistedBundleNames(t *testing.T) {
	serveDir, persistDir := t.TempDir(), t.TempDir()
	srv := newStoppableServer(t, serveDir)
	sc := newSplitConstitution(t)
	sc.publish(t, "policy", "p1", hash, serveDir)
	sc.publish(t, "config", "d1", hash, serveDir)
	cfg := []byte("persistence_directory: " + persistDir + "\nservices:\n  s:\n    url: " + srv.url() + "\nbundles:\n" +
		"  team:\n    service: s\n    resource: policy.tar.gz\n    persist: true\n" + poll +
		"  team/authz:\n    service: s\n    resource: config.tar.gz\n    persist: true\n" + poll)
	e := newEngine(t)
	r := startRemoteWith(t, remote.Options{Config: cfg, Target: e})
	const want = "team@p1,team/authz@d1"
	eventually(t, 20*time.Second, want+" active", func() bool { return e.revision() == want })
	for _, name := range []string{"team", "team/authz"} {
		path := filepath.Join(persistDir, "acgs-accepted", filepath.FromSlash(name), "bundle.tar.gz")
		eventually(t, 20*time.Second, "the accepted copy of "+name+" written", func() bool { _, err := os.Stat(path); return err == nil })
	}
	e2 := restartDuringOutage(t, r, cfg, srv)
	if got := e2.revision(); got != want {
		t.Fatalf("after a restart during an outage, revision %q is active (last error %q), want %q", got, e2.lastError(), want)
	}
}

// TestNewRefusesPersistedNamesDifferingByCase: two persisted bundles whose
// names differ only by case ("Authz" and "authz") are persisted to the
// same files on a case-insensitive file system (macOS, Windows), each
// overwriting the other's file and accepted copy, so a restart loaded one
// bundle's copy as the other: such a pair is refused at start, naming
// both (review). So is a pair equal once Unicode-normalised (NFC and NFD
// "\u00e9", one name to macOS's file systems), on every system (it was
// accepted); persistedKey's other cases are TestDistinctPersistedNames'.
// Names that only share a prefix, and a pair of which one is not
// persisted, are accepted.
func TestNewRefusesPersistedNamesDifferingByCase(t *testing.T) {
	e := newEngine(t)
	dir := t.TempDir()
	tests := []struct {
		a, b, bExtra string
		refused      bool
	}{
		{a: "Authz", b: "authz", bExtra: "    persist: true\n", refused: true},
		{a: "team/Authz", b: "TEAM/authz", bExtra: "    persist: true\n", refused: true},
		{a: "caf\u00e9", b: "cafe\u0301", bExtra: "    persist: true\n", refused: true},
		{a: "Caf\u00e9", b: "cafe\u0301", bExtra: "    persist: true\n", refused: true},
		{a: "caf\u00e9", b: "cafe\u0301", bExtra: ""},
		{a: "Authz", b: "authz", bExtra: ""},
		{a: "authz", b: "authz2", bExtra: "    persist: true\n"},
		{a: "Team", b: "team/authz", bExtra: "    persist: true\n"},
	}
	for _, tc := range tests {
		t.Run(tc.a+","+tc.b+","+strings.TrimSpace(tc.bExtra), func(t *testing.T) {
			cfg := []byte("persistence_directory: " + dir + "\nservices:\n  s:\n    url: http://127.0.0.1:1\nbundles:\n" +
				"  '" + tc.a + "':\n    service: s\n    resource: a.tar.gz\n    persist: true\n" +
				"  '" + tc.b + "':\n    service: s\n    resource: b.tar.gz\n" + tc.bExtra)
			_, err := remote.New(remote.Options{Config: cfg, Name: "test-config.yaml", Target: e, Logger: testLogger(t)})
			if !tc.refused {
				if err != nil {
					t.Fatalf("%v, want the bundles accepted", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%q", tc.a)) || !strings.Contains(err.Error(), fmt.Sprintf("%q", tc.b)) ||
				!strings.Contains(err.Error(), "differ only by case") {
				t.Fatalf("error %v, want one naming %q and %q as differing only by case", err, tc.a, tc.b)
			}
		})
	}
}
