package faults_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/acgs-lite/acgs/internal/faults"
	"github.com/acgs-lite/acgs/internal/testenv"
)

// l2Env is the cache configuration of the Redis scenarios: a small L1 so
// that most requests of the 1,300-key workload go to L2 (as in a fleet whose
// key space dwarfs one instance's L1), and an L2 deadline suited to a loaded
// shared machine (the default, 2 ms, is for a quiet one).
func l2Env(r *testenv.Redis, l2Timeout time.Duration) []string {
	return []string{
		"REDIS_URL=" + r.URL(), "CACHE_SIGNING_KEY=" + signingKey,
		"L2_TIMEOUT=" + l2Timeout.String(), "L1_CACHE_SIZE=100", "EVAL_TIMEOUT=" + evalTimeout(),
	}
}

// TestFaultRedisKill kills Redis (SIGKILL) during a constant-rate load and
// restarts it: no request may fail or be decided wrongly, and L2 must be
// healthy again within 5 s of the restart.
func TestFaultRedisKill(t *testing.T) {
	sc := params()
	bin := acgsBin(t)
	r := requireRedis(t)
	const l2Timeout = 20 * time.Millisecond
	a := faults.StartACGS(t, bin, t.TempDir(), "acgs", l2Env(r, l2Timeout)...)
	if _, ok := waitFor(15*time.Second, func() bool { return l2Healthy(a.URL) }); !ok {
		t.Fatalf("L2 not healthy at start\n%s", a.Tail(10))
	}
	P := sc.phase
	rep := faults.NewReport(t, "redis-kill", map[string]any{
		"rate_rps": sc.rate, "phase": P.String(), "L2_TIMEOUT": l2Timeout.String(), "L1_CACHE_SIZE": 100, "workload": "acgs-mixed", "EVAL_TIMEOUT": evalTimeout(),
	})
	watch := watchHealth(a.URL)
	// A warm-up phase first fills L2 (and the plan cache), so that the
	// phases measured around the fault have L2 on their path.
	W := P
	load, err := faults.StartLoad(faults.LoadConfig{URL: a.URL, Rate: sc.rate, Duration: W + 3*P, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	load.SleepUntil(W + P)
	r.Kill()
	rep.Event(load, "redis-server killed (SIGKILL)")
	load.SleepUntil(W + 2*P)
	r.Start()
	restarted := time.Now()
	rep.Event(load, "redis-server restarted (empty)")
	recovery, ok := waitFor(15*time.Second, func() bool { return l2Healthy(a.URL) })
	rep.Event(load, "L2 healthy again %s after the restart (recovered=%v)", recovery.Round(10*time.Millisecond), ok)
	samples := load.Wait()
	pts := watch()
	rep.Phases = faults.Summarize(load.Start, samples, []faults.Phase{
		{Name: "warm-up", From: 0, To: W}, {Name: "before", From: W, To: W + P},
		{Name: "redis killed", From: W + P, To: W + 2*P}, {Name: "after restart", From: W + 2*P, To: W + 3*P},
	})
	if down := firstL2(pts, load.At(W+P), false); !down.IsZero() {
		rep.Event(nil, "health reported L2 unhealthy %s after the kill", down.Sub(load.At(W+P)).Round(10*time.Millisecond))
	}
	if up := firstL2(pts, restarted, true); !up.IsZero() {
		rep.Event(nil, "health watcher (100 ms) saw L2 healthy %s after the restart", up.Sub(restarted).Round(10*time.Millisecond))
	}
	total := rep.Phases[len(rep.Phases)-1]
	rep.Check("failed requests", total.Failed == 0, fmt.Sprint(total.Failed), "0")
	rep.Check("wrong decisions", total.Wrong == 0, fmt.Sprint(total.Wrong), "0")
	rep.Check("L2 healthy after the restart", ok && recovery <= 5*time.Second, recovery.Round(10*time.Millisecond).String(), "≤ 5s")
	rep.Finish()
}

// firstL2 is the first health reading after from whose l2_healthy is want.
func firstL2(pts []healthPoint, from time.Time, want bool) time.Time {
	for _, p := range pts {
		if p.at.After(from) && p.l2 != nil && *p.l2 == want {
			return p.at
		}
	}
	return time.Time{}
}

// TestFaultRedisSlow makes Redis slow while the load runs: DEBUG SLEEP 1 in
// a loop (Redis answers nothing for a second at a time), then CLIENT PAUSE
// 3000. The circuit breaker must open, no request may fail, and p99 must stay
// within L2_TIMEOUT plus the p99 of the undisturbed phases (evaluation and
// whatever else the machine costs).
func TestFaultRedisSlow(t *testing.T) {
	sc := params()
	bin := acgsBin(t)
	r := requireRedis(t, testenv.WithArgs("--enable-debug-command", "local"))
	const l2Timeout = 20 * time.Millisecond
	a := faults.StartACGS(t, bin, t.TempDir(), "acgs", l2Env(r, l2Timeout)...)
	if _, ok := waitFor(15*time.Second, func() bool { return l2Healthy(a.URL) }); !ok {
		t.Fatalf("L2 not healthy at start\n%s", a.Tail(10))
	}
	P := sc.phase
	const pause = 3 * time.Second
	rep := faults.NewReport(t, "redis-slow", map[string]any{
		"rate_rps": sc.rate, "phase": P.String(), "L2_TIMEOUT": l2Timeout.String(), "L1_CACHE_SIZE": 100,
		"workload": "acgs-mixed", "EVAL_TIMEOUT": evalTimeout(), "slow": "DEBUG SLEEP 1 back to back, then CLIENT PAUSE 3000",
	})
	watch := watchHealth(a.URL)
	W := P // warm-up: fills L2 so that the measured phases have it on their path
	pauseEnd := W + 2*P + pause + time.Second
	load, err := faults.StartLoad(faults.LoadConfig{URL: a.URL, Rate: sc.rate, Duration: pauseEnd + P, Seed: 2})
	if err != nil {
		t.Fatal(err)
	}
	load.SleepUntil(W + P)
	rep.Event(load, "DEBUG SLEEP 1 in a loop")
	sleeps := 0
	for time.Now().Before(load.At(W + 2*P - 500*time.Millisecond)) {
		if _, err := r.Do("DEBUG", "SLEEP", "1"); err != nil {
			t.Fatalf("DEBUG SLEEP: %v", err)
		}
		sleeps++
	}
	rep.Event(load, "%d DEBUG SLEEP 1 done", sleeps)
	load.SleepUntil(W + 2*P)
	if out, err := r.Do("CLIENT", "PAUSE", fmt.Sprint(pause.Milliseconds())); err != nil {
		t.Fatalf("CLIENT PAUSE: %q %v", out, err)
	}
	rep.Event(load, "CLIENT PAUSE %d", pause.Milliseconds())
	recovery, ok := waitFor(20*time.Second, func() bool { return time.Now().After(load.At(W+2*P+pause)) && l2Healthy(a.URL) })
	rep.Event(load, "L2 healthy again (recovered=%v)", ok)
	_ = recovery
	samples := load.Wait()
	pts := watch()
	rep.Phases = faults.Summarize(load.Start, samples, []faults.Phase{
		{Name: "warm-up", From: 0, To: W}, {Name: "before", From: W, To: W + P}, {Name: "DEBUG SLEEP loop", From: W + P, To: W + 2*P},
		{Name: "CLIENT PAUSE 3000", From: W + 2*P, To: pauseEnd}, {Name: "after", From: pauseEnd, To: pauseEnd + P},
	})
	states := map[string]bool{}
	var opened time.Time
	for _, p := range pts {
		if p.at.After(load.At(W+P)) && p.at.Before(load.At(pauseEnd)) {
			states[p.breaker] = true
			if p.breaker == "open" && opened.IsZero() {
				opened = p.at
			}
		}
	}
	seen := make([]string, 0, len(states))
	for s := range states {
		seen = append(seen, s)
	}
	if !opened.IsZero() {
		rep.Event(nil, "breaker open %s after the slowness began", opened.Sub(load.At(W+P)).Round(10*time.Millisecond))
	}
	// The reference is every undisturbed measured phase pooled (before and
	// after): its p99 is what evaluation and the machine cost without the
	// fault; the slowness may add at most one L2 deadline to it.
	ref := faults.Pooled("undisturbed", load.Start, samples, faults.Phase{From: W, To: W + P}, faults.Phase{From: pauseEnd, To: pauseEnd + P})
	bound := float64(l2Timeout.Microseconds())/1e3 + ref.P99Ms
	rep.Event(nil, "undisturbed phases pooled: %d requests, p99 %.2f ms", ref.Sent, ref.P99Ms)
	total := rep.Phases[len(rep.Phases)-1]
	rep.Check("failed requests", total.Failed == 0, fmt.Sprint(total.Failed), "0")
	rep.Check("wrong decisions", total.Wrong == 0, fmt.Sprint(total.Wrong), "0")
	rep.Check("breaker opened", !opened.IsZero(), "states seen: "+strings.Join(seen, ","), "open")
	for _, ph := range rep.Phases[2:4] {
		rep.TimingCheck("p99 during "+ph.Name, ph.P99Ms <= bound, fmt.Sprintf("%.2f ms", ph.P99Ms),
			fmt.Sprintf("≤ L2_TIMEOUT + undisturbed p99 = %.2f ms", bound))
	}
	rep.Finish()
}
