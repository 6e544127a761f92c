// Package service wires the components of `acgs serve` (config, logger,
// telemetry, cache, engine, server) into one value with Run and Close, so
// that end-to-end tests start exactly what production starts.
package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"sync"
	"syscall"
	"time"

	opaversion "github.com/open-policy-agent/opa/v1/version"

	"github.com/acgs-lite/acgs/internal/admission"
	"github.com/acgs-lite/acgs/internal/cache"
	"github.com/acgs-lite/acgs/internal/config"
	"github.com/acgs-lite/acgs/internal/engine"
	"github.com/acgs-lite/acgs/internal/remote"
	"github.com/acgs-lite/acgs/internal/server"
	"github.com/acgs-lite/acgs/internal/telemetry"
	"github.com/acgs-lite/acgs/internal/version"
	"github.com/acgs-lite/acgs/policies"
)

// Service is one running instance.
type Service struct {
	Config  config.Config
	Log     *slog.Logger
	Metrics *telemetry.Metrics
	Cache   *cache.Tiered // nil when CACHE_ENABLED=false
	Engine  *engine.Engine
	Admit   *admission.Controller
	Server  *server.Server
	DLog    *telemetry.DecisionLog

	source   engine.BundleSource
	listener net.Listener
	http     *http.Server

	// remote bundles (CONFIG_FILE), see remote.go: remote is nil without
	// one; reload is what SIGHUP and POST /v1/admin/reload call.
	remote *remote.Remote
	reload func(context.Context) error
}

// Options adjust wiring for tests and embedding.
type Options struct {
	LogOutput io.Writer           // default os.Stderr
	Listener  net.Listener        // default: listen on Config.Addr()
	Source    engine.BundleSource // default: POLICY_BUNDLE_PATH or the embedded bundle
}

// New builds every component; it fails on bad config or a bundle that cannot
// be activated. It does not start serving.
func New(ctx context.Context, cfg config.Config, o Options) (*Service, error) {
	catchHangup.Do(func() { signal.Notify(make(chan os.Signal, 1), syscall.SIGHUP) })
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid configuration:\n%w", err)
	}
	if o.LogOutput == nil {
		o.LogOutput = os.Stderr
	}
	logger, err := newLogger(cfg.Log.Level, cfg.Log.Format, o.LogOutput)
	if err != nil {
		return nil, err
	}
	s := &Service{Config: cfg, Log: logger}
	s.Metrics = telemetry.NewMetrics(telemetry.BuildInfo{
		Version: version.Version, Commit: version.Commit(), GoVersion: runtime.Version(), OPAVersion: opaversion.Version,
	})
	// Settings that take effect only with another: given alone, they are
	// unused, and say so rather than seem to work.
	switch {
	case !cfg.Cache.Enabled && cfg.Cache.RedisURL != "":
		logger.Warn("CACHE_ENABLED=false: REDIS_URL is not used for decisions (no decision cache, L1 or L2); acgs gateway still keeps its call counters there")
	case cfg.Cache.RedisURL == "" && (cfg.Cache.SigningKey != "" || len(cfg.Cache.PreviousSigningKeys) > 0):
		logger.Warn("CACHE_SIGNING_KEY is not used without REDIS_URL (it signs L2 entries)")
	}
	if !cfg.Policy.PartialEval && len(cfg.Policy.PartialEvalKeys) > 0 {
		logger.Warn("PARTIAL_EVAL=false: PARTIAL_EVAL_KEYS is not used")
	}
	if cfg.Cache.Enabled {
		prev := make([][]byte, 0, len(cfg.Cache.PreviousSigningKeys))
		for _, k := range cfg.Cache.PreviousSigningKeys {
			prev = append(prev, []byte(k))
		}
		s.Cache, err = cache.New(ctx, cache.Config{
			L1Size: cfg.Cache.L1Size, TTL: cfg.Cache.TTL, RedisURL: cfg.Cache.RedisURL,
			SigningKey: []byte(cfg.Cache.SigningKey), PreviousSigningKeys: prev,
			L2Timeout: cfg.Cache.L2Timeout, BatchSize: cfg.Cache.BatchSize, BatchWindow: cfg.Cache.BatchWindow,
			QueueSize: cfg.Cache.QueueSize, KeyPrefix: cfg.Cache.KeyPrefix, Logger: logger,
			OnFlush: s.Metrics.ObserveWriteBehindBatch,
		})
		if err != nil {
			return nil, err
		}
		s.Metrics.RegisterCacheStats(s.Cache.Stats)
	}
	s.source = o.Source
	if s.source == nil && cfg.Policy.ConfigFile == "" { // with CONFIG_FILE the engine starts empty (remote.go)
		if cfg.Policy.BundlePath != "" {
			src := engine.PathSource{Path: cfg.Policy.BundlePath, SkipVerify: cfg.Policy.SkipVerify}
			if cfg.Policy.VerificationKey != "" {
				v, err := engine.VerificationKey(cfg.Policy.VerificationKey, cfg.Policy.VerificationKeyID, cfg.Policy.SigningAlg)
				if err != nil {
					return nil, err
				}
				src.Verify = v
			}
			s.source = src
		} else {
			s.source = engine.FSSource{FS: policies.Served, Name: "embedded constitution"}
		}
	}
	// Admission control: evaluations that no cache or constant plan
	// answered wait for one of a bounded number of slots, or are shed.
	// A request waits for a slot at most as long as an evaluation may take.
	wait := cfg.Admission.QueueTimeout
	if wait == 0 {
		wait = cfg.Policy.EvalTimeout
	}
	s.Admit = admission.New(admission.Config{
		MaxInFlight: cfg.Admission.MaxInFlight, MaxQueue: cfg.Admission.MaxQueue, MaxWait: wait,
	})
	s.Metrics.RegisterAdmission(s.Admit.Stats)
	eopts := engine.Options{
		ConstitutionalHash: cfg.Policy.ConstitutionalHash,
		EvalTimeout:        cfg.Policy.EvalTimeout,
		Logger:             logger,
		PartialEval:        cfg.Policy.PartialEval,
		PartialEvalKeys:    cfg.Policy.PartialEvalKeys,
		PlanCacheSize:      cfg.Policy.PlanCacheSize,
		Compiled:           cfg.Policy.Evaluator == "vm",
		OnEvaluator:        s.Metrics.ObserveEvaluator,
		OnPlan:             s.Metrics.ObservePartialEval,
		OnKey:              func(k engine.KeyKind) { s.Metrics.ObserveCacheKey(k.String()) },
		Admit:              s.Admit.Do,
		OnReload: func(result string, active engine.Info, _ error) {
			s.Metrics.PolicyReload(result)
			if result == "success" {
				s.Metrics.SetActivePolicy(active.Revision, active.ContentDigest, cfg.Policy.ConstitutionalHash)
			}
		},
	}
	if s.Cache != nil {
		eopts.Cache = s.Cache
	}
	s.Engine, err = engine.New(ctx, s.source, eopts)
	if err != nil {
		s.closeCache()
		return nil, err
	}
	if cfg.Log.DecisionLog != "off" {
		s.DLog, err = telemetry.NewDecisionLog(telemetry.DecisionLogConfig{
			Sink: cfg.Log.DecisionLog, Mask: cfg.Log.DecisionLogMask, QueueSize: cfg.Log.DecisionLogSize, Logger: logger, Context: ctx,
		})
		if err != nil {
			s.closeCache()
			return nil, err
		}
		s.Metrics.RegisterDecisionLog(s.DLog)
	}
	deps := server.Deps{
		Config: cfg, Engine: s.Engine, Metrics: s.Metrics, DecisionLog: s.DLog, Logger: logger,
		Window: telemetry.NewWindow(cfg.Perf.WindowSpan), Reload: s.reloadPolicy,
	}
	if s.Cache != nil {
		deps.Cache = s.Cache
	}
	s.Server, err = server.New(deps)
	if err != nil {
		s.closeCache()
		return nil, err
	}
	s.listener = o.Listener
	// remote bundles (issue 7)
	if err := s.setupRemote(); err != nil {
		s.closeCache()
		return nil, err
	}
	return s, nil
}

// Addr is the address the service listens on, once Run has started it.
func (s *Service) Addr() string {
	if s.listener == nil {
		return ""
	}
	return s.listener.Addr().String()
}

// Listen opens the listener (Run does it if it was not done).
func (s *Service) Listen() error {
	if s.listener != nil {
		return nil
	}
	ln, err := net.Listen("tcp", s.Config.Addr())
	if err != nil {
		return fmt.Errorf("listening on %s (PORT): %w", s.Config.Addr(), err)
	}
	s.listener = ln
	return nil
}

// catchHangup catches SIGHUP for the life of the process, before the first
// activation: the reload loop of StartPolicy listens only while it runs, and
// Go's default for a SIGHUP nobody listens for is to end the process, which
// a reload sent during start-up or the shutdown's drain did (review).
var catchHangup sync.Once

// StartPolicy starts what keeps the policy current while ctx lives: remote
// bundle downloads (CONFIG_FILE) and a reload on every SIGHUP. Run calls
// it; so does acgs gateway, which serves the engine without the HTTP API.
func (s *Service) StartPolicy(ctx context.Context) error {
	if err := s.startRemote(ctx); err != nil {
		return err
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				s.Log.Info("SIGHUP: reloading the policy bundle", "source", s.sourceName())
				if err := s.reloadPolicy(ctx); errors.Is(err, remote.ErrPolled) {
					// Other failures are logged where they happen.
					s.Log.Warn("SIGHUP: nothing reloaded", "why", err)
				}
			}
		}
	}()
	return nil
}

// Run serves until ctx is done, reloading the bundle on SIGHUP, then shuts
// down gracefully: readiness fails first, in-flight requests finish within
// SHUTDOWN_TIMEOUT, then the cache flushes its pending writes.
func (s *Service) Run(ctx context.Context) error {
	if err := s.Listen(); err != nil {
		return err
	}
	if err := s.StartPolicy(ctx); err != nil {
		_ = s.listener.Close()
		s.closeRest()
		return err
	}
	s.http = s.Server.HTTPServer()
	errc := make(chan error, 1)
	go func() { errc <- s.http.Serve(s.listener) }()
	info, _ := s.Engine.Info()
	s.Log.Info("acgs serving", "addr", s.Addr(), "version", version.Version, "policy_revision", info.Revision,
		"constitutional_hash", s.Config.Policy.ConstitutionalHash, "l2", s.Cache != nil && s.Config.Cache.RedisURL != "")
	select {
	case err := <-errc:
		s.closeRest()
		return err
	case <-ctx.Done():
	}
	s.Log.Info("shutting down: finishing in-flight requests", "timeout", s.Config.Server.ShutdownTimeout)
	s.Server.SetDraining()
	sctx, cancel := context.WithTimeout(context.Background(), s.Config.Server.ShutdownTimeout)
	defer cancel()
	err := s.http.Shutdown(sctx)
	if err != nil {
		s.Log.Warn("shutdown did not finish in time", "error", err)
	}
	s.closeRest()
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("graceful shutdown exceeded SHUTDOWN_TIMEOUT: %w", err)
	}
	s.Log.Info("stopped")
	return nil
}

// Close releases everything without serving (for tests that never ran Run).
func (s *Service) Close() {
	if s.listener != nil && s.http == nil {
		_ = s.listener.Close()
	}
	s.closeRest()
}

func (s *Service) closeRest() {
	// The decision log first, with a deadline of its own: after a remote
	// stop that took its whole budget (it waits for a bundle download in
	// flight), a shared deadline would have passed, and Close would drop
	// the queued events (up to DECISION_LOG_QUEUE_SIZE) without a word.
	s.DLog.CloseAndReport(s.Log, s.Config.Log.DecisionLog, 5*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.stopRemote(ctx) // remote bundles (issue 7)
	s.closeCache()
}

func (s *Service) closeCache() {
	if s.Cache != nil {
		_ = s.Cache.Close()
	}
}
