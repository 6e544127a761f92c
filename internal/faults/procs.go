package faults

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/acgs-lite/acgs/internal/testenv"
)

// Proc is a child process with its output in a log file. It is killed when
// the test ends if it is still running, and with the test binary if that
// dies first (Pdeathsig).
type Proc struct {
	Name string
	Log  string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Spawn starts bin with args and exactly env (plus PATH and HOME).
func Spawn(tb testing.TB, dir, name string, env []string, bin string, args ...string) *Proc {
	tb.Helper()
	p := &Proc{Name: name, Log: filepath.Join(dir, name+".log"), done: make(chan struct{})}
	f, err := os.OpenFile(p.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, env...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		tb.Fatalf("starting %s: %v", name, err)
	}
	p.cmd = cmd
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	tb.Cleanup(func() { p.Stop(10 * time.Second) })
	return p
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Signal sends sig.
func (p *Proc) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Wait waits up to timeout for the process to exit and returns its exit
// error (nil for status 0).
func (p *Proc) Wait(timeout time.Duration) (error, bool) {
	select {
	case <-p.done:
		return p.err, true
	case <-time.After(timeout):
		return nil, false
	}
}

// Stop sends SIGTERM and, after grace, SIGKILL.
func (p *Proc) Stop(grace time.Duration) {
	if p.Exited() {
		return
	}
	_ = p.Signal(syscall.SIGTERM)
	if _, ok := p.Wait(grace); !ok {
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// Kill sends SIGKILL and waits.
func (p *Proc) Kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// Tail is the end of the process's log, for failure messages.
func (p *Proc) Tail(n int) string {
	b, _ := os.ReadFile(p.Log)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// RSSKiB reads VmRSS from /proc/<pid>/status.
func (p *Proc) RSSKiB() (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.Pid()))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			return strconv.Atoi(f[1])
		}
	}
	return 0, errors.New("no VmRSS")
}

// ACGS is one `acgs serve` process.
type ACGS struct {
	*Proc
	URL  string
	Port int
	env  []string
	bin  string
	dir  string
}

// StartACGS runs `acgs serve` on a free loopback port with env (KEY=VALUE;
// PORT and HOST are set here) and waits until it is ready.
func StartACGS(tb testing.TB, bin, dir, name string, env ...string) *ACGS {
	tb.Helper()
	a := SpawnACGS(tb, bin, dir, name, env...)
	a.WaitReady(tb)
	return a
}

// SpawnACGS starts `acgs serve` without waiting (start several, then wait).
func SpawnACGS(tb testing.TB, bin, dir, name string, env ...string) *ACGS {
	tb.Helper()
	port := testenv.FreePort(tb)
	a := &ACGS{Port: port, URL: "http://127.0.0.1:" + strconv.Itoa(port), bin: bin, dir: dir}
	a.env = append([]string{"HOST=127.0.0.1", "PORT=" + strconv.Itoa(port), "LOG_FORMAT=json", "LOG_LEVEL=info"}, env...)
	a.Proc = Spawn(tb, dir, name, a.env, bin, "serve")
	return a
}

// WaitReady waits (up to 2 minutes: activation is slow on a loaded machine)
// until the instance is ready.
func (a *ACGS) WaitReady(tb testing.TB) {
	tb.Helper()
	if err := WaitReady(a.URL, 120*time.Second, a.Proc); err != nil {
		tb.Fatalf("%s: %v\n%s", a.Name, err, a.Tail(20))
	}
}

// Restart starts the same instance again on the same port (after it exited).
func (a *ACGS) Restart(tb testing.TB) {
	tb.Helper()
	a.Proc = Spawn(tb, a.dir, a.Name, a.env, a.bin, "serve")
	a.WaitReady(tb)
}

// WaitReady polls base/health/ready until it answers 200.
func WaitReady(base string, timeout time.Duration, p *Proc) error {
	deadline := time.Now().Add(timeout)
	c := &http.Client{Timeout: 2 * time.Second}
	for time.Now().Before(deadline) {
		if p != nil && p.Exited() {
			return fmt.Errorf("exited before it was ready (%v)", p.err)
		}
		resp, err := c.Get(base + "/health/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("not ready after %s", timeout)
}

// Health is the part of GET /v1/data/acgs/main/health the scenarios watch.
type Health struct {
	Status     string `json:"status"`
	Revision   string `json:"policy_revision"`
	ReloadErr  string `json:"last_reload_error"`
	CacheStats struct {
		L2Healthy *bool  `json:"l2_healthy"`
		Breaker   string `json:"l2_breaker"`
		Epoch     uint64 `json:"epoch"`
	} `json:"cache_stats"`
}

var probe = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}

// GetHealth reads the ACGS health document.
func GetHealth(base string) (Health, error) {
	var h Health
	resp, err := probe.Get(base + "/v1/data/acgs/main/health")
	if err != nil {
		return h, err
	}
	defer resp.Body.Close()
	err = json.NewDecoder(resp.Body).Decode(&h)
	return h, err
}

// Metric sums the samples of one metric in the Prometheus exposition of
// base whose label set contains every one of labels (e.g. `result="failure"`);
// an absent metric is 0.
func Metric(base, name string, labels ...string) (float64, error) {
	resp, err := probe.Get(base + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	sum := 0.0
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		match := true
		for _, l := range labels {
			match = match && strings.Contains(rest, l)
		}
		if !match {
			continue
		}
		f := strings.Fields(rest)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", line, err)
		}
		sum += v
	}
	return sum, sc.Err()
}

// Post sends body to base+path with an optional bearer token.
func Post(base, path, token string, body []byte) (int, []byte, error) {
	req, err := http.NewRequest(http.MethodPost, base+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	c := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// Machine describes where a scenario ran; the load average is sampled
// through the run because the machine is shared.
type Machine struct {
	NProc      int     `json:"nproc"`
	MemTotal   string  `json:"mem_total"`
	Kernel     string  `json:"kernel"`
	Load1Start float64 `json:"load1_start"`
	Load1Mean  float64 `json:"load1_mean"`
	Load1Max   float64 `json:"load1_max"`
	Note       string  `json:"note"`
}

func load1() float64 {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

// sampleMachine starts sampling the load average every 2 s; stop returns
// the description.
func sampleMachine() (stop func() Machine) {
	m := Machine{NProc: runtime.NumCPU(), Load1Start: load1(),
		Note: "shared machine: other sessions' builds and tests ran at the same time; the load average says how busy it was"}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "MemTotal:") {
				f := strings.Fields(l)
				if kb, err := strconv.Atoi(f[1]); err == nil {
					m.MemTotal = fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
				}
			}
		}
	}
	var mu sync.Mutex
	sum, n, mx := m.Load1Start, 1, m.Load1Start
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				v := load1()
				mu.Lock()
				sum, n, mx = sum+v, n+1, max(mx, v)
				mu.Unlock()
			}
		}
	}()
	return func() Machine {
		close(done)
		mu.Lock()
		defer mu.Unlock()
		m.Load1Mean = float64(int(sum/float64(n)*100)) / 100
		m.Load1Max = mx
		return m
	}
}
