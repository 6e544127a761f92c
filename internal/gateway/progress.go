package gateway

import (
	"context"
	"slices"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Progress notifications pass from an upstream to an agent through a queue
// of the agent session's own. relayProgress runs within the upstream
// client's notification handler, which handles that upstream's
// notifications one after the other for every agent: waiting there for
// one agent's event stream (an agent that does not read it, whose TCP
// buffers are full) held every other agent's progress from the same
// upstream behind it.
const (
	// progressQueueLen bounds the notifications waiting for one agent
	// session; beyond it the oldest are dropped
	// (acgs_gateway_progress_dropped_total): progress is advisory, and a
	// later notification says more.
	progressQueueLen = 64
	// progressSendTimeout is the context of sending one notification. The
	// SDK's write to an agent's event stream does not heed it: what bounds
	// a write to an agent that does not read its stream is the agent
	// write timeout (agentWriteTimeout, admin.go), which ends the stream;
	// other sessions are not held meanwhile.
	progressSendTimeout = 10 * time.Second
)

// queuedProgress is a notification waiting for its agent: the route's
// token (the call's, to drop it once the call has ended) and the
// parameters under the agent's token.
type queuedProgress struct {
	upTok  string
	params *mcp.ProgressNotificationParams
}

// queueProgress queues p for session ss, starting the goroutine that
// sends the session's queue when it is not running; a full queue drops a
// notification another of its call's supersedes (supersededProgress).
func (g *Gateway) queueProgress(ss *mcp.ServerSession, upTok string, p *mcp.ProgressNotificationParams) {
	g.progressMu.Lock()
	defer g.progressMu.Unlock()
	q, running := g.progressQueues[ss]
	if len(q) >= progressQueueLen {
		g.m.progressDropped.Inc()
		i := supersededProgress(q, upTok)
		q = slices.Delete(q, i, i+1)
	}
	g.progressQueues[ss] = append(q, queuedProgress{upTok: upTok, params: p})
	if !running {
		go g.sendProgress(ss)
	}
}

// supersededProgress is the index of the notification a full queue drops
// for one of call upTok: progress is cumulative, so the oldest one whose
// call has a newer one waiting (or arriving, upTok's) says least; only
// when every call waiting has one notification does the oldest go. (It
// dropped the oldest of upTok's call, or the oldest: a call with one
// notification waiting lost its latest progress while another call kept
// 62 outdated ones; review.)
func supersededProgress(q []queuedProgress, upTok string) int {
	waiting := make(map[string]int, len(q))
	for _, qp := range q {
		waiting[qp.upTok]++
	}
	for i, qp := range q {
		if qp.upTok == upTok || waiting[qp.upTok] > 1 {
			return i
		}
	}
	return 0
}

// sendProgress sends session ss's queued notifications in order, and
// ends (forgetting the queue) once it is empty. A notification of a call
// that has ended meanwhile is dropped: the agent has its answer. One
// checked just before its call ends can still be written after the
// answer (the check and the send are not one step); holding the call's
// end for the send made an answer wait up to the write timeout behind an
// agent's unread event stream (4492d07, reverted). Sending progress on the
// call's own POST stream would close that window.
func (g *Gateway) sendProgress(ss *mcp.ServerSession) {
	for {
		g.progressMu.Lock()
		q := g.progressQueues[ss]
		if len(q) == 0 {
			delete(g.progressQueues, ss)
			g.progressMu.Unlock()
			return
		}
		next := q[0]
		q[0] = queuedProgress{}
		g.progressQueues[ss] = q[1:]
		g.progressMu.Unlock()
		if _, live := g.progress.Load(next.upTok); !live {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), progressSendTimeout)
		if err := ss.NotifyProgress(ctx, next.params); err != nil {
			g.log.Debug("gateway: a progress notification did not reach the agent", "error", err)
		}
		cancel()
	}
}
