package faults_test

import (
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/acgs-lite/acgs/internal/faults"
)

// TestFaultFleet brings up the fleet of scripts/cluster.sh once and runs the
// two scenarios that need it, one after the other.
func TestFaultFleet(t *testing.T) {
	sc := params()
	bin := acgsBin(t)
	f := faults.StartFleet(t, bin)
	t.Run("bundle-server", func(t *testing.T) { bundleServerScenario(t, sc, f) })
	t.Run("sigterm", func(t *testing.T) { sigtermScenario(t, sc, f) })
}

// revisions reads the active revision of each of the three instances.
func revisions(f *faults.Fleet) []string {
	out := make([]string, 3)
	for i := range out {
		if h, err := faults.GetHealth(f.InstanceURL(i + 1)); err == nil {
			out[i] = h.Revision
		}
	}
	return out
}

func reloadFailures(f *faults.Fleet) float64 {
	sum := 0.0
	for i := 1; i <= 3; i++ {
		v, _ := faults.Metric(f.InstanceURL(i), "acgs_policy_reloads_total", `result="failure"`)
		sum += v
	}
	return sum
}

// bundleServerScenario takes the bundle server down, then has it serve
// garbage, a bundle signed with another key and a bundle declaring another
// constitutional hash, while the load runs through nginx: the last good
// bundle keeps serving every request, and a good bundle published afterwards
// is activated.
func bundleServerScenario(t *testing.T, sc scale, f *faults.Fleet) {
	P := sc.phase
	initial := revisions(f)
	for _, r := range initial {
		if r != initial[0] || r == "" {
			t.Fatalf("instances disagree at start: %v", initial)
		}
	}
	good := initial[0]
	rep := faults.NewReport(t, "bundle-server", map[string]any{
		"rate_rps": sc.rate, "phase": P.String(), "via": "nginx (scripts/cluster.sh fleet: 3 instances, Redis, signed remote bundles polled every 1-2 s)",
		"workload": "acgs-mixed", "EVAL_TIMEOUT": "1s (cluster.sh)",
	})
	failuresBefore := reloadFailures(f)
	load, err := faults.StartLoad(faults.LoadConfig{URL: f.NginxURL(), Rate: sc.rate, Duration: 4 * P, Seed: 4})
	if err != nil {
		t.Fatal(err)
	}
	load.SleepUntil(P)
	pid, err := f.Pid("bundles")
	if err != nil {
		t.Fatal(err)
	}
	// The command line of the bundle server, to start it again as it was.
	im, err := faults.ReadImage(pid)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	rep.Event(load, "bundle server killed (SIGKILL)")

	load.SleepUntil(2 * P)
	bundle := filepath.Join(f.Dir, "bundles", "bundle.tar.gz")
	saved, err := os.ReadFile(bundle)
	if err != nil {
		t.Fatal(err)
	}
	garbage := make([]byte, 64<<10)
	_, _ = rand.Read(garbage)
	if err := faults.WriteAtomic(bundle, garbage); err != nil {
		t.Fatal(err)
	}
	faults.Respawn(t, "bundles-restarted", filepath.Join(f.Dir, "logs", "bundles.log"), im)
	rep.Event(load, "bundle server back, serving 64 KiB of random bytes")
	load.SleepUntil(2*P + P/3)
	if out, err := f.Script(time.Minute, "publish", "--bad-signature", "--revision", "fault-rogue"); err != nil {
		t.Fatalf("publish --bad-signature: %v\n%s", err, out)
	}
	rep.Event(load, "serving a bundle signed with another key (revision fault-rogue)")
	load.SleepUntil(2*P + 2*P/3)
	if out, err := f.Script(time.Minute, "publish", "--constitutional-hash", "ffffffffffffffff", "--revision", "fault-wrong-hash"); err != nil {
		t.Fatalf("publish --constitutional-hash: %v\n%s", err, out)
	}
	rep.Event(load, "serving a signed bundle declaring constitutional hash ffffffffffffffff (revision fault-wrong-hash)")

	load.SleepUntil(3 * P)
	if out, err := f.Script(time.Minute, "publish", "--revision", "fault-good-2"); err != nil {
		t.Fatalf("publish: %v\n%s", err, out)
	}
	published := time.Now()
	rep.Event(load, "published a good bundle (revision fault-good-2)")
	took, activated := waitFor(30*time.Second, func() bool {
		for _, r := range revisions(f) {
			if r != "fault-good-2" {
				return false
			}
		}
		return true
	})
	rep.Event(load, "all three instances on fault-good-2 after %s (activated=%v)", took.Round(10*time.Millisecond), activated)
	_ = published
	samples := load.Wait()
	failuresAfter := reloadFailures(f)
	_ = saved
	rep.Phases = faults.Summarize(load.Start, samples, []faults.Phase{
		{Name: "before", From: 0, To: P}, {Name: "bundle server down", From: P, To: 2 * P},
		{Name: "garbage, rogue signature, wrong hash", From: 2 * P, To: 3 * P}, {Name: "good bundle published", From: 3 * P, To: 4 * P},
	})
	// Revisions answered while the server was down or serving bad bundles.
	badRevs := 0
	for _, ph := range rep.Phases[1:3] {
		for r, n := range ph.Revisions {
			if r != good {
				badRevs += n
			}
		}
	}
	total := rep.Phases[len(rep.Phases)-1]
	rep.Check("failed requests", total.Failed == 0, fmt.Sprint(total.Failed), "0")
	rep.Check("wrong decisions", total.Wrong == 0, fmt.Sprint(total.Wrong), "0")
	rep.Check("decisions not from the last good bundle while the server was down or bad", badRevs == 0,
		fmt.Sprint(badRevs), "0 (all "+good+")")
	rep.Check("rogue or wrong-hash revision ever served", total.Revisions["fault-rogue"]+total.Revisions["fault-wrong-hash"] == 0,
		fmt.Sprint(total.Revisions["fault-rogue"]+total.Revisions["fault-wrong-hash"]), "0")
	rep.Check("refused bundles counted (acgs_policy_reloads_total{result=\"failure\"}, 3 instances)", failuresAfter > failuresBefore,
		fmt.Sprintf("+%.0f", failuresAfter-failuresBefore), "> 0")
	rep.Check("good bundle active on all instances after publishing", activated && took <= 10*time.Second,
		took.Round(10*time.Millisecond).String(), "≤ 10s (polling every 1-2 s)")
	rep.Finish()
}

// sigtermScenario sends SIGTERM to one of the three instances behind nginx
// during the load: its in-flight requests complete, the others take the
// rest, and nothing fails. In the full version it is started again
// afterwards (a rolling restart).
func sigtermScenario(t *testing.T, sc scale, f *faults.Fleet) {
	P := sc.phase
	served := func(i int) float64 {
		v, _ := faults.Metric(f.InstanceURL(i), "acgs_http_requests_total", `handler="acgs_decision"`)
		return v
	}
	rep := faults.NewReport(t, "sigterm", map[string]any{
		"rate_rps": sc.rate, "phase": P.String(), "via": "nginx (deploy/nginx/nginx.conf as scripts/cluster.sh runs it)",
		"SHUTDOWN_TIMEOUT": "25s (default)", "workload": "acgs-mixed", "EVAL_TIMEOUT": "1s (cluster.sh)",
	})
	pid, err := f.Pid("acgs-1")
	if err != nil {
		t.Fatal(err)
	}
	im, err := faults.ReadImage(pid)
	if err != nil {
		t.Fatal(err)
	}
	load, err := faults.StartLoad(faults.LoadConfig{URL: f.NginxURL(), Rate: sc.rate, Duration: 3 * P, Seed: 5})
	if err != nil {
		t.Fatal(err)
	}
	load.SleepUntil(P)
	s2, s3 := served(2), served(3)
	termAt := time.Now()
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	rep.Event(load, "SIGTERM to acgs-1 (pid %d)", pid)
	exitTook, exited := waitFor(35*time.Second, func() bool { return !faults.Alive(pid) })
	rep.Event(load, "acgs-1 exited %s after SIGTERM (exited=%v)", exitTook.Round(10*time.Millisecond), exited)
	var restarted *faults.Proc
	var s2end, s3end float64
	var countedTo time.Time
	if sc.full {
		load.SleepUntil(2 * P)
		s2end, s3end, countedTo = served(2), served(3), time.Now()
		restarted = faults.Respawn(t, "acgs-1", filepath.Join(f.Dir, "logs", "acgs-1.log"), im)
		rep.Event(load, "acgs-1 started again")
	}
	samples := load.Wait()
	if !sc.full {
		s2end, s3end, countedTo = served(2), served(3), time.Now()
	}
	if restarted != nil {
		if err := faults.WaitReady(f.InstanceURL(1), 2*time.Minute, restarted); err == nil {
			rep.Event(nil, "restarted acgs-1 ready")
		}
	}
	rep.Phases = faults.Summarize(load.Start, samples, []faults.Phase{
		{Name: "before", From: 0, To: P}, {Name: "acgs-1 SIGTERM, draining", From: P, To: 2 * P}, {Name: "after", From: 2 * P, To: 3 * P},
	})
	sentAfter := 0 // sent after SIGTERM and before acgs-1 could be back
	for _, s := range samples {
		if s.Sent.After(termAt) && s.Done.Before(countedTo) {
			sentAfter++
		}
	}
	others := int(s2end - s2 + s3end - s3)
	logb, _ := os.ReadFile(filepath.Join(f.Dir, "logs", "acgs-1.log"))
	graceful := strings.Contains(string(logb), `"msg":"stopped"`) && !strings.Contains(string(logb), "shutdown did not finish")
	total := rep.Phases[len(rep.Phases)-1]
	rep.Check("failed requests", total.Failed == 0, fmt.Sprint(total.Failed), "0")
	rep.Check("wrong decisions", total.Wrong == 0, fmt.Sprint(total.Wrong), "0")
	rep.Check("acgs-1 exited within SHUTDOWN_TIMEOUT", exited && exitTook < 25*time.Second, exitTook.Round(10*time.Millisecond).String(), "< 25s")
	rep.Check("acgs-1 shut down gracefully (log: stopped, no unfinished shutdown)", graceful, fmt.Sprint(graceful), "true")
	allowance := int(sc.rate/10) + 1 // sent to acgs-1 in the ~100 ms before its listener closed
	rep.Check("requests sent after SIGTERM answered by acgs-2 and acgs-3", others >= sentAfter-allowance,
		fmt.Sprintf("%d of %d", others, sentAfter), fmt.Sprintf("≥ %d (all but those acgs-1 took before its listener closed)", sentAfter-allowance))
	rep.Finish()
}
