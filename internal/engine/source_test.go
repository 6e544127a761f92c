package engine

import (
	"context"
	"os"
	"path/filepath"
	"strings"
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

// TestPathSourceReadsAKubeletVolume: a ConfigMap or Secret volume, as the
// kubelet's atomic writer lays it out (a hidden directory per version, a
// ..data link to the current one, one link per key at the top), is read
// through ..data: the directory walk read the hidden directory as data
// under its own name, and the bundle was refused for a path outside its
// manifest's roots (review). A swap of ..data is seen by the next load.
func TestPathSourceReadsAKubeletVolume(t *testing.T) {
	mount := t.TempDir()
	version := func(name string, edit func(dir string)) {
		dir := filepath.Join(mount, name)
		testenv.WriteConstitution(t, dir, nil, nil)
		if edit != nil {
			edit(dir)
		}
	}
	version("..2026_12_06_22_00_00.123456789", nil)
	version("..2026_12_06_22_05_00.987654321", func(dir string) {
		if err := os.WriteFile(filepath.Join(dir, "extra.rego"), []byte("package acgs.extra\nv := 2\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	})
	if err := os.Symlink("..2026_12_06_22_00_00.123456789", filepath.Join(mount, "..data")); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(filepath.Join(mount, "..data"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries { // the kubelet's per-key links at the top
		if err := os.Symlink(filepath.Join("..data", e.Name()), filepath.Join(mount, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	load := func() int {
		t.Helper()
		b, err := PathSource{Path: mount}.Load(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := activate(context.Background(), b, fuzzHash, "volume", ""); err != nil {
			t.Fatal(err)
		}
		return len(b.Modules)
	}
	first := load()
	// The kubelet's swap: a new link renamed over ..data.
	tmp := filepath.Join(mount, "..data_tmp")
	if err := os.Symlink("..2026_12_06_22_05_00.987654321", tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(mount, "..data")); err != nil {
		t.Fatal(err)
	}
	if second := load(); second != first+1 {
		t.Fatalf("modules %d after the swap, want %d (the new version's extra module)", second, first+1)
	}
}

// TestVerificationKeyDoesNotEchoASecret: a value that is neither PEM nor a
// file is refused for an RS/ES/PS algorithm (a mistyped path) without
// quoting it, since it may be an HMAC secret given with the wrong
// algorithm; with an HS algorithm it is the secret itself.
func TestVerificationKeyDoesNotEchoASecret(t *testing.T) {
	const secret = "s3cr3t-hmac-shared-key"
	if _, err := VerificationKey(secret, "k", "RS256"); err == nil || strings.Contains(err.Error(), secret) {
		t.Fatalf("RS256 with a non-PEM value: %v", err)
	}
	if v, err := VerificationKey(secret, "k", "HS256"); err != nil || v == nil {
		t.Fatalf("HS256 with an inline secret: %v", err)
	}
}
