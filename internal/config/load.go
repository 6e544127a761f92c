package config

import (
	"errors"
	"fmt"
	"math"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
)

// Loader binds every setting to a flag whose default comes from its
// environment variable (or the built-in default), so that `acgs serve --help`
// lists them all with the variable's name and a flag wins over the variable.
type Loader struct {
	cfg     *Config
	fs      *pflag.FlagSet
	envErrs []envError
	lookup  func(string) (string, bool)
	adminTo string
	mask    string
	pekeys  string
	prevKey string
}

// NewLoader registers the flags of cfg (pre-filled with Default()) on fs,
// reading the environment through lookup (os.LookupEnv when nil).
func NewLoader(fs *pflag.FlagSet, lookup func(string) (string, bool)) *Loader {
	if lookup == nil {
		lookup = os.LookupEnv
	}
	c := Default()
	l := &Loader{cfg: &c, fs: fs, lookup: lookup}

	l.str(fs, &c.Server.Host, "host", "HOST", "address to listen on (empty: all interfaces)")
	l.int(fs, &c.Server.Port, "port", "PORT", "HTTP port")
	l.int64(fs, &c.Server.MaxRequestBytes, "max-request-bytes", "MAX_REQUEST_BYTES", "largest accepted request body in bytes, after gzip decompression")
	l.int(fs, &c.Server.MaxDepth, "max-request-depth", "MAX_REQUEST_DEPTH", "deepest accepted JSON nesting")
	l.int(fs, &c.Server.MaxBatchItems, "max-batch-items", "MAX_BATCH_ITEMS", "most items in one batch request")
	l.dur(fs, &c.Server.ReadHeaderTimeout, "read-header-timeout", "READ_HEADER_TIMEOUT", "time allowed to read request headers")
	l.dur(fs, &c.Server.ReadTimeout, "read-timeout", "READ_TIMEOUT", "time allowed to read a whole request")
	l.dur(fs, &c.Server.WriteTimeout, "write-timeout", "WRITE_TIMEOUT", "time allowed to write a response")
	l.dur(fs, &c.Server.IdleTimeout, "idle-timeout", "IDLE_TIMEOUT", "keep-alive idle timeout")
	l.dur(fs, &c.Server.ShutdownTimeout, "shutdown-timeout", "SHUTDOWN_TIMEOUT", "time allowed for in-flight requests on SIGTERM")

	l.str(fs, &c.Policy.BundlePath, "bundle", "POLICY_BUNDLE_PATH", "policy bundle directory or .tar.gz (empty: the embedded constitution)")
	l.secretTrimmed(fs, &c.Policy.VerificationKey, "verification-key", "POLICY_BUNDLE_VERIFICATION_KEY", "verify a signed POLICY_BUNDLE_PATH with this PEM public key (or HMAC secret), or a file holding it, as opa run --verification-key")
	l.str(fs, &c.Policy.VerificationKeyID, "verification-key-id", "POLICY_BUNDLE_VERIFICATION_KEY_ID", "id of the verification key when the signature names none")
	l.str(fs, &c.Policy.SigningAlg, "signing-alg", "POLICY_BUNDLE_SIGNING_ALG", "algorithm of the bundle's signature")
	l.bool(fs, &c.Policy.SkipVerify, "skip-verify", "POLICY_BUNDLE_SKIP_VERIFY", "read a signed POLICY_BUNDLE_PATH without verifying its signature")
	l.str(fs, &c.Policy.ConfigFile, "config-file", "CONFIG_FILE", "OPA configuration file (services, bundles, keys) for remote bundles")
	l.str(fs, &c.Policy.ConstitutionalHash, "constitutional-hash", "CONSTITUTIONAL_HASH", "constitutional hash that requests and bundles must carry")
	l.dur(fs, &c.Policy.EvalTimeout, "eval-timeout", "EVAL_TIMEOUT", "deadline of one policy evaluation (fail closed beyond it)")
	l.str(fs, &c.Policy.DefaultDecision, "default-decision", "DEFAULT_DECISION", "policy path answered by POST /")
	l.str(fs, &c.Policy.Evaluator, "evaluator", "EVALUATOR", "vm (OPA's plans run by the compiled evaluator; topdown for what it cannot run) or topdown")
	l.bool(fs, &c.Policy.PartialEval, "partial-eval", "PARTIAL_EVAL", "answer through partial-evaluation plans where they are faster")
	l.pekeys = strings.Join(c.Policy.PartialEvalKeys, ",")
	l.str(fs, &l.pekeys, "partial-eval-keys", "PARTIAL_EVAL_KEYS", "plan keys (comma-separated input refs such as input.type) of documents whose entry-point annotation declares none (custom.plans)")
	l.int(fs, &c.Policy.PlanCacheSize, "plan-cache-size", "PLAN_CACHE_SIZE", "most partial-evaluation plans kept (LRU)")
	l.str(fs, &c.Policy.CacheWarmFile, "cache-warm-file", "CACHE_WARM_FILE", "JSON file of warm-up requests (empty: the built-in scenarios)")

	l.int(fs, &c.Admission.MaxInFlight, "admission-max-in-flight", "ADMISSION_MAX_IN_FLIGHT", "policy evaluations run at once; more wait or are shed with 503 overloaded (0: GOMAXPROCS-1, at least 1)")
	l.int(fs, &c.Admission.MaxQueue, "admission-max-queue", "ADMISSION_MAX_QUEUE", "requests that may wait for an evaluation slot; a newcomer displaces the oldest beyond it (0: 64 × the evaluations in flight, at most 1000000)")
	l.dur(fs, &c.Admission.QueueTimeout, "admission-queue-timeout", "ADMISSION_QUEUE_TIMEOUT", "longest wait for an evaluation slot before 503 overloaded (0: EVAL_TIMEOUT)")

	l.bool(fs, &c.Cache.Enabled, "cache", "CACHE_ENABLED", "use the decision cache")
	l.int(fs, &c.Cache.L1Size, "l1-cache-size", "L1_CACHE_SIZE", "most decisions kept in process")
	l.int(fs, &c.Cache.RawSize, "raw-cache-size", "RAW_CACHE_SIZE", "most request bodies whose L1 entry is remembered by their bytes, so a byte-identical repeat is not decoded (0: off; off while the decision log is on)")
	l.dur(fs, &c.Cache.TTL, "cache-ttl", "DEFAULT_CACHE_TTL", "lifetime of a cached decision (L1 and L2)")
	// A URL has no white space of its own: what surrounds it (the newline
	// that ends a Kubernetes Secret made with --from-file) is dropped here,
	// so that what is validated is what the cache connects to.
	l.secretTrimmed(fs, &c.Cache.RedisURL, "redis-url", "REDIS_URL", "Redis for the shared L2 cache: redis://, rediss://, or several comma-separated cluster nodes (empty: L1 only)")
	l.secretTrimmed(fs, &c.Cache.SigningKey, "cache-signing-key", "CACHE_SIGNING_KEY", "HMAC key (≥ 32 bytes) signing L2 entries; required with REDIS_URL")
	l.secret(fs, &l.prevKey, "cache-signing-key-previous", "CACHE_SIGNING_KEY_PREVIOUS", "older signing keys still accepted while rotating (comma-separated)")
	l.dur(fs, &c.Cache.L2Timeout, "l2-timeout", "L2_TIMEOUT", "deadline of one L2 read")
	l.int(fs, &c.Cache.BatchSize, "batch-size", "BATCH_SIZE", "most entries per write-behind pipeline to Redis")
	l.dur(fs, &c.Cache.BatchWindow, "batch-window", "BATCH_WINDOW", "longest wait before a partial write-behind batch is flushed")
	l.int(fs, &c.Cache.QueueSize, "cache-write-queue-size", "CACHE_WRITE_QUEUE_SIZE", "bound of the write-behind queue (full: drop and count)")
	l.str(fs, &c.Cache.KeyPrefix, "cache-key-prefix", "CACHE_KEY_PREFIX", "prefix of every Redis key")

	l.str(fs, &c.Log.Level, "log-level", "LOG_LEVEL", "debug, info, warn or error")
	l.str(fs, &c.Log.Format, "log-format", "LOG_FORMAT", "json or text")
	l.str(fs, &c.Log.DecisionLog, "decision-log", "DECISION_LOG", "decision audit log: off, stdout or file:/path")
	l.str(fs, &l.mask, "decision-log-mask", "DECISION_LOG_MASK", "input JSON pointers erased from the decision log, comma-separated (/context/agent/id or, as OPA writes them, /input/context/agent/id)")
	l.int(fs, &c.Log.DecisionLogSize, "decision-log-queue-size", "DECISION_LOG_QUEUE_SIZE", "bound of the decision log queue (full: drop and count)")

	l.float(fs, &c.Perf.TargetP50MS, "target-p50-ms", "PERFORMANCE_TARGET_P50_MS", "p50 latency target reported by /v1/metrics")
	l.float(fs, &c.Perf.TargetP95MS, "target-p95-ms", "PERFORMANCE_TARGET_P95_MS", "p95 latency target")
	l.float(fs, &c.Perf.TargetP99MS, "target-p99-ms", "PERFORMANCE_TARGET_P99_MS", "p99 latency target")
	l.float(fs, &c.Perf.CacheHitRateTarget, "target-cache-hit-rate", "CACHE_HIT_RATE_TARGET", "cache hit rate target (0-1)")
	l.dur(fs, &c.Perf.WindowSpan, "metrics-window", "METRICS_WINDOW", "span of the rolling latency window")

	l.float(fs, &c.Memory.LimitRatio, "memory-limit-ratio", "MEMORY_LIMIT_RATIO", "GOMEMLIMIT = this share of the container's (cgroup's) memory limit, unless GOMEMLIMIT is set (0: off)")
	l.int(fs, &c.Memory.GCMinHeadroomMiB, "gc-min-headroom-mb", "GC_MIN_HEADROOM_MB", "the collector's heap goal is at least this many MiB above the live heap, unless GOGC is set (0: Go's default pacing)")

	l.secret(fs, &l.adminTo, "admin-token", "ADMIN_TOKEN", "bearer token(s) for admin endpoints, comma-separated during rotation (empty: admin endpoints answer 404)")
	return l
}

// Config returns the loaded configuration after flags were parsed, or the
// environment errors (a variable that does not parse names itself). A
// variable whose flag was given is not read, so its value cannot be wrong:
// the flag wins.
func (l *Loader) Config() (Config, error) {
	var errs []error
	for _, e := range l.envErrs {
		if f := l.fs.Lookup(e.flag); f != nil && f.Changed {
			continue
		}
		errs = append(errs, e.err)
	}
	if len(errs) > 0 {
		return Config{}, errors.Join(errs...)
	}
	c := *l.cfg
	c.Policy.PartialEvalKeys = splitList(l.pekeys)
	c.Log.DecisionLogMask = splitList(l.mask)
	c.Cache.PreviousSigningKeys = splitList(l.prevKey)
	c.AdminTok = splitList(l.adminTo)
	return c, nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// envError is a variable that does not parse, kept with its flag's name:
// it is an error only if the flag was not given.
type envError struct {
	flag string
	err  error
}

// rangeError is a parse error that says more than "is not <accepted>": the
// value has the right form but no setting can hold it.
type rangeError string

func (e rangeError) Error() string { return string(e) }

// env parses the variable name, if set, with parse, which stores the value
// only when it parses (a bad value leaves the default, so that --help shows
// it). The error echoes the value as it was given.
func (l *Loader) env(flag, name string, parse func(string) error, accepted string) {
	v, ok := l.lookup(name)
	if !ok {
		return
	}
	if err := parse(strings.TrimSpace(v)); err != nil {
		var re rangeError
		if errors.As(err, &re) {
			err = fmt.Errorf("%s: %q is %s", name, v, re)
		} else {
			err = fmt.Errorf("%s: %q is not %s", name, v, accepted)
		}
		l.envErrs = append(l.envErrs, envError{flag: flag, err: err})
	}
}

func usage(u, env string) string { return fmt.Sprintf("%s (env %s)", u, env) }

func (l *Loader) str(fs *pflag.FlagSet, p *string, flag, env, u string) {
	if v, ok := l.lookup(env); ok {
		*p = v
	}
	fs.StringVar(p, flag, *p, usage(u, env))
}

// secret is str for a value that must not show as the flag's default in
// --help (a token, a signing key, a URL with a password): the environment's
// value is kept, and the flag reports no default.
func (l *Loader) secret(fs *pflag.FlagSet, p *string, flag, env, u string) {
	if v, ok := l.lookup(env); ok {
		*p = v
	}
	fs.Var(secretValue{p: p}, flag, usage(u, env))
}

// secretTrimmed is secret for a value in which surrounding white space is
// never meant: it is dropped from the variable and from the flag.
func (l *Loader) secretTrimmed(fs *pflag.FlagSet, p *string, flag, env, u string) {
	if v, ok := l.lookup(env); ok {
		*p = strings.TrimSpace(v)
	}
	fs.Var(secretValue{p: p, trim: true}, flag, usage(u, env))
}

// secretValue is a string flag whose String (what --help prints as the
// default) is empty.
type secretValue struct {
	p    *string
	trim bool
}

func (v secretValue) String() string { return "" }
func (v secretValue) Set(s string) error {
	if v.trim {
		s = strings.TrimSpace(s)
	}
	*v.p = s
	return nil
}
func (v secretValue) Type() string { return "string" }

func (l *Loader) int(fs *pflag.FlagSet, p *int, flag, env, u string) {
	l.env(flag, env, func(s string) error {
		n, err := strconv.Atoi(s)
		if err == nil {
			*p = n
		}
		return err
	}, "an integer")
	fs.IntVar(p, flag, *p, usage(u, env))
}

func (l *Loader) int64(fs *pflag.FlagSet, p *int64, flag, env, u string) {
	l.env(flag, env, func(s string) error {
		n, err := strconv.ParseInt(s, 10, 64)
		if err == nil {
			*p = n
		}
		return err
	}, "an integer")
	fs.Int64Var(p, flag, *p, usage(u, env))
}

func (l *Loader) float(fs *pflag.FlagSet, p *float64, flag, env, u string) {
	l.env(flag, env, func(s string) error {
		f, err := strconv.ParseFloat(s, 64)
		if err == nil {
			*p = f
		}
		return err
	}, "a number")
	fs.Float64Var(p, flag, *p, usage(u, env))
}

func (l *Loader) bool(fs *pflag.FlagSet, p *bool, flag, env, u string) {
	l.env(flag, env, func(s string) error {
		b, err := strconv.ParseBool(s)
		if err == nil {
			*p = b
		}
		return err
	}, "a boolean (true or false)")
	fs.BoolVar(p, flag, *p, usage(u, env))
}

const durationForms = "a duration (such as 5ms, 2s, or a number of seconds)"

// dur accepts Go durations ("5ms") and, like the original service, plain
// numbers of seconds ("300"), in the environment and as a flag alike.
func (l *Loader) dur(fs *pflag.FlagSet, p *time.Duration, flag, env, u string) {
	l.env(flag, env, func(s string) error {
		d, err := parseDuration(s)
		if err == nil {
			*p = d
		}
		return err
	}, durationForms)
	fs.Var(durationValue{p}, flag, usage(u, env))
}

// maxDurationText is the longest time.Duration, as the errors cite it.
const maxDurationText = "2562047h47m16s, about 292 years"

// parseDuration reads a duration setting: a Go duration ("5ms", "1m30s") or
// a number of seconds ("300", "0.25"). A number that is not finite or whose
// duration does not fit time.Duration (beyond about 292 years either way)
// is refused with a rangeError, rather than wrapping around to a negative
// or meaningless duration.
func parseDuration(s string) (time.Duration, error) {
	if f, err := strconv.ParseFloat(s, 64); err == nil || errors.Is(err, strconv.ErrRange) {
		if math.IsNaN(f) || math.IsInf(f, 0) {
			if errors.Is(err, strconv.ErrRange) {
				return 0, rangeError("out of range (accepted: durations up to " + maxDurationText + ")")
			}
			return 0, rangeError("not a finite number (accepted: durations such as 5ms, 2s, or a number of seconds)")
		}
		ns := math.Round(f * float64(time.Second))
		// 2^63 ns is one past the longest duration, and float64(MaxInt64)
		// rounds up to it.
		if ns >= 1<<63 || ns < -(1<<63) {
			return 0, rangeError("out of range (accepted: durations up to " + maxDurationText + ")")
		}
		return time.Duration(ns), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil && goDurationRE.MatchString(s) {
		return 0, rangeError("out of range (accepted: durations up to " + maxDurationText + ")")
	}
	return d, err
}

// goDurationRE is the form of a Go duration: when time.ParseDuration
// refuses a string of this form, the duration is too long.
var goDurationRE = regexp.MustCompile(`^[-+]?(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))+$`)

// durationValue is a duration flag that accepts what the environment
// accepts (parseDuration), so that --eval-timeout 1 means one second as
// EVAL_TIMEOUT=1 does.
type durationValue struct{ p *time.Duration }

func (v durationValue) String() string {
	if v.p == nil || *v.p == 0 {
		return "0" // pflag's --help leaves a zero default out only when it reads "0"
	}
	return v.p.String()
}

func (v durationValue) Set(s string) error {
	d, err := parseDuration(strings.TrimSpace(s))
	if err != nil {
		var re rangeError
		if errors.As(err, &re) {
			return re
		}
		return errors.New("not " + durationForms)
	}
	*v.p = d
	return nil
}

func (v durationValue) Type() string { return "duration" }
