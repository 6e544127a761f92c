package gateway

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// sessionTally counts the HTTP agents' sessions for their bounds
// (Config.Sessions): the agent of each session the gateway has opened, by
// its id, and the initializes being served, by agent. A session is counted
// while the agent-facing server has it (Server.Sessions): it ends with a
// DELETE, its idle timeout, its unused timeout or the gateway's shutdown.
type sessionTally struct {
	mu      sync.Mutex
	agents  map[string]string // session id -> agent
	opening map[string]int    // agent -> initializes being served
	// unused holds, by session id, the timer ending an HTTP session that
	// has made no request since its initialize (sessions.unused_timeout);
	// the session's first request, or its end, stops and removes it.
	unused sync.Map
}

// sessionUsed notes a request of an HTTP agent's session ss: an
// initialize starts its unused timer (sessions.unused_timeout), and any
// other request (a method call: notifications do not count) stops it, so
// that the session lasts until its idle timeout. A session that made no
// request in time is closed: a bare initialize (a client that never
// calls, or one trying to fill the sessions' bounds) would otherwise hold
// its place for the full idle timeout. The SDK closes a session whose
// first request is not a successful initialize itself. A ping counts as
// use, deliberately: a client pinging its session (the Go SDK client's
// KeepAlive) is alive and means to use it, and could not initialize
// again once it ended (docs/gateway.md); and a client holding places on
// purpose would send any other cheap request (tools/list) as well, so
// not counting pings would end live sessions without bounding deliberate
// ones (sessions.max and max_per_agent do that).
func (g *Gateway) sessionUsed(ss *mcp.ServerSession, method string) {
	id := ss.ID()
	if id == "" || g.cfg.Listen == "" { // the stdio agent's
		return
	}
	t := &g.sessions.unused
	switch {
	case method == "initialize" && ss.InitializeParams() != nil:
		// An initialize again (the SDK refuses it as a duplicate): the
		// session has been initialized, and its use already counted or
		// its timer already running (review: it armed the timer again,
		// and a session in use ended).
	case method == "initialize":
		u := &unusedTimer{}
		if old, ok := t.Swap(id, u); ok {
			old.(*unusedTimer).stop()
		}
		// A request that takes u out of the map first keeps the session.
		u.t.Store(time.AfterFunc(g.cfg.Sessions.UnusedTimeout, func() {
			if t.CompareAndDelete(id, u) {
				g.log.Info("gateway: ending an HTTP agent's session that made no request after its initialize", "session", id, "unused_timeout", g.cfg.Sessions.UnusedTimeout)
				_ = ss.Close()
			}
		}))
		// However the session ends (a DELETE, its idle timeout, the
		// gateway's shutdown, the SDK closing it), its timer goes with it
		// rather than holding the session until it fires. Wait returns
		// when the session's connection has closed.
		go func() {
			_ = ss.Wait()
			if t.CompareAndDelete(id, u) {
				u.stop()
			}
		}()
	case strings.HasPrefix(method, "notifications/"):
	default:
		if _, ok := t.Load(id); !ok { // lock-free for the sessions in use
			return
		}
		if u, ok := t.LoadAndDelete(id); ok {
			u.(*unusedTimer).stop()
		}
	}
}

// limitSessions serves h (the streamable HTTP handler, behind the bearer
// token check), refusing an initialize (a POST without a session id) that
// would take the agent's sessions past sessions.max_per_agent (429), or
// all agents' past sessions.max (503), with a JSON-RPC error naming the
// bound. A POST on a session is served through a postStream, for its
// calls' progress (servePOST).
func (g *Gateway) limitSessions(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Header.Del(postStreamHeader) // the gateway's own, never an agent's
		if r.Method == http.MethodPost && r.Header.Get("Mcp-Session-Id") != "" {
			g.servePOST(h, w, r)
			return
		}
		if r.Method != http.MethodPost {
			h.ServeHTTP(w, r)
			return
		}
		agent := g.cfg.AnonymousAgent
		if ti := auth.TokenInfoFromContext(r.Context()); ti != nil && ti.UserID != "" {
			agent = ti.UserID
		}
		status, msg := g.admitSession(agent)
		if status != 0 {
			g.log.Warn("gateway: an HTTP agent's new session refused", "agent", agent, "reason", msg)
			b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": nil,
				"error": &jsonrpc.Error{Code: jsonrpc.CodeInvalidRequest, Message: msg}})
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			_, _ = w.Write(b)
			return
		}
		defer g.openedSession(agent, w)
		h.ServeHTTP(w, r)
	})
}

// admitSession takes a place for a new session of agent, or says why
// there is none: an HTTP status and a message.
func (g *Gateway) admitSession(agent string) (int, string) {
	t := &g.sessions
	t.mu.Lock()
	defer t.mu.Unlock()
	live := map[string]bool{}
	for ss := range g.server.Sessions() {
		live[ss.ID()] = true
	}
	total, mine := 0, 0
	for id, a := range t.agents {
		if !live[id] {
			delete(t.agents, id)
			continue
		}
		total++
		if a == agent {
			mine++
		}
	}
	for a, n := range t.opening {
		total += n
		if a == agent {
			mine += n
		}
	}
	switch {
	case mine >= g.cfg.Sessions.MaxPerAgent:
		return http.StatusTooManyRequests, fmt.Sprintf("agent %q has %d sessions open, its bound (sessions.max_per_agent (%d)): end one (DELETE) before opening another", agent, mine, g.cfg.Sessions.MaxPerAgent)
	case total >= g.cfg.Sessions.Max:
		return http.StatusServiceUnavailable, fmt.Sprintf("the gateway has %d agent sessions open, its bound (sessions.max (%d)): try again when one has ended", total, g.cfg.Sessions.Max)
	}
	if t.opening == nil {
		t.opening, t.agents = map[string]int{}, map[string]string{}
	}
	t.opening[agent]++
	return 0, ""
}

// openedSession ends the initialize of agent that admitSession admitted:
// the session it opened, if any (its id is in the answer's header), is
// counted as the agent's.
func (g *Gateway) openedSession(agent string, w http.ResponseWriter) {
	t := &g.sessions
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.opening[agent]--; t.opening[agent] <= 0 {
		delete(t.opening, agent)
	}
	if id := w.Header().Get("Mcp-Session-Id"); id != "" {
		t.agents[id] = agent
	}
}

// unusedTimer is the timer of a session that has made no request yet.
type unusedTimer struct{ t atomic.Pointer[time.Timer] }

func (u *unusedTimer) stop() {
	if t := u.t.Load(); t != nil {
		t.Stop()
	}
}
