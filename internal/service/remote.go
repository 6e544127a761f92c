package service

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"

	"github.com/acgs-lite/acgs/internal/remote"
)

// Remote bundles (CONFIG_FILE): the wiring of internal/remote, kept out of
// service.go.
//
// With CONFIG_FILE the engine starts with no policy rather than the embedded
// constitution: a fleet must never answer from a constitution other than the
// one its bundle server publishes, not even for the seconds before the first
// download. Until the first remote bundle is active, /health and
// /health/ready answer 500 (so load balancers and Kubernetes send no
// traffic), and decisions fail closed with 503 unavailable. Startup does not
// block on the bundle server: as with `opa run`, an unreachable server keeps
// the instance unready (and retrying) instead of crash-looping it.

// setupRemote parses CONFIG_FILE and builds the remote source (no download
// yet); without CONFIG_FILE reloads go to the engine's own source.
func (s *Service) setupRemote() error {
	s.reload = s.Engine.Reload
	path := s.Config.Policy.ConfigFile
	if path == "" || s.source != nil {
		return nil
	}
	raw, err := remote.ReadConfig(path)
	if err != nil {
		return err
	}
	host, _ := os.Hostname()
	r, err := remote.New(remote.Options{
		Config: raw, Name: path, Target: s.Engine, Logger: s.Log,
		ID: "acgs-" + net.JoinHostPort(host, strconv.Itoa(s.Config.Server.Port)),
	})
	if err != nil {
		return err
	}
	s.remote, s.reload = r, r.Reload
	return nil
}

// startRemote starts downloading (from Run, so New alone fetches nothing).
func (s *Service) startRemote(ctx context.Context) error {
	if s.remote == nil {
		return nil
	}
	if err := s.remote.Start(ctx); err != nil {
		return fmt.Errorf("remote bundles: %w", err)
	}
	return nil
}

func (s *Service) stopRemote(ctx context.Context) {
	if s.remote != nil {
		s.remote.Stop(ctx)
	}
}

// reloadPolicy is SIGHUP and POST /v1/admin/reload: a download now for
// remote bundles, a re-read of the bundle otherwise.
func (s *Service) reloadPolicy(ctx context.Context) error { return s.reload(ctx) }

// sourceName names where the policy comes from, for logs.
func (s *Service) sourceName() string {
	if s.remote != nil {
		return s.remote.String()
	}
	if s.source != nil {
		return s.source.String()
	}
	return "none"
}
