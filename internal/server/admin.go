package server

import (
	"context"
	"errors"
	"io/fs"
	"net/http"

	"github.com/acgs-lite/acgs/internal/apierror"
	"github.com/acgs-lite/acgs/internal/remote"
)

// handleReload serves POST /v1/admin/reload: reload the bundle from its source.
func (s *Server) handleReload(w http.ResponseWriter, r *http.Request) {
	if s.d.Reload == nil {
		writeError(w, apierror.New(apierror.Unavailable, "this instance has no reloadable bundle source"))
		return
	}
	if err := s.d.Reload(r.Context()); err != nil {
		_, active := s.d.Engine.Info()
		writeError(w, reloadError(err, active))
		return
	}
	info, _ := s.d.Engine.Info()
	writeJSON(w, http.StatusOK, map[string]any{"reloaded": true, "policy_revision": info.Revision, "policy_content_digest": info.ContentDigest}, false)
}

// reloadError is the answer to a reload that failed with err; active says
// whether a policy is active (it stays). The message says which and why.
// Only a reload this instance's configuration does not do is the client's
// error: with polled remote bundles only, a new bundle comes at the next
// poll (400 invalid_parameter).
// A bundle source that could not be read or reached (a download that
// failed, a bundle server's error status, a file that could not be read,
// the reload's deadline) is 503 unavailable: trying again later may
// succeed. A bundle that was read and refused (it does not parse, compile
// or verify, or declares another constitutional hash) is the service's
// bundle, not the request: 500 internal_error. When several bundles
// failed, a refusal outweighs an unavailable source.
func reloadError(err error, active bool) *apierror.Error {
	code, what := apierror.InternalError, "reload refused"
	switch {
	case errors.Is(err, remote.ErrPolled):
		code = apierror.InvalidParameter
	case errors.Is(err, remote.ErrStopped): // shutting down: another instance can
		code, what = apierror.Unavailable, "reload not made"
	case sourceUnavailable(err):
		code, what = apierror.Unavailable, "reload failed, the bundle source is unavailable"
	}
	if !active {
		return apierror.Wrap(code, err, "%s, no policy is active: %v", what, err)
	}
	return apierror.Wrap(code, err, "%s, the previous policy stays active: %v", what, err)
}

// sourceUnavailable reports whether every error err joins is one of a
// bundle source that could not be read or reached, no bundle refused.
func sourceUnavailable(err error) bool {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs := j.Unwrap()
		for _, e := range errs {
			if !sourceUnavailable(e) {
				return false
			}
		}
		return len(errs) > 0
	}
	var pathErr *fs.PathError
	var download *remote.DownloadError
	return errors.As(err, &download) || errors.As(err, &pathErr) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}

// handleCacheFlush serves DELETE /v1/cache: empty L1 and bump the cache epoch
// so that no instance reads older L2 entries.
func (s *Server) handleCacheFlush(w http.ResponseWriter, r *http.Request) {
	if s.d.Cache == nil {
		writeJSON(w, http.StatusOK, map[string]any{"flushed": false, "reason": "cache disabled"}, false)
		return
	}
	epoch, err := s.d.Cache.Flush(r.Context())
	if err != nil {
		// Not confirmed may still take effect (cache.Tiered.Flush): the
		// answer says what is sure, and that another flush is harmless.
		writeError(w, apierror.Wrap(apierror.Unavailable, err, "L1 was flushed in this instance; the flush shared with the other instances (a new cache epoch in Redis) was not made or not confirmed, and retrying is harmless: %v", err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"flushed": true, "epoch": epoch}, false)
}
