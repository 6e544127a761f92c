// Package config holds the service configuration: one typed struct with
// defaults, loaded from environment variables and command-line flags (a flag
// wins over its variable), and Validate() whose messages name the bad setting
// and the values it accepts. It reads settings; it never starts anything.
package config

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/acgs-lite/acgs/internal/admission"
	"github.com/acgs-lite/acgs/internal/cache"
	"github.com/acgs-lite/acgs/internal/memlimit"
	"github.com/acgs-lite/acgs/internal/telemetry"
)

// DefaultConstitutionalHash is the hash of the built-in constitution.
const DefaultConstitutionalHash = "cdd01ef066bc6cf2"

// Config is every setting of `acgs serve`.
type Config struct {
	Server    Server
	Policy    Policy
	Admission Admission
	Cache     Cache
	Log       Log
	Perf      Perf
	Memory    Memory
	AdminTok  []string // ADMIN_TOKEN: comma-separated; every listed token is accepted (rotation window)
}

// Server is the HTTP listener and its limits.
type Server struct {
	Host              string
	Port              int
	MaxRequestBytes   int64
	MaxDepth          int
	MaxBatchItems     int
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
	ShutdownTimeout   time.Duration
	MaxHeaderBytes    int
}

// DecideWithin is how long after a request's start its decisions may take
// for its answer to be written before WRITE_TIMEOUT closes the connection:
// WRITE_TIMEOUT less a tenth of it, at most 1s, kept for writing. The
// server bounds every request's decisions by it (a wait for an evaluation
// slot is then shed with a 503 the client receives), except a single
// request whose body arrived after it: that one is decided until
// WRITE_TIMEOUT less a small reserve for its one answer (the server's
// decisionContext), not refused for a deadline it never had. It does not
// bound an evaluation already running on a slot (EVAL_TIMEOUT does), so
// Validate does not compare the two: an EVAL_TIMEOUT longer than it is
// allowed, as the gateway, which shares this configuration, has no
// WRITE_TIMEOUT.
func (s Server) DecideWithin() time.Duration {
	return s.WriteTimeout - min(s.WriteTimeout/10, time.Second)
}

// Policy is where the constitution comes from and how it is evaluated.
type Policy struct {
	BundlePath string // directory or .tar.gz; empty = the embedded bundle
	// A signed BundlePath (.signatures.json, `acgs bundle build
	// --signing-key`) is verified with VerificationKey (a PEM public key or
	// HMAC secret, or a file holding it), as OPA's --verification-key does,
	// or read unverified with SkipVerify; without either it is refused.
	// Remote bundles take their keys from ConfigFile.
	VerificationKey    string
	VerificationKeyID  string // the key's id in the signature (default "default")
	SigningAlg         string // the signature's algorithm (default RS256)
	SkipVerify         bool
	ConfigFile         string // OPA-format configuration (services, bundles, keys) for remote bundles
	ConstitutionalHash string
	EvalTimeout        time.Duration
	DefaultDecision    string   // path used by POST / (OPA's default decision)
	Evaluator          string   // EVALUATOR: vm (the compiled evaluator, topdown for what it cannot run) or topdown
	PartialEval        bool     // PARTIAL_EVAL: use partial-evaluation plans
	PartialEvalKeys    []string // plan keys (e.g. input.type) of documents whose entry-point annotation declares none
	PlanCacheSize      int
	CacheWarmFile      string
}

// Admission bounds the policy evaluations in flight (internal/admission):
// a request that a cache or a constant plan cannot answer waits for one of
// MaxInFlight slots (in turn, or newest first once the queue stands) for at
// most QueueTimeout (and at most
// until its own deadline) among at most MaxQueue waiters; past that it is
// shed with 503 overloaded and Retry-After, never answered as a denial.
type Admission struct {
	MaxInFlight  int           // ADMISSION_MAX_IN_FLIGHT: 0 = GOMAXPROCS-1, at least 1
	MaxQueue     int           // ADMISSION_MAX_QUEUE: 0 = 64 × the evaluations in flight, at most 1000000
	QueueTimeout time.Duration // ADMISSION_QUEUE_TIMEOUT: 0 = EVAL_TIMEOUT
}

// Cache is the two-tier decision cache.
type Cache struct {
	Enabled bool
	L1Size  int
	// RawSize bounds the raw-body tier (RAW_CACHE_SIZE; 0 turns it off):
	// request bodies already decided, by a hash of their bytes, mapped to
	// the L1 entry of their decision, so that a byte-identical repeat is
	// answered without decoding it. Off while the decision log is on (the
	// log records each request's decoded input).
	RawSize             int
	TTL                 time.Duration
	RedisURL            string
	SigningKey          string
	PreviousSigningKeys []string
	L2Timeout           time.Duration
	BatchSize           int
	BatchWindow         time.Duration
	QueueSize           int
	KeyPrefix           string
}

// Log is process logging and the decision audit log.
type Log struct {
	Level           string // debug|info|warn|error
	Format          string // json|text
	DecisionLog     string // off|stdout|file:/path
	DecisionLogMask []string
	DecisionLogSize int
}

// Perf holds the targets reported by /v1/metrics and health.
type Perf struct {
	TargetP50MS        float64
	TargetP95MS        float64
	TargetP99MS        float64
	CacheHitRateTarget float64
	WindowSpan         time.Duration
}

// Memory sizes the Go runtime to its container (internal/memlimit): unless
// GOMEMLIMIT is set in the environment (it always wins), the runtime's soft
// memory limit is LimitRatio × the container's (cgroup's) memory limit, so
// the garbage collector works harder near the limit instead of the process
// being killed past it. Unless GOGC is set, the collector's heap goal is
// kept at least GCMinHeadroomMiB above the live heap, so a small live heap
// is not collected every few megabytes.
type Memory struct {
	LimitRatio       float64 // MEMORY_LIMIT_RATIO: share of the cgroup limit given to GOMEMLIMIT, in (0, 1]; 0 = off (Go's default: no limit)
	GCMinHeadroomMiB int     // GC_MIN_HEADROOM_MB: least heap growth between collections, MiB; 0 = off (Go's default pacing)
}

// signingAlgs are the JWT algorithms OPA verifies bundle signatures with.
var signingAlgs = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "HS256", "HS384", "HS512"}

// Default returns the configuration used when nothing is set: port 8004, the
// embedded bundle, L1 only.
func Default() Config {
	return Config{
		Server: Server{
			Port:              8004,
			MaxRequestBytes:   1 << 20,
			MaxDepth:          64,
			MaxBatchItems:     1000,
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       30 * time.Second,
			WriteTimeout:      30 * time.Second,
			IdleTimeout:       120 * time.Second,
			ShutdownTimeout:   25 * time.Second,
			MaxHeaderBytes:    64 << 10,
		},
		Policy: Policy{
			ConstitutionalHash: DefaultConstitutionalHash,
			EvalTimeout:        100 * time.Millisecond,
			DefaultDecision:    "acgs/main/decision",
			Evaluator:          "vm",
			VerificationKeyID:  "default",
			SigningAlg:         "RS256",
			PartialEval:        true,
			PlanCacheSize:      1024,
		},
		Cache: Cache{
			Enabled:     true,
			L1Size:      10000,
			RawSize:     4096,
			TTL:         300 * time.Second,
			L2Timeout:   2 * time.Millisecond,
			BatchSize:   10,
			BatchWindow: 5 * time.Millisecond,
			QueueSize:   10000,
			KeyPrefix:   "acgs:",
		},
		Log: Log{
			Level:           "info",
			Format:          "json",
			DecisionLog:     "off",
			DecisionLogSize: 10000,
		},
		Perf: Perf{
			TargetP50MS:        0.5,
			TargetP95MS:        0.8,
			TargetP99MS:        1,
			CacheHitRateTarget: 0.95,
			WindowSpan:         60 * time.Second,
		},
		Memory: Memory{LimitRatio: memlimit.DefaultRatio, GCMinHeadroomMiB: memlimit.DefaultHeadroomMiB},
	}
}

var (
	hashRE     = regexp.MustCompile(`^[0-9a-f]{16}$`)
	inputKeyRE = regexp.MustCompile(`^input(\.[A-Za-z_][A-Za-z0-9_]*)+$`)
	pathRE     = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*$`)
)

// Validate checks every setting and returns all problems at once, each naming
// maxQueueSize bounds the in-process queues (entries, each a pointer): a
// larger size would fail to allocate at start, or panic, rather than be
// refused here.
const maxQueueSize = 10_000_000

// the setting (by its environment variable) and what it accepts.
func (c *Config) Validate() error {
	var errs []error
	bad := func(name, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{name}, args...)...))
	}
	s := c.Server
	if err := checkHost(s.Host); err != nil {
		bad("HOST", "%q %v (accepted: empty for all interfaces, an IP address such as 0.0.0.0, ::1 or [::1], or a host name)", s.Host, err)
	}
	if s.Port < 1 || s.Port > 65535 {
		bad("PORT", "%d is not a TCP port (accepted: 1-65535)", s.Port)
	}
	if s.MaxRequestBytes < 1024 || s.MaxRequestBytes > 1<<30 {
		bad("MAX_REQUEST_BYTES", "%d is out of range (accepted: 1024 to 1073741824 bytes)", s.MaxRequestBytes)
	}
	if s.MaxDepth < 2 || s.MaxDepth > 1000 {
		bad("MAX_REQUEST_DEPTH", "%d is out of range (accepted: 2-1000)", s.MaxDepth)
	}
	if s.MaxBatchItems < 1 || s.MaxBatchItems > 100000 {
		bad("MAX_BATCH_ITEMS", "%d is out of range (accepted: 1-100000)", s.MaxBatchItems)
	}
	for name, d := range map[string]time.Duration{
		"READ_HEADER_TIMEOUT": s.ReadHeaderTimeout, "READ_TIMEOUT": s.ReadTimeout,
		"WRITE_TIMEOUT": s.WriteTimeout, "IDLE_TIMEOUT": s.IdleTimeout, "SHUTDOWN_TIMEOUT": s.ShutdownTimeout,
	} {
		if d <= 0 {
			bad(name, "%s must be a positive duration such as 5s", d)
		}
	}
	p := c.Policy
	if !hashRE.MatchString(p.ConstitutionalHash) {
		bad("CONSTITUTIONAL_HASH", "%q is not a constitutional hash (accepted: 16 lowercase hex digits, e.g. %s)", p.ConstitutionalHash, DefaultConstitutionalHash)
	}
	if p.EvalTimeout < time.Millisecond || p.EvalTimeout > time.Minute {
		bad("EVAL_TIMEOUT", "%s is out of range (accepted: 1ms to 1m)", p.EvalTimeout)
	}
	if !pathRE.MatchString(p.DefaultDecision) {
		bad("DEFAULT_DECISION", "%q is not a policy path (accepted: slash-separated identifiers such as acgs/main/decision)", p.DefaultDecision)
	}
	for _, k := range p.PartialEvalKeys {
		if !inputKeyRE.MatchString(k) {
			bad("PARTIAL_EVAL_KEYS", "%q is not an input field (accepted: comma-separated refs such as input.type,input.action)", k)
		}
	}
	if p.PlanCacheSize < 1 {
		bad("PLAN_CACHE_SIZE", "%d must be at least 1", p.PlanCacheSize)
	}
	if p.Evaluator != "vm" && p.Evaluator != "topdown" {
		bad("EVALUATOR", "%q is not an evaluator (accepted: vm, topdown)", p.Evaluator)
	}
	if p.BundlePath != "" && p.ConfigFile != "" {
		bad("POLICY_BUNDLE_PATH", "cannot be combined with CONFIG_FILE (remote bundles): choose one source")
	}
	const localOnly = "applies to POLICY_BUNDLE_PATH only (remote bundles take keys from CONFIG_FILE; the embedded constitution is not signed)"
	switch {
	case p.VerificationKey != "" && p.BundlePath == "":
		bad("POLICY_BUNDLE_VERIFICATION_KEY", localOnly)
	case p.SkipVerify && p.BundlePath == "":
		bad("POLICY_BUNDLE_SKIP_VERIFY", localOnly)
	case p.VerificationKey != "" && p.SkipVerify:
		bad("POLICY_BUNDLE_SKIP_VERIFY", "cannot be combined with POLICY_BUNDLE_VERIFICATION_KEY: verify the bundle or skip verifying it")
	}
	if !slices.Contains(signingAlgs, p.SigningAlg) {
		bad("POLICY_BUNDLE_SIGNING_ALG", "%q is not a signing algorithm (accepted: %s)", p.SigningAlg, strings.Join(signingAlgs, ", "))
	}
	if p.VerificationKeyID == "" {
		bad("POLICY_BUNDLE_VERIFICATION_KEY_ID", "is empty (default: default)")
	}
	a := c.Admission
	if a.MaxInFlight < 0 || a.MaxInFlight > 100000 {
		bad("ADMISSION_MAX_IN_FLIGHT", "%d is out of range (accepted: 0 for GOMAXPROCS-1, or 1-100000)", a.MaxInFlight)
	}
	if a.MaxQueue < 0 || a.MaxQueue > admission.MaxQueueCap {
		bad("ADMISSION_MAX_QUEUE", "%d is out of range (accepted: 0 for 64 × ADMISSION_MAX_IN_FLIGHT up to %d, or 1-%d)", a.MaxQueue, admission.MaxQueueCap, admission.MaxQueueCap)
	}
	if a.QueueTimeout < 0 || a.QueueTimeout > 10*time.Second {
		bad("ADMISSION_QUEUE_TIMEOUT", "%s is out of range (accepted: 0 for EVAL_TIMEOUT, up to 10s)", a.QueueTimeout)
	}
	cc := c.Cache
	if cc.L1Size < 1 || cc.L1Size > 10_000_000 {
		bad("L1_CACHE_SIZE", "%d is out of range (accepted: 1-10000000 entries)", cc.L1Size)
	}
	if cc.RawSize < 0 || cc.RawSize > 10_000_000 {
		bad("RAW_CACHE_SIZE", "%d is out of range (accepted: 0 to turn the raw-body tier off, up to 10000000 entries)", cc.RawSize)
	}
	if cc.TTL < time.Second {
		bad("DEFAULT_CACHE_TTL", "%s is too short (accepted: 1s or more)", cc.TTL)
	}
	if cc.RedisURL != "" {
		// The loader trims the value: white space left here would reach the
		// cache's parser as part of the URL. Then the cache's own parser
		// (its nodes' hosts and ports too), so that what starts is what
		// connects (its errors never include the URL: it may hold a
		// password).
		const accepted = "(accepted: redis://[:password@]host:port[/db], rediss:// for TLS, redis://[:password@]h1:p1,h2:p2 for a cluster)"
		if strings.TrimSpace(cc.RedisURL) != cc.RedisURL {
			bad("REDIS_URL", "begins or ends with white space %s", accepted)
		} else if err := cache.ValidateRedisURL(cc.RedisURL); err != nil {
			bad("REDIS_URL", "%v %s", err, accepted)
		}
		// The key signs L2 entries: with the cache off there are none
		// (the URL still serves acgs gateway's shared counters).
		if cc.Enabled && len(cc.SigningKey) < 32 {
			bad("CACHE_SIGNING_KEY", "is required when REDIS_URL is set and must be at least 32 bytes (got %d); generate one with: openssl rand -hex 32", len(cc.SigningKey))
		}
		for i, k := range cc.PreviousSigningKeys {
			if len(k) < 32 {
				bad("CACHE_SIGNING_KEY_PREVIOUS", "key %d is shorter than 32 bytes", i+1)
			}
		}
	}
	if cc.L2Timeout < 100*time.Microsecond || cc.L2Timeout > 10*time.Second {
		bad("L2_TIMEOUT", "%s is out of range (accepted: 100µs to 10s)", cc.L2Timeout)
	}
	if cc.BatchSize < 1 || cc.BatchSize > 10000 {
		bad("BATCH_SIZE", "%d is out of range (accepted: 1-10000)", cc.BatchSize)
	}
	if cc.BatchWindow < 100*time.Microsecond || cc.BatchWindow > 10*time.Second {
		bad("BATCH_WINDOW", "%s is out of range (accepted: 100µs to 10s)", cc.BatchWindow)
	}
	if cc.QueueSize < 1 || cc.QueueSize > maxQueueSize {
		bad("CACHE_WRITE_QUEUE_SIZE", "%d is out of range (accepted: 1-%d)", cc.QueueSize, maxQueueSize)
	}
	l := c.Log
	switch l.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("LOG_LEVEL", "%q is not a level (accepted: debug, info, warn, error)", l.Level)
	}
	switch l.Format {
	case "json", "text":
	default:
		bad("LOG_FORMAT", "%q is not a format (accepted: json, text)", l.Format)
	}
	if l.DecisionLog != "off" && l.DecisionLog != "stdout" && (!strings.HasPrefix(l.DecisionLog, "file:") || len(l.DecisionLog) == len("file:")) {
		bad("DECISION_LOG", "%q is not a sink (accepted: off, stdout, file:/path/to/file)", l.DecisionLog)
	}
	for _, m := range l.DecisionLogMask {
		if err := telemetry.CheckMaskPointer(m); err != nil {
			bad("DECISION_LOG_MASK", "%v (accepted: comma-separated pointers into the input such as /context/agent/id or, as OPA writes them, /input/context/agent/id)", err)
		}
	}
	if l.DecisionLogSize < 1 || l.DecisionLogSize > maxQueueSize {
		bad("DECISION_LOG_QUEUE_SIZE", "%d is out of range (accepted: 1-%d)", l.DecisionLogSize, maxQueueSize)
	}
	pf := c.Perf
	for name, v := range map[string]float64{"PERFORMANCE_TARGET_P50_MS": pf.TargetP50MS, "PERFORMANCE_TARGET_P95_MS": pf.TargetP95MS, "PERFORMANCE_TARGET_P99_MS": pf.TargetP99MS} {
		if !(v > 0) || math.IsInf(v, 0) { // NaN compares false
			bad(name, "%g must be a positive finite number of milliseconds", v)
		}
	}
	if r := pf.CacheHitRateTarget; !(r >= 0 && r <= 1) { // NaN compares false
		bad("CACHE_HIT_RATE_TARGET", "%g is out of range (accepted: 0-1)", pf.CacheHitRateTarget)
	}
	if pf.WindowSpan < time.Second || pf.WindowSpan > time.Hour {
		bad("METRICS_WINDOW", "%s is out of range (accepted: 1s to 1h)", pf.WindowSpan)
	}
	if r := c.Memory.LimitRatio; math.IsNaN(r) || r < 0 || r > 1 {
		bad("MEMORY_LIMIT_RATIO", "%g is out of range (accepted: 0 to turn it off, or a share of the container's memory limit above 0 and at most 1, e.g. %g)", r, memlimit.DefaultRatio)
	}
	if m := c.Memory.GCMinHeadroomMiB; m < 0 || m > 1<<16 {
		bad("GC_MIN_HEADROOM_MB", "%d is out of range (accepted: 0 to turn it off, or MiB up to 65536, e.g. %d)", m, memlimit.DefaultHeadroomMiB)
	}
	for i, t := range c.AdminTok {
		if len(t) < 16 {
			bad("ADMIN_TOKEN", "token %d is shorter than 16 characters", i+1)
		}
	}
	return errors.Join(errs...)
}

// Addr is the listen address: HOST and PORT joined, an IPv6 address in
// brackets (HOST may be given with or without them).
func (c *Config) Addr() string {
	return net.JoinHostPort(Unbracket(c.Server.Host), strconv.Itoa(c.Server.Port))
}

// Unbracket removes the brackets of an IPv6 literal written as in a URL
// ("[::1]"): the form net.JoinHostPort adds them to.
func Unbracket(host string) string {
	if len(host) >= 2 && host[0] == '[' && host[len(host)-1] == ']' {
		return host[1 : len(host)-1]
	}
	return host
}

// checkHost accepts what HOST may be: empty (every interface), an IP
// address (IPv6 with or without brackets, with a zone such as fe80::1%eth0)
// or a host name. The error completes a sentence that begins with the value.
func checkHost(host string) error {
	if host == "" {
		return nil
	}
	if h := Unbracket(host); h != host {
		if a, err := netip.ParseAddr(h); err != nil || !a.Is6() {
			return errors.New("has brackets but is not an IPv6 address")
		}
		return nil
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return nil
	}
	if _, port, err := net.SplitHostPort(host); err == nil {
		return fmt.Errorf("includes a port (%s): give it as PORT", port)
	}
	if !isHostName(host) {
		return errors.New("is neither an IP address nor a host name")
	}
	return nil
}

// isHostName reports whether s is a DNS name: dot-separated labels of
// letters, digits, hyphens (not at either end) and underscores (container
// names), each at most 63 bytes, 253 in all, an optional final dot.
func isHostName(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			switch {
			case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			default:
				return false
			}
		}
	}
	return true
}
