package gateway_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/acgs-lite/acgs/internal/gateway"
	"github.com/acgs-lite/acgs/internal/telemetry/telemetrytest"
	"github.com/acgs-lite/acgs/internal/testenv"
)

// TestStopDeniesHeldCalls: a gateway told to stop while a call is held
// for approval (approvals.timeout 30s) stops within its shutdown deadline
// (5s) instead of waiting for the timeout: the held call is answered as
// denied because the gateway is stopping, counted as a refusal by the
// gateway and logged as one (with its agent and tool), and the pending
// gauge is back at 0. Over streamable HTTP and over stdio, whose sessions
// each wait for their in-flight requests when they close.
func TestStopDeniesHeldCalls(t *testing.T) {
	for _, stdio := range []bool{false, true} {
		name := "http"
		if stdio {
			name = "stdio"
		}
		t.Run(name, func(t *testing.T) {
			e := startEnv(t, envOptions{stdio: stdio})
			agent := e.stdio
			if !stdio {
				agent = retryingAgent(t, e.agentURL, "token-1")
			}
			held := callAsync(t, agent, "remote__delete_record", map[string]any{"id": "r-1"})
			a := e.waitPending(t, 1)[0]

			stopWithinDeadline(t, e, "with a call held (approvals.timeout 30s)")

			select {
			case r := <-held:
				if r.err != nil {
					t.Fatalf("held call: %v, want a refusal", r.err)
				}
				id, outcome, reasons := decisionMeta(t, r.res)
				if !r.res.IsError || outcome != "deny" || id != a.DecisionID || !strings.Contains(strings.Join(reasons, "; "), "the gateway is stopping") {
					t.Fatalf("held call answered %q (outcome %q, decision %q, want %q)", text(r.res), outcome, id, a.DecisionID)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the held call was not answered when the gateway stopped")
			}
			if got := e.metric(t, "acgs_gateway_approvals_total", map[string]string{"upstream": "remote", "tool": "delete_record", "verdict": "refused"}); got != 1 {
				t.Errorf("refused = %v, want 1", got)
			}
			if got := e.metric(t, "acgs_gateway_approvals_pending", nil); got != 0 {
				t.Errorf("pending after stopping = %v, want 0", got)
			}
			if n := e.remote.Calls("delete_record"); n != 0 {
				t.Errorf("the held call reached the upstream (%d calls)", n)
			}

			e.stop()
			var logged int
			for _, r := range e.records(t) {
				if r["path"] != "acgs/gateway/approval" {
					continue
				}
				res, _ := r["result"].(map[string]any)
				note, _ := res["note"].(string)
				if res["verdict"] != string(gateway.Refused) || res["by"] != "gateway" || res["decision_id"] != a.DecisionID ||
					res["approval_id"] != a.ID || res["agent"] != "agent-1" || res["tool"] != "remote__delete_record" ||
					!strings.Contains(note, "the gateway is stopping") {
					t.Errorf("approval record: %v", res)
				}
				logged++
			}
			if logged != 1 {
				t.Errorf("%d approval records in the decision log, want 1", logged)
			}
		})
	}
}

// TestStopAnswersCallsBeingForwarded: a call being forwarded when the
// gateway stops gets its upstream's answer (the agents' sessions close
// once the calls they serve are answered, within the shutdown deadline).
func TestStopAnswersCallsBeingForwarded(t *testing.T) {
	e := startEnv(t, envOptions{})
	agent := retryingAgent(t, e.agentURL, "token-1")
	forwarded := callAsync(t, agent, "remote__slow", map[string]any{"ms": 1000})
	for deadline := time.Now().Add(10 * time.Second); e.remote.Calls("slow") < 1; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the call did not reach the upstream in 10s")
		}
	}
	stopWithinDeadline(t, e, "with a call being forwarded")
	if r := <-forwarded; r.err != nil || r.res.IsError || text(r.res) != "slept" {
		t.Errorf("the call being forwarded: %+v %v, want the upstream's answer", r.res, r.err)
	}
}

// TestStdioAgentLeavingWithACallHeld: a stdio agent that goes away (its
// pipes close: the host exited) while its call is held ends the gateway at
// once, the call cancelled as when an agent gives up: the shutdown does not
// wait for a refusal it can no longer send.
func TestStdioAgentLeavingWithACallHeld(t *testing.T) {
	e := startEnv(t, envOptions{}) // its engine and upstream; this gateway is another
	gcfg, err := gateway.ParseConfig([]byte(fmt.Sprintf("stdio_agent: agent-1\napprovals: {timeout: 30s}\nupstreams:\n  - name: remote\n    url: %s\n", e.remURL)))
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	g, err := gateway.New(gcfg, gateway.Deps{Engine: e.svc.Engine, ConstitutionalHash: hash, Registerer: reg, Logger: slog.New(slog.NewTextHandler(e.logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	p := newStdioPipes(t)
	done := make(chan error, 1)
	go func() { done <- g.Run(context.Background(), gateway.RunOptions{Stdin: p.toGw, Stdout: p.fromGw}) }()
	c := mcp.NewClient(&mcp.Implementation{Name: "test-agent", Version: "1"}, nil)
	cs, err := c.Connect(testCtx(t), &mcp.IOTransport{Reader: p.toAgent, Writer: p.fromAgent}, nil)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		_, _ = cs.CallTool(testCtx(t), &mcp.CallToolParams{Name: "remote__delete_record", Arguments: map[string]any{"id": "r-1"}})
	}()
	for deadline := time.Now().Add(10 * time.Second); telemetrytest.Sum(t, reg, "acgs_gateway_approvals_pending", nil) != 1; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the call was not held in 10s")
		}
	}

	start := time.Now()
	_ = p.fromAgent.Close() // the gateway's stdin ends
	_ = p.toAgent.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("the gateway stopped %s after its stdio agent left", took)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the gateway did not stop within 10s of its stdio agent leaving")
	}
	if got := telemetrytest.Sum(t, reg, "acgs_gateway_approvals_total", map[string]string{"verdict": string(gateway.Cancelled)}); got != 1 {
		t.Errorf("cancelled = %v, want 1", got)
	}
	if got := telemetrytest.Sum(t, reg, "acgs_gateway_approvals_pending", nil); got != 0 {
		t.Errorf("pending = %v, want 0", got)
	}
}

// retryingAgent connects an HTTP agent that reconnects its event stream,
// as the SDK's client does by default. The gateway answers the calls it
// serves before it ends the agents' event streams as it stops, but an
// agent that gives up at once when its stream ends (connectHTTP) may fail
// a pending call before reading its answer from the other connection.
func retryingAgent(t testing.TB, url, token string) *mcp.ClientSession {
	t.Helper()
	hc := &http.Client{Transport: bearer{token: token, base: http.DefaultTransport}}
	c := mcp.NewClient(&mcp.Implementation{Name: "test-agent", Version: "1"}, nil)
	cs, err := c.Connect(testCtx(t), &mcp.StreamableClientTransport{Endpoint: url, HTTPClient: hc}, nil)
	if err != nil {
		t.Fatalf("connecting to %s: %v", url, err)
	}
	t.Cleanup(func() { _ = cs.Close() })
	return cs
}

// stopWithinDeadline ends the gateway's context and fails unless Run
// returns within 10s: past its 5s shutdown deadline, far short of the
// approval or call timeouts a stop must not wait for (a guard against a
// hang, not a timing); Run's result is put back for e.stop.
func stopWithinDeadline(t *testing.T, e *env, what string) {
	t.Helper()
	start := time.Now()
	e.cancel()
	select {
	case err := <-e.done:
		t.Logf("stopped %s after its context ended", time.Since(start))
		e.done <- err
	case <-time.After(10 * time.Second):
		t.Fatalf("the gateway did not stop within 10s of its context's end %s", what)
	}
}

// TestStopCancelsCallsBeingForwardedAtTheDeadline: a call being forwarded
// to an upstream that does not answer (call_timeout 60s) when the gateway
// stops is ended before the shutdown deadline (5s): the gateway stops
// within seconds instead of after call_timeout (closing an upstream
// session waits for its calls), the call counts as a failed upstream call,
// and the agent gets a tool error saying the gateway stopped. To an
// upstream over streamable HTTP and over stdio; a stdio agent gets its
// answer too (the SDK dropped the answers of calls running when a session
// closed; third_party/go-sdk.patch).
func TestStopCancelsCallsBeingForwardedAtTheDeadline(t *testing.T) {
	for _, c := range []struct {
		name     string
		stdio    bool   // the agent's transport
		upstream string // remote (streamable HTTP) or local (stdio)
	}{
		{"http agent, http upstream", false, "remote"},
		{"http agent, stdio upstream", false, "local"},
		{"stdio agent, http upstream", true, "remote"},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := startEnv(t, envOptions{stdio: c.stdio, extraYAML: "call_timeout: 60s\n"})
			agent := e.stdio
			if !c.stdio {
				agent = retryingAgent(t, e.agentURL, "token-1")
			}
			forwarded := callAsync(t, agent, c.upstream+"__slow", map[string]any{"ms": 120000})
			reached := func() bool { return e.remote.Calls("slow") > 0 }
			if c.upstream == "local" { // a child process: ask it
				reached = func() bool { return strings.Contains(text(call(t, agent, "local__stats", map[string]any{})), "slow=1") }
			}
			for deadline := time.Now().Add(10 * time.Second); !reached(); time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("the call did not reach the upstream in 10s")
				}
			}

			start := time.Now()
			e.cancel()
			select {
			case err := <-e.done:
				t.Logf("stopped %s after its context ended", time.Since(start))
				e.done <- err
			case <-time.After(30 * time.Second):
				t.Fatal("the gateway did not stop within 30s of its context's end with a call its upstream does not answer (call_timeout 60s)")
			}
			if got := e.metric(t, "acgs_gateway_upstream_calls_total", map[string]string{"upstream": c.upstream, "tool": "slow", "result": "failed"}); got != 1 {
				t.Errorf("failed upstream calls = %v, want 1", got)
			}
			if !strings.Contains(e.logs.String(), "had not answered when the gateway stopped") {
				t.Errorf("no upstream failure logged:\n%s", e.logs.String())
			}
			select {
			case r := <-forwarded:
				if r.err != nil {
					t.Fatalf("the call being forwarded: %v, want a tool error", r.err)
				}
				if !r.res.IsError || !strings.Contains(text(r.res), "had not answered when the gateway stopped") {
					t.Errorf("the call being forwarded answered %q (isError %v), want a tool error saying the gateway stopped", text(r.res), r.res.IsError)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the call being forwarded was not answered when the gateway stopped")
			}
		})
	}
}

// TestStopWarnsOnceAboutUnansweredRequests: a stdio agent whose stream
// takes nothing more (the host stopped reading) when the gateway stops with
// a call held: the refusal cannot be written, the gateway stops at its
// shutdown deadline and says so once (drain and closeSessions each logged
// it: the same requests, left at the same deadline).
func TestStopWarnsOnceAboutUnansweredRequests(t *testing.T) {
	e := startEnv(t, envOptions{}) // its engine and upstream; this gateway is another
	gcfg, err := gateway.ParseConfig([]byte(fmt.Sprintf("stdio_agent: agent-1\napprovals: {timeout: 30s}\nupstreams:\n  - name: remote\n    url: %s\n", e.remURL)))
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	logs := &testenv.SyncBuffer{}
	g, err := gateway.New(gcfg, gateway.Deps{Engine: e.svc.Engine, ConstitutionalHash: hash, Registerer: reg, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	p := newStdioPipes(t)
	out := &stallingWriter{w: p.fromGw, release: make(chan struct{})}
	t.Cleanup(func() { close(out.release) })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx, gateway.RunOptions{Stdin: p.toGw, Stdout: out}) }()
	c := mcp.NewClient(&mcp.Implementation{Name: "test-agent", Version: "1"}, nil)
	cs, err := c.Connect(testCtx(t), &mcp.IOTransport{Reader: p.toAgent, Writer: p.fromAgent}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cs.Close() })
	go func() {
		_, _ = cs.CallTool(testCtx(t), &mcp.CallToolParams{Name: "remote__delete_record", Arguments: map[string]any{"id": "r-1"}})
	}()
	for deadline := time.Now().Add(10 * time.Second); telemetrytest.Sum(t, reg, "acgs_gateway_approvals_pending", nil) != 1; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the call was not held in 10s")
		}
	}

	out.stall.Store(true)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the gateway did not stop within 15s")
	}
	if n := strings.Count(logs.String(), "by the shutdown deadline") + strings.Count(logs.String(), "at the shutdown deadline"); n != 1 {
		t.Errorf("%d warnings about the requests left at the shutdown deadline, want 1:\n%s", n, logs.String())
	}
}

// stallingWriter passes writes on until stall is set; then each blocks
// until release is closed (a reader that stopped reading).
type stallingWriter struct {
	w       io.Writer
	stall   atomic.Bool
	release chan struct{}
}

func (s *stallingWriter) Write(p []byte) (int, error) {
	if s.stall.Load() {
		<-s.release
		return 0, io.ErrClosedPipe
	}
	return s.w.Write(p)
}
