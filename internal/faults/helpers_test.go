package faults_test

import (
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/acgs-lite/acgs/internal/faults"
	"github.com/acgs-lite/acgs/internal/testenv"
)

// scale is how long and how hard a scenario runs: the full version under
// scripts/faults.sh (ACGS_FAULTS=1), a short one in the default suite.
type scale struct {
	full  bool
	rate  float64
	phase time.Duration
}

func params() scale {
	if os.Getenv("ACGS_FAULTS") == "1" {
		return scale{true, envFloat("FAULTS_RATE", 200), envDur("FAULTS_PHASE", 10*time.Second)}
	}
	return scale{false, 40, 2 * time.Second}
}

func envFloat(name string, def float64) float64 {
	if v, err := strconv.ParseFloat(os.Getenv(name), 64); err == nil && v > 0 {
		return v
	}
	return def
}

func envDur(name string, def time.Duration) time.Duration {
	if v, err := time.ParseDuration(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func TestMain(m *testing.M) { testenv.Main(m) }

// acgsBin is the acgs binary the scenarios run ($ACGS_BIN, or one built
// from this checkout once per test run).
func acgsBin(tb testing.TB) string { return testenv.ACGSBinary(tb) }

// policyDir writes the embedded constitution (without its Rego tests) to
// dir with the given manifest revision.
func policyDir(tb testing.TB, dir, revision string) string {
	tb.Helper()
	return testenv.WriteConstitution(tb, dir, func(m map[string]any) { m["revision"] = revision }, nil)
}

// healthPoint is one reading of the health document.
type healthPoint struct {
	at      time.Time
	ok      bool // the request answered
	l2      *bool
	breaker string
	rev     string
}

// watchHealth reads base's health every 100 ms until stopped.
func watchHealth(base string) (stop func() []healthPoint) {
	var mu sync.Mutex
	var pts []healthPoint
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			h, err := faults.GetHealth(base)
			mu.Lock()
			pts = append(pts, healthPoint{at: time.Now(), ok: err == nil, l2: h.CacheStats.L2Healthy, breaker: h.CacheStats.Breaker, rev: h.Revision})
			mu.Unlock()
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() []healthPoint {
		close(done)
		<-finished
		mu.Lock()
		defer mu.Unlock()
		return pts
	}
}

// waitFor polls cond every 50 ms for up to timeout and returns how long it
// took, or false.
func waitFor(timeout time.Duration, cond func() bool) (time.Duration, bool) {
	start := time.Now()
	for time.Since(start) < timeout {
		if cond() {
			return time.Since(start), true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start), false
}

func l2Healthy(base string) bool {
	h, err := faults.GetHealth(base)
	return err == nil && h.CacheStats.L2Healthy != nil && *h.CacheStats.L2Healthy
}

func requireRedis(tb testing.TB, opts ...testenv.RedisOption) *testenv.Redis {
	tb.Helper()
	testenv.RequireBinary(tb, "redis-server", "redis-server")
	return testenv.StartRedis(tb, opts...)
}

const signingKey = "faults-cache-signing-key-0123456789abcdef"

// evalTimeout is the EVAL_TIMEOUT of the scenarios' instances: on a shared,
// loaded machine the default 100 ms is exceeded by CPU starvation alone
// (failing closed: a deny, i.e. a wrong decision that is the neighbours'
// doing, not the fault's); scripts/cluster.sh uses 1 s for the same reason.
func evalTimeout() string { return envDur("FAULTS_EVAL_TIMEOUT", time.Second).String() }

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1e3) }
