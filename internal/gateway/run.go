package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
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

// shutdownTimeout bounds the shutdown once Run's context ends: the
// requests being served get this long to be answered. Held calls do not
// wait for an approver or approvals.timeout: they are refused at once
// (refuseHeld). Calls being forwarded get until answerGrace before the
// deadline for their upstreams' answers: then they are ended
// (abandonCalls) and their agents get a tool error saying the gateway
// stopped, not a call_timeout's wait.
const shutdownTimeout = 5 * time.Second

// answerGrace is the end of shutdownTimeout kept for the answers of the
// calls the gateway stopped waiting for (abandonCalls) to reach their
// agents before the sessions and listeners close.
const answerGrace = time.Second

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
// agent, until the agent closes the connection; then it refuses the held
// calls, shuts down within shutdownTimeout and closes the upstreams.
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
		// Held calls are refused first. The listeners close, the HTTP
		// agents' requests being served are answered, then the sessions
		// end (and with them the agents' event streams, which would hold
		// Shutdown until its deadline); all within shutdownTimeout. A
		// stdio session's Close waits for its calls and writes their
		// answers (the SDK's patch, third_party/README.md). The calls
		// still being forwarded answerGrace before the deadline are ended
		// (their agents get an error then, instead of after call_timeout;
		// closing an upstream waits for its calls).
		g.refuseHeld()
		sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		abandon := time.AfterFunc(shutdownTimeout-answerGrace, g.abandonCalls)
		defer abandon.Stop()
		var wg sync.WaitGroup
		for _, s := range servers {
			wg.Go(func() {
				if s.Shutdown(sctx) != nil {
					_ = s.Close()
				}
			})
		}
		g.drain(sctx)
		g.closeSessions(sctx)
		wg.Wait()
	}()

	if g.cfg.Listen == "" { // one stdio agent
		if o.Ready != nil {
			o.Ready("", adminAddr)
		}
		g.log.Info("acgs gateway serving an agent on stdio", "agent", g.cfg.StdioAgent, "admin", adminAddr, "upstreams", len(g.order))
		// Not Server.Run: it closes the session as ctx ends, and that
		// Close waits for the held calls, which only the deferred
		// shutdown refuses.
		ss, err := g.server.Connect(ctx, &mcp.IOTransport{Reader: io.NopCloser(o.Stdin), Writer: nopWriteCloser{o.Stdout}}, nil)
		if err != nil {
			return err
		}
		done := make(chan error, 1)
		go func() {
			done <- ss.Wait()
		}()
		select {
		case err := <-done: // the agent closed the connection (EPIPE: its host exited; ECONNRESET: a socket closed with our answer unread)
			if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, io.EOF) && !errors.Is(err, syscall.EPIPE) && !errors.Is(err, syscall.ECONNRESET) {
				return err
			}
			return nil
		case <-ctx.Done():
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

// drain waits until ctx is done for the HTTP agents' requests being served
// to be answered, and logs what was left at the deadline.
func (g *Gateway) drain(ctx context.Context) {
	for g.answering.Load() > 0 {
		select {
		case <-ctx.Done():
			g.warnUnanswered()
			return
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// closeSessions ends the agents' sessions until ctx is done. Each waits
// for its requests (calls still being forwarded); those left at the
// deadline end as the listeners and the upstreams close. Called past the
// deadline, it ends them without waiting or logging: drain reached the
// deadline and logged what was left, the same requests.
func (g *Gateway) closeSessions(ctx context.Context) {
	late := ctx.Err() != nil
	var wg sync.WaitGroup
	for ss := range g.server.Sessions() {
		wg.Go(func() { _ = ss.Close() })
	}
	if late {
		return
	}
	closed := make(chan struct{})
	go func() { wg.Wait(); close(closed) }()
	select {
	case <-closed:
	case <-ctx.Done():
		g.warnUnanswered()
	}
}

// warnUnanswered says that the shutdown deadline passed with agents'
// requests unanswered (once: by drain or closeSessions).
func (g *Gateway) warnUnanswered() {
	g.log.Warn("gateway: agents' requests were still running at the shutdown deadline; stopping without their answers", "timeout", shutdownTimeout)
}

// nopWriteCloser is the stdio agent's stream: the process owns stdout, the
// session does not close it.
type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }
