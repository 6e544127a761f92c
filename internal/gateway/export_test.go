package gateway

import (
	"context"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// RelayProgress hands the gateway a progress notification as an upstream's
// client receives it (upstream.go's client does not pass them on yet).
func (g *Gateway) RelayProgress(ctx context.Context, req *mcp.ProgressNotificationClientRequest) {
	g.relayProgress(ctx, req)
}
