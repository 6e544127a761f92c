package service_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/acgs-lite/acgs/internal/config"
	"github.com/acgs-lite/acgs/internal/service"
	"github.com/acgs-lite/acgs/internal/service/servicetest"
	"github.com/acgs-lite/acgs/internal/testenv"
)

// TestWarmWithTheCacheOff: with CACHE_ENABLED=false, POST /v1/cache/warm
// evaluates nothing and says why. It evaluated the whole warm-up set (1,300
// decisions, seconds of CPU, on an endpoint without a token) for a cache
// that does not exist, and answered that every scenario was warmed (review).
func TestWarmWithTheCacheOff(t *testing.T) {
	in := servicetest.Start(t, func(c *config.Config) { c.Cache.Enabled = false })
	code, body, err := servicetest.Post(http.DefaultClient, in.URL+"/v1/cache/warm", map[string]any{})
	if err != nil {
		t.Fatal(err)
	}
	if code != http.StatusOK || body["reason"] != "cache disabled" || fmt.Sprint(body["warmed_scenarios"]) != "0" {
		t.Fatalf("warm with the cache off: %d %v", code, body)
	}
}

// TestUnusedSettingsAreSaidSo: a setting that takes effect only with another
// is logged as unused when given alone, instead of seeming to work (review:
// REDIS_URL with the cache off was silently unused while the start log said
// l2 true; a signing key without REDIS_URL, or plan keys with plans off, no
// word either).
func TestUnusedSettingsAreSaidSo(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*config.Config)
		want   string
	}{
		{"REDIS_URL with the cache off", func(c *config.Config) {
			c.Cache.Enabled, c.Cache.RedisURL, c.Cache.SigningKey = false, "redis://127.0.0.1:1", strings.Repeat("k", 32)
		}, "REDIS_URL is not used"},
		{"a signing key without REDIS_URL", func(c *config.Config) { c.Cache.SigningKey = strings.Repeat("k", 32) }, "CACHE_SIGNING_KEY is not used"},
		{"plan keys with plans off", func(c *config.Config) {
			c.Policy.PartialEval, c.Policy.PartialEvalKeys = false, []string{"input.type"}
		}, "PARTIAL_EVAL_KEYS is not used"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config.Default()
			tc.mutate(&cfg)
			var log testenv.SyncBuffer
			svc, err := service.New(context.Background(), cfg, service.Options{LogOutput: &log})
			if err != nil {
				t.Fatal(err)
			}
			svc.Close()
			if !strings.Contains(log.String(), tc.want) {
				t.Errorf("log lacks %q:\n%s", tc.want, log.String())
			}
		})
	}
}
