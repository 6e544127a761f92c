package service_test

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/acgs-lite/acgs/internal/config"
	"github.com/acgs-lite/acgs/internal/service/servicetest"
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
