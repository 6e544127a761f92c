package config_test

import (
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/acgs-lite/acgs/internal/config"
)

// Every float setting refuses NaN and ±Inf, which compare false with any
// bound.
func TestNonFiniteFloatsRefused(t *testing.T) {
	for _, name := range []string{
		"PERFORMANCE_TARGET_P50_MS", "PERFORMANCE_TARGET_P95_MS", "PERFORMANCE_TARGET_P99_MS",
		"CACHE_HIT_RATE_TARGET", "MEMORY_LIMIT_RATIO",
	} {
		for _, v := range []string{"NaN", "nan", "Inf", "+Inf", "-Inf", "infinity"} {
			t.Run(name+"="+v, func(t *testing.T) {
				c, err := load(t, map[string]string{name: v})
				if err == nil {
					err = c.Validate()
				}
				if err == nil || !strings.Contains(err.Error(), name) {
					t.Errorf("accepted, or the error does not name %s: %v", name, err)
				}
			})
		}
	}
	for _, flag := range []string{"--target-p50-ms", "--target-p99-ms", "--target-cache-hit-rate", "--memory-limit-ratio"} {
		c, err := load(t, nil, flag, "NaN")
		if err == nil {
			err = c.Validate()
		}
		if err == nil {
			t.Errorf("%s NaN accepted", flag)
		}
	}
}

// A duration that is not finite or does not fit time.Duration is refused
// where it is read, with the value as given, not wrapped around to a
// negative duration that Validate then calls too short.
func TestDurationRange(t *testing.T) {
	for _, tc := range []struct {
		env, val string
		want     string // "" = valid
		d        time.Duration
	}{
		{"DEFAULT_CACHE_TTL", "1e10", "out of range", 0},
		{"EVAL_TIMEOUT", "inf", "not a finite number", 0},
		{"EVAL_TIMEOUT", "-Inf", "not a finite number", 0},
		{"EVAL_TIMEOUT", "NaN", "not a finite number", 0},
		{"EVAL_TIMEOUT", "1e30", "out of range", 0},
		{"EVAL_TIMEOUT", "1e400", "out of range", 0},
		{"IDLE_TIMEOUT", "10000000000", "out of range", 0},
		{"IDLE_TIMEOUT", "-10000000000", "out of range", 0},
		{"IDLE_TIMEOUT", "9223372037", "out of range", 0},
		{"IDLE_TIMEOUT", "3000000h", "out of range", 0},
		{"IDLE_TIMEOUT", "soon", "is not a duration", 0},
		{"IDLE_TIMEOUT", "9223372036", "", 9223372036 * time.Second},
		{"IDLE_TIMEOUT", "2562047h", "", 2562047 * time.Hour},
		{"DEFAULT_CACHE_TTL", "1e3", "", 1000 * time.Second},
		{"EVAL_TIMEOUT", "0.25", "", 250 * time.Millisecond},
		{"EVAL_TIMEOUT", " 1500us ", "", 1500 * time.Microsecond},
	} {
		t.Run(tc.env+"="+tc.val, func(t *testing.T) {
			c, err := load(t, map[string]string{tc.env: tc.val})
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				got := map[string]time.Duration{"IDLE_TIMEOUT": c.Server.IdleTimeout, "DEFAULT_CACHE_TTL": c.Cache.TTL, "EVAL_TIMEOUT": c.Policy.EvalTimeout}[tc.env]
				if got != tc.d {
					t.Errorf("got %s, want %s", got, tc.d)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted when read")
			}
			for _, w := range []string{tc.env, `"` + tc.val + `"`, tc.want} {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// A duration flag takes what its variable takes: a Go duration or a number
// of seconds, and refuses what it refuses.
func TestDurationFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want time.Duration
		bad  string
	}{
		{[]string{"--eval-timeout", "1"}, time.Second, ""},
		{[]string{"--eval-timeout=0.05"}, 50 * time.Millisecond, ""},
		{[]string{"--eval-timeout", "250ms"}, 250 * time.Millisecond, ""},
		{[]string{"--eval-timeout", "1m"}, time.Minute, ""},
		{[]string{"--eval-timeout", "soon"}, 0, "not a duration"},
		{[]string{"--eval-timeout", "1e30"}, 0, "out of range"},
		{[]string{"--eval-timeout", "NaN"}, 0, "not a finite number"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			c, err := load(t, nil, tc.args...)
			if tc.bad != "" {
				if err == nil || !strings.Contains(err.Error(), tc.bad) || !strings.Contains(err.Error(), "eval-timeout") {
					t.Fatalf("error %v does not name the flag and say %q", err, tc.bad)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Policy.EvalTimeout != tc.want {
				t.Errorf("got %s, want %s", c.Policy.EvalTimeout, tc.want)
			}
		})
	}
	for _, tc := range []struct {
		flag string
		get  func(config.Config) time.Duration
	}{
		{"--cache-ttl", func(c config.Config) time.Duration { return c.Cache.TTL }},
		{"--l2-timeout", func(c config.Config) time.Duration { return c.Cache.L2Timeout }},
		{"--idle-timeout", func(c config.Config) time.Duration { return c.Server.IdleTimeout }},
		{"--admission-queue-timeout", func(c config.Config) time.Duration { return c.Admission.QueueTimeout }},
		{"--metrics-window", func(c config.Config) time.Duration { return c.Perf.WindowSpan }},
	} {
		c, err := load(t, nil, tc.flag, "2")
		if err != nil {
			t.Errorf("%s 2: %v", tc.flag, err)
		} else if got := tc.get(c); got != 2*time.Second {
			t.Errorf("%s 2: got %s, want 2s", tc.flag, got)
		}
	}
}

// --help shows each duration's default as before: the environment's or the
// built-in value, none for a zero default.
func TestDurationFlagDefaultsInHelp(t *testing.T) {
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	config.NewLoader(fs, func(k string) (string, bool) {
		v, ok := map[string]string{"DEFAULT_CACHE_TTL": "60"}[k]
		return v, ok
	})
	help := fs.FlagUsages()
	for _, line := range strings.Split(help, "\n") {
		switch {
		case strings.Contains(line, "--eval-timeout duration") && !strings.Contains(line, "(default 100ms)"),
			strings.Contains(line, "--cache-ttl duration") && !strings.Contains(line, "(default 1m0s)"),
			strings.Contains(line, "--admission-queue-timeout duration") && strings.Contains(line, "(default"):
			t.Errorf("help line %q", line)
		}
	}
	if !strings.Contains(help, "--eval-timeout duration") {
		t.Errorf("no duration flag in help:\n%s", help)
	}
}

// A flag wins over its variable even when the variable does not parse: the
// variable is not used, so it is no error. A bad variable whose flag is not
// given still is.
func TestFlagWinsOverBadEnv(t *testing.T) {
	for _, tc := range []struct {
		name  string
		env   map[string]string
		args  []string
		check func(config.Config) bool
		bad   string
	}{
		{"port", map[string]string{"PORT": "abc"}, []string{"--port", "9999"}, func(c config.Config) bool { return c.Server.Port == 9999 }, ""},
		{"duration", map[string]string{"EVAL_TIMEOUT": "soon"}, []string{"--eval-timeout", "1s"}, func(c config.Config) bool { return c.Policy.EvalTimeout == time.Second }, ""},
		{"out of range duration", map[string]string{"DEFAULT_CACHE_TTL": "1e10"}, []string{"--cache-ttl=60s"}, func(c config.Config) bool { return c.Cache.TTL == time.Minute }, ""},
		{"bool", map[string]string{"CACHE_ENABLED": "maybe"}, []string{"--cache=false"}, func(c config.Config) bool { return !c.Cache.Enabled }, ""},
		{"float", map[string]string{"MEMORY_LIMIT_RATIO": "90%"}, []string{"--memory-limit-ratio", "0.5"}, func(c config.Config) bool { return c.Memory.LimitRatio == 0.5 }, ""},
		{"int64", map[string]string{"MAX_REQUEST_BYTES": "1MB"}, []string{"--max-request-bytes", "2048"}, func(c config.Config) bool { return c.Server.MaxRequestBytes == 2048 }, ""},
		{"other variable still refused", map[string]string{"PORT": "abc", "EVAL_TIMEOUT": "soon"}, []string{"--port", "9999"}, nil, "EVAL_TIMEOUT"},
		{"no flag", map[string]string{"PORT": "abc"}, nil, nil, "PORT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := load(t, tc.env, tc.args...)
			if tc.bad != "" {
				if err == nil || !strings.Contains(err.Error(), tc.bad) {
					t.Fatalf("error %v does not name %s", err, tc.bad)
				}
				if tc.bad == "EVAL_TIMEOUT" && strings.Contains(err.Error(), "PORT") {
					t.Errorf("PORT was given as a flag but is reported: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(c) {
				t.Errorf("the flag's value was not used: %+v", c)
			}
			if err := c.Validate(); err != nil {
				t.Errorf("refused: %v", err)
			}
		})
	}
}
