package remote_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/acgs-lite/acgs/internal/remote"
)

// TestNewRefusesPersistedBundleNames: a bundle with persist: true whose
// name is not one directory name (a path separator, "..", ".", empty) is
// refused at start with an error naming it: the name was joined unchecked
// into the accepted copy's path, so "../../x" wrote outside the
// persistence directory and "." over another bundle's copy (review). A
// bundle that is not persisted keeps any name OPA takes.
func TestNewRefusesPersistedBundleNames(t *testing.T) {
	e := newEngine(t)
	dir := t.TempDir()
	config := func(name, extra string) []byte {
		return []byte("persistence_directory: " + dir + "\nservices:\n  s:\n    url: http://127.0.0.1:1\nbundles:\n" +
			"  '" + name + "':\n    service: s\n    resource: b.tar.gz\n" + extra)
	}
	for _, name := range []string{"..", ".", "", "../../etc/acgs", "team/authz", "/var/lib/acgs", `a\\b`} {
		t.Run(name, func(t *testing.T) {
			_, err := remote.New(remote.Options{Config: config(name, "    persist: true\n"), Name: "test-config.yaml", Target: e, Logger: testLogger(t)})
			want := fmt.Sprintf("bundle %q has persist: true, but its name", name)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("persisted bundle %q: error %v, want one containing %q", name, err, want)
			}
		})
	}
	for _, tc := range []struct{ name, extra string }{{"acgs", "    persist: true\n"}, {"team/authz", ""}} {
		if _, err := remote.New(remote.Options{Config: config(tc.name, tc.extra), Name: "test-config.yaml", Target: e, Logger: testLogger(t)}); err != nil {
			t.Fatalf("bundle %q (%q): %v, want it accepted", tc.name, strings.TrimSpace(tc.extra), err)
		}
	}
}
