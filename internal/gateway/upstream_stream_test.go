package gateway_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/acgs-lite/acgs/internal/gateway"
)

// serveUpstream serves h on a loopback port and returns its /mcp URL.
func serveUpstream(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: h}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String() + "/mcp"
}

// withStream is the upstream configuration's standalone_stream line.
func withStream(on bool) string {
	if on {
		return "    standalone_stream: true\n"
	}
	return ""
}

// TestSlowResumption: an upstream that closes a call's stream early
// (CloseSSEStream, SEP-1699) and answers 4 s later is resumed by the
// SDK's client with a GET carrying Last-Event-ID, whose header the SDK's
// server sends only with the answer. The call is answered, the session
// kept, with standalone_stream off (the default, as before 9d04ccd) and on
// (only the first standalone GET's header wait is bounded). Review
// finding F1: the gateway answered that GET 405 after 2.5 s, and the
// call failed with "Method Not Allowed".
func TestSlowResumption(t *testing.T) {
	for _, on := range []bool{false, true} {
		t.Run(map[bool]string{false: "default", true: "standalone_stream"}[on], func(t *testing.T) {
			s := mcp.NewServer(&mcp.Implementation{Name: "sse", Version: "1"}, nil)
			mcp.AddTool(s, &mcp.Tool{Name: "slow"}, func(ctx context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
				if req.Extra.CloseSSEStream == nil {
					return nil, nil, io.ErrUnexpectedEOF // the test would show nothing
				}
				req.Extra.CloseSSEStream(mcp.CloseSSEStreamArgs{RetryAfter: 10 * time.Millisecond})
				select {
				case <-time.After(4 * time.Second):
				case <-ctx.Done():
					return nil, nil, ctx.Err()
				}
				return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "done"}}}, nil, nil
			})
			h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, &mcp.StreamableHTTPOptions{EventStore: mcp.NewMemoryEventStore(nil)})
			var resumes atomic.Int64
			url := serveUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method == http.MethodGet && r.Header.Get("Last-Event-ID") != "" {
					resumes.Add(1)
				}
				h.ServeHTTP(w, r)
			}))
			e := startEnv(t, envOptions{upstreams: "  - name: sseup\n    url: " + url + "\n" + withStream(on)})
			agent, _ := progressAgent(t, e)
			res, err := agent.CallTool(testCtx(t), &mcp.CallToolParams{Name: "sseup__slow"})
			logs := e.logs.String()
			if err != nil || res.IsError || text(res) != "done" {
				t.Fatalf("the call: %v %v, want done; logs:\n%s", err, res, logs)
			}
			if resumes.Load() == 0 {
				t.Errorf("the call's stream was not resumed: the test shows nothing")
			}
			if strings.Contains(logs, "upstream lost") {
				t.Errorf("the upstream's session was lost:\n%s", logs)
			}
		})
	}
}

// TestInstantEndGET: an upstream (or a proxy before it) that answers the
// standalone stream's GET 200 with an event stream and ends it at once.
// With standalone_stream off (the default) the gateway makes no GET, as
// before 9d04ccd; with it on, the stream is reopened, no sooner than
// reopenAfter after it opened, and the session is kept. Review finding
// F2: the SDK's client, reopening it itself, lost the session at its
// second end without a new event ID, and the calls on it failed.
func TestInstantEndGET(t *testing.T) {
	for _, on := range []bool{false, true} {
		t.Run(map[bool]string{false: "default", true: "standalone_stream"}[on], func(t *testing.T) {
			if on {
				t.Cleanup(gateway.SetReopenAfter(200 * time.Millisecond)) // restored after the gateway has stopped
			}
			s := mcp.NewServer(&mcp.Implementation{Name: "json", Version: "1"}, nil)
			mcp.AddTool(s, &mcp.Tool{Name: "work"}, func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
				return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "done"}}}, nil, nil
			})
			h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, &mcp.StreamableHTTPOptions{JSONResponse: true})
			var gets atomic.Int64
			url := serveUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method == http.MethodGet {
					gets.Add(1)
					w.Header().Set("Content-Type", "text/event-stream")
					w.WriteHeader(http.StatusOK)
					_, _ = io.WriteString(w, ": ok\n\n")
					return
				}
				h.ServeHTTP(w, r)
			}))
			e := startEnv(t, envOptions{upstreams: "  - name: jsonup\n    url: " + url + "\n" + withStream(on)})
			agent, _ := progressAgent(t, e)
			call := func(i int) {
				t.Helper()
				res, err := agent.CallTool(testCtx(t), &mcp.CallToolParams{Name: "jsonup__work"})
				if err != nil || res.IsError || text(res) != "done" {
					t.Fatalf("call %d: %v %v; logs:\n%s", i, err, res, e.logs.String())
				}
			}
			if on {
				// Calls while the stream ends again and again (the SDK's
				// client lost the session at the second end).
				i := 0
				for bound := time.Now().Add(30 * time.Second); gets.Load() < 5; i++ {
					if time.Now().After(bound) {
						t.Fatalf("the upstream got %d GET, want the stream reopened 4 times; logs:\n%s", gets.Load(), e.logs.String())
					}
					call(i)
					time.Sleep(50 * time.Millisecond)
				}
				call(i)
			} else {
				for i := range 3 {
					call(i)
				}
				if n := gets.Load(); n != 0 {
					t.Errorf("the upstream got %d GET, want none (no standalone stream by default)", n)
				}
			}
			if logs := e.logs.String(); strings.Contains(logs, "upstream lost") {
				t.Errorf("the upstream's session was lost:\n%s", logs)
			}
		})
	}
}
