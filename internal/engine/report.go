package engine

import (
	"errors"
	"time"
)

// RecordFailure records a reload attempt that failed before a bundle could
// reach Activate: a remote bundle whose signature did not verify, or that
// OPA's bundle plugin refused to compile (internal/remote reports those).
// Like a refused Activate it leaves the active snapshot in place, shows err
// as the last reload error in health and tells Options.OnReload "failure",
// so every way a bundle can be refused is reported the same way. A later
// successful activation clears it.
func (e *Engine) RecordFailure(err error) {
	if err == nil {
		return
	}
	e.failed(err)
}

// RecordDownloadFailure records a remote bundle that could not be
// downloaded (its server unreachable, or answering an error status): no
// bundle was refused, so it is not reported as a refusal. It is shown as
// the last reload error in health until ClearDownloadFailure or an
// activation, logged as a failed download (a warning while a policy is
// active) and told to Options.OnReload as "download_failure".
func (e *Engine) RecordDownloadFailure(err error) {
	if err == nil {
		return
	}
	now := time.Now()
	for {
		old := e.lastErr.Load()
		prev := old
		if df, ok := downloadFailureOf(old); ok {
			prev = df.prev
		}
		if e.lastErr.CompareAndSwap(old, &reloadError{err: &downloadFailure{err: err, prev: prev}, at: now}) {
			break
		}
	}
	if e.cur.Load() == nil {
		e.log.Error("policy bundle download failed; no policy is active", "error", err)
	} else {
		e.log.Warn("policy bundle download failed; the active policy stays", "error", err)
	}
	if e.opts.OnReload != nil {
		e.opts.OnReload("download_failure", e.cur.Load().info(), err)
	}
}

// ClearDownloadFailure forgets the download failure recorded last, if the
// last reload error is one: the bundle server answers again (with the
// bundle, or 304 Not Modified). The error it replaced, a refused bundle
// the server still serves, is shown again.
func (e *Engine) ClearDownloadFailure() {
	for {
		old := e.lastErr.Load()
		df, ok := downloadFailureOf(old)
		if !ok || e.lastErr.CompareAndSwap(old, df.prev) {
			return
		}
	}
}

// downloadFailure is a last reload error that RecordDownloadFailure
// recorded; prev is the one it replaced (nil: none, or a download failure
// too), back once the download succeeds.
type downloadFailure struct {
	err  error
	prev *reloadError
}

func (d *downloadFailure) Error() string { return d.err.Error() }
func (d *downloadFailure) Unwrap() error { return d.err }

func downloadFailureOf(r *reloadError) (*downloadFailure, bool) {
	if r == nil {
		return nil, false
	}
	var df *downloadFailure
	ok := errors.As(r.err, &df)
	return df, ok
}
