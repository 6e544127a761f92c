package cache

import (
	"context"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	long := make([]byte, 32)
	tests := []struct {
		name    string
		cfg     Config
		wantErr string // substring; empty means valid
	}{
		{name: "zero config is L1 only", cfg: Config{}},
		{name: "redis with key", cfg: Config{RedisURL: "redis://127.0.0.1:6379", SigningKey: long}},
		{name: "missing signing key", cfg: Config{RedisURL: "redis://127.0.0.1:6379"}, wantErr: "CACHE_SIGNING_KEY"},
		{name: "short signing key", cfg: Config{RedisURL: "redis://127.0.0.1:6379", SigningKey: long[:31]}, wantErr: "CACHE_SIGNING_KEY"},
		{name: "short previous key", cfg: Config{RedisURL: "redis://h:1", SigningKey: long, PreviousSigningKeys: [][]byte{long[:8]}}, wantErr: "CACHE_SIGNING_KEY"},
		{name: "no scheme", cfg: Config{RedisURL: "127.0.0.1:6379", SigningKey: long}, wantErr: "REDIS_URL"},
		{name: "bad scheme", cfg: Config{RedisURL: "http://127.0.0.1:6379", SigningKey: long}, wantErr: "REDIS_URL"},
		{name: "bad cluster address", cfg: Config{RedisURL: "redis://a:1,b", SigningKey: long}, wantErr: "REDIS_URL"},
		{name: "cluster list", cfg: Config{RedisURL: "redis://:pw@a:1,b:2,c:3/0", SigningKey: long}},
		{name: "negative L1 size", cfg: Config{L1Size: -1}, wantErr: "L1_CACHE_SIZE"},
		{name: "negative TTL", cfg: Config{TTL: -time.Second}, wantErr: "DEFAULT_CACHE_TTL"},
		{name: "negative batch", cfg: Config{BatchSize: -1}, wantErr: "BATCH_SIZE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.HasPrefix(err.Error(), "cache: ") {
				t.Fatalf("Validate() = %v, want a cache: error naming %s", err, tt.wantErr)
			}
			if _, nerr := New(context.Background(), tt.cfg); nerr == nil || nerr.Error() != err.Error() {
				t.Fatalf("New() = %v, want the Validate error", nerr)
			}
		})
	}
}

func TestParseRedisURL(t *testing.T) {
	tests := []struct {
		url       string
		addrs     []string
		password  string
		db        int
		tls       bool
		wantError bool
	}{
		{url: "redis://127.0.0.1:6380", addrs: []string{"127.0.0.1:6380"}},
		{url: "redis://:pw@h:1/2", addrs: []string{"h:1"}, password: "pw", db: 2},
		{url: "rediss://h:1", addrs: []string{"h:1"}, tls: true},
		{url: "redis://:p%40w@a:1,b:2,c:3", addrs: []string{"a:1", "b:2", "c:3"}, password: "p@w"},
		{url: "redis://:pw@a:1,b:2?db=0", addrs: []string{"a:1", "b:2"}, password: "pw"},
		{url: "redis://:secret@h:notaport", wantError: true},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			opt, err := parseRedisURL(tt.url)
			if tt.wantError {
				if err == nil {
					t.Fatal("no error")
				}
				if strings.Contains(err.Error(), "secret") {
					t.Fatalf("error leaks the password: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(opt.InitAddress, tt.addrs) || opt.Password != tt.password || opt.SelectDB != tt.db || (opt.TLSConfig != nil) != tt.tls {
				t.Fatalf("got addrs %v password %q db %d tls %v", opt.InitAddress, opt.Password, opt.SelectDB, opt.TLSConfig != nil)
			}
		})
	}
}

func TestL1Only(t *testing.T) {
	ctx := context.Background()
	c := newCache(t, "")
	k1, k2 := key(t, 1), key(t, 2)
	if _, tier, ok := c.Lookup(ctx, k1); ok || tier != TierNone {
		t.Fatalf("empty cache hit: %v %v", tier, ok)
	}
	want := decision(t, true)
	c.Set(k1, want)
	got, tier, ok := c.Lookup(ctx, k1)
	if !ok || tier != TierL1 || !reflect.DeepEqual(got, want) {
		t.Fatalf("Lookup = %v %v %v", got, tier, ok)
	}
	c.Set(k2, Value{}) // undefined decisions are cached too
	if got, _, ok := c.Lookup(ctx, k2); !ok || got.Defined {
		t.Fatalf("undefined value: %v %v", got, ok)
	}

	keys := []Key{k1, key(t, 3), k2}
	vals, tiers, found := make([]Value, 3), make([]Tier, 3), make([]bool, 3)
	c.LookupMany(ctx, keys, vals, tiers, found)
	if !reflect.DeepEqual(found, []bool{true, false, true}) || !reflect.DeepEqual(tiers, []Tier{TierL1, TierNone, TierL1}) {
		t.Fatalf("LookupMany found %v tiers %v", found, tiers)
	}

	e0 := c.Epoch()
	e1, err := c.Flush(ctx)
	if err != nil || e1 != e0+1 || c.Epoch() != e1 {
		t.Fatalf("Flush = %d, %v (epoch before %d, after %d)", e1, err, e0, c.Epoch())
	}
	if _, _, ok := c.Lookup(ctx, k1); ok {
		t.Fatal("hit after Flush")
	}
	c.Set(k1, want)
	c.Purge()
	if _, _, ok := c.Lookup(ctx, k1); ok {
		t.Fatal("hit after Purge")
	}

	s := c.Stats()
	if s.L2Enabled || s.L2Healthy || s.BreakerState != "disabled" || s.L1Capacity != DefaultL1Size {
		t.Fatalf("stats %+v", s)
	}
	if s.L1Hits != 0 || s.L1Misses != 0 {
		t.Fatalf("hits %d misses %d, want none counted (CountL1 counts)", s.L1Hits, s.L1Misses)
	}
	c.Set(k1, want) // Set after Close must not panic
	c.Close()
	c.Set(k1, want)
}

func TestL1EvictionAndTTL(t *testing.T) {
	ctx := context.Background()
	t.Run("size", func(t *testing.T) {
		c := newCache(t, "", func(c *Config) { c.L1Size = 10 })
		for i := range 200 {
			c.Set(key(t, i), decision(t, true))
		}
		eventually(t, 2*time.Second, "evictions counted", func() bool {
			c.l1.CleanUp()
			s := c.Stats()
			return s.L1Evictions > 0 && s.L1Entries <= 10
		})
	})
	t.Run("ttl", func(t *testing.T) {
		c := newCache(t, "", func(c *Config) { c.TTL = 50 * time.Millisecond })
		k := key(t, 1)
		c.Set(k, decision(t, true))
		if _, _, ok := c.Lookup(ctx, k); !ok {
			t.Fatal("miss right after Set")
		}
		eventually(t, 2*time.Second, "entry expires", func() bool {
			_, _, ok := c.Lookup(ctx, k)
			return !ok
		})
	})
}

// TestL1HitDoesNotAllocate checks the in-process target: key + L1 lookup of
// the safe_action input without allocation (the target allows 2).
func TestL1HitDoesNotAllocate(t *testing.T) {
	ctx := context.Background()
	c := newCache(t, "")
	in := loadInput(t, "safe_action")
	k, _ := NewKey("rev", "acgs/main/decision", in)
	c.Set(k, decisionWithJSON(t, true))
	for range 2 { // decoded, then decoded and kept (see interner)
		c.Lookup(ctx, k)
	}
	allocs := testing.AllocsPerRun(1000, func() {
		k, _ := NewKey("rev", "acgs/main/decision", in)
		if _, _, ok := c.Lookup(ctx, k); !ok {
			t.Fatal("miss")
		}
	})
	if allocs > 0.1 {
		t.Fatalf("key + L1 hit allocates %.2f times, want 0", allocs)
	}
}
