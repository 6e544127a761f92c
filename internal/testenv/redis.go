package testenv

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Redis is a redis-server process owned by one test. Its methods that can
// fail call tb.Fatal, so call them from the test goroutine.
type Redis struct {
	tb       testing.TB
	bin      string
	dir      string
	port     int
	password string
	args     []string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

type redisConfig struct {
	password string
	args     []string
	port     int
}

// RedisOption configures StartRedis.
type RedisOption func(*redisConfig)

// WithPassword makes the server require a password (requirepass).
func WithPassword(pw string) RedisOption { return func(c *redisConfig) { c.password = pw } }

// WithArgs appends redis-server command-line arguments, e.g. "--maxmemory", "1mb".
func WithArgs(args ...string) RedisOption {
	return func(c *redisConfig) { c.args = append(c.args, args...) }
}

// withPort fixes the port (the cluster needs port+10000 free as well).
func withPort(p int) RedisOption { return func(c *redisConfig) { c.port = p } }

// StartRedis starts a real redis-server on a free 127.0.0.1 port with its own
// temporary directory and no persistence (--save "" --appendonly no), and
// stops it when the test ends. It skips the test (or fails it under
// ACGS_REQUIRE_SERVICES=1) when redis-server is not installed.
func StartRedis(tb testing.TB, opts ...RedisOption) *Redis {
	tb.Helper()
	var cfg redisConfig
	for _, o := range opts {
		o(&cfg)
	}
	r := &Redis{
		tb:       tb,
		bin:      RequireBinary(tb, "redis-server", "redis-server"),
		dir:      tb.TempDir(),
		password: cfg.password,
		args:     cfg.args,
	}
	tb.Cleanup(r.Kill)
	// The port was free a moment ago; if someone took it meanwhile, take another.
	for attempt := 0; ; attempt++ {
		r.port = cfg.port
		if r.port == 0 {
			r.port = FreePort(tb)
		}
		err := r.start()
		if err == nil {
			return r
		}
		if attempt == 2 || cfg.port != 0 || !strings.Contains(err.Error(), "in use") {
			tb.Fatalf("testenv: start redis-server: %v", err)
		}
	}
}

// Addr returns host:port.
func (r *Redis) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port)) }

// Port returns the TCP port, which stays the same across Stop and Start.
func (r *Redis) Port() int { return r.port }

// Password returns the password, empty when none is required.
func (r *Redis) Password() string { return r.password }

// URL returns a redis:// URL with the password, for REDIS_URL.
func (r *Redis) URL() string {
	if r.password != "" {
		return "redis://:" + r.password + "@" + r.Addr()
	}
	return "redis://" + r.Addr()
}

// Start restarts a stopped or killed server on the same port (with an empty
// data set: nothing is persisted). It fails the test if that does not work.
func (r *Redis) Start() {
	r.tb.Helper()
	if err := r.start(); err != nil {
		r.tb.Fatalf("testenv: restart redis-server on %s: %v", r.Addr(), err)
	}
}

// Stop shuts the server down (SIGTERM), waiting up to 5s before killing it.
func (r *Redis) Stop() { r.signal(false) }

// Kill kills the server at once (SIGKILL), like a crash.
func (r *Redis) Kill() { r.signal(true) }

func (r *Redis) start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd != nil {
		return errors.New("already running")
	}
	logFile := filepath.Join(r.dir, "redis.log")
	args := []string{
		"--port", strconv.Itoa(r.port), "--bind", "127.0.0.1",
		"--dir", r.dir, "--save", "", "--appendonly", "no",
		"--daemonize", "no", "--logfile", logFile,
	}
	if r.password != "" {
		args = append(args, "--requirepass", r.password)
	}
	args = append(args, r.args...)
	cmd := exec.Command(r.bin, args...)
	cmd.Dir = r.dir
	cmd.SysProcAttr = childProcAttr()
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	r.cmd, r.done = cmd, done

	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-done:
			r.cmd = nil
			return fmt.Errorf("redis-server exited at start: %s", lastLines(logFile, 5))
		default:
		}
		if _, err := r.do(200*time.Millisecond, "PING"); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-done
			r.cmd = nil
			return fmt.Errorf("redis-server not answering PING after 10s: %s", lastLines(logFile, 5))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (r *Redis) signal(kill bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return
	}
	if kill {
		_ = r.cmd.Process.Kill()
	} else {
		_ = r.cmd.Process.Signal(os.Interrupt)
		select {
		case <-r.done:
		case <-time.After(5 * time.Second):
			_ = r.cmd.Process.Kill()
		}
	}
	<-r.done
	r.cmd = nil
}

// Do sends one command over a fresh connection (authenticating first when a
// password is set) and returns the reply as text: arrays are joined with
// newlines, a nil reply is "". A Redis error reply is returned as an error.
// It is meant for test setup (CONFIG SET, CLIENT PAUSE, CLUSTER INFO).
func (r *Redis) Do(args ...string) (string, error) {
	return r.do(5*time.Second, args...)
}

func (r *Redis) do(timeout time.Duration, args ...string) (string, error) {
	c, err := net.DialTimeout("tcp", r.Addr(), timeout)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	br := bufio.NewReader(c)
	if r.password != "" {
		if _, err := roundTrip(c, br, "AUTH", r.password); err != nil {
			return "", err
		}
	}
	return roundTrip(c, br, args...)
}

func roundTrip(w io.Writer, br *bufio.Reader, args ...string) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return "", err
	}
	return readReply(br)
}

// readReply reads one RESP2 reply.
func readReply(br *bufio.Reader) (string, error) {
	line, err := br.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", errors.New("testenv: empty RESP line")
	}
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '-':
		return "", errors.New(line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return "", err
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(br, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	case '*':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return "", err
		}
		parts := make([]string, n)
		for i := range parts {
			if parts[i], err = readReply(br); err != nil {
				return "", err
			}
		}
		return strings.Join(parts, "\n"), nil
	default:
		return "", fmt.Errorf("testenv: unexpected RESP reply %q", line)
	}
}

func lastLines(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log)"
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
