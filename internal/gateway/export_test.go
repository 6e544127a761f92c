package gateway

import (
	"context"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// RelayProgress hands the gateway a progress notification as an upstream's
// client receives it, for notifications a test cannot make an upstream send
// (one for a call that has ended).
func (g *Gateway) RelayProgress(ctx context.Context, req *mcp.ProgressNotificationClientRequest) {
	g.relayProgress(ctx, req)
}
