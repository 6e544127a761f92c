package remote

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/open-policy-agent/opa/v1/logging"
)

// opaLogger lets OPA's plugins log through the service's slog logger, so
// their lines have the same format, level filter and destination.
type opaLogger struct {
	l *slog.Logger
}

var _ logging.Logger = (*opaLogger)(nil)

func (o *opaLogger) log(level slog.Level, format string, a []any) {
	if !o.l.Enabled(context.Background(), level) {
		return
	}
	o.l.Log(context.Background(), level, fmt.Sprintf(format, a...), "source", "opa")
}

func (o *opaLogger) Debug(f string, a ...any) { o.log(slog.LevelDebug, f, a) }
func (o *opaLogger) Info(f string, a ...any)  { o.log(slog.LevelInfo, f, a) }
func (o *opaLogger) Warn(f string, a ...any)  { o.log(slog.LevelWarn, f, a) }
func (o *opaLogger) Error(f string, a ...any) { o.log(slog.LevelError, f, a) }

func (o *opaLogger) WithFields(fields map[string]any) logging.Logger {
	args := make([]any, 0, 2*len(fields))
	for k, v := range fields {
		args = append(args, k, v)
	}
	return &opaLogger{l: o.l.With(args...)}
}

// GetLevel reports the most verbose level the handler accepts, at most
// Info: at Debug, OPA's HTTP client logs every request's headers (masking
// only Authorization and X-Amz-Security-Token: a bundle service's API key
// header would be logged in clear) and reads error bodies whole.
func (o *opaLogger) GetLevel() logging.Level {
	ctx := context.Background()
	switch {
	case o.l.Enabled(ctx, slog.LevelInfo):
		return logging.Info
	case o.l.Enabled(ctx, slog.LevelWarn):
		return logging.Warn
	default:
		return logging.Error
	}
}

// SetLevel is a no-op: the service's LOG_LEVEL decides.
func (o *opaLogger) SetLevel(logging.Level) {}
