package server_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/acgs-lite/acgs/internal/cache"
	"github.com/acgs-lite/acgs/internal/config"
	"github.com/acgs-lite/acgs/internal/engine"
	"github.com/acgs-lite/acgs/internal/server"
	"github.com/acgs-lite/acgs/internal/telemetry"
	"github.com/acgs-lite/acgs/policies"
)

// TestCacheFlushWithoutRedis: DELETE /v1/cache on an instance whose Redis
// is down flushes L1 and answers 503 unavailable saying so: the shared
// flush (a new epoch in Redis) was not made, and retrying is harmless. The
// answer said "the epoch could not be published", which a flush whose
// increment may still land (not confirmed) made wrong.
func TestCacheFlushWithoutRedis(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := l.Addr().String()
	_ = l.Close() // nothing listens there now: Redis is down
	c, err := cache.New(context.Background(), cache.Config{
		L1Size: 100, TTL: time.Minute, RedisURL: "redis://" + down,
		SigningKey: []byte(strings.Repeat("k", cache.MinSigningKeyLen)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	cfg := config.Default()
	cfg.AdminTok = []string{adminToken}
	e, err := engine.New(context.Background(), engine.FSSource{FS: policies.FS, Name: "embedded"}, engine.Options{
		ConstitutionalHash: cfg.Policy.ConstitutionalHash, EvalTimeout: time.Second, Cache: c,
	})
	if err != nil {
		t.Fatal(err)
	}
	s, err := server.New(server.Deps{Config: cfg, Engine: e, Cache: c, Window: telemetry.NewWindow(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{srv: s, eng: e, cache: c}
	r := h.do(t, "DELETE", "/v1/cache", nil, map[string]string{"Authorization": "Bearer " + adminToken})
	msg, _ := r.obj["message"].(string)
	if r.code != 503 || r.obj["code"] != "unavailable" {
		t.Fatalf("DELETE /v1/cache with Redis down: %d %s, want 503 unavailable", r.code, r.body)
	}
	for _, want := range []string{"L1 was flushed", "not made or not confirmed", "retrying is harmless", "not connected"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q does not say %q", msg, want)
		}
	}
}
