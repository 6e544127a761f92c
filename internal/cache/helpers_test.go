package cache

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"testing"
	"time"

	"github.com/acgs-lite/acgs/internal/testenv"
	"github.com/redis/rueidis"
)

var (
	testKey1 = []byte("0123456789abcdef0123456789abcdef")
	testKey2 = []byte("fedcba9876543210fedcba9876543210")
)

// testLogger discards logs unless -v, where they help read a failure.
func testLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(testWriter{}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type testWriter struct{}

func (testWriter) Write(p []byte) (int, error) { fmt.Print(string(p)); return len(p), nil }

// newCache builds a Tiered with test-friendly settings (L2Timeout generous
// enough for -race on a loaded machine) and closes it when the test ends.
func newCache(tb testing.TB, redisURL string, mod ...func(*Config)) *Tiered {
	tb.Helper()
	cfg := Config{
		RedisURL:    redisURL,
		SigningKey:  testKey1,
		L2Timeout:   200 * time.Millisecond,
		BatchWindow: 2 * time.Millisecond,
		Logger:      testLogger(),
	}
	for _, m := range mod {
		m(&cfg)
	}
	c, err := New(context.Background(), cfg)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// rawClient is a plain Redis client for tests that read or forge entries.
func rawClient(tb testing.TB, url string) rueidis.Client {
	tb.Helper()
	opt, err := parseRedisURL(url)
	if err != nil {
		tb.Fatal(err)
	}
	opt.DisableCache = true
	c, err := rueidis.NewClient(opt)
	if err != nil {
		tb.Fatalf("connect to Redis: %v", err)
	}
	tb.Cleanup(c.Close)
	return c
}

// eventually polls cond every 5ms until it holds or timeout passes.
func eventually(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("not within %s: %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func key(tb testing.TB, i int) Key {
	tb.Helper()
	k, err := NewKey("rev-1", "acgs/main/decision", map[string]any{"n": i})
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

func decision(tb testing.TB, allow bool) Value {
	tb.Helper()
	return Value{Defined: true, Result: decodeJSON(tb, fmt.Sprintf(
		`{"allow":%v,"compliance_score":0.96,"reasons":[],"evaluation_details":{"n":[1,2.5,"x"]}}`, allow))}
}

// decisionWithJSON is decision with its JSON, as the engine stores a
// decision (L1 keeps such a value encoded and decodes it when it is read).
func decisionWithJSON(tb testing.TB, allow bool) Value {
	tb.Helper()
	v := decision(tb, allow)
	v.JSON = []byte(mustJSON(v.Result))
	return v
}

// sameDecision compares what a decision says, not whether it carries its
// JSON encoding (an entry read from L2 does, one built in a test may not).
func sameDecision(a, b Value) bool {
	return a.Defined == b.Defined && reflect.DeepEqual(a.Result, b.Result)
}

func startRedis(tb testing.TB, opts ...testenv.RedisOption) *testenv.Redis {
	tb.Helper()
	return testenv.StartRedis(tb, opts...)
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
