package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/acgs-lite/acgs/internal/version"
)

// reconnectEvery bounds how often a dead upstream is restarted: a call
// within it of the last failed attempt gets that attempt's error at once.
const reconnectEvery = time.Second

// upstream is the gateway's MCP client session with one upstream server,
// restarted (a new child process, or a new HTTP session) when it is needed
// after it died.
type upstream struct {
	cfg            Upstream
	log            *slog.Logger
	connectTimeout time.Duration
	// lifetime is the gateway's (Gateway.lifetime): every request to the
	// upstream ends with it (bound).
	lifetime context.Context

	mu         sync.Mutex
	session    *mcp.ClientSession
	connecting chan struct{} // closed when the attempt in progress ends
	closed     bool
	tools      []*mcp.Tool
	known      map[string]bool // tool names seen in the last list
	// resources, templates and prompts from the last lists (resources.go)
	resources    []*mcp.Resource
	templates    []*mcp.ResourceTemplate
	resourceURIs map[string]bool
	prompts      []*mcp.Prompt
	lastTry      time.Time
	lastErr      error
	up           func(bool) // metrics: the upstream is connected or not
}

func newUpstream(cfg Upstream, log *slog.Logger, connectTimeout time.Duration, lifetime context.Context, up func(bool)) *upstream {
	if up == nil {
		up = func(bool) {}
	}
	return &upstream{cfg: cfg, log: log.With("upstream", cfg.Name), connectTimeout: connectTimeout, lifetime: lifetime, known: map[string]bool{}, up: up}
}

// bound is the context of one request to the upstream (connecting, a
// list, a forwarded call): ctx for at most d, ended also with the
// gateway's lifetime, errStopped then being its cause (stopped).
func (u *upstream) bound(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(u.lifetime, func() { cancel(context.Cause(u.lifetime)) })
	ctx, cancelTimeout := context.WithTimeout(ctx, d)
	return ctx, func() {
		stop()
		cancelTimeout()
		cancel(nil)
	}
}

// stopped reports whether a request of context ctx (made by bound) ended
// because the gateway stopped waiting for the upstreams' answers.
func stopped(ctx context.Context) bool { return errors.Is(context.Cause(ctx), errStopped) }

// transport builds a new transport: a child process or an HTTP endpoint.
func (u *upstream) transport() mcp.Transport {
	if len(u.cfg.Command) > 0 {
		cmd := exec.Command(u.cfg.Command[0], u.cfg.Command[1:]...)
		cmd.Dir = u.cfg.Dir
		cmd.Env = childEnv(os.Environ(), u.cfg.InheritEnv, u.cfg.Env)
		cmd.Stderr = &lineLogger{log: u.log}
		cmd.WaitDelay = 2 * time.Second
		return &mcp.CommandTransport{Command: cmd, TerminateDuration: 2 * time.Second}
	}
	hc := &http.Client{Transport: headerTransport{base: upstreamHTTP, headers: u.cfg.Headers}}
	return &mcp.StreamableClientTransport{Endpoint: u.cfg.URL, HTTPClient: hc, MaxRetries: 1, DisableStandaloneSSE: true}
}

// inheritedEnv names the variables of the gateway's environment that a
// child process (a stdio upstream) gets, as the official TypeScript SDK's
// getDefaultEnvironment, with the locale, time zone and temporary
// directory: never the rest, which holds the gateway's secrets (the admin
// and agents' tokens, header ${VAR}s, REDIS_URL, CACHE_SIGNING_KEY). A
// trailing * matches any name it begins.
var inheritedEnv = func() []string {
	if runtime.GOOS == "windows" {
		return []string{"APPDATA", "HOMEDRIVE", "HOMEPATH", "LOCALAPPDATA", "PATH", "PROCESSOR_ARCHITECTURE",
			"SYSTEMDRIVE", "SYSTEMROOT", "TEMP", "TMP", "USERNAME", "USERPROFILE", "PROGRAMFILES"}
	}
	return []string{"HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER", "LANG", "LANGUAGE", "LC_*", "TZ", "TMPDIR"}
}()

// childEnv is a child process's environment: the variables of environ
// named by inheritedEnv (not those holding an exported shell function,
// "() {...}", as the TypeScript SDK) or by inherit (the upstream's
// inherit_env), then set (its env), which wins.
func childEnv(environ, inherit []string, set map[string]string) []string {
	var out []string
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			continue
		}
		if _, over := set[k]; over {
			continue
		}
		if envMatch(inherit, k) || (envMatch(inheritedEnv, k) && !strings.HasPrefix(v, "()")) {
			out = append(out, kv)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(set)) {
		out = append(out, k+"="+set[k])
	}
	return out
}

// envMatch reports whether the variable name matches one of names (a
// trailing * matches any name it begins; names are case-insensitive on
// Windows, as its environment).
func envMatch(names []string, name string) bool {
	eq := func(a, b string) bool { return a == b }
	if runtime.GOOS == "windows" {
		eq = strings.EqualFold
	}
	for _, n := range names {
		if p, ok := strings.CutSuffix(n, "*"); ok {
			if len(name) >= len(p) && eq(name[:len(p)], p) {
				return true
			}
		} else if eq(n, name) {
			return true
		}
	}
	return false
}

// get returns a live session, connecting (or reconnecting) when there is
// none and the last attempt is more than reconnectEvery ago. The connection
// is made outside the lock (health checks and metric labels do not wait for
// it); calls that arrive meanwhile wait for that one attempt.
func (u *upstream) get(ctx context.Context) (*mcp.ClientSession, error) {
	u.mu.Lock()
	for u.connecting != nil {
		ch := u.connecting
		u.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, fmt.Errorf("upstream %q: %w while it was connecting", u.cfg.Name, ctx.Err())
		}
		u.mu.Lock()
	}
	if u.session != nil {
		cs := u.session
		u.mu.Unlock()
		return cs, nil
	}
	if u.closed || (!u.lastTry.IsZero() && time.Since(u.lastTry) < reconnectEvery && u.lastErr != nil) {
		err := u.lastErr
		u.mu.Unlock()
		return nil, err
	}
	ch := make(chan struct{})
	u.connecting, u.lastTry = ch, time.Now()
	u.mu.Unlock()

	cs, tools, err := u.connect(ctx)

	u.mu.Lock()
	defer u.mu.Unlock()
	u.connecting = nil
	close(ch)
	if err == nil && u.closed { // Close ran meanwhile
		_ = cs.Close()
		return nil, u.lastErr
	}
	if err != nil {
		u.lastErr, u.lastTry = fmt.Errorf("upstream %q is unavailable: %w", u.cfg.Name, err), time.Now()
		u.log.Warn("gateway: cannot connect to upstream", "error", err)
		return nil, u.lastErr
	}
	u.session, u.lastErr = cs, nil
	u.setTools(tools)
	u.up(true)
	u.log.Info("gateway: upstream connected", "tools", len(tools))
	go func() {
		err := cs.Wait()
		u.mu.Lock()
		if u.session == cs {
			u.session = nil
			u.lastErr = fmt.Errorf("upstream %q is unavailable: its connection closed", u.cfg.Name)
			u.lastTry = time.Now()
			u.up(false)
			u.log.Warn("gateway: upstream connection closed", "error", err)
		}
		u.mu.Unlock()
	}()
	return cs, nil
}

// Up reports whether the upstream has a live session.
func (u *upstream) Up() bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.session != nil
}

func (u *upstream) connect(ctx context.Context) (*mcp.ClientSession, []*mcp.Tool, error) {
	ctx, cancel := u.bound(ctx, u.connectTimeout)
	defer cancel()
	client := mcp.NewClient(&mcp.Implementation{Name: "acgs-gateway", Version: version.Version}, &mcp.ClientOptions{
		Capabilities: &mcp.ClientCapabilities{},
	})
	cs, err := client.Connect(ctx, u.transport(), nil)
	if err != nil {
		return nil, nil, err
	}
	tools, err := listAll(ctx, cs)
	if err != nil {
		_ = cs.Close()
		return nil, nil, fmt.Errorf("tools/list: %w", err)
	}
	return cs, tools, nil
}

func listAll(ctx context.Context, cs *mcp.ClientSession) ([]*mcp.Tool, error) {
	var tools []*mcp.Tool
	for t, err := range cs.Tools(ctx, nil) {
		if err != nil {
			return nil, err
		}
		tools = append(tools, t)
	}
	return tools, nil
}

func (u *upstream) setTools(tools []*mcp.Tool) {
	u.tools = tools
	known := make(map[string]bool, len(tools))
	for _, t := range tools {
		known[t.Name] = true
	}
	u.known = known
}

// Tools lists the upstream's tools now, or returns the last list when the
// upstream cannot answer (with the error, for the log).
func (u *upstream) Tools(ctx context.Context) ([]*mcp.Tool, error) {
	cs, err := u.get(ctx)
	if err != nil {
		u.mu.Lock()
		defer u.mu.Unlock()
		return u.tools, err
	}
	ctx, cancel := u.bound(ctx, u.connectTimeout)
	defer cancel()
	tools, err := listAll(ctx, cs)
	u.mu.Lock()
	defer u.mu.Unlock()
	if err != nil {
		return u.tools, err
	}
	u.setTools(tools)
	return tools, nil
}

// Known reports whether tool was in the upstream's last list (for metric
// labels: names an agent makes up must not create series).
func (u *upstream) Known(tool string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.known[tool]
}

// Call forwards one call with its arguments exactly as the agent sent them.
func (u *upstream) Call(ctx context.Context, tool string, args json.RawMessage, meta mcp.Meta) (*mcp.CallToolResult, error) {
	cs, err := u.get(ctx)
	if err != nil {
		return nil, err
	}
	ctx, cancel := u.bound(ctx, u.cfg.CallTimeout)
	defer cancel()
	p := &mcp.CallToolParams{Name: tool, Meta: meta}
	if len(args) > 0 {
		p.Arguments = args
	}
	res, err := cs.CallTool(ctx, p)
	if err != nil {
		return nil, u.noAnswer(ctx, err, "call")
	}
	return res, nil
}

// noAnswer says why a request (a "call", a "request") of context ctx (made
// by bound) got no answer from the upstream.
func (u *upstream) noAnswer(ctx context.Context, err error, what string) error {
	switch {
	case errors.Is(err, mcp.ErrConnectionClosed):
		return fmt.Errorf("upstream %q is unavailable: its connection closed during the %s", u.cfg.Name, what)
	case stopped(ctx):
		return fmt.Errorf("upstream %q had not answered when %v", u.cfg.Name, errStopped)
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return fmt.Errorf("upstream %q did not answer within %s", u.cfg.Name, u.cfg.CallTimeout)
	}
	return fmt.Errorf("upstream %q: %w", u.cfg.Name, err)
}

// Close ends the session (a child process gets its stdin closed, then
// SIGTERM).
func (u *upstream) Close() {
	u.mu.Lock()
	cs := u.session
	u.session = nil
	u.closed = true
	u.lastErr = fmt.Errorf("upstream %q: the gateway is shutting down", u.cfg.Name)
	u.mu.Unlock()
	if cs != nil {
		_ = cs.Close()
	}
}

// upstreamHTTP carries the calls to every HTTP upstream. Unlike
// http.DefaultTransport, which keeps 2 idle connections per host, it keeps
// as many as calls in flight to one upstream are likely to be: with 2, each
// call beyond the second at once opened a new TCP connection and closed it
// after one request (docs/performance.md, gateway overhead).
var upstreamHTTP = func() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 256
	return t
}()

// headerTransport adds the configured headers to every upstream request.
type headerTransport struct {
	base    http.RoundTripper
	headers map[string]string
}

func (t headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if len(t.headers) == 0 {
		return t.base.RoundTrip(r)
	}
	r = r.Clone(r.Context())
	for k, v := range t.headers {
		r.Header.Set(k, expandHeader(v))
	}
	return t.base.RoundTrip(r)
}

// lineLogger logs a child's stderr line by line.
type lineLogger struct {
	log *slog.Logger
	mu  sync.Mutex
	buf []byte
}

func (l *lineLogger) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		l.log.Info("upstream stderr", "line", string(l.buf[:i]))
		l.buf = l.buf[i+1:]
	}
	if len(l.buf) > 64<<10 { // a line without end: log what there is
		l.log.Info("upstream stderr", "line", string(l.buf))
		l.buf = nil
	}
	return len(p), nil
}

var _ io.Writer = (*lineLogger)(nil)
