package faults

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/acgs-lite/acgs/internal/testenv"
)

// Fleet is one run of scripts/cluster.sh: three instances with remote signed
// bundles from the bundle server, Redis, nginx in front, Prometheus.
type Fleet struct {
	tb   testing.TB
	root string
	Dir  string // CLUSTER_DIR
	Base int    // CLUSTER_BASE_PORT
	bin  string
	env  []string
}

// Ports of the topology (cluster.sh's header).
func (f *Fleet) NginxURL() string         { return "http://127.0.0.1:" + strconv.Itoa(f.Base) }
func (f *Fleet) InstanceURL(i int) string { return "http://127.0.0.1:" + strconv.Itoa(f.Base+i) } // i in 1..3
func (f *Fleet) BundleAddr() string       { return "127.0.0.1:" + strconv.Itoa(f.Base+80) }
func (f *Fleet) PromURL() string          { return "http://127.0.0.1:" + strconv.Itoa(f.Base+90) }

// Bundle polling of the fleet's instances (CLUSTER_POLL_MIN/MAX), seconds.
const (
	PollMin = 1
	PollMax = 2
)

// StartFleet runs `cluster.sh up` (with upArgs, e.g. --cluster) with bin as
// the acgs binary on a free port range and registers `down`.
func StartFleet(tb testing.TB, bin string, upArgs ...string) *Fleet {
	tb.Helper()
	for b, pkg := range map[string]string{
		"bash": "bash", "nginx": "nginx", "redis-server": "redis-server", "redis-cli": "redis-tools",
		"prometheus": "prometheus", "promtool": "prometheus", "openssl": "openssl", "curl": "curl",
	} {
		testenv.RequireBinary(tb, b, pkg)
	}
	root := testenv.ModuleRoot(tb)
	if _, err := os.Stat(filepath.Join(root, "scripts", "cluster.sh")); err != nil {
		tb.Skip("scripts/cluster.sh is not there")
	}
	f := &Fleet{tb: tb, root: root, Dir: tb.TempDir(), Base: freeBase(tb), bin: bin}
	f.env = append(os.Environ(),
		"CLUSTER_DIR="+f.Dir, "CLUSTER_BASE_PORT="+strconv.Itoa(f.Base), "CLUSTER_BIN="+bin,
		"CLUSTER_POLL_MIN="+strconv.Itoa(PollMin), "CLUSTER_POLL_MAX="+strconv.Itoa(PollMax), "CLUSTER_WAIT=180", "LOG_LEVEL=info")
	tb.Cleanup(func() {
		if out, err := f.Script(3*time.Minute, "down"); err != nil {
			tb.Errorf("cluster.sh down: %v\n%s", err, out)
		}
	})
	if out, err := f.Script(6*time.Minute, append([]string{"up"}, upArgs...)...); err != nil {
		tb.Fatalf("cluster.sh up: %v\n%s\n%s", err, out, f.Logs())
	}
	return f
}

// freeBase finds a CLUSTER_BASE_PORT whose every port (and, for --cluster,
// every Redis Cluster node and bus port) is free. The range lies below
// Linux's ephemeral ports (32768 and up by default): a port there can be
// taken by any outgoing connection between this check and the bind, which
// once left an instance unable to listen while other tests ran beside it.
func freeBase(tb testing.TB) int {
	offsets := []int{0, 1, 2, 3, 71, 72, 73, 79, 80, 90, 10071, 10072, 10073}
	for range 50 {
		base := 10000 + 10*rand.IntN(1250) // base+10073 < 32768
		ok := true
		for _, off := range offsets {
			ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(base+off))
			if err != nil {
				ok = false
				break
			}
			ln.Close()
		}
		if ok {
			return base
		}
	}
	tb.Fatal("no free port range for the fleet")
	return 0
}

// Script runs scripts/cluster.sh with args, bounded by timeout.
func (f *Fleet) Script(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", append([]string{filepath.Join(f.root, "scripts", "cluster.sh")}, args...)...)
	cmd.Dir, cmd.Env = f.root, f.env
	// A child still holding the output pipe (redis-cli, openssl) must not
	// keep Run waiting once the deadline has killed bash.
	cmd.WaitDelay = 10 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// Logs is the tail of every log of the run, for failure messages.
func (f *Fleet) Logs() string {
	var b strings.Builder
	logs, _ := filepath.Glob(filepath.Join(f.Dir, "logs", "*.log"))
	for _, l := range logs {
		data, _ := os.ReadFile(l)
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		if len(lines) > 8 {
			lines = lines[len(lines)-8:]
		}
		fmt.Fprintf(&b, "--- %s\n%s\n", filepath.Base(l), strings.Join(lines, "\n"))
	}
	return b.String()
}

// Pid is the recorded pid of a part (acgs-1, bundles, nginx, ...).
func (f *Fleet) Pid(name string) (int, error) {
	b, err := os.ReadFile(filepath.Join(f.Dir, "pids", name))
	if err != nil {
		return 0, err
	}
	fields := strings.Fields(string(b))
	if len(fields) == 0 {
		return 0, errors.New("empty pid file")
	}
	return strconv.Atoi(fields[0])
}

// Alive reports whether pid still runs.
func Alive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// A zombie (state Z) has exited.
	if i := bytes.LastIndexByte(b, ')'); i > 0 && i+2 < len(b) && b[i+2] == 'Z' {
		return false
	}
	return true
}

// ProcImage is what it takes to start a process again as it was: its
// command line, environment and working directory, read from /proc.
type ProcImage struct {
	Args []string
	Env  []string
	Dir  string
}

// ReadImage reads pid's command line, environment and working directory.
func ReadImage(pid int) (ProcImage, error) {
	var im ProcImage
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return im, err
	}
	environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		return im, err
	}
	im.Args = strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	im.Env = strings.Split(strings.TrimRight(string(environ), "\x00"), "\x00")
	im.Dir, _ = os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
	return im, nil
}

// Respawn starts a process from an image, as a child of the test, logging
// to log (appended).
func Respawn(tb testing.TB, name, log string, im ProcImage) *Proc {
	tb.Helper()
	p := &Proc{Name: name, Log: log, done: make(chan struct{})}
	lf, err := os.OpenFile(log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(im.Args[0], im.Args[1:]...)
	cmd.Env, cmd.Dir = im.Env, im.Dir
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		lf.Close()
		tb.Fatalf("restarting %s: %v", name, err)
	}
	p.cmd = cmd
	go func() {
		p.err = cmd.Wait()
		lf.Close()
		close(p.done)
	}()
	tb.Cleanup(func() { p.Stop(30 * time.Second) })
	return p
}

// WriteAtomic replaces path with data (temporary file, then rename), as a
// bundle server's directory must be updated.
func WriteAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
