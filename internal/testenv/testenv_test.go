package testenv

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestFindBinary(t *testing.T) {
	tests := []struct {
		name    string
		wantErr bool
	}{
		{name: "sh"},
		{name: "no-such-binary-acgs-testenv", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := findBinary(tt.name)
			if tt.wantErr {
				if !errors.Is(err, errNotFound) {
					t.Fatalf("findBinary(%q) = %q, %v; want errNotFound", tt.name, p, err)
				}
				return
			}
			if err != nil || p == "" {
				t.Fatalf("findBinary(%q) = %q, %v", tt.name, p, err)
			}
		})
	}
}

func TestMissingMessage(t *testing.T) {
	got := missingMessage("redis-server", "redis-server")
	want := "redis-server not found: install the Debian package redis-server (scripts/test.sh does this)"
	if got != want {
		t.Fatalf("message = %q, want %q", got, want)
	}
}

func TestRequireBinarySkipsWhenMissing(t *testing.T) {
	t.Setenv(RequireServicesEnv, "")
	ran := t.Run("missing", func(t *testing.T) {
		RequireBinary(t, "no-such-binary-acgs-testenv", "nothing")
		t.Error("RequireBinary returned for a missing binary")
	})
	if !ran {
		t.Fatal("subtest failed instead of skipping")
	}
}

func TestStartRedis(t *testing.T) {
	tests := []struct {
		name     string
		opts     []RedisOption
		password string
	}{
		{name: "no password"},
		{name: "password", opts: []RedisOption{WithPassword("s3cret")}, password: "s3cret"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := StartRedis(t, tt.opts...)
			if got, err := r.Do("PING"); err != nil || got != "PONG" {
				t.Fatalf("PING = %q, %v", got, err)
			}
			if !strings.HasPrefix(r.URL(), "redis://") || !strings.HasSuffix(r.URL(), r.Addr()) {
				t.Fatalf("URL %q does not end with %s", r.URL(), r.Addr())
			}
			if tt.password != "" && !strings.Contains(r.URL(), ":"+tt.password+"@") {
				t.Fatalf("URL %q lacks the password", r.URL())
			}
			if got, _ := r.Do("CONFIG", "GET", "save"); got != "save\n" {
				t.Fatalf("save config = %q, want persistence off", got)
			}

			port := r.Port()
			r.Stop()
			if err := WaitTCP(r.Addr(), 100*time.Millisecond); err == nil {
				t.Fatal("server still accepting after Stop")
			}
			r.Start()
			if r.Port() != port {
				t.Fatalf("port changed on restart: %d → %d", port, r.Port())
			}
			if got, err := r.Do("PING"); err != nil || got != "PONG" {
				t.Fatalf("PING after restart = %q, %v", got, err)
			}
			r.Kill()
			if _, err := r.Do("PING"); err == nil {
				t.Fatal("PING answered after Kill")
			}
			r.Start()
			if _, err := r.Do("SET", "k", "v"); err != nil {
				t.Fatalf("SET after second restart: %v", err)
			}
		})
	}
}

func TestStartRedisCluster(t *testing.T) {
	c := StartRedisCluster(t, 3)
	if len(c.Addrs()) != 3 {
		t.Fatalf("addrs = %v", c.Addrs())
	}
	info, err := c.Nodes[0].Do("CLUSTER", "INFO")
	if err != nil || !strings.Contains(info, "cluster_known_nodes:3") || !strings.Contains(info, "cluster_slots_assigned:16384") {
		t.Fatalf("CLUSTER INFO = %q, %v", info, err)
	}
	if want := "redis://" + strings.Join(c.Addrs(), ","); c.URL() != want {
		t.Fatalf("URL = %q, want %q", c.URL(), want)
	}
}
