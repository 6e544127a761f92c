package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/acgs-lite/acgs/internal/config"
	"github.com/acgs-lite/acgs/internal/gateway"
	"github.com/acgs-lite/acgs/internal/gateway/mcptest"
	"github.com/acgs-lite/acgs/internal/service"
	"github.com/acgs-lite/acgs/internal/telemetry"
	"github.com/acgs-lite/acgs/internal/telemetry/telemetrytest"
	"github.com/acgs-lite/acgs/internal/testenv"
	"github.com/acgs-lite/acgs/policies"
)

func TestMain(m *testing.M) {
	mcptest.MainIfRequested() // the stdio upstream is this binary
	testenv.Main(m)
}

const (
	adminToken = "admin-secret-token"
	hash       = config.DefaultConstitutionalHash
)

// env is one gateway in process: the real engine wiring of acgs serve
// (embedded constitution), a chained decision log in a file, upstream
// "local" (this test binary as a stdio child) and "remote" (mcptest over
// streamable HTTP in process), agents over streamable HTTP on loopback.
type env struct {
	t        testing.TB
	svc      *service.Service
	g        *gateway.Gateway
	remote   *mcptest.Server
	stopRem  func()
	remURL   string
	agentURL string
	adminURL string
	logPath  string
	dlog     *telemetry.DecisionLog
	cancel   context.CancelFunc
	done     chan error
	logs     *testenv.SyncBuffer
	stopOnce sync.Once
	stdio    *mcp.ClientSession // the agent, with envOptions.stdio
	// the agent's ends of the pipes, with envOptions.rawStdio
	stdioIn, stdioOut *os.File
}

type envOptions struct {
	extraYAML   string               // appended to the configuration
	upstreams   string               // replaces the default upstreams section
	mutate      func(*config.Config) // engine settings
	counter     gateway.Counter
	adminTokens []string
	stdio       bool                   // one agent over pipes (as over stdio) instead of HTTP agents
	rawStdio    bool                   // with stdio: the test speaks JSON-RPC on the pipes itself (env.stdioIn, stdioOut)
	noLog       bool                   // no decision log (the default configuration: DECISION_LOG=off)
	gateway     func(*gateway.Gateway) // called before Run
}

// stdioUpstream is the YAML of an upstream that runs this test binary as
// the mcptest server over stdio.
func stdioUpstream(name string, extra string) string {
	exe, _ := os.Executable()
	return fmt.Sprintf("  - name: %s\n    command: [%q]\n    env: {%s: stdio}\n%s", name, exe, mcptest.EnvServer, extra)
}

// serveMCP starts mcptest's server over streamable HTTP on loopback for the
// rest of the test and returns it with its URL.
func serveMCP(tb testing.TB) (*mcptest.Server, string) {
	tb.Helper()
	s := mcptest.New()
	url, stop, err := s.ServeHTTP()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(stop)
	return s, url
}

// serveServer serves s over streamable HTTP on loopback for the rest of
// the test and returns its URL (as serveMCP, for a server a test builds
// itself).
func serveServer(tb testing.TB, s *mcp.Server) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := &http.Server{Handler: mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, nil), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	tb.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String() + "/mcp"
}

// startProcess starts cmd (an acgs gateway), waits until health answers,
// and returns stop: SIGTERM, then an error unless the process exited
// cleanly within 20 s (it is killed then).
func startProcess(tb testing.TB, cmd *exec.Cmd, health string) (stop func() error) {
	tb.Helper()
	var stderr testenv.SyncBuffer
	if cmd.Stderr != nil { // the caller reads it too
		cmd.Stderr = io.MultiWriter(cmd.Stderr, &stderr)
	} else {
		cmd.Stderr = &stderr
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop = func() error {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				return fmt.Errorf("%s exited with %v after SIGTERM\n%s", cmd, err, stderr.String())
			}
			return nil
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			return fmt.Errorf("%s did not stop within 20s of SIGTERM", cmd)
		}
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		resp, err := http.Get(health)
		if err == nil {
			resp.Body.Close()
			return stop
		}
		select {
		case werr := <-exited:
			tb.Fatalf("%s exited before it was ready (%v)\n%s", cmd, werr, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			_ = stop()
			tb.Fatalf("%s not ready: %v\n%s", cmd, err, stderr.String())
		}
	}
}

func startEnv(t testing.TB, o envOptions) *env {
	t.Helper()
	e := &env{t: t, logs: &testenv.SyncBuffer{}}
	e.remote = mcptest.New()
	var err error
	e.remURL, e.stopRem, err = e.remote.ServeHTTP()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.stopRem)
	ups := strings.ReplaceAll(o.upstreams, "REMOTE", e.remURL)
	if ups == "" {
		ups = stdioUpstream("local", "") + fmt.Sprintf("  - name: remote\n    url: %s\n", e.remURL)
	}
	agents := `listen: 127.0.0.1:0
agents:
  - {id: agent-1, token: token-1}
  - {id: agent-2, token: token-2}`
	if o.stdio {
		agents = "stdio_agent: agent-1"
	}
	yml := fmt.Sprintf(`
%s
admin: {listen: 127.0.0.1:0}
approvals: {timeout: 30s}
call_timeout: 10s
connect_timeout: 20s
decision_timeout: 30s
upstreams:
%s
`, agents, ups)
	yml = overrideTopLevel(yml, o.extraYAML) + o.extraYAML
	gcfg, err := gateway.ParseConfig([]byte(yml))
	if err != nil {
		t.Fatalf("configuration: %v\n%s", err, yml)
	}
	cfg := config.Default()
	cfg.Log.Level = "warn"
	// A loaded machine must not turn a slow evaluation into a (correct)
	// fail-closed timeout where a test expects the policy's answer (CI
	// bfed6f6 under -race: a cold tool_call decision past 100 ms). Tests
	// of timeouts set their own. decision_timeout (30s above) is above
	// it, as New requires of acgs gateway (Deps.EvalTimeout, passed below):
	// the harness runs a configuration production accepts.
	cfg.Policy.EvalTimeout = 10 * time.Second
	if o.mutate != nil {
		o.mutate(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	e.svc, err = service.New(ctx, cfg, service.Options{LogOutput: e.logs})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	e.logPath = filepath.Join(t.TempDir(), "decisions.jsonl")
	if !o.noLog {
		e.dlog, err = telemetry.NewDecisionLog(telemetry.DecisionLogConfig{Sink: "file:" + e.logPath, Chain: true, Mask: []string{"/tool_call/arguments/secret_note"}})
		if err != nil {
			t.Fatal(err)
		}
	}
	tokens := o.adminTokens
	if tokens == nil {
		tokens = []string{adminToken}
	}
	e.g, err = gateway.New(gcfg, gateway.Deps{
		Engine: e.svc.Engine, ConstitutionalHash: hash, DecisionLog: e.dlog, Metrics: e.svc.Metrics,
		Registerer: e.svc.Metrics.Registry(), Logger: slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelInfo})),
		AdminTokens: tokens, Counter: o.counter, EvalTimeout: cfg.Policy.EvalTimeout,
	})
	if err != nil {
		t.Fatal(err)
	}
	if o.gateway != nil {
		o.gateway(e.g)
	}
	ready := make(chan struct{})
	e.done = make(chan error, 1)
	ro := gateway.RunOptions{Metrics: e.svc.Metrics.Handler(), Ready: func(agent, admin string) {
		e.agentURL = "http://" + agent + gcfg.Path
		e.adminURL = "http://" + admin
		close(ready)
	}}
	var agentIn, agentOut *os.File // the agent's ends of the stdio pipes
	if o.stdio {
		p := newStdioPipes(t)
		ro.Stdin, ro.Stdout = p.toGw, p.fromGw
		agentIn, agentOut = p.toAgent, p.fromAgent
	}
	go func() { e.done <- e.g.Run(ctx, ro) }()
	select {
	case <-ready:
	case err := <-e.done:
		t.Fatalf("gateway stopped: %v\n%s", err, e.logs.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("gateway not ready in 60s\n%s", e.logs.String())
	}
	t.Cleanup(e.stop)
	if o.stdio && o.rawStdio {
		e.stdioIn, e.stdioOut = agentIn, agentOut
	} else if o.stdio {
		c := mcp.NewClient(&mcp.Implementation{Name: "test-agent", Version: "1"}, nil)
		e.stdio, err = c.Connect(testCtx(t), &mcp.IOTransport{Reader: agentIn, Writer: agentOut}, nil)
		if err != nil {
			t.Fatalf("connecting over pipes: %v", err)
		}
		t.Cleanup(func() { _ = e.stdio.Close() })
	}
	return e
}

// overrideTopLevel drops the lines of base whose top-level key extra sets
// (extra is appended after it).
func overrideTopLevel(base, extra string) string {
	keys := map[string]bool{}
	for _, l := range strings.Split(extra, "\n") {
		if k, _, ok := strings.Cut(l, ":"); ok && k != "" && !strings.HasPrefix(l, " ") {
			keys[k] = true
		}
	}
	var out []string
	for _, l := range strings.Split(base, "\n") {
		if k, _, ok := strings.Cut(l, ":"); ok && keys[k] && !strings.HasPrefix(l, " ") {
			continue
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}

// stop shuts the gateway down and closes the decision log.
func (e *env) stop() {
	e.stopOnce.Do(func() {
		e.cancel()
		select {
		case err := <-e.done:
			if err != nil {
				e.t.Errorf("gateway: %v", err)
			}
		case <-time.After(20 * time.Second):
			e.t.Errorf("gateway did not stop in 20s")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = e.dlog.Close(ctx)
		e.svc.Close()
	})
}

type bearer struct {
	token string
	base  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	if b.token != "" {
		r.Header.Set("Authorization", "Bearer "+b.token)
	}
	return b.base.RoundTrip(r)
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// agent connects the SDK's client to the gateway over streamable HTTP.
func (e *env) agent(t testing.TB, token string) *mcp.ClientSession {
	t.Helper()
	return connectHTTP(t, e.agentURL, token)
}

func connectHTTP(t testing.TB, url, token string) *mcp.ClientSession {
	t.Helper()
	hc := &http.Client{Transport: bearer{token: token, base: http.DefaultTransport}}
	c := mcp.NewClient(&mcp.Implementation{Name: "test-agent", Version: "1"}, nil)
	cs, err := c.Connect(testCtx(t), &mcp.StreamableClientTransport{Endpoint: url, HTTPClient: hc, MaxRetries: -1}, nil)
	if err != nil {
		t.Fatalf("connecting to %s: %v", url, err)
	}
	t.Cleanup(func() { _ = cs.Close() })
	return cs
}

func call(t testing.TB, cs *mcp.ClientSession, name string, args any) *mcp.CallToolResult {
	t.Helper()
	res, err := cs.CallTool(testCtx(t), &mcp.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		t.Fatalf("tools/call %s: %v", name, err)
	}
	return res
}

// answer is what a tools/call made in the background got.
type answer struct {
	res *mcp.CallToolResult
	err error
}

// callAsync makes a tools/call in the background (one held for approval,
// or one the test stops the gateway during); its answer comes on the
// channel.
func callAsync(t testing.TB, cs *mcp.ClientSession, name string, args any) <-chan answer {
	ctx := testCtx(t)
	ch := make(chan answer, 1)
	go func() {
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
		ch <- answer{res, err}
	}()
	return ch
}

func text(res *mcp.CallToolResult) string {
	var parts []string
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			parts = append(parts, tc.Text)
		}
	}
	return strings.Join(parts, "\n")
}

// decisionMeta is the gateway's _meta on a refusal.
func decisionMeta(t testing.TB, res *mcp.CallToolResult) (id, outcome string, reasons []string) {
	t.Helper()
	m, ok := res.Meta["io.acgs/decision"].(map[string]any)
	if !ok {
		t.Fatalf("no io.acgs/decision in _meta: %#v", res.Meta)
	}
	id, _ = m["decision_id"].(string)
	outcome, _ = m["outcome"].(string)
	if rs, ok := m["reasons"].([]any); ok {
		for _, r := range rs {
			reasons = append(reasons, r.(string))
		}
	}
	return id, outcome, reasons
}

func toolNames(t testing.TB, cs *mcp.ClientSession) map[string]bool {
	t.Helper()
	res, err := cs.ListTools(testCtx(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, tl := range res.Tools {
		names[tl.Name] = true
	}
	return names
}

// metric reads a counter or gauge of the gateway's registry (the sum over
// series whose labels include want).
func (e *env) metric(t testing.TB, name string, want map[string]string) float64 {
	t.Helper()
	return telemetrytest.Sum(t, e.svc.Metrics.Registry(), name, want)
}

// admin calls the admin API.
func (e *env) admin(t testing.TB, method, path, token string, body any, out any) int {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequestWithContext(testCtx(t), method, e.adminURL+path, rd)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil && resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatal(err)
		}
	}
	return resp.StatusCode
}

// waitPending waits until n calls are held and returns them.
func (e *env) waitPending(t testing.TB, n int) []gateway.Approval {
	t.Helper()
	return e.waitHeld(t, n, nil)
}

// waitHeld waits until n calls are held and returns them, failing the test
// with the answer of call (nil: none watched) if it comes first.
func (e *env) waitHeld(t testing.TB, n int, call <-chan answer) []gateway.Approval {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var l gateway.ApprovalList
		if code := e.admin(t, http.MethodGet, gateway.ApprovalsPath, adminToken, nil, &l); code != http.StatusOK {
			t.Fatalf("list approvals: %d", code)
		}
		if len(l.Approvals) >= n {
			return l.Approvals
		}
		select {
		case r := <-call:
			if r.res != nil {
				t.Fatalf("answered without being held: %q %v", text(r.res), r.res.Meta)
			}
			t.Fatalf("answered without being held: %v", r.err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d approvals pending after 20s, want %d", len(l.Approvals), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// records reads the decision log (after stop).
func (e *env) records(t testing.TB) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(e.logPath)
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for _, line := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("decision log line: %v: %s", err, line)
		}
		out = append(out, m)
	}
	return out
}

// freeAddr is a loopback address nobody listens on.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// refusedAddr is a loopback address that refuses connections for the
// whole test: a socket bound to it that never listens. Unlike freeAddr's
// port, closed at once, it cannot be handed to another socket meanwhile:
// once the test's own MCP server, started after it, was given the port of
// an upstream meant to be unreachable, and a call to it was held.
func refusedAddr(t testing.TB) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
}

// perAgentLimits writes the constitution with data.json's per-agent tool
// call limits set to limits (an operator's tuning) and returns its
// directory.
func perAgentLimits(tb testing.TB, limits map[string]any) string {
	tb.Helper()
	raw, err := fs.ReadFile(policies.FS, "acgs/config/data.json")
	if err != nil {
		tb.Fatal(err)
	}
	var data map[string]any
	if err := json.Unmarshal(raw, &data); err != nil {
		tb.Fatal(err)
	}
	data["tool_call"].(map[string]any)["rate_limit"].(map[string]any)["per_agent"] = limits
	b, _ := json.Marshal(data)
	return testenv.WriteConstitution(tb, tb.TempDir(), nil, map[string]string{"acgs/config/data.json": string(b)})
}

// lastCallMetrics stops e and returns the metrics of the last tool-call
// record of its decision log.
func (e *env) lastCallMetrics(t testing.TB) map[string]any {
	t.Helper()
	e.stop()
	var last map[string]any
	for _, r := range e.records(t) {
		if r["path"] == gateway.DecisionPath {
			last = r
		}
	}
	m, _ := last["metrics"].(map[string]any)
	return m
}

// stdioPipes connect a stdio agent and the gateway: the gateway reads
// toGw and writes fromGw; the agent reads toAgent and writes fromAgent.
type stdioPipes struct{ toGw, fromGw, toAgent, fromAgent *os.File }

// newStdioPipes opens the two pipes, closed when the test ends.
func newStdioPipes(t testing.TB) stdioPipes {
	t.Helper()
	var p stdioPipes
	var err error
	if p.toGw, p.fromAgent, err = os.Pipe(); err != nil {
		t.Fatal(err)
	}
	if p.toAgent, p.fromGw, err = os.Pipe(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.toGw.Close(); _ = p.fromGw.Close(); _ = p.toAgent.Close(); _ = p.fromAgent.Close() })
	return p
}
