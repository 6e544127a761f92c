package server

import (
	"net/http"

	"github.com/acgs-lite/acgs/internal/apierror"
)

// handleReload serves POST /v1/admin/reload: reload the bundle from its source.
func (s *Server) handleReload(w http.ResponseWriter, r *http.Request) {
	if s.d.Reload == nil {
		writeError(w, apierror.New(apierror.Unavailable, "this instance has no reloadable bundle source"))
		return
	}
	if err := s.d.Reload(r.Context()); err != nil {
		if _, active := s.d.Engine.Info(); !active {
			writeError(w, apierror.Wrap(apierror.InvalidParameter, err, "reload refused, no policy is active: %v", err))
			return
		}
		writeError(w, apierror.Wrap(apierror.InvalidParameter, err, "reload refused, the previous policy stays active: %v", err))
		return
	}
	info, _ := s.d.Engine.Info()
	writeJSON(w, http.StatusOK, map[string]any{"reloaded": true, "policy_revision": info.Revision}, false)
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
		writeError(w, apierror.Wrap(apierror.Unavailable, err, "cache flushed locally but the epoch could not be published: %v", err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"flushed": true, "epoch": epoch}, false)
}
