package config_test

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/acgs-lite/acgs/internal/config"
)

func load(t *testing.T, env map[string]string, args ...string) (config.Config, error) {
	t.Helper()
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	l := config.NewLoader(fs, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err := fs.Parse(args); err != nil {
		return config.Config{}, err
	}
	return l.Config()
}

func TestDefaultsAreValid(t *testing.T) {
	c, err := load(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	if c.Server.Port != 8004 || c.Policy.ConstitutionalHash != config.DefaultConstitutionalHash || c.Policy.EvalTimeout != 100*time.Millisecond ||
		c.Cache.L1Size != 10000 || c.Cache.TTL != 300*time.Second || c.Cache.L2Timeout != 2*time.Millisecond || c.Cache.BatchSize != 10 ||
		c.Cache.BatchWindow != 5*time.Millisecond || c.Server.MaxRequestBytes != 1<<20 || c.Server.MaxBatchItems != 1000 || c.Cache.RedisURL != "" {
		t.Errorf("unexpected defaults: %+v", c)
	}
}

func TestEnvAndFlags(t *testing.T) {
	c, err := load(t, map[string]string{
		"PORT": "9000", "EVAL_TIMEOUT": "250ms", "DEFAULT_CACHE_TTL": "60", "ADMIN_TOKEN": "aaaaaaaaaaaaaaaa, bbbbbbbbbbbbbbbb",
		"PARTIAL_EVAL_KEYS": "input.type", "DECISION_LOG_MASK": "/a,/b/c", "REDIS_URL": "redis://127.0.0.1:6379",
		"CACHE_SIGNING_KEY": strings.Repeat("k", 32),
	}, "--port", "9100")
	if err != nil {
		t.Fatal(err)
	}
	if c.Server.Port != 9100 {
		t.Errorf("flag did not win over env: %d", c.Server.Port)
	}
	if c.Policy.EvalTimeout != 250*time.Millisecond || c.Cache.TTL != time.Minute {
		t.Errorf("durations: %v %v", c.Policy.EvalTimeout, c.Cache.TTL)
	}
	if len(c.AdminTok) != 2 || len(c.Policy.PartialEvalKeys) != 1 || len(c.Log.DecisionLogMask) != 2 {
		t.Errorf("lists: %v %v %v", c.AdminTok, c.Policy.PartialEvalKeys, c.Log.DecisionLogMask)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("valid config refused: %v", err)
	}
}

func TestBadEnvNamesTheVariable(t *testing.T) {
	for _, tc := range []struct{ env, val string }{
		{"PORT", "abc"}, {"EVAL_TIMEOUT", "soon"}, {"CACHE_ENABLED", "maybe"}, {"CACHE_HIT_RATE_TARGET", "high"},
	} {
		_, err := load(t, map[string]string{tc.env: tc.val})
		if err == nil || !strings.Contains(err.Error(), tc.env) {
			t.Errorf("%s=%s: error %v does not name the variable", tc.env, tc.val, err)
		}
	}
}

func TestValidateNamesSettingAndAcceptedValues(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*config.Config)
		want   []string
	}{
		{"port", func(c *config.Config) { c.Server.Port = 70000 }, []string{"PORT", "1-65535"}},
		{"hash", func(c *config.Config) { c.Policy.ConstitutionalHash = "xyz" }, []string{"CONSTITUTIONAL_HASH", "16 lowercase hex"}},
		{"eval timeout", func(c *config.Config) { c.Policy.EvalTimeout = 0 }, []string{"EVAL_TIMEOUT", "1ms to 1m"}},
		{"log level", func(c *config.Config) { c.Log.Level = "loud" }, []string{"LOG_LEVEL", "debug, info, warn, error"}},
		{"log format", func(c *config.Config) { c.Log.Format = "xml" }, []string{"LOG_FORMAT", "json, text"}},
		{"decision log", func(c *config.Config) { c.Log.DecisionLog = "syslog" }, []string{"DECISION_LOG", "off, stdout, file:"}},
		{"mask", func(c *config.Config) { c.Log.DecisionLogMask = []string{"context.agent"} }, []string{"DECISION_LOG_MASK", "JSON pointer"}},
		{"mask on the result", func(c *config.Config) { c.Log.DecisionLogMask = []string{"/input/context/agent/id", "/result/reasons"} }, []string{"DECISION_LOG_MASK", "/result/reasons", "result is not supported", "/input/context/agent/id"}},
		{"mask of the whole input", func(c *config.Config) { c.Log.DecisionLogMask = []string{"/input"} }, []string{"DECISION_LOG_MASK", "whole input"}},
		{"mask with a bad escape", func(c *config.Config) { c.Log.DecisionLogMask = []string{"/a~2b"} }, []string{"DECISION_LOG_MASK", "bad escape"}},
		{"redis url", func(c *config.Config) { c.Cache.RedisURL = "http://x"; c.Cache.SigningKey = strings.Repeat("k", 32) }, []string{"REDIS_URL", "redis://"}},
		{"signing key required", func(c *config.Config) { c.Cache.RedisURL = "redis://127.0.0.1:6379" }, []string{"CACHE_SIGNING_KEY", "at least 32 bytes"}},
		{"short admin token", func(c *config.Config) { c.AdminTok = []string{"short"} }, []string{"ADMIN_TOKEN", "16 characters"}},
		{"partial eval keys", func(c *config.Config) { c.Policy.PartialEvalKeys = []string{"type"} }, []string{"PARTIAL_EVAL_KEYS", "input.type"}},
		{"bundle and config file", func(c *config.Config) { c.Policy.BundlePath = "x"; c.Policy.ConfigFile = "y" }, []string{"POLICY_BUNDLE_PATH", "CONFIG_FILE"}},
		{"verification key without a bundle path", func(c *config.Config) { c.Policy.VerificationKey = "k" }, []string{"POLICY_BUNDLE_VERIFICATION_KEY", "applies to POLICY_BUNDLE_PATH only"}},
		{"skip verify without a bundle path", func(c *config.Config) { c.Policy.SkipVerify = true }, []string{"POLICY_BUNDLE_SKIP_VERIFY", "applies to POLICY_BUNDLE_PATH only"}},
		{"verification key and skip verify", func(c *config.Config) {
			c.Policy.BundlePath, c.Policy.VerificationKey, c.Policy.SkipVerify = "b", "k", true
		}, []string{"POLICY_BUNDLE_SKIP_VERIFY", "verify the bundle or skip"}},
		{"signing algorithm", func(c *config.Config) { c.Policy.SigningAlg = "none" }, []string{"POLICY_BUNDLE_SIGNING_ALG", "RS256"}},
		{"empty key id", func(c *config.Config) { c.Policy.VerificationKeyID = "" }, []string{"POLICY_BUNDLE_VERIFICATION_KEY_ID"}},
		{"l1 size", func(c *config.Config) { c.Cache.L1Size = 0 }, []string{"L1_CACHE_SIZE"}},
		{"batch items", func(c *config.Config) { c.Server.MaxBatchItems = 0 }, []string{"MAX_BATCH_ITEMS"}},
		{"decision log queue too large", func(c *config.Config) { c.Log.DecisionLogSize = 100_000_000_000 }, []string{"DECISION_LOG_QUEUE_SIZE", "1-10000000"}},
		{"cache write queue too large", func(c *config.Config) { c.Cache.QueueSize = 100_000_000_000 }, []string{"CACHE_WRITE_QUEUE_SIZE", "1-10000000"}},
		{"hit rate target", func(c *config.Config) { c.Perf.CacheHitRateTarget = 2 }, []string{"CACHE_HIT_RATE_TARGET", "0-1"}},
		{"admission in flight negative", func(c *config.Config) { c.Admission.MaxInFlight = -1 }, []string{"ADMISSION_MAX_IN_FLIGHT", "GOMAXPROCS-1"}},
		{"admission queue negative", func(c *config.Config) { c.Admission.MaxQueue = -2 }, []string{"ADMISSION_MAX_QUEUE", "1-1000000"}},
		{"admission queue timeout too long", func(c *config.Config) { c.Admission.QueueTimeout = time.Minute }, []string{"ADMISSION_QUEUE_TIMEOUT", "up to 10s"}},
		{"memory limit ratio above 1", func(c *config.Config) { c.Memory.LimitRatio = 90 }, []string{"MEMORY_LIMIT_RATIO", "0 to turn it off", "at most 1"}},
		{"memory limit ratio negative", func(c *config.Config) { c.Memory.LimitRatio = -0.5 }, []string{"MEMORY_LIMIT_RATIO"}},
		{"memory limit ratio NaN", func(c *config.Config) { c.Memory.LimitRatio = math.NaN() }, []string{"MEMORY_LIMIT_RATIO"}},
		{"gc headroom negative", func(c *config.Config) { c.Memory.GCMinHeadroomMiB = -1 }, []string{"GC_MIN_HEADROOM_MB", "0 to turn it off"}},
		{"gc headroom too large", func(c *config.Config) { c.Memory.GCMinHeadroomMiB = 1 << 20 }, []string{"GC_MIN_HEADROOM_MB", "up to 65536"}},
		{"admission queue timeout negative", func(c *config.Config) { c.Admission.QueueTimeout = -time.Millisecond }, []string{"ADMISSION_QUEUE_TIMEOUT"}},
		{"admission in flight too large", func(c *config.Config) { c.Admission.MaxInFlight = 100001 }, []string{"ADMISSION_MAX_IN_FLIGHT", "100001", "1-100000"}},
		{"admission queue -1", func(c *config.Config) { c.Admission.MaxQueue = -1 }, []string{"ADMISSION_MAX_QUEUE", "-1", "1-1000000"}},
		{"admission queue too large", func(c *config.Config) { c.Admission.MaxQueue = 1000001 }, []string{"ADMISSION_MAX_QUEUE", "1000001", "1-1000000"}},
		{"admission queue timeout -1s", func(c *config.Config) { c.Admission.QueueTimeout = -time.Second }, []string{"ADMISSION_QUEUE_TIMEOUT", "-1s", "up to 10s"}},
		{"admission queue timeout 11s", func(c *config.Config) { c.Admission.QueueTimeout = 11 * time.Second }, []string{"ADMISSION_QUEUE_TIMEOUT", "11s", "up to 10s"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := config.Default()
			tc.mutate(&c)
			err := c.Validate()
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// TestRedisURLWithTheCacheOff: with CACHE_ENABLED=false there are no L2
// entries to sign, so REDIS_URL needs no signing key (the service warns
// that it is unused, as the README says; acgs gateway still counts calls
// there); the URL itself is still checked.
func TestRedisURLWithTheCacheOff(t *testing.T) {
	c := config.Default()
	c.Cache.Enabled, c.Cache.RedisURL = false, "redis://127.0.0.1:6379"
	if err := c.Validate(); err != nil {
		t.Fatalf("refused: %v", err)
	}
	c.Cache.RedisURL = "http://x"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "REDIS_URL") {
		t.Fatalf("a malformed URL with the cache off: %v", err)
	}
}

func TestAdmissionSettings(t *testing.T) {
	c, err := load(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Admission != (config.Admission{}) {
		t.Errorf("admission defaults: %+v", c.Admission)
	}
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want config.Admission
	}{
		{"env", map[string]string{"ADMISSION_MAX_IN_FLIGHT": "3", "ADMISSION_MAX_QUEUE": "40", "ADMISSION_QUEUE_TIMEOUT": "20ms"}, nil,
			config.Admission{MaxInFlight: 3, MaxQueue: 40, QueueTimeout: 20 * time.Millisecond}},
		{"seconds", map[string]string{"ADMISSION_QUEUE_TIMEOUT": "0.25"}, nil, config.Admission{QueueTimeout: 250 * time.Millisecond}},
		{"as long as an evaluation", map[string]string{"ADMISSION_QUEUE_TIMEOUT": "0"}, nil, config.Admission{}},
		{"largest", map[string]string{"ADMISSION_MAX_IN_FLIGHT": "100000", "ADMISSION_MAX_QUEUE": "1000000", "ADMISSION_QUEUE_TIMEOUT": "10s"}, nil,
			config.Admission{MaxInFlight: 100000, MaxQueue: 1000000, QueueTimeout: 10 * time.Second}},
		{"as long as WRITE_TIMEOUT allows", map[string]string{"WRITE_TIMEOUT": "2s", "EVAL_TIMEOUT": "1800ms", "ADMISSION_QUEUE_TIMEOUT": "1800ms"}, nil, config.Admission{QueueTimeout: 1800 * time.Millisecond}},
		{"flags win", map[string]string{"ADMISSION_MAX_IN_FLIGHT": "3"}, []string{"--admission-max-in-flight", "5", "--admission-max-queue", "7", "--admission-queue-timeout", "1s"},
			config.Admission{MaxInFlight: 5, MaxQueue: 7, QueueTimeout: time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := load(t, tc.env, tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			if c.Admission != tc.want {
				t.Errorf("got %+v, want %+v", c.Admission, tc.want)
			}
			if err := c.Validate(); err != nil {
				t.Errorf("refused: %v", err)
			}
		})
	}
	if _, err := load(t, map[string]string{"ADMISSION_MAX_QUEUE": "lots"}); err == nil || !strings.Contains(err.Error(), "ADMISSION_MAX_QUEUE") {
		t.Errorf("bad ADMISSION_MAX_QUEUE: %v", err)
	}
	// Out of range from the environment: loaded, then refused by Validate
	// naming the variable.
	for _, env := range []map[string]string{
		{"ADMISSION_MAX_IN_FLIGHT": "-1"}, {"ADMISSION_MAX_IN_FLIGHT": "100001"},
		{"ADMISSION_MAX_QUEUE": "-1"}, {"ADMISSION_MAX_QUEUE": "1000001"},
		{"ADMISSION_QUEUE_TIMEOUT": "-1s"}, {"ADMISSION_QUEUE_TIMEOUT": "11s"},
	} {
		c, err := load(t, env)
		if err == nil {
			err = c.Validate()
		}
		for name := range env {
			if err == nil || !strings.Contains(err.Error(), name) {
				t.Errorf("%v: %v, want a refusal naming %s", env, err, name)
			}
		}
	}
}

func TestMemorySettings(t *testing.T) {
	for _, tc := range []struct {
		name     string
		env      map[string]string
		args     []string
		want     float64
		headroom int
	}{
		{"default", nil, nil, 0.9, 20},
		{"env", map[string]string{"MEMORY_LIMIT_RATIO": "0.75"}, nil, 0.75, 20},
		{"off", map[string]string{"MEMORY_LIMIT_RATIO": "0"}, nil, 0, 20},
		{"whole limit", nil, []string{"--memory-limit-ratio", "1"}, 1, 20},
		{"flag wins", map[string]string{"MEMORY_LIMIT_RATIO": "0.5"}, []string{"--memory-limit-ratio", "0"}, 0, 20},
		{"gc headroom env", map[string]string{"GC_MIN_HEADROOM_MB": "64"}, nil, 0.9, 64},
		{"gc headroom off", nil, []string{"--gc-min-headroom-mb", "0"}, 0.9, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := load(t, tc.env, tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			if c.Memory.LimitRatio != tc.want || c.Memory.GCMinHeadroomMiB != tc.headroom {
				t.Errorf("got %g and %d MiB, want %g and %d MiB", c.Memory.LimitRatio, c.Memory.GCMinHeadroomMiB, tc.want, tc.headroom)
			}
			if err := c.Validate(); err != nil {
				t.Errorf("refused: %v", err)
			}
		})
	}
	if _, err := load(t, map[string]string{"MEMORY_LIMIT_RATIO": "90%"}); err == nil || !strings.Contains(err.Error(), "MEMORY_LIMIT_RATIO") {
		t.Errorf("bad MEMORY_LIMIT_RATIO: %v", err)
	}
	if _, err := load(t, map[string]string{"GC_MIN_HEADROOM_MB": "20MiB"}); err == nil || !strings.Contains(err.Error(), "GC_MIN_HEADROOM_MB") {
		t.Errorf("bad GC_MIN_HEADROOM_MB: %v", err)
	}
}

func TestRedisClusterURL(t *testing.T) {
	for url, ok := range map[string]bool{
		"redis://:pw@127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003/0": true,
		"redis://127.0.0.1:7001,127.0.0.1:7002":                      true,
		"rediss://h1:6380":                                           true,
		"redis://127.0.0.1:7001,notaport":                            false,
		"redis://:pa,ss@127.0.0.1:7001":                              true, // a comma in the password is not a node list
		"http://127.0.0.1:7001,127.0.0.1:7002":                       false,
	} {
		c := config.Default()
		c.Cache.RedisURL, c.Cache.SigningKey = url, strings.Repeat("k", 32)
		if err := c.Validate(); (err == nil) != ok {
			t.Errorf("%s: accepted=%v, want %v (%v)", url, err == nil, ok, err)
		}
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	c := config.Default()
	c.Server.Port = 0
	c.Log.Level = "x"
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), "PORT") || !strings.Contains(err.Error(), "LOG_LEVEL") {
		t.Fatalf("want both problems, got %v", err)
	}
}

// Secrets given in the environment are used, and a flag still overrides
// them, but --help never prints them as a flag's default.
func TestSecretsStayOutOfHelp(t *testing.T) {
	env := map[string]string{
		"ADMIN_TOKEN":                "admin-token-from-env-0123456789",
		"CACHE_SIGNING_KEY":          "signing-key-from-env-0123456789abcdef",
		"CACHE_SIGNING_KEY_PREVIOUS": "previous-key-from-env-0123456789abcdef",
		"REDIS_URL":                  "redis://:hunter2-password@127.0.0.1:6379",
	}
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	l := config.NewLoader(fs, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if help := fs.FlagUsages(); strings.Contains(help, "from-env") || strings.Contains(help, "hunter2") {
		t.Fatalf("--help shows a secret:\n%s", help)
	}
	if err := fs.Parse([]string{"--admin-token", "admin-token-from-flag-0123456789"}); err != nil {
		t.Fatal(err)
	}
	c, err := l.Config()
	if err != nil {
		t.Fatal(err)
	}
	if c.Cache.SigningKey != env["CACHE_SIGNING_KEY"] || c.Cache.RedisURL != env["REDIS_URL"] || len(c.AdminTok) != 1 || c.AdminTok[0] != "admin-token-from-flag-0123456789" {
		t.Fatalf("secrets not taken from the environment and the flag: key %q, url %q, admin %q", c.Cache.SigningKey, c.Cache.RedisURL, c.AdminTok)
	}
}

// The signing key is trimmed as the previous keys are: a key read from a
// file with its newline would otherwise sign differently from the same
// key once rotation moves it to CACHE_SIGNING_KEY_PREVIOUS, and from a
// replica given it without the newline (every entry then refused as
// tampered).
func TestSigningKeysAreTrimmedAlike(t *testing.T) {
	key := "signing-key-0123456789abcdef0123456789"
	for _, args := range [][]string{nil, {"--cache-signing-key", " " + key + "\n"}} {
		c, err := load(t, map[string]string{"CACHE_SIGNING_KEY": key + "\n", "CACHE_SIGNING_KEY_PREVIOUS": " " + key + " \n"}, args...)
		if err != nil {
			t.Fatal(err)
		}
		if c.Cache.SigningKey != key || len(c.Cache.PreviousSigningKeys) != 1 || c.Cache.PreviousSigningKeys[0] != key {
			t.Errorf("args %q: key %q, previous %q, want both %q", args, c.Cache.SigningKey, c.Cache.PreviousSigningKeys, key)
		}
	}
}

// DECISION_LOG_MASK takes pointers into the input written relative to it or
// under /input, as OPA's mask policies and the log's erased field write them.
func TestDecisionLogMaskInputForm(t *testing.T) {
	c := config.Default()
	c.Log.DecisionLogMask = []string{"/context/agent/id", "/input/context/agent/id", "/input/result/x", "/results"}
	if err := c.Validate(); err != nil {
		t.Fatalf("pointers into the input refused: %v", err)
	}
}

// TestEvalTimeoutBeyondWriteTimeoutAccepted: the gateway shares this
// configuration and has no WRITE_TIMEOUT, so an EVAL_TIMEOUT longer than
// the server's decision window is not refused (de4a1df refused it, and an
// EVAL_TIMEOUT of 45s stopped `acgs gateway` starting; review).
func TestEvalTimeoutBeyondWriteTimeoutAccepted(t *testing.T) {
	c := config.Default()
	c.Policy.EvalTimeout = 45 * time.Second
	c.Admission.QueueTimeout = 10 * time.Second
	c.Server.WriteTimeout = 5 * time.Second
	if err := c.Validate(); err != nil {
		t.Fatalf("EVAL_TIMEOUT 45s and ADMISSION_QUEUE_TIMEOUT 10s with WRITE_TIMEOUT 5s: %v", err)
	}
}
