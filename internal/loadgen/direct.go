package loadgen

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// directConn is one sender's own keep-alive HTTP/1.1 connection: the sender
// writes its request and reads the answer itself, on its own goroutine.
// net/http's client hands every request to a writer goroutine and every
// answer back from a reader goroutine of the connection, and derives a
// context with a deadline per request for the client's timeout. With the
// precise waits of the open loop (pace_linux.go), those hand-offs made
// acgs load use about twice vegeta's CPU on 2 shared cores (3.6-4.2 s
// against 2.2 s for 18,000 requests at 3,000 req/s), CPU taken from the
// service it measures, and they sit inside the measured time; with a
// connection per sender it used 1.9-2.1 s (vegeta 1.7-2.1 s in the same
// minute). This is wrk's way of sending. Only plain http; https targets
// keep net/http's client.
type directConn struct {
	addr    string // host:port to dial
	head    []byte // request line and headers up to the Content-Length value
	timeout time.Duration

	mu     sync.Mutex // guards c against the cancel hook
	c      net.Conn
	closed bool // the run was cancelled: no more connections
	br     *bufio.Reader
	wbuf   []byte
	stop   func() bool
}

// errCancelled is a request cut short because the run was cancelled.
var errCancelled = errors.New("run cancelled")

// newDirectConn prepares a sender's connection to base (an http URL) for
// requests with method to path; nothing is dialled until the first request.
// A cancelled ctx closes the connection, ending a request in flight.
func newDirectConn(ctx context.Context, u *url.URL, method, path string, timeout time.Duration) *directConn {
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "80")
	}
	target := strings.TrimRight(u.EscapedPath(), "/") + path
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	d := &directConn{addr: addr, timeout: timeout}
	d.head = fmt.Appendf(nil, "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: acgs-load\r\nContent-Type: application/json\r\nContent-Length: ", method, target, u.Host)
	d.stop = context.AfterFunc(ctx, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		d.closed = true
		if d.c != nil {
			d.c.Close()
		}
	})
	return d
}

// close releases the connection.
func (d *directConn) close() {
	d.stop()
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	d.drop()
}

// drop closes the current connection (d.mu held).
func (d *directConn) drop() {
	if d.c != nil {
		d.c.Close()
		d.c = nil
	}
}

// do sends one request with body and reads the whole answer into dst (at
// most 8 MiB). A request on a kept-alive connection that the server had
// already closed (nothing of an answer read) is sent once more on a new
// connection, as net/http does.
func (d *directConn) do(ctx context.Context, body []byte, dst io.Writer) (status int, h http.Header, err error) {
	for attempt := 0; ; attempt++ {
		reused, err := d.ensure(ctx)
		if err != nil {
			return 0, nil, err
		}
		status, h, answered, err := d.roundTrip(body, dst)
		if err == nil {
			return status, h, nil
		}
		d.mu.Lock()
		d.drop()
		closed := d.closed
		d.mu.Unlock()
		if closed || ctx.Err() != nil {
			return 0, nil, errCancelled
		}
		// A timeout is not a connection the server had closed: the request
		// may be in the server's hands, and sent again it would be counted
		// once and offered twice.
		if !reused || answered || attempt > 0 || isTimeout(err) {
			return 0, nil, err
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// ensure dials if there is no connection; reused reports an existing one.
func (d *directConn) ensure(ctx context.Context) (reused bool, err error) {
	d.mu.Lock()
	c, closed := d.c, d.closed
	d.mu.Unlock()
	if closed {
		return false, errCancelled
	}
	if c != nil {
		return true, nil
	}
	dctx, cancel := context.WithTimeout(ctx, min(d.timeout, 5*time.Second))
	defer cancel()
	c, err = (&net.Dialer{KeepAlive: 30 * time.Second}).DialContext(dctx, "tcp", d.addr)
	if err != nil {
		return false, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		c.Close()
		return false, errCancelled
	}
	d.c = c
	if d.br == nil {
		d.br = bufio.NewReaderSize(c, 16<<10)
	} else {
		d.br.Reset(c)
	}
	return false, nil
}

// roundTrip writes the request and reads the answer; answered reports that
// some of an answer was read (so the request must not be sent again).
func (d *directConn) roundTrip(body []byte, dst io.Writer) (status int, h http.Header, answered bool, err error) {
	c := d.c
	if err := c.SetDeadline(time.Now().Add(d.timeout)); err != nil {
		return 0, nil, false, err
	}
	w := append(d.wbuf[:0], d.head...)
	w = strconv.AppendInt(w, int64(len(body)), 10)
	w = append(w, "\r\n\r\n"...)
	w = append(w, body...)
	d.wbuf = w
	if _, err := c.Write(w); err != nil {
		return 0, nil, false, err
	}
	if _, err := d.br.Peek(1); err != nil {
		return 0, nil, false, err
	}
	resp, err := http.ReadResponse(d.br, nil)
	if err != nil {
		return 0, nil, true, err
	}
	_, err = io.Copy(dst, io.LimitReader(resp.Body, 8<<20))
	if err == nil {
		// Whatever is left past the limit is read off, so that the next
		// answer starts where it should.
		_, err = io.Copy(io.Discard, resp.Body)
	}
	resp.Body.Close()
	if err != nil {
		return 0, nil, true, err
	}
	if resp.Close {
		d.mu.Lock()
		d.drop()
		d.mu.Unlock()
	}
	return resp.StatusCode, resp.Header, true, nil
}
