package config_test

import (
	"strings"
	"testing"

	"github.com/acgs-lite/acgs/internal/config"
)

// Every node of REDIS_URL must have a host and a TCP port: one that the
// URL parsers let through (99999, 0) fails every connection, retried
// forever, instead of stopping the service at start.
func TestRedisURLNodeAddresses(t *testing.T) {
	for _, tc := range []struct {
		url  string
		ok   bool
		want []string
	}{
		{"redis://127.0.0.1:6379", true, nil},
		{"redis://127.0.0.1", true, nil}, // the cache reads a missing port as 6379
		{"redis://127.0.0.1:", true, nil},
		{"rediss://:pw@redis.example.com:6380/2", true, nil},
		{"redis://[::1]:6379,[::1]:6380", true, nil},
		{"redis://h1:1,h2:65535", true, nil},
		{"redis://h1:6379/0?addr=h2:6380", true, nil},
		{"unix:///run/redis.sock", true, nil},
		{"redis://127.0.0.1:99999", false, []string{"node 1", "99999", "1-65535"}},
		{"redis://127.0.0.1:0", false, []string{"node 1", "1-65535"}},
		{"rediss://:pw@h:65536/0", false, []string{"node 1", "65536"}},
		{"redis://h1:7001,h2:99999", false, []string{"node 2", "99999"}},
		{"redis://h1:7001,h2:7002,h3:", false, []string{"node 3", "1-65535"}},
		{"redis://h1:7001,:7002", false, []string{"node 2", "no host"}},
		{"redis://:6379", false, []string{"node 1", "no host"}},
		{"redis://h1:6379/0?addr=h2:70000", false, []string{"node 2", "70000"}},
	} {
		t.Run(tc.url, func(t *testing.T) {
			c := config.Default()
			c.Cache.RedisURL, c.Cache.SigningKey = tc.url, strings.Repeat("k", 32)
			err := c.Validate()
			if (err == nil) != tc.ok {
				t.Fatalf("accepted=%v, want %v (%v)", err == nil, tc.ok, err)
			}
			for _, w := range append(tc.want, "REDIS_URL") {
				if err != nil && !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
	c := config.Default()
	c.Cache.RedisURL, c.Cache.SigningKey = "redis://:hunter2@h:99999", strings.Repeat("k", 32)
	if err := c.Validate(); err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("the error must refuse the port without showing the password: %v", err)
	}
}

// REDIS_URL is trimmed where it is read (a Kubernetes Secret made with
// --from-file ends with a newline), so that the cache parses the value
// that was validated; a Config holding white space is refused.
func TestRedisURLTrimmed(t *testing.T) {
	const url = "redis://127.0.0.1:6379"
	key := strings.Repeat("k", 32)
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
	}{
		{"env newline", map[string]string{"REDIS_URL": url + "\n", "CACHE_SIGNING_KEY": key}, nil},
		{"env spaces", map[string]string{"REDIS_URL": "  " + url + " \r\n", "CACHE_SIGNING_KEY": key}, nil},
		{"flag", map[string]string{"CACHE_SIGNING_KEY": key}, []string{"--redis-url", " " + url + "\n"}},
		{"flag over env", map[string]string{"REDIS_URL": "redis://other:1\n", "CACHE_SIGNING_KEY": key}, []string{"--redis-url=" + url + "\t"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := load(t, tc.env, tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			if c.Cache.RedisURL != url {
				t.Errorf("RedisURL = %q, want %q", c.Cache.RedisURL, url)
			}
			if err := c.Validate(); err != nil {
				t.Errorf("refused: %v", err)
			}
		})
	}
	c := config.Default()
	c.Cache.RedisURL, c.Cache.SigningKey = url+"\n", key
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "white space") {
		t.Errorf("a URL with white space reaching Validate: %v", err)
	}
}
