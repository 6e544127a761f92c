// Package testenv starts the real external services that integration tests
// talk to (redis-server, a Redis cluster) on free loopback ports, and finds
// the binaries they need. It never mocks or fakes a service: a test that
// cannot get the real binary is skipped, or fails when ACGS_REQUIRE_SERVICES=1
// (scripts/test.sh sets it so that CI cannot pass by skipping).
package testenv

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// RequireServicesEnv names the variable that turns a missing binary from a
// skip into a failure.
const RequireServicesEnv = "ACGS_REQUIRE_SERVICES"

// extraBinDirs are searched after PATH: Debian puts some daemons (nginx) in
// sbin directories that a normal user's PATH lacks.
var extraBinDirs = []string{"/usr/sbin", "/usr/local/sbin", "/sbin"}

// RequireBinary returns the path of the named binary, searching PATH, the
// sbin directories and the repository's bin/. When it is missing the test is
// skipped, or failed when ACGS_REQUIRE_SERVICES=1; the message names pkg, the
// Debian package that provides it.
func RequireBinary(tb testing.TB, name, pkg string) string {
	tb.Helper()
	path, err := findBinary(name)
	if err == nil {
		return path
	}
	msg := missingMessage(name, pkg)
	if os.Getenv(RequireServicesEnv) == "1" {
		tb.Fatal(msg)
	}
	tb.Skip(msg)
	return ""
}

func missingMessage(name, pkg string) string {
	return fmt.Sprintf("%s not found: install the Debian package %s (scripts/test.sh does this)", name, pkg)
}

var errNotFound = errors.New("testenv: binary not found")

// findBinary looks for name on PATH, then in extraBinDirs, then in the bin/
// directory of the enclosing Go module.
func findBinary(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	dirs := append([]string(nil), extraBinDirs...)
	if root, err := moduleRoot(); err == nil {
		dirs = append(dirs, filepath.Join(root, "bin"))
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w: %s", errNotFound, name)
}

// moduleRoot walks up from the working directory (a test runs in its
// package's directory) to the directory holding go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("testenv: no go.mod above the working directory")
		}
		dir = parent
	}
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago. The
// port is released before returning, so a server can bind it; a rare race with
// another process is retried by the Start functions.
func FreePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("testenv: find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// WaitTCP waits until addr accepts a TCP connection or timeout passes.
func WaitTCP(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("testenv: %s not accepting connections after %s: %w", addr, timeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
