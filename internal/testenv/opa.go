package testenv

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

var buildOPA sync.Mutex

// OPABinary returns the stock opa binary of go.mod's OPA version (bin/opa),
// building it from the module graph when it is not there yet.
func OPABinary(tb testing.TB) string {
	tb.Helper()
	root, err := moduleRoot()
	if err != nil {
		tb.Fatal(err)
	}
	path := filepath.Join(root, "bin", "opa")
	buildOPA.Lock()
	defer buildOPA.Unlock()
	if _, err := os.Stat(path); err == nil {
		return path
	}
	cmd := exec.Command("go", "build", "-o", path, "github.com/open-policy-agent/opa")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("building the stock opa binary (go build -o bin/opa github.com/open-policy-agent/opa): %v\n%s", err, out)
	}
	return path
}

// StartOPA runs the stock `opa run --server` on a bundle directory on a free
// loopback port and returns its base URL; it is stopped when the test ends.
func StartOPA(tb testing.TB, bundleDir string) string {
	tb.Helper()
	bin := OPABinary(tb)
	port := FreePort(tb)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	cmd := exec.Command(bin, "run", "--server", "--addr", addr, "--log-level", "error", "--bundle", bundleDir)
	cmd.SysProcAttr = childProcAttr()
	logf, _ := os.CreateTemp(tb.TempDir(), "opa-*.log")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		tb.Fatalf("starting opa: %v", err)
	}
	tb.Cleanup(func() {
		_ = cmd.Process.Kill()
		_, _ = cmd.Process.Wait()
	})
	url := "http://" + addr
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(url + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return url
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	b, _ := os.ReadFile(logf.Name())
	tb.Fatalf("opa did not become healthy on %s:\n%s", addr, b)
	return ""
}

// ModuleRoot returns the repository root (the directory holding go.mod).
func ModuleRoot(tb testing.TB) string {
	tb.Helper()
	root, err := moduleRoot()
	if err != nil {
		tb.Fatal(fmt.Errorf("finding go.mod: %w", err))
	}
	return root
}
