package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Progress notifications pass from an upstream to an agent on the agent's
// call's own stream, before the call's answer, and never after it (MCP:
// progress stops once the request has completed). relayProgress runs
// within the upstream client's notification handler, which handles that
// upstream's notifications one after the other for every agent: it only
// leaves a notification waiting for its call (callProgress), whose own
// goroutine sends it, so an agent that does not read holds no other
// agent's progress. The upstream client hands a call its response before
// its handler may have run the notifications read ahead of it, so the
// call waits for them to be handled (upstream.Call: AwaitNotifications,
// a patch to the SDK) before it ends. The call's end, before its answer,
// waits for the send in progress and then sends the one still waiting:
// the answer follows every notification written for the call, the
// upstream's last among them. A stdio agent's notifications go on
// its one stream (ServerSession.NotifyProgress); an HTTP agent's on the
// POST that carries the call (postStream): the SDK answers a POST with one
// JSON body (admin.go) and would send a notification on the standalone
// GET stream, whose order with the POST's answer no one can tell (a
// notification written there before the answer could be read after it,
// and one being written when the answer was ready came after it; 4492d07,
// reverted, made the answer wait for that write, up to the write timeout
// of an agent not reading its GET stream).

// A call keeps at most one notification waiting: progress is cumulative,
// so a newer one supersedes the one waiting, which is dropped
// (acgs_gateway_progress_dropped_total), also when an upstream writes
// faster than the agent's stream takes them. Nothing bounds an agent's calls
// in flight, and a notification may be as large as a message (16 MiB): the
// progress held for agents that read slowly is, a call, one waiting and
// one being written, not a queue.

// callProgress is a forwarded call's progress on its way to the agent.
type callProgress struct {
	token any // the agent's progress token
	// send writes one notification to the call's stream.
	send func(*mcp.ProgressNotificationParams) error
	// dropped counts the notifications dropped (Gateway.m.progressDropped).
	dropped func()

	mu      sync.Mutex
	waiting *mcp.ProgressNotificationParams // the newest not yet being sent
	ended   bool
	wake    chan struct{} // (1) a notification is waiting, or the call ended
	sender  chan struct{} // closed when the sending goroutine has returned
}

func newCallProgress(token any, send func(*mcp.ProgressNotificationParams) error, dropped func()) *callProgress {
	cp := &callProgress{token: token, send: send, dropped: dropped, wake: make(chan struct{}, 1), sender: make(chan struct{})}
	go cp.run()
	return cp
}

// add makes p (under the agent's token) the call's waiting notification,
// dropping the one it supersedes; nothing waits once the call has ended.
func (cp *callProgress) add(p *mcp.ProgressNotificationParams) {
	cp.mu.Lock()
	if cp.ended {
		cp.mu.Unlock()
		cp.dropped()
		return
	}
	if cp.waiting != nil {
		cp.dropped()
	}
	cp.waiting = p
	cp.mu.Unlock()
	cp.signal()
}

func (cp *callProgress) signal() {
	select {
	case cp.wake <- struct{}{}:
	default:
	}
}

// run sends the waiting notification, one after the other, and at the
// call's end the one still waiting. One the sink refuses (the call's POST
// answered or gone) or fails to write (the agent's stream broken, its
// write timeout passed) is dropped, and so is every later one: the stream
// takes no more, and the answer would wait for each write in vain.
func (cp *callProgress) run() {
	defer close(cp.sender)
	failed := false
	for {
		cp.mu.Lock()
		p, ended := cp.waiting, cp.ended
		cp.waiting = nil
		cp.mu.Unlock()
		switch {
		case p != nil && failed:
			cp.dropped()
		case p != nil:
			if cp.send(p) != nil {
				cp.dropped()
				failed = true
			}
		case ended:
			return
		default:
			<-cp.wake
		}
	}
}

// end ends the call's progress before its answer is sent, returning once
// the notification being sent and the one still waiting, if any, have
// been written (or dropped, when the stream failed): both go to the
// agent's own call stream, which the answer waits for anyway. None is
// taken after it.
func (cp *callProgress) end() {
	cp.mu.Lock()
	cp.ended = true
	cp.mu.Unlock()
	cp.signal()
	<-cp.sender
}

// postStreamHeader carries, from limitSessions to the tool handler (the
// SDK hands it the POST's header: RequestExtra.Header), the key of the
// POST's postStream in Gateway.posts. Whatever an agent sends under
// it is replaced.
const postStreamHeader = "Acgs-Post-Stream"

// errAnswered: the POST's answer has begun, or the POST is over.
var errAnswered = errors.New("the call's POST has been answered")

// postStream is the response writer of an HTTP agent's POST that the SDK
// answers. When a call of the POST has progress to send before its answer,
// the response becomes an event stream (the protocol's other answer to a
// POST, which clients must accept): each notification an event, then the
// SDK's answer, held until its handler returns, the last. Otherwise the
// SDK's JSON answer passes as it is.
type postStream struct {
	w        http.ResponseWriter
	mu       sync.Mutex
	sse      bool         // the event stream has begun
	answered bool         // the SDK's answer has begun on w, or the POST is over
	held     bytes.Buffer // the SDK's answer, once sse
}

func (p *postStream) Header() http.Header { return p.w.Header() }

func (p *postStream) WriteHeader(code int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.sse {
		return
	}
	p.answered = true
	p.w.WriteHeader(code)
}

func (p *postStream) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.sse {
		return p.held.Write(b)
	}
	p.answered = true
	return p.w.Write(b)
}

// Flush flushes what has been written to w (held answers are not); before
// anything has been, it would send the JSON answer's header.
func (p *postStream) Flush() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.sse || p.answered {
		_ = http.NewResponseController(p.w).Flush()
	}
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (p *postStream) Unwrap() http.ResponseWriter { return p.w }

// notify writes msg as an event, beginning the event stream; refused once
// the SDK's answer has begun.
func (p *postStream) notify(msg []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.answered {
		return errAnswered
	}
	if !p.sse {
		h := p.w.Header()
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-cache, no-transform")
		h.Del("Content-Length")
		p.w.WriteHeader(http.StatusOK)
		p.sse = true
	}
	return p.event(msg)
}

// event writes one message event and flushes it.
func (p *postStream) event(msg []byte) error {
	var b bytes.Buffer
	b.WriteString("event: message\n")
	for line := range bytes.Lines(msg) {
		b.WriteString("data: ")
		b.Write(bytes.TrimRight(line, "\r\n"))
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	if _, err := p.w.Write(b.Bytes()); err != nil {
		return err
	}
	return http.NewResponseController(p.w).Flush()
}

// finish ends the POST once the SDK's handler has returned: an event
// stream gets the SDK's answer (each message of a batch its own event),
// whatever status the SDK gave it (the stream's is 200). What is not JSON
// (a plain-text error: the session closing) has no place in the stream
// and is dropped.
func (p *postStream) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.answered = true
	body := bytes.TrimSpace(p.held.Bytes())
	if !p.sse || !json.Valid(body) {
		return
	}
	msgs := []json.RawMessage{body}
	if body[0] == '[' {
		if err := json.Unmarshal(body, &msgs); err != nil {
			msgs = []json.RawMessage{body}
		}
	}
	for _, m := range msgs {
		if len(m) > 0 {
			if p.event(m) != nil {
				return
			}
		}
	}
}

// servePOST serves an HTTP agent's POST on a session through a postStream
// that its calls' progress can reach (callProgressOf).
func (g *Gateway) servePOST(h http.Handler, w http.ResponseWriter, r *http.Request) {
	key := strconv.FormatUint(g.posts.seq.Add(1), 10)
	p := &postStream{w: w}
	g.posts.Store(key, p)
	defer g.posts.Delete(key)
	r.Header.Set(postStreamHeader, key)
	h.ServeHTTP(p, r)
	p.finish()
}

// progressSink is how a call's progress reaches its agent: the POST
// carrying an HTTP agent's call, or the session of the stdio agent.
func (g *Gateway) progressSink(ctx context.Context, ss *mcp.ServerSession, extra *mcp.RequestExtra) func(*mcp.ProgressNotificationParams) error {
	if extra != nil && extra.Header != nil {
		if key := extra.Header.Get(postStreamHeader); key != "" {
			v, ok := g.posts.Load(key)
			if !ok {
				return func(*mcp.ProgressNotificationParams) error { return errAnswered }
			}
			ps := v.(*postStream)
			return func(params *mcp.ProgressNotificationParams) error {
				msg, err := json.Marshal(map[string]any{"jsonrpc": "2.0", "method": "notifications/progress", "params": params})
				if err != nil {
					return err
				}
				return ps.notify(msg)
			}
		}
	}
	if g.cfg.Listen != "" && ss.ID() != "" {
		// an HTTP session's call that did not come through servePOST:
		// its notifications would go on the standalone stream
		return func(*mcp.ProgressNotificationParams) error { return errAnswered }
	}
	return func(params *mcp.ProgressNotificationParams) error { return ss.NotifyProgress(ctx, params) }
}

// postStreams holds the postStream of each HTTP POST being served, by its
// key (postStreamHeader).
type postStreams struct {
	sync.Map
	seq atomic.Uint64
}
