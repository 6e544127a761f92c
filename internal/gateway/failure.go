package gateway

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"syscall"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// upstreamFailure is an upstream's failure as an agent is told of it: its
// Error is a prefix naming the upstream and what failed, then the kind of
// failure (failureCause), never the underlying error's text when that
// quotes a URL: an upstream's URL may hold secrets in its path or query
// (an API key), and its HTTP client's errors quote it (Post "https://...":
// dial tcp ...). The gateway's log has the full error (LogValue), and so
// does Start's error (fullError).
type upstreamFailure struct {
	prefix string // "upstream \"x\" is unavailable: "
	err    error
}

func (e *upstreamFailure) Error() string { return e.prefix + failureCause(e.err) }

func (e *upstreamFailure) Unwrap() error { return e.err }

// LogValue is the full error, for the gateway's log.
func (e *upstreamFailure) LogValue() slog.Value { return slog.StringValue(e.prefix + e.err.Error()) }

var _ slog.LogValuer = (*upstreamFailure)(nil)

// fullError is err with the full text of the upstreamFailure it is or
// wraps (for the operator: Start's error).
func fullError(err error) error {
	var f *upstreamFailure
	if errors.As(err, &f) {
		return errors.New(strings.Replace(err.Error(), f.Error(), f.LogValue().String(), 1))
	}
	return err
}

// failureCause says what an upstream's failure err was, for an agent: the
// error's own text when it quotes no URL (the SDK's and the child
// process's words: "its connection closed: exit status 3", "calling
// \"initialize\": Unauthorized"), else the kind of failure it is
// (connection refused, reset, a name that does not resolve, a timeout,
// TLS), or a word that the gateway's log has it.
func failureCause(err error) string {
	s := err.Error()
	if !strings.Contains(s, "://") {
		return s
	}
	var dns *net.DNSError
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED) || strings.Contains(s, "connection refused"):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET) || strings.Contains(s, "connection reset"):
		return "connection reset"
	case errors.As(err, &dns) || strings.Contains(s, "no such host"):
		return "its host name does not resolve"
	case errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) || strings.Contains(s, "timeout"):
		return "timed out"
	case strings.Contains(s, "tls: ") || strings.Contains(s, "x509: "):
		return "TLS failed"
	case errors.Is(err, mcp.ErrSessionMissing):
		return "its HTTP session is gone"
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || strings.Contains(s, "EOF"):
		return "the connection ended (EOF)"
	}
	return "its transport failed (the gateway's log has the error)"
}
