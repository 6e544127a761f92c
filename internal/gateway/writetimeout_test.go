package gateway_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/acgs-lite/acgs/internal/gateway"
)

// TestAgentThatStopsReadingIsCut: an HTTP agent that sends a call and
// reads nothing of the answer. The gateway's writes to agents had no
// deadline: the goroutine writing the answer (or a progress notification
// on the event stream of the call's POST) waited, with what it was
// writing, as long as the agent kept the connection open. A write that does not progress within the agent
// write timeout now fails, and the request ends.
func TestAgentThatStopsReadingIsCut(t *testing.T) {
	big := strings.Repeat("x", 16<<20) // past the buffers of both ends (the agent's is small)
	called := make(chan struct{}, 1)
	s := mcp.NewServer(&mcp.Implementation{Name: "big", Version: "1"}, nil)
	mcp.AddTool(s, &mcp.Tool{Name: "big"}, func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
		called <- struct{}{}
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: big}}}, nil, nil
	})
	upURL := serveServer(t, s)
	e := startEnv(t, envOptions{
		upstreams: "  - name: b\n    url: " + upURL + "\n",
		extraYAML: "call_timeout: 60s\n", // relaying 16 MiB under the race detector
		gateway:   func(g *gateway.Gateway) { g.SetAgentWriteTimeout(time.Second) },
	})
	status, sid, body := initialize(t, e, "token-1")
	if status != http.StatusOK {
		t.Fatalf("initialize: %d %q", status, body)
	}

	// The agent, over a connection with a small receive buffer: the call,
	// then nothing read.
	u, _ := url.Parse(e.agentURL)
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) }); err != nil {
			return err
		}
		return serr
	}}
	conn, err := d.DialContext(testCtx(t), "tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	call := `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"b__big","arguments":{}}}`
	if _, err := fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer token-1\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMcp-Protocol-Version: 2025-06-18\r\nMcp-Session-Id: %s\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s",
		u.Path, u.Host, sid, len(call), call); err != nil {
		t.Fatal(err)
	}
	select {
	case <-called: // the gateway's request is counted until it is answered
	case <-time.After(60 * time.Second):
		t.Fatal("the call did not reach the upstream")
	}
	// the gateway gives up on the answer: its request ends
	deadline := time.Now().Add(90 * time.Second)
	for e.g.Answering() > 0 {
		if time.Now().After(deadline) {
			t.Fatal("the gateway is still writing, after 90 s, an answer its agent reads nothing of (agent write timeout 1s)")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// what the agent reads then is cut short
	_ = conn.SetReadDeadline(time.Now().Add(60 * time.Second))
	got, err := io.ReadAll(conn)
	if err != nil && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("reading the answer after the gateway gave up: %v", err)
	}
	if bytes.Contains(got, []byte(`"isError"`)) || !bytes.Contains(got, []byte("xxxx")) {
		t.Fatalf("the call did not reach its answer: %.300s", got)
	}
	if len(got) >= len(big) {
		t.Errorf("the agent read %d bytes, the whole answer: the gateway did not give up on it", len(got))
	}
}
