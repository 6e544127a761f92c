package gateway_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// progressUpstream is an upstream whose tool "work" records the progress
// token of each call, reports half its progress under it when there is
// one, and answers when the test says so.
type progressUpstream struct {
	url    string
	tokens chan any      // the token of each call, as the upstream saw it
	finish chan struct{} // closed: "work" answers
}

func startProgressUpstream(t *testing.T) *progressUpstream {
	t.Helper()
	p := &progressUpstream{tokens: make(chan any, 4), finish: make(chan struct{})}
	s := mcp.NewServer(&mcp.Implementation{Name: "progress", Version: "1"}, nil)
	mcp.AddTool(s, &mcp.Tool{Name: "work"}, func(ctx context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		tok := req.Params.GetProgressToken()
		p.tokens <- tok
		if tok != nil {
			if err := req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{ProgressToken: tok, Progress: 1, Total: 2, Message: "half"}); err != nil {
				return nil, nil, err
			}
		}
		select {
		case <-p.finish:
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "done"}}}, nil, nil
	})
	p.url = serveServer(t, s)
	return p
}

// TestProgressTokenReachesTheUpstreamAndComesBack: an agent's call with a
// progressToken in its _meta reaches the upstream with a progress token
// (the gateway's own: the upstream session is shared by every agent), and
// a progress notification the upstream's client gets under that token is
// passed to the agent under the agent's token, while the call runs only.
func TestProgressTokenReachesTheUpstreamAndComesBack(t *testing.T) {
	up := startProgressUpstream(t)
	e := startEnv(t, envOptions{upstreams: "  - name: slowup\n    url: " + up.url + "\n"})
	var mu sync.Mutex
	var got []*mcp.ProgressNotificationParams
	arrived := make(chan struct{}, 4)
	hc := &http.Client{Transport: bearer{token: "token-1", base: http.DefaultTransport}}
	c := mcp.NewClient(&mcp.Implementation{Name: "agent", Version: "1"}, &mcp.ClientOptions{
		ProgressNotificationHandler: func(_ context.Context, req *mcp.ProgressNotificationClientRequest) {
			mu.Lock()
			got = append(got, req.Params)
			mu.Unlock()
			arrived <- struct{}{}
		},
	})
	agent, err := c.Connect(testCtx(t), &mcp.StreamableClientTransport{Endpoint: e.agentURL, HTTPClient: hc}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = agent.Close() })

	done := make(chan error, 1)
	go func() {
		_, err := agent.CallTool(testCtx(t), &mcp.CallToolParams{Name: "slowup__work", Meta: mcp.Meta{"progressToken": "agent-token-1"}})
		done <- err
	}()
	var upTok any
	select {
	case upTok = <-up.tokens:
	case err := <-done:
		t.Fatalf("the call ended before reaching the upstream: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("the call did not reach the upstream")
	}
	if upTok == nil {
		t.Fatal("the upstream got no progress token")
	}
	if upTok == "agent-token-1" {
		t.Fatal("the upstream got the agent's own token, which another agent's call may use at the same time")
	}
	// the upstream's own notification, under the gateway's token
	select {
	case <-arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("the agent got no progress notification")
	}
	mu.Lock()
	if p := got[0]; p.ProgressToken != "agent-token-1" || p.Progress != 1 || p.Total != 2 || p.Message != "half" {
		t.Errorf("the agent got %+v, want its token, 1 of 2, half", p)
	}
	mu.Unlock()
	close(up.finish)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// the call has ended: a late notification goes nowhere
	e.g.RelayProgress(testCtx(t), &mcp.ProgressNotificationClientRequest{Params: &mcp.ProgressNotificationParams{ProgressToken: upTok, Progress: 2, Total: 2}})
	select {
	case <-arrived:
		t.Error("a notification after the call ended reached the agent")
	case <-time.After(300 * time.Millisecond):
	}
	// a call without a token sends none
	if _, err := agent.CallTool(testCtx(t), &mcp.CallToolParams{Name: "slowup__work"}); err != nil {
		t.Fatal(err)
	}
	if tok := <-up.tokens; tok != nil {
		t.Errorf("a call without a progress token reached the upstream with %v", tok)
	}
}

// TestProgressOfOneAgentDoesNotStallAnother: an agent that opens its event
// stream (the GET) and never reads it, while an upstream it shares with
// others floods its call with progress. The gateway passed each
// notification on from within the upstream client's notification handler,
// waiting for the agent's stream: once its buffers were full, every later
// notification of that upstream, for every agent, waited behind it. Each
// agent session now has its own bounded queue (what overflows it is
// dropped, and counted): another agent's progress arrives at once.
func TestProgressOfOneAgentDoesNotStallAnother(t *testing.T) {
	s := mcp.NewServer(&mcp.Implementation{Name: "progress", Version: "1"}, nil)
	big := strings.Repeat("x", 100<<10)
	mcp.AddTool(s, &mcp.Tool{Name: "flood"}, func(ctx context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		for i := range 400 {
			if err := req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{ProgressToken: req.Params.GetProgressToken(), Progress: float64(i), Message: big}); err != nil {
				return nil, nil, err
			}
		}
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "flooded"}}}, nil, nil
	})
	finish := make(chan struct{})
	mcp.AddTool(s, &mcp.Tool{Name: "work"}, func(ctx context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		if err := req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{ProgressToken: req.Params.GetProgressToken(), Progress: 1, Total: 2, Message: "half"}); err != nil {
			return nil, nil, err
		}
		select {
		case <-finish:
		case <-ctx.Done():
		}
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "done"}}}, nil, nil
	})
	url := serveServer(t, s)
	// the flood takes a while under the race detector
	e := startEnv(t, envOptions{upstreams: "  - name: p\n    url: " + url + "\n", extraYAML: "call_timeout: 50s\n"})

	// Agent 1, in raw HTTP: it opens its event stream and never reads it.
	hc := &http.Client{Timeout: 55 * time.Second}
	send := func(method, sid, body string) *http.Response {
		t.Helper()
		req, _ := http.NewRequestWithContext(testCtx(t), method, e.agentURL, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer token-1")
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
		if sid != "" {
			req.Header.Set("Mcp-Session-Id", sid)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	r := send(http.MethodPost, "", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"x","version":"1"}}}`)
	sid := r.Header.Get("Mcp-Session-Id")
	_, _ = io.Copy(io.Discard, r.Body)
	r.Body.Close()
	send(http.MethodPost, sid, `{"jsonrpc":"2.0","method":"notifications/initialized"}`).Body.Close()
	stream, err := (&http.Client{}).Do(func() *http.Request {
		req, _ := http.NewRequestWithContext(testCtx(t), http.MethodGet, e.agentURL, nil)
		req.Header.Set("Authorization", "Bearer token-1")
		req.Header.Set("Accept", "text/event-stream")
		req.Header.Set("Mcp-Session-Id", sid)
		req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
		return req
	}())
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Body.Close() // never read
	r = send(http.MethodPost, sid, `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"p__flood","arguments":{},"_meta":{"progressToken":"a1"}}}`)
	b, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if !strings.Contains(string(b), "flooded") {
		t.Fatalf("agent 1's call: %.200s", b)
	}

	// Agent 2 reads its stream, and gets its progress at once.
	arrived := make(chan struct{}, 4)
	c := mcp.NewClient(&mcp.Implementation{Name: "agent", Version: "1"}, &mcp.ClientOptions{
		ProgressNotificationHandler: func(context.Context, *mcp.ProgressNotificationClientRequest) { arrived <- struct{}{} },
	})
	a2, err := c.Connect(testCtx(t), &mcp.StreamableClientTransport{Endpoint: e.agentURL, HTTPClient: &http.Client{Transport: bearer{token: "token-2", base: http.DefaultTransport}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a2.Close()
	done := make(chan error, 1)
	go func() {
		_, err := a2.CallTool(testCtx(t), &mcp.CallToolParams{Name: "p__work", Meta: mcp.Meta{"progressToken": "b1"}})
		done <- err
	}()
	select {
	case <-arrived:
	case <-time.After(5 * time.Second):
		t.Error("agent 2's progress did not arrive within 5s: it waits behind agent 1's unread stream")
	}
	close(finish)
	if err := <-done; err != nil {
		t.Error(err)
	}
	if got := e.metric(t, "acgs_gateway_progress_dropped_total", nil); got == 0 {
		t.Error("no progress notification for agent 1 was dropped (acgs_gateway_progress_dropped_total 0)")
	}
}
