package gateway

import (
	"context"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// RelayProgress hands the gateway a progress notification as an upstream's
// client receives it, for notifications a test cannot make an upstream send
// (one for a call that has ended).
func (g *Gateway) RelayProgress(ctx context.Context, req *mcp.ProgressNotificationClientRequest) {
	g.relayProgress(ctx, req)
}

// SetAgentWriteTimeout replaces agentWriteTimeout (before Run).
func (g *Gateway) SetAgentWriteTimeout(d time.Duration) { g.writeTimeout = d }

// Answering counts the HTTP agents' requests being served (not their
// event streams).
func (g *Gateway) Answering() int64 { return g.answering.Load() }

// SetSessionIdleTimeout replaces SessionIdleTimeout (before Run).
func (g *Gateway) SetSessionIdleTimeout(d time.Duration) { g.idleTimeout = d }

// UnusedTimers counts the HTTP sessions' unused timers still held
// (sessionUsed): a session's goes when it makes a request or ends.
func (g *Gateway) UnusedTimers() int {
	n := 0
	for range g.sessions.unused.Range {
		n++
	}
	return n
}
