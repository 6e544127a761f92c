package gateway_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/acgs-lite/acgs/internal/gateway"
)

// initialize opens an HTTP agent session with token (none: anonymous) and
// returns the answer's status, session id and body.
func initialize(t *testing.T, e *env, token string) (status int, session, body string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(testCtx(t), http.MethodPost, e.agentURL, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Mcp-Session-Id"), string(b)
}

// endSession ends an HTTP agent session (DELETE).
func endSession(t *testing.T, e *env, token, session string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(testCtx(t), http.MethodDelete, e.agentURL, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Mcp-Session-Id", session)
	req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("DELETE of session %s: %d", session, resp.StatusCode)
	}
}

// TestHTTPSessionsAreBounded: every initialize kept a session (and its
// goroutines) for the 30 minutes of the session timeout unless the agent
// ended it, with no bound: one agent could open them until the gateway ran
// out of memory. Sessions are bounded per agent (sessions.max_per_agent)
// and in all (sessions.max); an initialize past a bound is refused (429
// for the agent's own, 503 for the gateway's) with a JSON-RPC error
// naming the setting, and a session that ends frees its place.
func TestHTTPSessionsAreBounded(t *testing.T) {
	e := startEnv(t, envOptions{extraYAML: "sessions: {max: 3, max_per_agent: 2}\n"})
	opened := map[string][]string{} // token -> its sessions
	for i, step := range []struct {
		token  string
		end    bool   // end the token's first session instead of opening one
		status int    // of the initialize
		says   string // in the refusal
	}{
		{token: "token-1", status: http.StatusOK},
		{token: "token-1", status: http.StatusOK},
		{token: "token-1", status: http.StatusTooManyRequests, says: "sessions.max_per_agent (2)"},
		{token: "token-2", status: http.StatusOK},
		{token: "token-2", status: http.StatusServiceUnavailable, says: "sessions.max (3)"},
		{token: "token-1", end: true},
		{token: "token-2", status: http.StatusOK},
		{token: "token-1", status: http.StatusServiceUnavailable, says: "sessions.max (3)"},
		{token: "token-2", end: true},
		{token: "token-1", status: http.StatusOK},
	} {
		if step.end {
			endSession(t, e, step.token, opened[step.token][0])
			opened[step.token] = opened[step.token][1:]
			continue
		}
		status, session, body := initialize(t, e, step.token)
		if status != step.status {
			t.Fatalf("step %d: initialize with %s: %d %q, want %d", i, step.token, status, body, step.status)
		}
		if status != http.StatusOK {
			if session != "" || !strings.Contains(body, step.says) || !strings.Contains(body, `"error"`) {
				t.Errorf("step %d: refused with session %q, body %q; want no session and a JSON-RPC error saying %q", i, session, body, step.says)
			}
			continue
		}
		if session == "" {
			t.Fatalf("step %d: initialize with %s: no session", i, step.token)
		}
		opened[step.token] = append(opened[step.token], session)
	}
}

// TestHTTPSessionsDefaultBound: without a sessions setting an agent still
// cannot open sessions without end: sessions.max_per_agent is 100 where
// agents have tokens of their own.
func TestHTTPSessionsDefaultBound(t *testing.T) {
	e := startEnv(t, envOptions{})
	for i := range 100 {
		if status, session, body := initialize(t, e, "token-1"); status != http.StatusOK || session == "" {
			t.Fatalf("session %d: %d %q", i+1, status, body)
		}
	}
	if status, _, body := initialize(t, e, "token-1"); status != http.StatusTooManyRequests {
		t.Fatalf("session 101 of one agent: %d %q, want %d", status, body, http.StatusTooManyRequests)
	}
	if status, _, body := initialize(t, e, "token-2"); status != http.StatusOK {
		t.Fatalf("another agent's session: %d %q", status, body)
	}
}

// postSession sends one JSON-RPC message on an HTTP agent session and
// returns the answer's status.
func postSession(t *testing.T, e *env, token, session, body string) int {
	t.Helper()
	req, _ := http.NewRequestWithContext(testCtx(t), http.MethodPost, e.agentURL, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
	req.Header.Set("Mcp-Session-Id", session)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// TestUnusedHTTPSessionsEnd: a session that made no request after its
// initialize held its place in sessions.max_per_agent and sessions.max
// for the full idle timeout (30 minutes): one client's bare initializes
// locked the agent's other clients, or every agent, out. Such a session
// now ends after sessions.unused_timeout, and its place is free again; a
// session that has made a request is kept.
func TestUnusedHTTPSessionsEnd(t *testing.T) {
	e := startEnv(t, envOptions{extraYAML: "sessions: {max: 3, max_per_agent: 3, unused_timeout: 2s}\n"})
	const initialized = `{"jsonrpc":"2.0","method":"notifications/initialized"}`
	const list = `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`
	// one session in use: its request must come within the unused
	// timeout, which a loaded machine may miss; then it is opened again
	var used string
	for try := 0; used == ""; try++ {
		if try == 5 {
			t.Fatal("no session made its request within sessions.unused_timeout")
		}
		status, session, body := initialize(t, e, "token-1")
		if status != http.StatusOK {
			t.Fatalf("initialize: %d %q", status, body)
		}
		postSession(t, e, "token-1", session, initialized)
		if postSession(t, e, "token-1", session, list) == http.StatusOK {
			used = session
		} else {
			endSession(t, e, "token-1", session)
		}
	}
	// two bare initializes (one followed by notifications/initialized,
	// which is no request) take the agent's other places
	for i := range 2 {
		status, session, body := initialize(t, e, "token-1")
		if status != http.StatusOK {
			t.Fatalf("bare initialize %d: %d %q", i, status, body)
		}
		if i == 0 {
			postSession(t, e, "token-1", session, initialized)
		}
	}
	// their places come free (the bound is reached until then: the
	// sessions are not yet closed, or have just been)
	deadline := time.Now().Add(60 * time.Second)
	for opened := 0; opened < 2; {
		status, _, body := initialize(t, e, "token-1")
		switch {
		case status == http.StatusOK:
			opened++
		case status != http.StatusTooManyRequests:
			t.Fatalf("initialize: %d %q", status, body)
		case time.Now().After(deadline):
			t.Fatalf("sessions that made no request still hold their places after 60 s (unused_timeout 2s): %q", body)
		default:
			time.Sleep(100 * time.Millisecond)
		}
	}
	if status := postSession(t, e, "token-1", used, `{"jsonrpc":"2.0","id":3,"method":"tools/list"}`); status != http.StatusOK {
		t.Errorf("the session in use answered %d after the unused ones ended, want 200", status)
	}
	// An initialize again on the session in use does not make it unused:
	// it armed the timer again, and the session ended (review).
	postSession(t, e, "token-1", used, `{"jsonrpc":"2.0","id":4,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`)
	time.Sleep(3 * 2 * time.Second)
	if status := postSession(t, e, "token-1", used, `{"jsonrpc":"2.0","id":5,"method":"tools/list"}`); status != http.StatusOK {
		t.Errorf("the session in use answered %d, 3 unused timeouts after an initialize again, want 200", status)
	}
}

// TestRefusedDeleteKeepsTheUnusedTimer: a DELETE the SDK refuses (here an
// unsupported protocol version, 400) leaves the session open, and so its
// unused timer: the timer was stopped after any DELETE, and a bare
// session then held its place for the 30-minute idle timeout (review).
func TestRefusedDeleteKeepsTheUnusedTimer(t *testing.T) {
	e := startEnv(t, envOptions{extraYAML: "sessions: {max: 1, max_per_agent: 1, unused_timeout: 1s}\n"})
	status, session, body := initialize(t, e, "token-1")
	if status != http.StatusOK {
		t.Fatalf("initialize: %d %q", status, body)
	}
	req, _ := http.NewRequestWithContext(testCtx(t), http.MethodDelete, e.agentURL, nil)
	req.Header.Set("Authorization", "Bearer token-1")
	req.Header.Set("Mcp-Session-Id", session)
	req.Header.Set("Mcp-Protocol-Version", "1999-01-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 == 2 {
		t.Fatalf("DELETE with an unsupported protocol version: %d, want it refused", resp.StatusCode)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		status, _, body := initialize(t, e, "token-1")
		switch {
		case status == http.StatusOK:
			return
		case status != http.StatusTooManyRequests && status != http.StatusServiceUnavailable:
			t.Fatalf("initialize: %d %q", status, body)
		case time.Now().After(deadline):
			t.Fatalf("the bare session still holds the only place 60 s after a refused DELETE (unused_timeout 1s): %q", body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestEndedSessionsDropTheirUnusedTimer: a session's unused timer was
// stopped only when the agent's DELETE was answered 2xx; a session ended
// another way (its idle timeout, the gateway's shutdown) left its timer,
// and the session it holds, until the timer fired (up to 30 minutes).
// The timer now goes however the session ends.
func TestEndedSessionsDropTheirUnusedTimer(t *testing.T) {
	for _, tc := range []struct {
		name string
		idle time.Duration // the sessions' idle timeout (0: SessionIdleTimeout)
		end  func(t *testing.T, e *env, session string)
	}{
		{name: "DELETE", end: func(t *testing.T, e *env, session string) { endSession(t, e, "token-1", session) }},
		{name: "idle timeout", idle: time.Second, end: func(*testing.T, *env, string) {}},
		{name: "shutdown", end: func(_ *testing.T, e *env, _ string) { e.stop() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := startEnv(t, envOptions{extraYAML: "sessions: {unused_timeout: 30m}\n", gateway: func(g *gateway.Gateway) {
				if tc.idle != 0 {
					g.SetSessionIdleTimeout(tc.idle)
				}
			}})
			status, session, body := initialize(t, e, "token-1")
			if status != http.StatusOK {
				t.Fatalf("initialize: %d %q", status, body)
			}
			if n := e.g.UnusedTimers(); n != 1 {
				t.Fatalf("%d unused timers after a bare initialize, want 1", n)
			}
			tc.end(t, e, session)
			deadline := time.Now().Add(60 * time.Second)
			for e.g.UnusedTimers() != 0 {
				if time.Now().After(deadline) {
					t.Fatalf("the ended session's unused timer (unused_timeout 30m) is still held 60 s after the session ended by %s", tc.name)
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
}
