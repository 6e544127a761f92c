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
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/acgs-lite/acgs/internal/version"
)

// How the gateway keeps its upstreams connected. An upstream is up while
// it has a live session. It goes down when its session ends (a child
// process exited) or a request to it fails in its transport (a refused or
// reset connection, an EOF, an HTTP session the server no longer knows):
// its session is dropped, its tools, resources and prompts leave the
// lists, and it is reconnected in the background, after backoffFirst, then
// twice as long after each failed attempt up to backoffMax, until it is
// back. Lists never wait for a connection: an upstream that is not up
// answers at once with nothing. A call to an upstream that is down waits
// for the attempt in progress, or starts one when the last is more than
// reconnectEvery ago; within it, it gets the last attempt's error at once.
const (
	reconnectEvery = time.Second
	backoffFirst   = time.Second
	backoffMax     = 15 * time.Second
	// listTimeout bounds one list request (tools, resources, templates,
	// prompts) to an upstream that is up (connect_timeout when that is
	// lower): the gateway asks its upstreams one after the other, and
	// agents time out their lists. An upstream that does not answer in
	// time keeps its last list.
	listTimeout = 5 * time.Second
	// probeEvery is how often an HTTP upstream that is up is pinged, so
	// that one that went away while nobody called it is seen down (its
	// gauge, /health); a stdio child's exit is seen at once.
	probeEvery = 10 * time.Second
)

// upstream is the gateway's MCP client session with one upstream server,
// restarted (a new child process, or a new HTTP session) in the background
// when it is lost.
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
	retrying   bool          // the background reconnection (retry) runs
	closed     bool
	done       chan struct{} // closed by Close: the background loops end
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
	// progress passes the upstream's notifications/progress on to the
	// agent whose call they are about (Gateway.relayProgress); nil, they
	// are dropped.
	progress func(context.Context, *mcp.ProgressNotificationClientRequest)
}

func newUpstream(cfg Upstream, log *slog.Logger, connectTimeout time.Duration, lifetime context.Context, up func(bool)) *upstream {
	if up == nil {
		up = func(bool) {}
	}
	return &upstream{cfg: cfg, log: log.With("upstream", cfg.Name), connectTimeout: connectTimeout, lifetime: lifetime,
		known: map[string]bool{}, up: up, done: make(chan struct{})}
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
		return &childTransport{cmd: cmd, terminate: 2 * time.Second, stall: u.cfg.CallTimeout, log: u.log}
	}
	base := headerTransport{base: upstreamHTTP, headers: u.cfg.Headers, origin: origin(u.cfg.URL)}
	if !u.cfg.StandaloneStream {
		// The default: no standalone SSE stream (the GET), as the client
		// has always been. An upstream answering in JSON-response mode
		// then passes no progress on; streaming upstreams send it on each
		// call's POST stream.
		return &mcp.StreamableClientTransport{Endpoint: u.cfg.URL, HTTPClient: &http.Client{Transport: base}, MaxRetries: 1, DisableStandaloneSSE: true}
	}
	// standalone_stream: the standalone SSE stream (a GET the client opens
	// once the session is initialized and keeps open) is where an upstream
	// answering in JSON-response mode sends a call's progress: without it,
	// its calls pass none on. What arrives there goes to the client's
	// handlers like what arrives on a POST's stream. An upstream may refuse
	// it (405): the session goes on without it. The SDK's client, as
	// patched (third_party/README.md), bounds the wait for the header of
	// its first GET, made within Connect under the connection's own
	// context (an upstream that accepted it and never answered would hold
	// the connection attempt, and Close, forever), to half a list's
	// timeout, then goes on without the stream (logged, with the hint
	// that its calls pass no progress on until it is reconnected); and
	// reopens a stream without event IDs when it ends (an upstream without
	// an event store, a proxy that cuts idle streams), no sooner than
	// reopenAfter after it opened, where it would have failed the session
	// at the second end. A reopening's GET is bounded as the first is; one
	// that fails in a way that may pass (no header in time, a 503 while the
	// upstream restarts, the 409 of an upstream still holding the stream a
	// proxy cut) is made again, reopenAfter later at least (or a 429's or
	// 503's Retry-After, up to 5 minutes); the session is lost at the
	// second such failure in a row (MaxRetries 1), or at once at a 404 or
	// 405.
	return &mcp.StreamableClientTransport{Endpoint: u.cfg.URL, HTTPClient: &http.Client{Transport: base}, MaxRetries: 1,
		StandaloneSSE: &mcp.StandaloneSSEOptions{Wait: u.listTimeout() / 2, ReopenAfter: reopenAfter, Logger: u.log}}
}

// reopenAfter is the least time between two openings of an upstream's
// standalone stream: one that ends sooner after it opened is reopened only
// then, not as fast as an upstream (or a proxy) ends it. Zero is the SDK's
// first reconnection delay (1 to 2 s).
var reopenAfter = probeEvery

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

// get returns a live session for a call (and for Start): when there is
// none it waits for the connection attempt in progress, or starts one when
// the last attempt is more than reconnectEvery ago, and returns the
// attempt's error when it fails. Lists do not wait: they use live.
func (u *upstream) get(ctx context.Context) (*mcp.ClientSession, error) {
	u.mu.Lock()
	if cs := u.session; cs != nil {
		u.mu.Unlock()
		return cs, nil
	}
	if u.closed {
		err := u.lastErr
		u.mu.Unlock()
		return nil, err
	}
	ch := u.connecting
	if ch == nil {
		if !u.lastTry.IsZero() && time.Since(u.lastTry) < reconnectEvery && u.lastErr != nil {
			err := u.lastErr
			u.mu.Unlock()
			return nil, err
		}
		ch = u.attemptLocked()
	}
	u.mu.Unlock()
	select {
	case <-ch:
	case <-ctx.Done():
		return nil, fmt.Errorf("upstream %q: %w while it was connecting", u.cfg.Name, ctx.Err())
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.session != nil {
		return u.session, nil
	}
	if u.lastErr == nil { // connected, then lost at once
		return nil, fmt.Errorf("upstream %q is unavailable", u.cfg.Name)
	}
	return nil, u.lastErr
}

// live is the session when the upstream is up, else nil at once (lists
// never wait for a connection): an upstream that is down is being
// reconnected in the background.
func (u *upstream) live() *mcp.ClientSession {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.session == nil && !u.closed && u.connecting == nil && !u.retrying {
		u.attemptLocked() // never tried (Start was not called)
	}
	return u.session
}

// attemptLocked starts a connection attempt in the background unless one
// is in progress, and returns the channel closed when it ends. u.mu is
// held.
func (u *upstream) attemptLocked() chan struct{} {
	if u.connecting == nil {
		ch := make(chan struct{})
		u.connecting, u.lastTry = ch, time.Now()
		go u.attempt(ch)
	}
	return u.connecting
}

// attempt connects once (bounded by connect_timeout and the gateway's
// lifetime, not by whoever asked for it: others may wait for the same
// attempt) and closes ch when it is over.
func (u *upstream) attempt(ch chan struct{}) {
	cs, tools, err := u.connect()
	u.mu.Lock()
	u.connecting = nil
	defer close(ch)
	switch {
	case err == nil && u.closed: // Close ran meanwhile
		u.mu.Unlock()
		_ = cs.Close()
		return
	case err != nil:
		if !u.closed { // else lastErr says the gateway is shutting down
			u.lastErr, u.lastTry = u.failure("is unavailable", err), time.Now()
			u.log.Warn("gateway: cannot connect to upstream", "error", err)
			u.retryLocked()
		}
		u.mu.Unlock()
		return
	}
	u.session, u.lastErr = cs, nil
	u.setTools(tools)
	u.up(true)
	u.log.Info("gateway: upstream connected", "tools", len(tools))
	u.mu.Unlock()
	go u.watch(cs)
}

// watch waits for the end of session cs (a child process that exited, or
// Close), probing an HTTP upstream meanwhile.
func (u *upstream) watch(cs *mcp.ClientSession) {
	ended := make(chan struct{})
	if len(u.cfg.Command) == 0 {
		go u.probe(cs, ended)
	}
	err := cs.Wait()
	close(ended)
	why := errors.New("its connection closed")
	if err != nil {
		why = fmt.Errorf("its connection closed: %w", err)
	}
	u.lose(cs, why)
}

// probe pings an HTTP upstream every probeEvery while session cs lives:
// one that went away is seen down without waiting for a call. Only a
// transport failure counts (lose): a ping unanswered in time, or one the
// server refuses, is not.
func (u *upstream) probe(cs *mcp.ClientSession, ended <-chan struct{}) {
	t := time.NewTicker(probeEvery)
	defer t.Stop()
	for {
		select {
		case <-ended:
			return
		case <-u.done:
			return
		case <-t.C:
		}
		ctx, cancel := u.bound(context.Background(), u.listTimeout())
		err := cs.Ping(ctx, nil)
		failed := u.failed(ctx, cs, err)
		cancel()
		if failed {
			return
		}
	}
}

// failed reports whether err, from a request of context ctx on session
// cs, is a transport failure (transportFailure), and then takes the
// upstream down (lose).
func (u *upstream) failed(ctx context.Context, cs *mcp.ClientSession, err error) bool {
	if err == nil || ctx.Err() != nil || !transportFailure(err) {
		return false
	}
	u.lose(cs, err)
	return true
}

// transportFailure reports whether a request's error says the upstream is
// gone: its connection closed, refused or reset, an EOF, an HTTP session
// the server no longer knows. Not the upstream's own JSON-RPC error, not a
// timeout or a cancellation.
func transportFailure(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	var oe *net.OpError
	return errors.Is(err, mcp.ErrConnectionClosed) || errors.Is(err, mcp.ErrSessionMissing) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.As(err, &oe)
}

// lose takes the upstream down when cs is still its session: the session
// is dropped (and closed), its tools, resources and prompts leave the
// lists, and it is reconnected in the background (retry).
func (u *upstream) lose(cs *mcp.ClientSession, why error) {
	u.mu.Lock()
	if u.session != cs || u.closed {
		u.mu.Unlock()
		return
	}
	u.session = nil
	u.lastErr = u.failure("is unavailable", why)
	u.lastTry = time.Now()
	u.up(false)
	u.log.Warn("gateway: upstream lost; reconnecting in the background", "error", why)
	u.retryLocked()
	u.mu.Unlock()
	go func() { _ = cs.Close() }() // it may wait for the calls still on it
}

// retryLocked starts the background reconnection unless it runs. u.mu is
// held.
func (u *upstream) retryLocked() {
	if u.retrying || u.closed {
		return
	}
	u.retrying = true
	go u.retry()
}

// retry reconnects the upstream: an attempt after backoffFirst, then after
// twice as long after each failure, up to backoffMax, until it is up or
// the gateway closes it.
func (u *upstream) retry() {
	delay := backoffFirst
	for {
		t := time.NewTimer(delay)
		select {
		case <-u.done:
			t.Stop()
			return
		case <-t.C:
		}
		u.mu.Lock()
		if u.closed || u.session != nil {
			u.retrying = false
			u.mu.Unlock()
			return
		}
		ch := u.attemptLocked()
		u.mu.Unlock()
		select {
		case <-u.done:
			return
		case <-ch:
		}
		u.mu.Lock()
		if u.closed || u.session != nil {
			u.retrying = false
			u.mu.Unlock()
			return
		}
		u.mu.Unlock()
		delay = min(2*delay, backoffMax)
	}
}

// Up reports whether the upstream has a live session.
func (u *upstream) Up() bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.session != nil
}

// listTimeout bounds one list request (listTimeout, or connect_timeout
// when lower).
func (u *upstream) listTimeout() time.Duration {
	return min(listTimeout, u.connectTimeout)
}

func (u *upstream) connect() (*mcp.ClientSession, []*mcp.Tool, error) {
	ctx, cancel := u.bound(context.Background(), u.connectTimeout)
	defer cancel()
	client := mcp.NewClient(&mcp.Implementation{Name: "acgs-gateway", Version: version.Version}, &mcp.ClientOptions{
		Capabilities:                &mcp.ClientCapabilities{},
		ProgressNotificationHandler: u.progress,
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

// Tools lists the upstream's tools now. An upstream that is down has none
// (its loss was logged); one that does not answer within listTimeout, or
// answers an error, keeps its last list (returned with the error, for the
// log); one whose transport fails goes down (lose) and has none.
func (u *upstream) Tools(ctx context.Context) ([]*mcp.Tool, error) {
	cs := u.live()
	if cs == nil {
		return nil, nil
	}
	ctx, cancel := u.bound(ctx, u.listTimeout())
	defer cancel()
	tools, err := listAll(ctx, cs)
	if u.failed(ctx, cs, err) {
		return nil, nil
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if err != nil {
		return u.tools, u.listError(ctx, err, "tools/list")
	}
	u.setTools(tools)
	return tools, nil
}

// listError says why a list request (what) of context ctx failed.
func (u *upstream) listError(ctx context.Context, err error, what string) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) && !stopped(ctx) {
		return fmt.Errorf("upstream %q did not answer %s within %s", u.cfg.Name, what, u.listTimeout())
	}
	return &upstreamFailure{prefix: what + ": ", err: err}
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
	if meta != nil {
		// The call's answer is read as soon as it comes, perhaps before
		// the progress the upstream sent ahead of it has reached
		// relayProgress (its last step): that goes to the agent first.
		// relayProgress only hands it on, so this waits for no agent.
		_ = cs.AwaitNotifications(ctx)
	}
	if err != nil {
		u.failed(ctx, cs, err)
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
	return u.failure("", err)
}

// failure is err as an agent is told of it (upstreamFailure): "upstream
// "x" <what>: <its cause>".
func (u *upstream) failure(what string, err error) error {
	prefix := fmt.Sprintf("upstream %q: ", u.cfg.Name)
	if what != "" {
		prefix = fmt.Sprintf("upstream %q %s: ", u.cfg.Name, what)
	}
	return &upstreamFailure{prefix: prefix, err: err}
}

// Close ends the session (a child process gets its stdin closed, then
// SIGTERM) and the background reconnection, after the connection attempt
// in progress, if any (the gateway's lifetime has ended it: Gateway.Close).
func (u *upstream) Close() {
	u.mu.Lock()
	cs := u.session
	u.session = nil
	if !u.closed {
		u.closed = true
		close(u.done)
	}
	u.lastErr = fmt.Errorf("upstream %q: the gateway is shutting down", u.cfg.Name)
	connecting := u.connecting
	u.mu.Unlock()
	if cs != nil {
		_ = cs.Close()
	}
	if connecting != nil {
		<-connecting
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

// headerTransport adds the configured headers to the upstream's requests
// to its configured URL's origin (scheme, host and port), and to no other:
// the client follows redirects through this transport, and the headers
// hold secrets (a bearer token) that a redirect to another origin must not
// carry there. net/http drops Authorization on such a redirect itself, but
// only of the request it was given; these are added below it.
type headerTransport struct {
	base    http.RoundTripper
	headers map[string]string
	origin  string // origin(the upstream's URL)
}

func (t headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if len(t.headers) == 0 || originOf(r.URL) != t.origin {
		return t.base.RoundTrip(r)
	}
	r = r.Clone(r.Context())
	for k, v := range t.headers {
		r.Header.Set(k, expandHeader(v))
	}
	return t.base.RoundTrip(r)
}

// origin is the origin of a URL (originOf); "" when it does not parse.
func origin(rawURL string) string {
	p, err := url.Parse(rawURL)
	if err != nil {
		return ""
	}
	return originOf(p)
}

// originOf is scheme://host:port, lower-cased, with the scheme's default
// port when none is given; "" for a URL without a host.
func originOf(u *url.URL) string {
	if u == nil || u.Host == "" {
		return ""
	}
	scheme := strings.ToLower(u.Scheme)
	port := u.Port()
	if port == "" {
		switch scheme {
		case "http":
			port = "80"
		case "https":
			port = "443"
		}
	}
	return scheme + "://" + net.JoinHostPort(strings.ToLower(u.Hostname()), port)
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
