package gateway

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// stallCheck is how often a write whose request has ended is looked at
// again while it waits for the child to read (childConn).
const stallCheck = 100 * time.Millisecond

// pipeChunk is how much of a message is handed to the child's stdin at a
// time, so that its progress (childProc.progress) is seen while the child
// reads a large message slowly.
const pipeChunk = 16 << 10

// childTransport runs a stdio upstream's command and speaks MCP over its
// stdin and stdout (newline-delimited JSON), as the SDK's CommandTransport
// does, but in a process group of its own (on Unix), whose every process
// is signalled when the upstream is stopped or killed (childProc): a
// command is often a wrapper (npx, uvx, a shell) whose child is the real
// server, and signalling the wrapper alone left that server running
// without a parent. Its writes are guarded (childConn).
type childTransport struct {
	cmd       *exec.Cmd
	terminate time.Duration // how long Close waits for the child to exit before each signal
	stall     time.Duration // how long the child may read nothing of a pending write before it counts as stuck: call_timeout
	log       *slog.Logger
}

func (t *childTransport) Connect(ctx context.Context) (mcp.Connection, error) {
	stdout, err := t.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stdin, err := t.cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	ownGroup(t.cmd)
	if err := t.cmd.Start(); err != nil {
		return nil, err
	}
	p := &childProc{cmd: t.cmd, stdin: stdin, terminate: t.terminate}
	// The connection is closed by closing the child's stdin (childProc's
	// Close), not its stdout, which Wait closes.
	conn, err := (&mcp.IOTransport{Reader: io.NopCloser(stdout), Writer: p}).Connect(ctx)
	if err != nil {
		_ = p.Close()
		return nil, err
	}
	c := &childConn{Connection: conn, proc: p, stall: t.stall}
	c.kill = func() {
		c.killOnce.Do(func() {
			t.log.Warn("gateway: a stdio upstream has read nothing of a request for its call_timeout, after its gateway stopped waiting for it; killing it, to be started again", "pid", t.cmd.Process.Pid, "call_timeout", t.stall)
			_ = signalGroup(t.cmd.Process, syscall.SIGKILL)
		})
	}
	return c, nil
}

// childProc is a stdio upstream's child process as the connection writes
// to it and closes it.
type childProc struct {
	cmd       *exec.Cmd
	stdin     io.WriteCloser
	terminate time.Duration
	progress  atomic.Int64 // when the child last took bytes from its stdin (Unix nanoseconds)
}

// Write hands b to the child's stdin a chunk at a time, noting when each
// was taken.
func (p *childProc) Write(b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := p.stdin.Write(b[n:min(len(b), n+pipeChunk)])
		n += m
		p.progress.Store(time.Now().UnixNano())
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// Close stops the child as the MCP specification asks of a stdio client:
// its stdin is closed, then its process group gets SIGTERM if it has not
// exited within p.terminate, then SIGKILL after as long again. Once it has
// exited, what is left of its group (a wrapper's server that did not exit
// with it) gets the same: SIGTERM, and SIGKILL if it is still there after
// p.terminate.
func (p *childProc) Close() error {
	_ = p.stdin.Close()
	waited := make(chan error, 1)
	go func() { waited <- p.cmd.Wait() }()
	wait := func() (error, bool) {
		select {
		case err := <-waited:
			return err, true
		case <-time.After(p.terminate):
			return nil, false
		}
	}
	err, exited := wait()
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		if exited {
			break
		}
		// A signal that cannot be sent (SIGTERM on Windows) is not waited for.
		if signalGroup(p.cmd.Process, sig) == nil || sig == syscall.SIGKILL {
			err, exited = wait()
		}
	}
	if !exited {
		return errors.New("unresponsive subprocess")
	}
	p.endGroup()
	return err
}

// endGroup ends what is left of the child's process group once the child
// has exited: SIGTERM, then SIGKILL if any of it is still there after
// p.terminate.
func (p *childProc) endGroup() {
	if !groupAlive(p.cmd.Process) {
		return
	}
	_ = signalGroup(p.cmd.Process, syscall.SIGTERM)
	for deadline := time.Now().Add(p.terminate); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if !groupAlive(p.cmd.Process) {
			return
		}
	}
	_ = signalGroup(p.cmd.Process, syscall.SIGKILL)
}

// childConn is the connection to a stdio upstream's child process. The
// SDK writes a message to the child's stdin without regard to the
// request's context, and holds its write lock meanwhile: a child that
// stops reading (hung, stopped) with a message larger than the pipe's
// buffer held that request past call_timeout, every later request to the
// upstream behind it, and the session's Close (which waits for its
// requests) for good. A write still unfinished when its request's context
// has ended is watched: once the child has taken nothing from its stdin
// for call_timeout (stall), it does not read; it is killed (its process
// group), which fails the write (EPIPE), ends the session and takes the
// upstream down, to be started again (lose). A child that is only busy
// (one that reads its next request after answering the current one) takes
// the write up again within its call_timeout and is left alone: a first
// version killed it a second after a queued request's end.
type childConn struct {
	mcp.Connection
	proc     *childProc
	stall    time.Duration
	kill     func()
	killOnce sync.Once
}

func (c *childConn) Write(ctx context.Context, msg jsonrpc.Message) error {
	start := time.Now().UnixNano()
	var done atomic.Bool
	stop := context.AfterFunc(ctx, func() {
		var check func()
		check = func() {
			if done.Load() {
				return
			}
			last := max(c.proc.progress.Load(), start)
			if idle := time.Duration(time.Now().UnixNano() - last); idle >= c.stall {
				c.kill()
				return
			}
			time.AfterFunc(stallCheck, check)
		}
		check()
	})
	err := c.Connection.Write(ctx, msg)
	done.Store(true)
	stop()
	return err
}
