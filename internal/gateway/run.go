package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
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
	var stdout *stdioWriter // the stdio agent's stream
	defer func() {
		// Held calls are refused first, and answered while the agents'
		// sessions are open: a session's Close waits for its requests (a
		// held call among them, until approvals.timeout) and drops the
		// answers not yet sent. The listeners close, the requests being
		// served are answered, then the sessions end (and with them the
		// agents' event streams, which would hold Shutdown until its
		// deadline); all within shutdownTimeout. The calls still being
		// forwarded answerGrace before it are ended (their agents get an
		// error then, instead of after call_timeout; closing an upstream
		// waits for its calls).
		var held []Approval // whose refusals the stdio agent must get
		if stdout != nil {
			held = g.approvals.list()
		}
		answered := stdout.await(held)
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
		g.drain(sctx, answered)
		g.closeSessions(sctx)
		wg.Wait()
	}()

	if g.cfg.Listen == "" { // one stdio agent
		if o.Ready != nil {
			o.Ready("", adminAddr)
		}
		g.log.Info("acgs gateway serving an agent on stdio", "agent", g.cfg.StdioAgent, "admin", adminAddr, "upstreams", len(g.order))
		// Not Server.Run: it closes the session as ctx ends, before the
		// held calls' refusals are written (see the deferred shutdown).
		stdout = &stdioWriter{w: o.Stdout}
		ss, err := g.server.Connect(ctx, &mcp.IOTransport{Reader: io.NopCloser(o.Stdin), Writer: stdout}, nil)
		if err != nil {
			return err
		}
		done := make(chan error, 1)
		go func() {
			err := ss.Wait()
			stdout.end()
			done <- err
		}()
		select {
		case err := <-done: // the agent closed the connection
			if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, io.EOF) {
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

// drain waits until ctx is done for the requests being served to be
// answered: the refusals of the calls held when the gateway stopped
// written to the stdio agent (answered), the HTTP agents' requests. It
// logs what was left at the deadline.
func (g *Gateway) drain(ctx context.Context, answered <-chan struct{}) {
	select {
	case <-answered:
	case <-ctx.Done():
		g.log.Warn("gateway: held calls' refusals were not all sent to the stdio agent by the shutdown deadline", "timeout", shutdownTimeout)
		return
	}
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

// stdioWriter is the stdio agent's stream. As the gateway stops it tells
// when the refusals of the calls held then have been written (one write
// per message, each naming its decision id): the session's Close drops
// the answers not yet written.
type stdioWriter struct {
	w       io.Writer
	mu      sync.Mutex
	awaited map[string]bool // decision ids
	written chan struct{}   // closed when awaited empties or the session ends
	ended   bool            // the session ended: nothing more is written
}

func (s *stdioWriter) Write(p []byte) (int, error) {
	n, err := s.w.Write(p)
	s.mu.Lock()
	if len(s.awaited) > 0 {
		for id := range s.awaited {
			if bytes.Contains(p, []byte(id)) {
				delete(s.awaited, id)
			}
		}
		if len(s.awaited) == 0 {
			close(s.written)
		}
	}
	s.mu.Unlock()
	return n, err
}

func (*stdioWriter) Close() error { return nil }

// await returns a channel closed once the answers to held have all been
// written, or the session has ended; at once without a stdio agent (s
// nil). (A call an approver approves as the gateway stops is forwarded:
// its answer, the upstream's, names no decision id and is waited for
// until the shutdown deadline.)
func (s *stdioWriter) await(held []Approval) <-chan struct{} {
	c := make(chan struct{})
	if s == nil {
		close(c)
		return c
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.awaited = map[string]bool{}
	for _, a := range held {
		s.awaited[a.DecisionID] = true
	}
	s.written = c
	if s.ended || len(s.awaited) == 0 {
		s.awaited = nil
		close(c)
	}
	return c
}

// end says the session ended (the agent closed the connection, or the
// gateway the session).
func (s *stdioWriter) end() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ended = true
	if len(s.awaited) > 0 {
		s.awaited = nil
		close(s.written)
	}
}
