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

// writeGrace is how long a write to a stdio upstream's child may last
// before it counts as stuck once its request has ended (childConn).
const writeGrace = time.Second

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
	c := &childConn{Connection: conn}
	c.kill = func() {
		c.killOnce.Do(func() {
			t.log.Warn("gateway: a stdio upstream has not read a request its gateway stopped waiting for; killing it, to be started again", "pid", t.cmd.Process.Pid, "grace", writeGrace)
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
}

func (p *childProc) Write(b []byte) (int, error) { return p.stdin.Write(b) }

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
// has ended, writeGrace or more after it began, means the child does not
// read: it is killed (its process group), which fails the write (EPIPE),
// ends the session and takes the upstream down, to be started again
// (lose). The grace spares a child that is reading but was handed a large
// message just before its request ended (an agent's cancellation).
type childConn struct {
	mcp.Connection
	kill     func()
	killOnce sync.Once
}

func (c *childConn) Write(ctx context.Context, msg jsonrpc.Message) error {
	start := time.Now()
	var done atomic.Bool
	stop := context.AfterFunc(ctx, func() {
		check := func() {
			if !done.Load() {
				c.kill()
			}
		}
		if wait := writeGrace - time.Since(start); wait > 0 {
			time.AfterFunc(wait, check)
		} else {
			check()
		}
	})
	err := c.Connection.Write(ctx, msg)
	done.Store(true)
	stop()
	return err
}
