// Package remote takes the constitution from bundle servers with OPA's own
// bundle plugin, so that an OPA configuration file (services, bundles with
// polling or long polling, keys, bundle signing) works unchanged, and hands
// every bundle that plugin activates to the engine. It also builds (and
// signs) bundle archives and serves them to OPA's downloader. It never
// evaluates policy: the engine does, and decides what is active.
package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	bundleplugin "github.com/open-policy-agent/opa/v1/plugins/bundle"

	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/download"
	"github.com/open-policy-agent/opa/v1/plugins"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/tracing"

	"github.com/acgs-lite/acgs/internal/engine"
)

// Target is what the remote source activates bundles into (*engine.Engine).
type Target interface {
	Activate(ctx context.Context, b *bundle.Bundle, source string) error
	// TryActivate is Activate without reporting a refusal (log, last
	// reload error, failure count): for OPA's persisted files at start,
	// which the last accepted copies may stand in for.
	TryActivate(ctx context.Context, b *bundle.Bundle, source string) error
	// RecordFailure records a bundle refused before it reached Activate.
	RecordFailure(err error)
	// RecordDownloadFailure records a bundle that could not be
	// downloaded: nothing was refused.
	RecordDownloadFailure(err error)
	// ClearDownloadFailure forgets the last download failure recorded:
	// the bundles download again.
	ClearDownloadFailure()
}

var _ Target = (*engine.Engine)(nil)

// Options configure a remote source.
type Options struct {
	// Config is the OPA configuration (YAML or JSON), as read by ReadConfig.
	Config []byte
	// Name says where Config came from (the CONFIG_FILE path), for messages.
	Name string
	// ID identifies this instance to bundle servers (OPA's labels.id).
	ID     string
	Target Target
	Logger *slog.Logger
	// ActivateTimeout bounds one download and its hand-over to Target
	// (default 30s); the engine's activation itself is not cancelled.
	ActivateTimeout time.Duration
	// MaxBundleBytes bounds a downloaded bundle, compressed and
	// decompressed, and each of its files (default engine.MaxBundleBytes,
	// as for local archives). A bundle's size_limit_bytes in Config, when
	// given, bounds its files instead and raises the bound on the whole
	// archive to it if it is larger: for every bundle, as one transport
	// serves them all.
	MaxBundleBytes int64
}

// Remote runs OPA's plugin manager with the bundle plugin for one service
// instance. Its listener turns the plugin's status updates into engine
// activations and recorded failures.
type Remote struct {
	opts    Options
	log     *slog.Logger
	manager *plugins.Manager
	plugin  *bundleplugin.Plugin

	ctx    context.Context // for activations started by the plugin's goroutines
	cancel context.CancelFunc

	reloadMu  sync.Mutex    // guards the three below
	reloading bool          // a goroutine runs manual downloads (runReloads)
	nextLoad  *reloadBatch  // the reloads asked for since the running download started
	stopped   bool          // Stop has begun: no reload starts
	reloads   chan struct{} // closed when the running runReloads returns (nil: none ran)
	mu        sync.Mutex
	bundles   []string                 // configured bundle names
	seen      map[string]time.Time     // LastSuccessfulActivation handed to the target, per bundle
	tries     map[string]uint64        // status updates processed, per bundle
	updated   chan struct{}            // closed (and replaced) at every status update
	outcome   map[string]error         // per bundle, what its last status update came to (nil: fine, or waiting for the others)
	same      map[string]bool          // per bundle, whether its last status update brought nothing new (304)
	refused   error                    // why the target refused the plugin's last activation (nil: it took it)
	retryWait map[string]time.Duration // per bundle, the wait before a poll finding it unchanged hands the refused set over again
	retryAt   map[string]time.Time     // per bundle, when a poll finding it unchanged may hand the refused set over again
	persisted *persistence             // the bundles with persist: true, nil when none
	polled    map[string]bool          // the bundles not in manual trigger mode
	undone    map[string]bool          // the bundles whose last download failed (DownloadError)
	active    bool                     // a remote bundle has been activated into the target
}

// envRE matches ${VAR} as OPA's configuration loader does.
var envRE = regexp.MustCompile(`(?U:\${.*})`)

// ReadConfig reads an OPA configuration file and substitutes ${VAR} with
// environment variables the way `opa run --config-file` does (an unset
// variable is left as written), so secrets such as bearer tokens can stay
// out of the file.
func ReadConfig(path string) ([]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("CONFIG_FILE: %w", err)
	}
	out := envRE.ReplaceAllStringFunc(string(raw), func(s string) string {
		if v, ok := os.LookupEnv(s[2 : len(s)-1]); ok {
			return v
		}
		return s
	})
	return []byte(out), nil
}

// New parses the configuration with OPA's parsers and builds the plugin
// manager and the bundle plugin; nothing is downloaded before Start.
// Configurations this service cannot honour fail here rather than being
// half applied: no bundles, or discovery (which would let a remote
// configuration replace the bundle sources).
func New(opts Options) (*Remote, error) {
	if opts.Target == nil {
		return nil, errors.New("remote: a target engine is required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.ActivateTimeout <= 0 {
		opts.ActivateTimeout = 30 * time.Second
	}
	if opts.MaxBundleBytes <= 0 {
		opts.MaxBundleBytes = engine.MaxBundleBytes
	}
	if opts.ID == "" {
		host, _ := os.Hostname()
		opts.ID = "acgs-" + host
	}
	log := opts.Logger.With("component", "remote_bundles", "config_file", opts.Name)
	ol := &opaLogger{l: log}
	// The bound is known once the bundles are parsed (below); the
	// transport reads it at every answer.
	limit := &bodyLimit{}
	mgr, err := plugins.New(opts.Config, opts.ID, inmem.New(),
		plugins.Logger(ol), plugins.ConsoleLogger(ol), plugins.EnablePrintStatements(false),
		plugins.WithDistributedTracingOpts(tracing.NewOptions(limit)))
	if err != nil {
		return nil, fmt.Errorf("CONFIG_FILE %s: %w", opts.Name, err)
	}
	cfg := mgr.GetConfig()
	for _, w := range cfg.Warnings {
		log.Warn("OPA configuration warning", "warning", w)
	}
	if len(cfg.Discovery) > 0 {
		return nil, fmt.Errorf("CONFIG_FILE %s: discovery is not supported; list the bundles under \"bundles\"", opts.Name)
	}
	for name, section := range map[string][]byte{"decision_logs": cfg.DecisionLogs, "status": cfg.Status} {
		if len(section) > 0 && string(section) != "null" {
			log.Warn("OPA configuration section ignored: acgs has its own decision log and metrics", "section", name)
		}
	}
	if len(cfg.Plugins) > 0 {
		log.Warn("OPA configuration section ignored: custom plugins are not available in acgs", "section", "plugins")
	}
	bcfg, err := bundleConfig(mgr, cfg.Bundle, cfg.Bundles)
	if err != nil {
		return nil, fmt.Errorf("CONFIG_FILE %s: %w", opts.Name, err)
	}
	limit.bytes = opts.MaxBundleBytes
	for _, src := range bcfg.Bundles {
		if src.SizeLimitBytes == bundle.DefaultSizeLimitBytes { // not given: OPA's default of 1 GiB
			src.SizeLimitBytes = opts.MaxBundleBytes
		}
		limit.bytes = max(limit.bytes, src.SizeLimitBytes)
	}
	if err := limit.check(); err != nil {
		return nil, err
	}
	r := &Remote{opts: opts, log: log, manager: mgr, seen: map[string]time.Time{},
		tries: map[string]uint64{}, updated: make(chan struct{}), outcome: map[string]error{}, same: map[string]bool{},
		undone: map[string]bool{}, polled: map[string]bool{}, retryWait: map[string]time.Duration{}, retryAt: map[string]time.Time{}}
	var persisted []string
	for name, src := range bcfg.Bundles {
		r.bundles = append(r.bundles, name)
		r.polled[name] = src.Trigger == nil || *src.Trigger != plugins.TriggerManual
		if src.Persist {
			if err := persistableName(name); err != nil {
				return nil, fmt.Errorf("CONFIG_FILE %s: bundle %q has persist: true, but %v; rename it", opts.Name, name, err)
			}
			persisted = append(persisted, name)
		}
	}
	sort.Strings(r.bundles)
	if len(persisted) > 0 {
		dir, err := cfg.GetPersistenceDirectory()
		if err != nil {
			return nil, fmt.Errorf("CONFIG_FILE %s: persistence directory: %w", opts.Name, err)
		}
		sort.Strings(persisted)
		if err := distinctPersistedNames(runtime.GOOS, persisted); err != nil {
			return nil, fmt.Errorf("CONFIG_FILE %s: %w; rename one", opts.Name, err)
		}
		r.persisted = &persistence{dir: dir, names: persisted}
	}
	r.plugin = bundleplugin.New(bcfg, mgr)
	mgr.Register(bundleplugin.Name, r.plugin)
	r.plugin.Register(listenerKey{}, r.onStatus)
	return r, nil
}

type listenerKey struct{}

// bundleConfig parses the bundle section as OPA's runtime does: the
// deprecated single "bundle" when present, else "bundles" with the keys.
func bundleConfig(mgr *plugins.Manager, legacy, bundles []byte) (*bundleplugin.Config, error) {
	c, err := bundleplugin.ParseConfig(legacy, mgr.Services()) //nolint:staticcheck // OPA still accepts the legacy form, so do we
	if err != nil {
		return nil, err
	}
	if c == nil {
		c, err = bundleplugin.NewConfigBuilder().WithBytes(bundles).WithServices(mgr.Services()).
			WithKeyConfigs(mgr.PublicKeys()).Parse()
		if err != nil {
			return nil, err
		}
	}
	if c == nil || len(c.Bundles) == 0 {
		return nil, errors.New("configures no bundles (expected a \"bundles\" section naming at least one bundle)")
	}
	for name, src := range c.Bundles {
		// OPA's file loader bounds each file of a bundle, not their sum,
		// and reads no archive this package could check first.
		if u, err := url.Parse(src.Resource); err == nil && u.Scheme == "file" {
			return nil, fmt.Errorf("bundle %q: resource %q is a local file, which acgs does not load through CONFIG_FILE "+
				"(it could not bound the bundle's size); give it with POLICY_BUNDLE_PATH instead, or serve it over HTTP", name, src.Resource)
		}
		// OPA's OCI downloader builds its own HTTP client, which the bound
		// on a whole archive (limitTransport) cannot reach.
		if sc := mgr.Client(src.Service).Config(); sc != nil && sc.Type == "oci" {
			return nil, fmt.Errorf("bundle %q: service %q is an OCI registry, which acgs does not download from "+
				"(it could not bound the archive's size); serve the bundle over HTTP", name, src.Service)
		}
	}
	return c, nil
}

// Start starts downloading. A bundle persisted by an earlier run (bundles
// with persist: true) is activated into the target at once.
func (r *Remote) Start(ctx context.Context) error {
	r.ctx, r.cancel = context.WithCancel(context.WithoutCancel(ctx))
	// settled: the target has decided on exactly what the plugin loads at
	// start (OPA's own files, handed over before it starts): it is not
	// handed over again.
	// standIn: the target's refusal of OPA's persisted files, reported
	// only if the accepted copies put in their place are not handed over.
	settled, standIn := false, error(nil)
	if r.persisted != nil {
		// Before the plugin loads the persisted bundles (manager.Start).
		settled, standIn = r.startPersisted()
	}
	if err := r.manager.Start(r.ctx); err != nil {
		return fmt.Errorf("starting remote bundles (%s): %w", r.opts.Name, err)
	}
	names, err := r.storedBundles()
	if err == nil && len(names) > 0 {
		r.mu.Lock()
		var missing []string
		for _, name := range r.bundles {
			if !slices.Contains(names, name) {
				missing = append(missing, name)
			}
		}
		if len(missing) == 0 {
			if !settled {
				// Activated, or refused and reported: the refusal of the
				// files they stand in for is not a failed reload.
				_ = r.activateStored(persistedAtStart) // logged and recorded by the target
				standIn = nil
			}
		} else {
			// A constitution without its data bundle (or the reverse)
			// never serves: the persisted ones wait, as downloaded ones
			// do (onStatus), for the others' first download.
			now := time.Now()
			for _, name := range names {
				r.seen[name] = now
			}
			r.log.Info("persisted bundles loaded; waiting for the other bundles before the first activation",
				"persisted", names, "waiting_for", missing)
		}
		r.mu.Unlock()
	}
	if standIn != nil {
		// The accepted copies were not loaded as a whole set: the refusal
		// stands, with no policy.
		r.mu.Lock()
		r.opts.Target.RecordFailure(standIn)
		r.logRefusal(persistedAtStart, standIn)
		r.mu.Unlock()
	}
	manual := false
	for name, src := range r.plugin.Config().Bundles {
		trigger := string(*src.Trigger)
		manual = manual || *src.Trigger == plugins.TriggerManual
		// What OPA enforces: with keys but no "signing" block, a signature
		// is verified when present and an unsigned bundle is accepted.
		// OPA's behaviour is kept (its configurations work unchanged), and
		// said here.
		required := src.Signing != nil && src.Signing.SignatureRequired()
		r.log.Info("remote bundle source", "bundle", name, "service", src.Service, "resource", src.Resource, "trigger", trigger,
			"signature_required", required, "long_polling", src.Polling.LongPollingTimeoutSeconds != nil)
		if src.Signing != nil && !required {
			r.log.Warn("remote bundle signatures are not required: keys are configured but the bundle has no \"signing\" block, "+
				"so an unsigned bundle is accepted (a signed one is verified); add a \"signing\" block to require signatures",
				"bundle", name)
		}
	}
	if manual {
		// Manual bundles download only when triggered: the first time is
		// now, and again until a bundle is active (an instance started
		// while its bundle server was down stayed unready until a SIGHUP).
		go r.firstDownload()
	}
	return nil
}

// firstDownload downloads the manual-trigger bundles until one is active,
// waiting longer after each failure (up to maxFirstRetry), or until Stop.
func (r *Remote) firstDownload() {
	for wait := firstRetry; ; wait = min(2*wait, maxFirstRetry) {
		ctx, cancel := context.WithTimeout(r.ctx, r.opts.ActivateTimeout)
		err := r.Reload(ctx)
		cancel()
		if err == nil || r.ctx.Err() != nil || r.Active() {
			return
		}
		if errors.Is(err, errWaiting) {
			// Downloaded (and logged by trigger): the polled bundles
			// activate the set when they come.
			return
		}
		r.log.Error("first download of the manual-trigger bundles failed; trying again", "error", err, "retry_in", wait)
		select {
		case <-r.ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// The first download's waits between tries.
const (
	firstRetry    = 500 * time.Millisecond
	maxFirstRetry = 30 * time.Second
)

// Stop stops every downloader and the plugin manager.
func (r *Remote) Stop(ctx context.Context) {
	r.reloadMu.Lock()
	r.stopped = true
	reloads := r.reloads
	r.reloadMu.Unlock()
	if r.cancel != nil {
		r.cancel() // ends a manual download in flight
	}
	// runReloads reads the plugin's loaders, which its Stop rewrites: the
	// manager stops only once the reload goroutine has returned (the race
	// detector caught one outliving a test's reload), or at ctx's end.
	if reloads != nil {
		select {
		case <-reloads:
		case <-ctx.Done():
		}
	}
	r.manager.Stop(ctx)
}

// ErrStopped is returned by Reload once Stop has begun.
var ErrStopped = errors.New("remote bundles are stopped: the service is shutting down")

// ErrPolled is returned by Reload when no bundle is in manual trigger mode.
var ErrPolled = errors.New("remote bundles are polled: a new bundle is activated at the next poll; " +
	"set \"trigger: manual\" on a bundle in CONFIG_FILE to download it on reload instead")

// Reload downloads the bundles configured with "trigger: manual" now
// (SIGHUP, POST /v1/admin/reload) and returns why the download was refused,
// if it was. Polled bundles are left to their own loop: OPA's downloader
// must not be triggered while it polls (the two would race), so with only
// polled bundles Reload returns ErrPolled and downloads nothing; but when
// the target refused the bundles the plugin last took, it hands them over
// again at once (as a later poll would, after its wait) and returns what
// the target made of them.
func (r *Remote) Reload(ctx context.Context) error {
	var manual []string
	for name, src := range r.plugin.Config().Bundles {
		if src.Trigger != nil && *src.Trigger == plugins.TriggerManual {
			manual = append(manual, name)
		}
	}
	if len(manual) == 0 {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.refused != nil && r.ctx != nil {
			return r.activateStored("reload of polled bundles refused before")
		}
		return ErrPolled
	}
	sort.Strings(manual)
	// Downloads run one at a time on one goroutine, under the Remote's own
	// context: OPA's Trigger returns when its context ends but leaves its
	// download running, so a download bounded by the caller's context (an
	// HTTP request that went away) could overlap the next one. Reloads
	// asked for while one runs share the next download, which starts after
	// they asked (a burst of SIGHUPs is one download, not a queue of them).
	// The caller's ctx only bounds how long the caller waits.
	r.reloadMu.Lock()
	if r.stopped {
		r.reloadMu.Unlock()
		return ErrStopped
	}
	if r.nextLoad == nil {
		r.nextLoad = &reloadBatch{done: make(chan struct{})}
	}
	b := r.nextLoad
	if !r.reloading {
		r.reloading = true
		r.reloads = make(chan struct{})
		go r.runReloads(manual, r.reloads)
	}
	r.reloadMu.Unlock()
	select {
	case <-b.done:
		return b.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// reloadBatch is one manual download and the reloads that wait for it.
type reloadBatch struct {
	done chan struct{} // closed once err is set
	err  error
}

// runReloads runs the batches of reloads until none is waiting, then
// closes finished.
func (r *Remote) runReloads(manual []string, finished chan struct{}) {
	defer close(finished)
	base := r.ctx
	if base == nil { // not started: no loaders either, nothing to download
		base = context.Background()
	}
	for {
		r.reloadMu.Lock()
		b := r.nextLoad
		r.nextLoad = nil
		if b == nil {
			r.reloading = false
			r.reloadMu.Unlock()
			return
		}
		r.reloadMu.Unlock()
		ctx, cancel := context.WithTimeout(base, r.opts.ActivateTimeout)
		b.err = r.trigger(ctx, manual)
		cancel()
		close(b.done)
	}
}

// trigger downloads the manual bundles now (on runReloads' goroutine only).
func (r *Remote) trigger(ctx context.Context, manual []string) error {
	r.mu.Lock()
	before := make(map[string]uint64, len(manual))
	for _, name := range manual {
		before[name] = r.tries[name]
	}
	r.mu.Unlock()
	loaders := r.plugin.Loaders()
	var errs []error
	var started, pending, triggerFailed []string
	for i, name := range manual {
		if err := ctx.Err(); err != nil {
			// Past the deadline a Trigger would only start a download
			// bound to fail (and forget the bundle's ETag): the rest wait
			// for the next reload.
			errs = append(errs, fmt.Errorf("remote bundles %s not downloaded: %w", strings.Join(manual[i:], ", "), err))
			break
		}
		if l, ok := loaders[name]; ok {
			started = append(started, name)
			err := l.Trigger(ctx)
			if err != nil {
				failed := downloadFailed(err)
				err = fmt.Errorf("remote bundle %q: %w", name, err)
				if failed {
					err = &DownloadError{Err: err}
				}
				errs = append(errs, err)
				triggerFailed = append(triggerFailed, name)
			}
			// A download that ended reported before Trigger returned; one
			// that Trigger left at its deadline reports when it ends.
			if err == nil || ctx.Err() != nil {
				pending = append(pending, name)
			}
		}
	}
	r.awaitStatus(pending, before)
	r.mu.Lock()
	defer r.mu.Unlock()
	var unchanged []string // the bundles this reload found as they were (304)
	for _, n := range started {
		if r.tries[n] > before[n] && r.same[n] {
			unchanged = append(unchanged, n)
		}
	}
	retried := len(errs) == 0 && r.refused != nil && len(unchanged) > 0
	if retried {
		// The servers still serve what the target refused: a reload
		// hands it over again, for a refusal may have been passing (an
		// activation past its deadline on a busy machine). Not when a
		// download failed (or the deadline passed): the refusal stands.
		err := r.activateStored("reload of bundles refused before")
		for _, n := range unchanged {
			r.outcome[n] = err
		}
	}
	// The bundles whose Trigger failed are in errs; the others downloaded
	// and may have been refused: a refusal is returned beside a failed
	// download (the admin API answers a refusal, not an unavailable source).
	out := errs
	for _, n := range started {
		if err := r.outcome[n]; r.tries[n] > before[n] && err != nil && !slices.Contains(triggerFailed, n) && !slices.Contains(out, err) {
			out = append(out, err)
		}
	}
	if len(out) == 0 && !r.active {
		// Downloaded, but the first policy is the whole set (onStatus):
		// nothing was activated, and a reload must not say it was.
		var missing []string
		for _, name := range r.bundles {
			if r.seen[name].IsZero() {
				missing = append(missing, name)
			}
		}
		if len(missing) > 0 {
			// Logged here, as a refusal is by the target and a failed
			// download by RecordDownloadFailure: the callers (SIGHUP, the
			// admin API, the first download) log nothing more.
			r.log.Warn("reload: nothing changed, no policy activated: the first activation waits for the other bundles",
				"bundles", manual, "waiting_for", missing)
			out = append(out, &DownloadError{Err: fmt.Errorf("%w: remote bundles %s are not downloaded yet",
				errWaiting, strings.Join(missing, ", "))})
		}
	}
	if len(out) == 0 && !retried && len(started) > 0 && len(unchanged) == len(started) && r.active {
		// Every server answered 304 and nothing was refused: the target
		// was not called, so nothing else says the reload did nothing.
		r.log.Info("reload: nothing changed: the bundle servers serve the bundles already active (304 Not Modified)",
			"bundles", unchanged)
	}
	return errors.Join(out...)
}

// errWaiting is a manual download that activated nothing because the
// first activation waits for other bundles (polled ones: a manual one not
// downloaded has its own error). Reload returns it as a DownloadError (the
// admin API's 503 unavailable: a policy comes once those are downloaded).
var errWaiting = errors.New("no policy activated: the first activation waits for every bundle")

// awaitStatus waits until every bundle named has reported a status update
// since before (OPA's downloader reports exactly one per download), at most
// ActivateTimeout or until the source stops. OPA's Trigger returns when its
// context ends but leaves the download to end on its own: without the
// wait, the next reload (runReloads' next batch) could start a second
// download of the same bundle beside it, two writers of one downloader.
func (r *Remote) awaitStatus(names []string, before map[string]uint64) {
	timer := time.NewTimer(r.opts.ActivateTimeout)
	defer timer.Stop()
	for {
		r.mu.Lock()
		waiting := ""
		for _, name := range names {
			if r.tries[name] == before[name] {
				waiting = name
			}
		}
		ch := r.updated
		r.mu.Unlock()
		if waiting == "" {
			return
		}
		select {
		case <-ch:
		case <-ctxDone(r.ctx):
			return
		case <-timer.C:
			r.log.Warn("a manual bundle download still runs after its timeout; the next reload may run beside it",
				"bundle", waiting, "waited", r.opts.ActivateTimeout)
			return
		}
	}
}

// Active reports whether a remote bundle has been activated into the target.
func (r *Remote) Active() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.active
}

// String names the source for logs.
func (r *Remote) String() string { return "remote bundles (" + r.opts.Name + ")" }

// onStatus is the bundle plugin's listener. The plugin calls it under its
// own lock after every download attempt, once the bundle is activated into
// the manager's store (or refused), so no other activation can interleave
// with reading that store back here.
func (r *Remote) onStatus(s bundleplugin.Status) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tries[s.Name]++
	close(r.updated)
	r.updated = make(chan struct{})
	r.same[s.Name] = false
	if err := statusError(s); err != nil {
		// Downloads, signature checks and OPA's compilation happen before the
		// store changes: the engine keeps its snapshot and records why. A
		// download that failed refused no bundle, and is reported so.
		if s.HTTPCode != "" || failedRequest(s.Message) {
			r.undone[s.Name] = true
			err = &DownloadError{Err: err}
			r.opts.Target.RecordDownloadFailure(err)
		} else {
			// A refused bundle was downloaded: its server answers again
			// (else another bundle's download failure would never clear).
			r.answered(s.Name)
			r.opts.Target.RecordFailure(err)
		}
		r.outcome[s.Name] = err
		return
	}
	// Downloaded (or found unchanged, 304): the bundle server answers again.
	r.answered(s.Name)
	if s.LastSuccessfulActivation.IsZero() || s.LastSuccessfulActivation.Equal(r.seen[s.Name]) {
		// 304 Not Modified, or nothing new: what the bundle server serves
		// is what was last handed to the target, so this bundle's outcome
		// is the target's refusal of it, if it refused (a reload then hands
		// it over again: trigger). A poll hands it over again once its
		// wait has passed (refusedRetry), as a reload of a manual bundle
		// does.
		r.outcome[s.Name], r.same[s.Name] = r.refused, true
		if r.refused != nil && r.polled[s.Name] && !time.Now().Before(r.retryAt[s.Name]) {
			r.outcome[s.Name] = r.activateStored(fmt.Sprintf("retry of bundle %q revision %q, refused before", s.Name, s.ActiveRevision))
		}
		return
	}
	r.seen[s.Name] = s.LastSuccessfulActivation
	// A new bundle: if the set is refused, its polls retry it after
	// refusedRetry, not after the wait earlier refusals grew to.
	delete(r.retryWait, s.Name)
	// Logged apart from the engine's "policy bundle activated" so that the
	// download-and-verify latency and the activation time can be told apart.
	r.log.Info("remote bundle downloaded and verified", "bundle", s.Name, "revision", s.ActiveRevision)
	if !r.active {
		// With several bundles, the first policy is the whole set: a
		// constitution without its data bundle (or the reverse) never serves.
		for _, name := range r.bundles {
			if r.seen[name].IsZero() {
				r.outcome[s.Name] = nil
				r.log.Info("remote bundle downloaded; waiting for the other bundles before the first activation",
					"bundle", s.Name, "waiting_for", name)
				return
			}
		}
	}
	r.outcome[s.Name] = r.activateStored(fmt.Sprintf("bundle %q revision %q", s.Name, s.ActiveRevision))
}

// answered records that bundle name's server answered with a bundle (or
// 304), whether or not the bundle is refused: the engine forgets the
// download failure once every bundle's server does. r.mu must be held.
func (r *Remote) answered(name string) {
	delete(r.undone, name)
	if len(r.undone) == 0 {
		r.opts.Target.ClearDownloadFailure()
	}
}

// activateStored reads what the plugin activated back from the manager's
// store, activates it into the target and returns why the target refused
// it, if it did. r.mu must be held.
func (r *Remote) activateStored(why string) error {
	ctx, cancel := context.WithTimeout(r.ctx, r.opts.ActivateTimeout)
	defer cancel()
	var files map[string]*os.File
	if r.persisted != nil {
		files = r.persisted.open() // before the store is read: see persistence.open
		defer closeAll(files)
	}
	b, names, err := fromStore(ctx, r.manager.Store, r.manager.ParserOptions())
	source := fmt.Sprintf("remote %s from %s", strings.Join(names, ","), r.opts.Name)
	if err == nil {
		err = r.opts.Target.Activate(ctx, b, source)
	} else {
		r.opts.Target.RecordFailure(err)
	}
	r.settle(why, err)
	if err != nil {
		return err
	}
	if r.persisted != nil {
		srcs := make(map[string]io.Reader, len(files))
		for name, f := range files {
			srcs[name] = f
		}
		r.keepAccepted(srcs, names)
	}
	return nil
}

// keepAccepted keeps srcs as the accepted copies of the bundles named,
// which the target has just accepted, and logs the copies not kept or not
// synced: the set is active either way, but a restart during a bundle
// server outage would load an older copy.
func (r *Remote) keepAccepted(srcs map[string]io.Reader, names []string) {
	unsynced, err := r.persisted.keep(srcs, names)
	if err != nil {
		r.log.Error("the accepted bundle is active but its persisted copy is not kept; a restart during a bundle server outage may load an older one",
			"error", err)
	}
	r.logUnsynced(unsynced)
}

// settle records what the target made of a bundle set handed to it
// (err: its refusal; why: what the set was, for the log) and logs a
// refusal. r.mu must be held.
func (r *Remote) settle(why string, err error) {
	r.record(err)
	if err != nil {
		r.logRefusal(why, err)
	}
}

// record is settle without the log. r.mu must be held.
func (r *Remote) record(err error) {
	r.refused = err
	if err != nil {
		now := time.Now()
		for _, name := range r.bundles {
			w := min(max(2*r.retryWait[name], refusedRetry), maxRefusedRetry)
			r.retryWait[name], r.retryAt[name] = w, now.Add(w)
		}
		return
	}
	clear(r.retryWait)
	clear(r.retryAt)
	r.active = true
}

// logRefusal logs the target's refusal err of bundle set why, at Error:
// the operator must publish a bundle the target accepts.
func (r *Remote) logRefusal(why string, err error) {
	if r.active {
		r.log.Error("remote bundle refused; the previous policy stays active", "update", why, "error", err)
	} else {
		r.log.Error("remote bundle refused; no policy is active yet", "update", why, "error", err)
	}
}

// persistedAtStart is the update Start hands over, for the log.
const persistedAtStart = "persisted bundles loaded at start"

// startPersisted decides, before the plugin starts, which persisted files
// it loads (see persist.go): OPA's own, when the target accepts them as
// they are, else the last accepted copies. It hands OPA's files to the
// target when they make the whole set, and reports whether what the
// plugin then loads is exactly what the target decided on (nothing put in
// OPA's place). OPA's files that cannot be read, or do not make the whole
// set, are replaced by the accepted copies where those differ.
//
// A refusal of OPA's files is reported to the target (logged as an error,
// counted as a failed reload) only when no accepted copy stands in for
// them; else it is returned as standIn, logged here as a warning, for
// Start to report if the copies are not handed over after all.
func (r *Remote) startPersisted() (settled bool, standIn error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ctx, cancel := context.WithTimeout(r.ctx, r.opts.ActivateTimeout)
	defer cancel()
	const why = persistedAtStart
	b, names, raws, err := r.persisted.opaSet(ctx, r.bundles, r.plugin.Config().Bundles, r.manager.ParserOptions())
	// handed: the target has decided on OPA's files (accepted or refused them).
	var refusal *setRefusal
	handed := err == nil || errors.As(err, &refusal)
	// refused: the target's refusal of OPA's files, recorded now but
	// logged once restore says whether the accepted copies stand in.
	var refused error
	switch {
	case refusal != nil:
		// The set read back is refused (mixed constitutional hashes), as
		// activateStored refuses it: a refusal, not a file that could not
		// be read.
		refused = err
	case handed:
		source := fmt.Sprintf("remote %s from %s (persisted)", strings.Join(names, ","), r.opts.Name)
		err = r.opts.Target.TryActivate(ctx, b, source) // a refusal is reported below
		if err == nil {
			r.settle(why, nil)
			r.keepAccepted(raws, names)
			return true, nil
		}
		refused = err
	case !errors.Is(err, errIncomplete):
		r.log.Warn("the persisted bundles could not be read; the copies last accepted are loaded instead, if any", "error", err)
	}
	if refused != nil {
		r.record(refused)
	}
	restored, unsynced, err := r.persisted.restore()
	switch {
	case len(restored) > 0 && refused != nil:
		// Not an error for the operator, nor a failed reload: the
		// accepted copies are loaded and activated when the plugin starts
		// (refused then, they are reported as any refusal is).
		r.log.Warn("persisted bundles were refused; the last accepted ones are loaded instead",
			"bundles", restored, "update", why, "error", refused)
		standIn = refused
	case len(restored) > 0:
		r.log.Warn("persisted bundles were not the ones last accepted (unreadable, or not taken yet); "+
			"the last accepted ones are loaded instead", "bundles", restored)
	case refused != nil:
		r.opts.Target.RecordFailure(refused)
		r.logRefusal(why, refused)
	}
	r.logUnsynced(unsynced)
	if err != nil {
		r.log.Error("restoring the last accepted persisted bundles failed; the persisted ones are loaded as they are", "error", err)
	}
	// Refused, and nothing else to load: the plugin loads the set refused.
	return handed && len(restored) == 0, standIn
}

// logUnsynced logs the copies (accepted copies, or those restored in
// OPA's place) written whose directory could not be synced, if any: they
// are in place, but a power loss may undo them.
func (r *Remote) logUnsynced(unsynced error) {
	if unsynced != nil {
		r.log.Warn("a persisted bundle copy is in place but its directory could not be synced; a power loss may undo it",
			"error", unsynced)
	}
}

// The waits before a bundle set the target refused is handed over again
// when a poll finds a bundle unchanged (onStatus): at most once a poll of
// that bundle, and no sooner than its wait after the refusal. Each bundle
// has its own wait: refusedRetry after the first refusal since it brought
// a new bundle, doubling at each refusal in a row, reset by an accepted
// activation. OPA keeps the refused bundle's ETag, so its server
// answers 304 until it publishes another one: without the retry, a refusal
// for a passing reason (the hash check's budget run out on a starved
// machine) stood until then. A lasting refusal (another constitutional
// hash) costs one activation every maxRefusedRetry (plus the wait for the
// next poll), logged and counted as a failure each time. That count is
// what keeps ACGSPolicyReloadFailed (deploy/prometheus/alerts.yml: an
// increase over 10m) firing while the refusal lasts: maxRefusedRetry plus
// OPA's default poll delay (at most 120 s) stays well within its range, or
// the alert resolves and fires again at every retry
// (TestLastingRefusalKeepsTheAlertFiring). A max_delay_seconds above
// about 5 minutes, or long polling, spaces the retries out past it.
const (
	refusedRetry    = time.Second
	maxRefusedRetry = 4 * time.Minute
)

// ctxDone is ctx.Done(), nil (never ready) for a nil ctx.
func ctxDone(ctx context.Context) <-chan struct{} {
	if ctx == nil {
		return nil
	}
	return ctx.Done()
}

// DownloadError is a remote bundle that could not be downloaded: its
// bundle server was unreachable, did not answer in time, broke its answer
// off or answered an error status. No bundle was refused: the active policy
// stays, and the next download may succeed.
type DownloadError struct{ Err error }

func (e *DownloadError) Error() string { return e.Err.Error() }

// Unwrap returns the downloader's error.
func (e *DownloadError) Unwrap() error { return e.Err }

// downloadFailed reports whether err, from OPA's downloader, is a failed
// download (DownloadError) rather than a bundle it refused.
func downloadFailed(err error) bool {
	var status download.HTTPError
	return errors.As(err, &status) || failedRequest(err.Error())
}

// failedRequest reports whether msg, the text of an error of OPA's
// downloader (all a bundle status keeps of it), says its request failed:
// the bundle server was not reached or its answer not read. This package's
// transport refuses oversized archives as failed requests too
// (limitTransport); those are refusals, marked refusedArchive.
func failedRequest(msg string) bool {
	return strings.HasPrefix(msg, downloaderRequestFailed) && !strings.Contains(msg, refusedArchive)
}

// downloaderRequestFailed is how OPA's downloader begins the error of a
// request that got no answer (download.Downloader's download). Tests pin
// it (TestRemoteUnreachableServer).
const downloaderRequestFailed = "request failed: "

// statusError is the error a bundle status reports, nil when none.
func statusError(s bundleplugin.Status) error {
	if s.Code == "" && s.Message == "" && len(s.Errors) == 0 {
		return nil
	}
	msg := s.Message
	if msg == "" {
		msg = s.Code
	}
	if len(s.Errors) > 0 {
		parts := make([]string, len(s.Errors))
		for i, e := range s.Errors {
			parts[i] = e.Error()
		}
		msg += ": " + strings.Join(parts, "; ")
	}
	if s.HTTPCode != "" {
		msg += " (HTTP " + string(s.HTTPCode) + ")"
	}
	return fmt.Errorf("remote bundle %q: %s", s.Name, msg)
}

func (r *Remote) storedBundles() ([]string, error) {
	ctx, cancel := context.WithTimeout(r.ctx, 5*time.Second)
	defer cancel()
	names, err := storedNames(ctx, r.manager.Store)
	sort.Strings(names)
	return names, err
}
