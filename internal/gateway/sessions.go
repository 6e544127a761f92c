package gateway

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
)

// sessionTally counts the HTTP agents' sessions for their bounds
// (Config.Sessions): the agent of each session the gateway has opened, by
// its id, and the initializes being served, by agent. A session is counted
// while the agent-facing server has it (Server.Sessions): it ends with a
// DELETE, its idle timeout or the gateway's shutdown.
type sessionTally struct {
	mu      sync.Mutex
	agents  map[string]string // session id -> agent
	opening map[string]int    // agent -> initializes being served
}

// limitSessions serves h (the streamable HTTP handler, behind the bearer
// token check), refusing an initialize (a POST without a session id) that
// would take the agent's sessions past sessions.max_per_agent (429), or
// all agents' past sessions.max (503), with a JSON-RPC error naming the
// bound.
func (g *Gateway) limitSessions(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.Header.Get("Mcp-Session-Id") != "" {
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
