package engine

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/acgs-lite/acgs/policies"
)

// TestPathSourceFollowsSymlinks is the regression test for a symlinked
// POLICY_BUNDLE_PATH (a "current" link swapped at deploy, a Kubernetes
// ConfigMap mount): the directory walk does not follow a symlinked root, so
// the bundle loaded empty and was refused for its missing constitutional
// hash. Links to a directory, to a link, and to a tarball all load.
func TestPathSourceFollowsSymlinks(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "bundle-v1")
	err := fs.WalkDir(policies.FS, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(p, "_test.rego") {
			return err
		}
		b, err := fs.ReadFile(policies.FS, p)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(real, p)), 0o755); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(real, p), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	tarball := filepath.Join(dir, "bundle.tar.gz")
	if err := os.WriteFile(tarball, gzipBytes(makeTar(t, policyEntries(t))), 0o644); err != nil {
		t.Fatal(err)
	}
	links := map[string]string{"current": real, "current-2": filepath.Join(dir, "current"), "current.tar.gz": tarball}
	for _, name := range []string{"current", "current-2", "current.tar.gz"} {
		if err := os.Symlink(links[name], filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	for name := range links {
		t.Run(name, func(t *testing.T) {
			b, err := PathSource{Path: filepath.Join(dir, name)}.Load(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if got, _ := b.Manifest.Metadata["constitutional_hash"].(string); got != fuzzHash || len(b.Modules) == 0 {
				t.Fatalf("loaded hash %q with %d modules", got, len(b.Modules))
			}
			if _, err := activate(context.Background(), b, fuzzHash, name); err != nil {
				t.Fatal(err)
			}
		})
	}
}
