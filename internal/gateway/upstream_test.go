package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/acgs-lite/acgs/internal/gateway/mcptest"
)

// hangingListener accepts TCP connections on addr and never answers (an
// upstream that hangs); it counts the connections.
func hangingListener(t *testing.T, addr string) *atomic.Int64 {
	t.Helper()
	var ln net.Listener
	var err error
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if ln, err = net.Listen("tcp", addr); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	var accepted atomic.Int64
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return &accepted
}

// timed runs f with a 40 s context and returns how long it took.
func timed(t *testing.T, what string, f func(ctx context.Context) error) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	start := time.Now()
	if err := f(ctx); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return time.Since(start)
}

// TestHangingUpstreamDoesNotBlockLists: an upstream that accepts
// connections and never answers is reconnected in the background; the
// lists (tools, resources, prompts) do not wait for it (the gateway asks
// its upstreams one after the other, and agents time their lists out):
// they answer at once with the other upstreams' entries, again and again.
// It was connect_timeout (20 s here) for every list.
func TestHangingUpstreamDoesNotBlockLists(t *testing.T) {
	addr := freeAddr(t) // refused while the gateway starts, then hangs
	e := startEnv(t, envOptions{upstreams: fmt.Sprintf("  - name: remote\n    url: REMOTE\n  - name: hang\n    url: http://%s/mcp\n", addr)})
	accepted := hangingListener(t, addr)
	gw := e.agent(t, "token-1")
	const within = 5 * time.Second
	for i := range 3 {
		time.Sleep(1200 * time.Millisecond) // past the gateway's at-most-once-a-second reconnection
		var tools *mcp.ListToolsResult
		took := timed(t, "tools/list", func(ctx context.Context) (err error) {
			tools, err = gw.ListTools(ctx, nil)
			return err
		})
		if took > within {
			t.Errorf("tools/list #%d took %s with a hanging upstream, want under %s", i, took, within)
		}
		names := map[string]bool{}
		for _, tl := range tools.Tools {
			names[tl.Name] = true
		}
		if !names["remote__echo"] {
			t.Errorf("tools/list #%d: remote__echo missing: %v", i, names)
		}
		if took := timed(t, "resources/list", func(ctx context.Context) error { _, err := gw.ListResources(ctx, nil); return err }); took > within {
			t.Errorf("resources/list #%d took %s with a hanging upstream, want under %s", i, took, within)
		}
		if took := timed(t, "prompts/list", func(ctx context.Context) error { _, err := gw.ListPrompts(ctx, nil); return err }); took > within {
			t.Errorf("prompts/list #%d took %s with a hanging upstream, want under %s", i, took, within)
		}
	}
	if accepted.Load() == 0 {
		t.Error("the gateway never tried the hanging upstream again")
	}
	if r := call(t, gw, "remote__echo", map[string]any{"text": "x"}); r.IsError {
		t.Errorf("call to the other upstream: %s", text(r))
	}
}

// stallingHandler serves h until stall is set; then it holds every POST
// (requests to the upstream) until its client gives up.
type stallingHandler struct {
	h     http.Handler
	stall atomic.Bool
}

func (s *stallingHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.stall.Load() && r.Method == http.MethodPost {
		<-r.Context().Done()
		return
	}
	s.h.ServeHTTP(w, r)
}

// TestStalledUpstreamListIsBounded: an upstream that is up but stops
// answering holds a list for at most the gateway's list bound (5 s),
// not connect_timeout (20 s here), and keeps its last list: a timeout is
// not a lost connection.
func TestStalledUpstreamListIsBounded(t *testing.T) {
	s := mcptest.New()
	sh := &stallingHandler{h: mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s.MCP }, nil)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: sh, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	e := startEnv(t, envOptions{upstreams: fmt.Sprintf("  - name: remote\n    url: REMOTE\n  - name: stuck\n    url: http://%s/mcp\n", ln.Addr())})
	gw := e.agent(t, "token-1")
	if !toolNames(t, gw)["stuck__echo"] {
		t.Fatal("stuck__echo not listed while it answers")
	}
	sh.stall.Store(true)
	const within = 10 * time.Second
	var tools *mcp.ListToolsResult
	took := timed(t, "tools/list", func(ctx context.Context) (err error) {
		tools, err = gw.ListTools(ctx, nil)
		return err
	})
	t.Logf("tools/list with a stalled upstream: %s", took)
	if took > within {
		t.Errorf("tools/list took %s with a stalled upstream, want under %s", took, within)
	}
	names := map[string]bool{}
	for _, tl := range tools.Tools {
		names[tl.Name] = true
	}
	if !names["stuck__echo"] || !names["remote__echo"] {
		t.Errorf("tools/list with a stalled upstream: %v, want its last list and the other's", names)
	}
	if took := timed(t, "prompts/list", func(ctx context.Context) error { _, err := gw.ListPrompts(ctx, nil); return err }); took > within {
		t.Errorf("prompts/list took %s with a stalled upstream, want under %s", took, within)
	}
	if h := health(t, e); h["stuck"] != "up" {
		t.Errorf("a stalled upstream is %q in /health, want up (it did not fail)", h["stuck"])
	}
}

// health is /health's upstreams.
func health(t *testing.T, e *env) map[string]string {
	t.Helper()
	resp, err := http.Get(e.adminURL + "/health")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var h struct {
		Upstreams map[string]string `json:"upstreams"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		t.Fatal(err)
	}
	return h.Upstreams
}

// restartable is mcptest's server over streamable HTTP on one address,
// stopped (every connection closed) and started again.
type restartable struct {
	t    *testing.T
	s    *mcptest.Server
	addr string
	mu   sync.Mutex
	srv  *http.Server
}

func newRestartable(t *testing.T) *restartable {
	r := &restartable{t: t, s: mcptest.New(), addr: freeAddr(t)}
	r.start()
	t.Cleanup(r.stop)
	return r
}

func (r *restartable) start() {
	r.t.Helper()
	var ln net.Listener
	var err error
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if ln, err = net.Listen("tcp", r.addr); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		r.t.Fatal(err)
	}
	srv := &http.Server{Handler: mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return r.s.MCP }, nil), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	r.mu.Lock()
	r.srv = srv
	r.mu.Unlock()
}

func (r *restartable) stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.srv != nil {
		_ = r.srv.Close()
		r.srv = nil
	}
}

// waitFor polls cond every 100 ms until it holds, for at most d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not %s within %s", what, d)
		}
	}
}

// TestDeadHTTPUpstreamIsDownAndComesBack: an HTTP upstream that went away
// is down (/health, acgs_gateway_upstream_up 0, its tools no longer
// listed) once a call to it fails, or once the gateway's probe finds it
// gone without any call, and up again, listed again, when it is back on
// its address. It stayed "up" and listed from its last list.
func TestDeadHTTPUpstreamIsDownAndComesBack(t *testing.T) {
	r := newRestartable(t)
	e := startEnv(t, envOptions{upstreams: fmt.Sprintf("  - name: remote\n    url: REMOTE\n  - name: flaky\n    url: http://%s/mcp\n", r.addr)})
	gw := e.agent(t, "token-1")
	gauge := func() float64 {
		return e.metric(t, "acgs_gateway_upstream_up", map[string]string{"upstream": "flaky"})
	}
	isUp := func(want bool) func() bool {
		return func() bool {
			names := toolNames(t, gw)
			g := float64(0)
			state := "down"
			if want {
				g, state = 1, "up"
			}
			return health(t, e)["flaky"] == state && gauge() == g && names["flaky__echo"] == want && names["remote__echo"]
		}
	}
	if !isUp(true)() {
		t.Fatalf("flaky not up at the start: %v, gauge %v", health(t, e), gauge())
	}

	// A failed call takes it down at once.
	r.stop()
	if res := call(t, gw, "flaky__echo", map[string]any{"text": "x"}); !res.IsError || !strings.Contains(text(res), `upstream "flaky"`) {
		t.Fatalf("call to a stopped upstream: %q", text(res))
	}
	if !isUp(false)() {
		t.Fatalf("after a failed call: /health %v, gauge %v, tools %v; want flaky down and not listed", health(t, e), gauge(), toolNames(t, gw))
	}
	r.start()
	waitFor(t, 30*time.Second, "up again after a restart", isUp(true))
	if res := call(t, gw, "flaky__echo", map[string]any{"text": "back"}); res.IsError {
		t.Fatalf("call after the restart: %q", text(res))
	}

	// Without any call, the probe finds it gone.
	r.stop()
	waitFor(t, 30*time.Second, "seen down by the probe", func() bool { return health(t, e)["flaky"] == "down" })
	if !isUp(false)() {
		t.Fatalf("after the probe: /health %v, gauge %v, tools %v", health(t, e), gauge(), toolNames(t, gw))
	}
	r.start()
	waitFor(t, 30*time.Second, "up again after a second restart", isUp(true))
}

// TestStdioUpstreamThatCannotRestartIsNotListed: a stdio upstream whose
// process exited and cannot be started again is down and its tools are no
// longer listed (they were, from its last list).
func TestStdioUpstreamThatCannotRestartIsNotListed(t *testing.T) {
	exe, _ := os.Executable()
	flag := filepath.Join(t.TempDir(), "may-start")
	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// sh starts the server only while the flag file exists
	ups := fmt.Sprintf("  - name: local\n    command: [sh, -c, 'test -e \"$FLAG\" && exec \"$EXE\"']\n    env: {%s: stdio, FLAG: %q, EXE: %q}\n  - name: remote\n    url: REMOTE\n", mcptest.EnvServer, flag, exe)
	e := startEnv(t, envOptions{upstreams: ups})
	gw := e.agent(t, "token-1")
	if !toolNames(t, gw)["local__echo"] {
		t.Fatal("local__echo not listed at the start")
	}
	if err := os.Remove(flag); err != nil {
		t.Fatal(err)
	}
	if res := call(t, gw, "local__crash", map[string]any{}); !res.IsError {
		t.Fatalf("crash: %q", text(res))
	}
	waitFor(t, 10*time.Second, "down", func() bool { return health(t, e)["local"] == "down" })
	time.Sleep(1200 * time.Millisecond) // a restart was tried, and failed
	names := toolNames(t, gw)
	if names["local__echo"] || !names["remote__echo"] {
		t.Errorf("tools/list with a stdio upstream that cannot restart: %v, want remote's only", names)
	}
	if got := e.metric(t, "acgs_gateway_upstream_up", map[string]string{"upstream": "local"}); got != 0 {
		t.Errorf("acgs_gateway_upstream_up{upstream=local} = %v, want 0", got)
	}
	if _, err := gw.GetPrompt(testCtx(t), &mcp.GetPromptParams{Name: "local__review", Arguments: map[string]string{"topic": "x"}}); err == nil || !strings.Contains(err.Error(), `upstream "local"`) {
		t.Errorf("prompts/get of a down upstream: %v, want an error naming it", err)
	}
}
