package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// DefaultGCPercent is the garbage collector's target the acgs gateway
// process runs with unless GOGC is set. The gateway's live heap is small
// (the compiled constitution, about 20 MB) but every MCP message it relays
// makes garbage in the SDK (a 32 KiB decoding buffer per JSON value it
// reads): at the default of 100 the collector ran every ~20 ms and took a
// quarter of the CPU in BenchmarkOverhead; at 400 it runs a quarter as
// often, for a heap of about 100 MB.
const DefaultGCPercent = 400

// RunOptions say where the gateway serves.
type RunOptions struct {
	// Stdin and Stdout carry the stdio agent when Config.Listen is empty.
	Stdin  io.Reader
	Stdout io.Writer
	// Listener serves HTTP agents (Config.Listen); opened from the
	// configuration when nil.
	Listener net.Listener
	// AdminListener serves the admin API (Config.Admin.Listen); opened
	// from the configuration when nil and an address is configured.
	AdminListener net.Listener
	// Metrics is served at /metrics on the admin listener.
	Metrics http.Handler
	// Ready, when set, is called once the gateway serves, with the agent
	// (HTTP) and admin addresses ("" when not served).
	Ready func(agentAddr, adminAddr string)
}

// Run starts the upstreams and serves until ctx is done or, with a stdio
// agent, until the agent closes the connection; then it shuts down and
// closes the upstreams.
func (g *Gateway) Run(ctx context.Context, o RunOptions) error {
	defer g.Close()
	if err := g.Start(ctx); err != nil {
		return err
	}
	var servers []*http.Server
	errc := make(chan error, 3)
	serve := func(ln net.Listener, h http.Handler) {
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 2 * time.Minute}
		servers = append(servers, srv)
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		}()
	}
	adminAddr := ""
	if o.AdminListener == nil && g.cfg.Admin.Listen != "" {
		ln, err := net.Listen("tcp", g.cfg.Admin.Listen)
		if err != nil {
			return fmt.Errorf("gateway admin listener (admin.listen): %w", err)
		}
		o.AdminListener = ln
	}
	if o.AdminListener != nil {
		adminAddr = o.AdminListener.Addr().String()
		serve(o.AdminListener, g.AdminHandler(o.Metrics))
		if len(g.d.AdminTokens) == 0 {
			g.log.Warn("gateway: no admin token: approvals can only time out", "token_env", g.cfg.Admin.TokenEnv)
		}
	}
	defer func() {
		// Agents' sessions end first (their open event streams would hold
		// Shutdown until its deadline), then the listeners.
		for ss := range g.server.Sessions() {
			_ = ss.Close()
		}
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for _, s := range servers {
			if s.Shutdown(sctx) != nil {
				_ = s.Close()
			}
		}
	}()

	if g.cfg.Listen == "" { // one stdio agent
		if o.Ready != nil {
			o.Ready("", adminAddr)
		}
		g.log.Info("acgs gateway serving an agent on stdio", "agent", g.cfg.StdioAgent, "admin", adminAddr, "upstreams", len(g.order))
		done := make(chan error, 1)
		go func() {
			done <- g.server.Run(ctx, &mcp.IOTransport{Reader: io.NopCloser(o.Stdin), Writer: nopWriteCloser{o.Stdout}})
		}()
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, io.EOF) {
				return err
			}
			return nil
		case err := <-errc:
			return err
		}
	}

	if o.Listener == nil {
		ln, err := net.Listen("tcp", g.cfg.Listen)
		if err != nil {
			return fmt.Errorf("gateway listener (listen): %w", err)
		}
		o.Listener = ln
	}
	serve(o.Listener, g.HTTPHandler())
	agentAddr := o.Listener.Addr().String()
	if o.Ready != nil {
		o.Ready(agentAddr, adminAddr)
	}
	g.log.Info("acgs gateway serving agents over streamable HTTP", "addr", agentAddr, "path", g.cfg.Path, "admin", adminAddr, "upstreams", len(g.order))
	select {
	case <-ctx.Done():
		return nil
	case err := <-errc:
		return err
	}
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }
