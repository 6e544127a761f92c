package gateway_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/acgs-lite/acgs/internal/gateway"
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

// rawAgent is an HTTP agent session in raw HTTP.
type rawAgent struct {
	t   *testing.T
	e   *env
	hc  *http.Client
	tok string
	sid string
}

// openRaw initializes a session for token.
func openRaw(t *testing.T, e *env, token string) *rawAgent {
	a := &rawAgent{t: t, e: e, hc: &http.Client{}, tok: token}
	r := a.post(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"x","version":"1"}}}`)
	a.sid = r.Header.Get("Mcp-Session-Id")
	_, _ = io.Copy(io.Discard, r.Body)
	r.Body.Close()
	a.post(`{"jsonrpc":"2.0","method":"notifications/initialized"}`).Body.Close()
	return a
}

// post sends body and returns the answer once its header has come.
func (a *rawAgent) post(body string) *http.Response {
	a.t.Helper()
	req, _ := http.NewRequestWithContext(testCtx(a.t), http.MethodPost, a.e.agentURL, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+a.tok)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
	if a.sid != "" {
		req.Header.Set("Mcp-Session-Id", a.sid)
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	return resp
}

// sseMessages sends the messages of an event stream's events, in order,
// and closes the channel at its end.
func sseMessages(body io.Reader) <-chan map[string]any {
	out := make(chan map[string]any, 16)
	go func() {
		defer close(out)
		sc := bufio.NewScanner(body)
		sc.Buffer(nil, 1<<20)
		var data strings.Builder
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "data:"):
				data.WriteString(strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " "))
			case line == "" && data.Len() > 0:
				var m map[string]any
				_ = json.Unmarshal([]byte(data.String()), &m)
				out <- m
				data.Reset()
			}
		}
	}()
	return out
}

// stepsUpstream serves a tool "steps" that sends its call's progress 1 of
// 2, waits for the agent to have it (seen closed), sends 2 of 2, and
// answers "done"; it returns the upstream's URL.
func stepsUpstream(t *testing.T, seen <-chan struct{}) string {
	s := mcp.NewServer(&mcp.Implementation{Name: "progress", Version: "1"}, nil)
	mcp.AddTool(s, &mcp.Tool{Name: "steps"}, func(ctx context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		tok := req.Params.GetProgressToken()
		if err := req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{ProgressToken: tok, Progress: 1, Total: 2}); err != nil {
			return nil, nil, err
		}
		select {
		case <-seen:
		case <-time.After(20 * time.Second): // the agent never got it: the test fails
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
		if err := req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{ProgressToken: tok, Progress: 2, Total: 2}); err != nil {
			return nil, nil, err
		}
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "done"}}}, nil, nil
	})
	return serveServer(t, s)
}

// TestProgressComesBeforeTheAnswer: an upstream's progress for a call
// went to the agent's standalone event stream (the GET), through a queue
// drained apart from the call, so that a notification could reach the
// agent after the call's answer (MCP: progress stops once the request has
// completed), and an agent without that stream got none. It now goes on
// the call's own POST, answered as an event stream: the upstream's first
// notification comes (the upstream waits for the agent to have it), then
// its second (sent just before its result), then the
// answer, and the stream ends. The second was lost (the upstream client
// handed the gateway the answer before its handler had run the
// notification read before it, and the call's end dropped one still
// waiting): it now always comes.
func TestProgressComesBeforeTheAnswer(t *testing.T) {
	seen := make(chan struct{})
	e := startEnv(t, envOptions{upstreams: "  - name: p\n    url: " + stepsUpstream(t, seen) + "\n", extraYAML: "call_timeout: 50s\n"})
	a := openRaw(t, e, "token-1")
	r := a.post(`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"p__steps","arguments":{},"_meta":{"progressToken":"a1"}}}`)
	defer r.Body.Close()
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		b, _ := io.ReadAll(r.Body)
		t.Fatalf("the call asking for progress was answered %s, not an event stream: %.300s", ct, b)
	}
	c := stepsCall{seen: seen}
	for m := range sseMessages(r.Body) {
		c.take(t, m)
	}
	c.check(t)
}

// stepsCall follows the messages an agent gets for its call of p__steps
// (id 2) asking for progress under the token a1.
type stepsCall struct {
	seen     chan struct{} // closed at the first progress, to let the upstream go on (nil: none)
	got      []string      // the progress values, in order
	answered bool
}

// take is one message of the call's stream: progress under the agent's
// token, then the answer, and nothing after it.
func (c *stepsCall) take(t *testing.T, m map[string]any) {
	t.Helper()
	switch {
	case c.answered:
		t.Errorf("a message after the call's answer: %v", m)
	case m["method"] == "notifications/progress":
		p, _ := m["params"].(map[string]any)
		if p["progressToken"] != "a1" {
			t.Errorf("progress under %v, want the agent's token a1", p["progressToken"])
		}
		c.got = append(c.got, fmt.Sprint(p["progress"]))
		if len(c.got) == 1 && c.seen != nil {
			close(c.seen)
		}
	case m["id"] == float64(2):
		c.answered = true
		if !strings.Contains(fmt.Sprint(m["result"]), "done") {
			t.Errorf("the call's answer: %v", m)
		}
	default:
		t.Errorf("an unexpected message: %v", m)
	}
}

// check: the call was answered after the upstream's first notification
// and its second, the one the upstream sent just before its answer.
func (c *stepsCall) check(t *testing.T) {
	t.Helper()
	if !c.answered {
		t.Fatalf("the stream ended without the call's answer (progress %v)", c.got)
	}
	if fmt.Sprint(c.got) != "[1 2]" {
		t.Errorf("progress before the answer: %v, want [1 2]", c.got)
	}
}

// TestProgressOfOneAgentDoesNotStallAnother: an agent that does not read
// its call's stream while an upstream it shares with others floods the
// call with progress. The gateway passed each notification on from within
// the upstream client's notification handler, waiting for the agent's
// stream: once its buffers were full, every later notification of that
// upstream, for every agent, waited behind it. Each call now has its own
// sender, and at most its newest notification waiting (those it
// supersedes are dropped, and counted): another
// agent's progress arrives while the first still does not read (the write
// timeout, which would end the unread stream, is longer than the test),
// and the first reads only once the upstream has sent all its progress.
func TestProgressOfOneAgentDoesNotStallAnother(t *testing.T) {
	s := mcp.NewServer(&mcp.Implementation{Name: "progress", Version: "1"}, nil)
	big := strings.Repeat("x", 100<<10)
	flooded := make(chan struct{}) // the upstream has sent its 40 MB of progress
	mcp.AddTool(s, &mcp.Tool{Name: "flood"}, func(ctx context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		for i := range 400 {
			if err := req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{ProgressToken: req.Params.GetProgressToken(), Progress: float64(i), Message: big}); err != nil {
				return nil, nil, err
			}
		}
		close(flooded)
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
	e := startEnv(t, envOptions{upstreams: "  - name: p\n    url: " + url + "\n", extraYAML: "call_timeout: 5m\n",
		gateway: func(g *gateway.Gateway) { g.SetAgentWriteTimeout(10 * time.Minute) }})

	// Agent 1, in raw HTTP: its call's stream begins (its header comes
	// with the first notification) and is not read.
	a1 := openRaw(t, e, "token-1")
	r := a1.post(`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"p__flood","arguments":{},"_meta":{"progressToken":"a1"}}}`)
	defer r.Body.Close()

	// Agent 2 reads its stream, and gets its progress.
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
	case <-time.After(2 * time.Minute): // a hang: agent 1 does not read until then
		t.Error("agent 2's progress did not arrive: it waits behind agent 1's unread stream")
	}
	close(finish)
	if err := <-done; err != nil {
		t.Error(err)
	}
	// Agent 1 reads once the upstream has sent it all: far more than the
	// connection's buffers and the call's queue hold.
	select {
	case <-flooded:
	case <-time.After(2 * time.Minute): // a hang
		t.Fatal("the upstream did not finish sending its progress")
	}
	b, _ := io.ReadAll(r.Body)
	if !strings.Contains(string(b), "flooded") {
		t.Fatalf("agent 1's call: %.200s", b)
	}
	if got := e.metric(t, "acgs_gateway_progress_dropped_total", nil); got == 0 {
		t.Error("no progress notification for agent 1 was dropped (acgs_gateway_progress_dropped_total 0)")
	}
}

// TestStdioProgressComesBeforeTheAnswer: a stdio agent's call asking for
// progress gets the upstream's notifications on the agent's one stream,
// under its token, before the call's answer, and none after it (a ping
// sent once the answer has come is answered with no progress between).
func TestStdioProgressComesBeforeTheAnswer(t *testing.T) {
	seen := make(chan struct{})
	e := startEnv(t, envOptions{stdio: true, rawStdio: true, upstreams: "  - name: p\n    url: " + stepsUpstream(t, seen) + "\n", extraYAML: "call_timeout: 50s\n"})
	send, next := openRawStdio(t, e)
	send(`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"p__steps","arguments":{},"_meta":{"progressToken":"a1"}}}`)
	c := stepsCall{seen: seen}
	for !c.answered {
		c.take(t, next())
	}
	c.check(t)
	send(`{"jsonrpc":"2.0","id":3,"method":"ping"}`)
	if m := next(); m["id"] != float64(3) {
		t.Errorf("after the call's answer, before the ping's: %v", m)
	}
}

// openRawStdio initializes the raw stdio agent of e (envOptions.rawStdio):
// send writes one message, next returns the gateway's next one.
func openRawStdio(t *testing.T, e *env) (send func(string), next func() map[string]any) {
	msgs := make(chan map[string]any, 16)
	go func() {
		defer close(msgs)
		sc := bufio.NewScanner(e.stdioIn)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var m map[string]any
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				t.Errorf("a line that is not JSON: %q", sc.Text())
				return
			}
			msgs <- m
		}
	}()
	send = func(msg string) {
		t.Helper()
		if _, err := io.WriteString(e.stdioOut, msg+"\n"); err != nil {
			t.Fatal(err)
		}
	}
	next = func() map[string]any {
		t.Helper()
		select {
		case m, ok := <-msgs:
			if !ok {
				t.Fatal("the gateway's stream ended")
			}
			return m
		case <-testCtx(t).Done():
			t.Fatal("nothing more from the gateway")
		}
		return nil
	}
	send(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"x","version":"1"}}}`)
	if m := next(); m["id"] != float64(1) || m["result"] == nil {
		t.Fatalf("initialize: %v", m)
	}
	send(`{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	return send, next
}

// burstSteps is how many notifications burstUpstream's tool sends.
const burstSteps = 5

// burstUpstream serves a tool "burst" that sends its call's progress 1 to
// burstSteps of burstSteps back to back and answers "done" at once: the
// last notification is on the wire just before the answer.
func burstUpstream(t *testing.T) string {
	s := mcp.NewServer(&mcp.Implementation{Name: "burst", Version: "1"}, nil)
	mcp.AddTool(s, &mcp.Tool{Name: "burst"}, func(ctx context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		tok := req.Params.GetProgressToken()
		for i := 1; i <= burstSteps; i++ {
			if err := req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{ProgressToken: tok, Progress: float64(i), Total: burstSteps}); err != nil {
				return nil, nil, err
			}
		}
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "done"}}}, nil, nil
	})
	return serveServer(t, s)
}

// TestProgressBurstComesBeforeTheAnswer: an upstream sent its last
// notification just before its answer, and an agent reading its call's
// stream never got it, over HTTP and stdio: the gateway's upstream client
// hands a response to the waiting call before its notification handler
// has run the notifications read before it, so they reached relayProgress
// after the call had ended (all of a burst sent at once), and the call's
// end dropped one it found waiting. The last now always comes, before the
// answer, and what comes is in the upstream's order. A burst written
// faster than the agent's stream takes it still loses notifications
// between (a call holds one waiting; the newest supersedes it): each such
// is counted in acgs_gateway_progress_dropped_total, none lost unsaid.
func TestProgressBurstComesBeforeTheAnswer(t *testing.T) {
	const call = `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"p__burst","arguments":{},"_meta":{"progressToken":"a1"}}}`
	upstreams := "  - name: p\n    url: " + burstUpstream(t) + "\n"
	for _, tc := range []struct {
		name string
		// messages starts a gateway, sends the call and returns what the
		// agent gets for it, in order, ending with the answer
		messages func(t *testing.T) (*env, []map[string]any)
	}{
		{"http", func(t *testing.T) (*env, []map[string]any) {
			e := startEnv(t, envOptions{upstreams: upstreams})
			r := openRaw(t, e, "token-1").post(call)
			defer r.Body.Close()
			if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
				b, _ := io.ReadAll(r.Body)
				t.Fatalf("the call asking for progress was answered %s, not an event stream: %.300s", ct, b)
			}
			var out []map[string]any
			for m := range sseMessages(r.Body) {
				out = append(out, m)
			}
			return e, out
		}},
		{"stdio", func(t *testing.T) (*env, []map[string]any) {
			e := startEnv(t, envOptions{stdio: true, rawStdio: true, upstreams: upstreams})
			send, next := openRawStdio(t, e)
			send(call)
			var out []map[string]any
			for len(out) == 0 || out[len(out)-1]["id"] == nil {
				out = append(out, next())
			}
			// nothing after the answer: a ping's answer comes next
			send(`{"jsonrpc":"2.0","id":3,"method":"ping"}`)
			if m := next(); m["id"] != float64(3) {
				out = append(out, m)
			}
			return e, out
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c stepsCall
			e, msgs := tc.messages(t)
			for _, m := range msgs {
				c.take(t, m)
			}
			if !c.answered {
				t.Fatalf("no answer to the call (progress %v)", c.got)
			}
			last := 0
			for _, g := range c.got {
				n, err := strconv.Atoi(g)
				if err != nil || n <= last || n > burstSteps {
					t.Fatalf("progress before the answer: %v, not increasing within 1..%d", c.got, burstSteps)
				}
				last = n
			}
			if last != burstSteps {
				t.Errorf("progress before the answer: %v, without the last, %d, sent just before the answer", c.got, burstSteps)
			}
			if d := e.metric(t, "acgs_gateway_progress_dropped_total", nil); int(d)+len(c.got) != burstSteps {
				t.Errorf("%d of %d notifications came and %v were counted dropped: %d lost uncounted", len(c.got), burstSteps, d, burstSteps-len(c.got)-int(d))
			}
		})
	}
}
