//go:build unix

package testenv

import (
	"os"
	"path/filepath"
	"testing"
)

// TestSweepBuilds: ACGSBinary's sweep removes a build whose test binary is
// gone (its lock free, as the kernel leaves it when the process dies) and
// keeps one whose owner lives, one without a lock file, and what is not a
// build.
func TestSweepBuilds(t *testing.T) {
	tmp := t.TempDir()
	tests := []struct {
		name     string
		dir      string
		lock     bool // made with lockDir
		owned    bool // its lock still held
		wantKept bool
	}{
		{name: "owner gone", dir: buildDirPattern + "1", lock: true},
		{name: "owner alive", dir: buildDirPattern + "2", lock: true, owned: true, wantKept: true},
		{name: "no lock file", dir: buildDirPattern + "3", wantKept: true},
		{name: "not a build", dir: "other-4", lock: true, wantKept: true},
	}
	for _, tt := range tests {
		d := filepath.Join(tmp, tt.dir)
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "acgs"), []byte("binary"), 0o600); err != nil {
			t.Fatal(err)
		}
		if !tt.lock {
			continue
		}
		f, err := lockDir(d)
		if err != nil {
			t.Fatal(err)
		}
		if tt.owned {
			t.Cleanup(func() { f.Close() })
		} else {
			f.Close()
		}
	}
	sweepBuilds(tmp)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := os.Stat(filepath.Join(tmp, tt.dir, "acgs"))
			if kept := err == nil; kept != tt.wantKept {
				t.Errorf("%s kept: %v, want %v (%v)", tt.dir, kept, tt.wantKept, err)
			}
		})
	}
}
