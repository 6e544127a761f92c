package engine

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/acgs-lite/acgs/internal/testenv"
)

// TestPathSourceFollowsSymlinks is the regression test for a symlinked
// POLICY_BUNDLE_PATH (a "current" link swapped at deploy, a Kubernetes
// ConfigMap mount): the directory walk does not follow a symlinked root, so
// the bundle loaded empty and was refused for its missing constitutional
// hash. Links to a directory, to a link, and to a tarball all load.
func TestPathSourceFollowsSymlinks(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "bundle-v1")
	testenv.WriteConstitution(t, real, nil, nil)
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
			if _, err := activate(context.Background(), b, fuzzHash, name, ""); err != nil {
				t.Fatal(err)
			}
		})
	}
}
