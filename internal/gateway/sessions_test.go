package gateway_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
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
