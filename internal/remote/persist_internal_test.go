package remote

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestWriteCopySyncsDirectory: an accepted copy (and a copy restored in
// OPA's place) is renamed into place and then its directory is synced, as
// is the parent of every directory created for it, so that the rename and
// the new directories outlive a power loss. Only the file was synced: the
// rename could be lost, leaving the previous copy, or none (review).
func TestWriteCopySyncsDirectory(t *testing.T) {
	var synced []string
	orig := syncDir
	syncDir = func(dir string) error {
		synced = append(synced, dir)
		return orig(dir)
	}
	t.Cleanup(func() { syncDir = orig })
	root := t.TempDir()
	path := filepath.Join(root, "acgs-accepted", "acgs", "bundle.tar.gz")
	for i, content := range []string{"first", "second"} {
		synced = nil
		if err := writeCopy(path, strings.NewReader(content)); err != nil {
			t.Fatal(err)
		}
		if got, err := os.ReadFile(path); err != nil || string(got) != content {
			t.Fatalf("write %d: %q, %v; want %q", i, got, err, content)
		}
		want := []string{filepath.Dir(path)}
		if i == 0 { // the directories created, each in its parent
			want = append(want, root, filepath.Join(root, "acgs-accepted"))
		}
		for _, dir := range want {
			if !slices.Contains(synced, dir) {
				t.Fatalf("write %d: directories synced %q, want %s among them", i, synced, dir)
			}
		}
	}
}

// TestPersistableNameOnWindows: on Windows \ separates path elements as /
// does, and the characters OPA escapes in the name it persists under are
// refused (this package would look for the file elsewhere).
func TestPersistableNameOnWindows(t *testing.T) {
	for _, name := range []string{`a\b`, "team/authz"} {
		if err := persistableNameOn("windows", name); err != nil {
			t.Errorf("%q on Windows: %v, want it accepted", name, err)
		}
	}
	for _, name := range []string{`\x`, `..\x`, `a\\b`, `a\`, `a\.\b`, `C:\x`, "a:b", "a*b", `team\bundle.tar.gz`} {
		if err := persistableNameOn("windows", name); err == nil {
			t.Errorf("%q on Windows accepted, want it refused", name)
		}
	}
	if err := persistableNameOn("linux", `..\x`); err != nil {
		t.Errorf(`..\x on Linux (one name): %v, want it accepted`, err)
	}
}

// TestDistinctPersistedNamesOnWindows: on Windows "a\b" and "a/b" are one
// path, so persisting both would share their files; elsewhere they are
// two names.
func TestDistinctPersistedNamesOnWindows(t *testing.T) {
	names := []string{`team/authz`, `Team\authz`}
	if err := distinctPersistedNames("windows", names); err == nil {
		t.Errorf("%q on Windows accepted, want them refused", names)
	}
	if err := distinctPersistedNames("linux", names); err != nil {
		t.Errorf("%q on Linux: %v, want them accepted", names, err)
	}
}
