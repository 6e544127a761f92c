package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

var acgsBuild struct {
	once sync.Once
	dir  string
	lock *os.File // held open: the lock that says dir's owner lives
	path string
	err  error
}

// buildDirPattern names the directories ACGSBinary builds into, in the
// temporary directory.
const buildDirPattern = "acgs-test-"

// ACGSBinary returns an acgs binary for tests that run the service as a
// process: $ACGS_BIN when set, else one built from this checkout, once per
// test process. Packages that call it remove the build at exit through Main;
// a build left by a test binary that died before (a timeout's panic) is
// removed by the next ACGSBinary.
func ACGSBinary(tb testing.TB) string {
	tb.Helper()
	if p := os.Getenv("ACGS_BIN"); p != "" {
		return p
	}
	b := &acgsBuild
	b.once.Do(func() {
		root, err := moduleRoot()
		if err != nil {
			b.err = err
			return
		}
		sweepBuilds(os.TempDir())
		if b.dir, b.err = os.MkdirTemp("", buildDirPattern); b.err != nil {
			return
		}
		if b.lock, b.err = lockDir(b.dir); b.err != nil {
			_ = os.RemoveAll(b.dir)
			b.dir = ""
			return
		}
		b.path = filepath.Join(b.dir, "acgs")
		cmd := exec.Command(goTool(), "build", "-o", b.path, "./cmd/acgs")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build ./cmd/acgs: %v\n%s", err, out)
		}
	})
	if b.err != nil {
		tb.Fatal(b.err)
	}
	return b.path
}

// Main runs a package's tests and then removes what ACGSBinary built; call
// it from TestMain.
func Main(m *testing.M) {
	code := m.Run()
	if acgsBuild.dir != "" {
		_ = os.RemoveAll(acgsBuild.dir)
	}
	os.Exit(code)
}

// sweepBuilds removes the builds in tmp whose test binary is gone: their
// lock is free (the kernel drops it with the process, however it dies). A
// build without a lock file (made before locks, or being made) is left.
func sweepBuilds(tmp string) {
	dirs, _ := filepath.Glob(filepath.Join(tmp, buildDirPattern+"*"))
	for _, d := range dirs {
		removeIfOrphaned(d)
	}
}

// goTool is the go command: from PATH, else where the Go image installs it
// (a test's environment may lack it on PATH).
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "/usr/local/go/bin/go"
}
