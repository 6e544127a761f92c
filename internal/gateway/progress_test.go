package gateway_test

import (
	"context"
	"net"
	"net/http"
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
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, nil)}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	p.url = "http://" + ln.Addr().String() + "/mcp"
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
