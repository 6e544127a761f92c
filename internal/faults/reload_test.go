package faults_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/acgs-lite/acgs/internal/faults"
)

const faultsAdminToken = "faults-admin-token-0123456789"

// swapSymlink points link at target atomically (a new link renamed over it).
func swapSymlink(tb testing.TB, link, target string) {
	tb.Helper()
	tmp := link + ".tmp"
	_ = os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		tb.Fatal(err)
	}
	if err := os.Rename(tmp, link); err != nil {
		tb.Fatal(err)
	}
}

type reloadCall struct {
	start, end time.Time
	status     int
	want, got  string
	err        error
}

// TestFaultHotReload alternates POLICY_BUNDLE_PATH (a symlink) between two
// bundle directories with different revisions and reloads every second
// (POST /v1/admin/reload) during the load: no request may fail, and no
// request sent after an activation returned may be decided by the revision
// it replaced.
func TestFaultHotReload(t *testing.T) {
	sc := params()
	bin := acgsBin(t)
	dir := t.TempDir()
	revA, revB := "reload-a", "reload-b"
	dirs := map[string]string{
		revA: policyDir(t, filepath.Join(dir, "a"), revA),
		revB: policyDir(t, filepath.Join(dir, "b"), revB),
	}
	link := filepath.Join(dir, "current")
	swapSymlink(t, link, dirs[revA])
	a := faults.StartACGS(t, bin, dir, "acgs", "POLICY_BUNDLE_PATH="+link, "ADMIN_TOKEN="+faultsAdminToken, "EVAL_TIMEOUT="+evalTimeout())
	if h, err := faults.GetHealth(a.URL); err != nil || h.Revision != revA {
		t.Fatalf("start: revision %q (%v), want %s\n%s", h.Revision, err, revA, a.Tail(10))
	}
	P := sc.phase
	rep := faults.NewReport(t, "hot-reload", map[string]any{
		"rate_rps": sc.rate, "phase": P.String(), "reload": "every 1 s (back to back when an activation takes longer): swap the POLICY_BUNDLE_PATH symlink, POST /v1/admin/reload",
		"workload": "acgs-mixed", "EVAL_TIMEOUT": evalTimeout(),
	})
	load, err := faults.StartLoad(faults.LoadConfig{URL: a.URL, Rate: sc.rate, Duration: 4 * P, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	load.SleepUntil(P)
	var calls []reloadCall
	cur := revA
	// Every second, or back to back when an activation takes longer; no
	// reload starts after 3P, so the last phase is undisturbed.
	for next := P; ; next += time.Second {
		load.SleepUntil(next)
		if since := time.Since(load.Start); since >= 3*P {
			break
		} else if since > next {
			next = since
		}
		want := revB
		if cur == revB {
			want = revA
		}
		swapSymlink(t, link, dirs[want])
		c := reloadCall{start: time.Now(), want: want}
		code, body, err := faults.Post(a.URL, "/v1/admin/reload", faultsAdminToken, nil)
		c.end, c.status, c.err = time.Now(), code, err
		var doc struct {
			Revision string `json:"policy_revision"`
		}
		_ = json.Unmarshal(body, &doc)
		c.got = doc.Revision
		calls = append(calls, c)
		if err == nil && code == 200 {
			cur = doc.Revision
		}
	}
	rep.Event(load, "%d reloads done", len(calls))
	samples := load.Wait()
	rep.Phases = faults.Summarize(load.Start, samples, []faults.Phase{
		{Name: "before", From: 0, To: P}, {Name: "reloading every second", From: P, To: 3 * P}, {Name: "after", From: 3 * P, To: 4 * P},
	})

	failedReloads := 0
	var took []time.Duration
	for _, c := range calls {
		if c.err != nil || c.status != 200 || c.got != c.want {
			failedReloads++
			rep.Event(nil, "reload to %s: status %d, revision %q, err %v", c.want, c.status, c.got, c.err)
		}
		took = append(took, c.end.Sub(c.start))
	}
	sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
	if len(took) > 0 {
		rep.Event(nil, "activation (reload call) took p50 %s, max %s", ms(took[len(took)/2]), ms(took[len(took)-1]))
	}
	// Stale: sent after reload k returned and answered before reload k+1
	// began, but decided by another revision than k's.
	stale, unknown := 0, 0
	var firstStale string
	for _, s := range samples {
		if s.Failed() {
			continue
		}
		if s.Revision != revA && s.Revision != revB {
			unknown++
			continue
		}
		k := -1
		for i, c := range calls {
			if !c.end.After(s.Sent) {
				k = i
			}
		}
		if k < 0 || calls[k].status != 200 {
			continue
		}
		if k+1 < len(calls) && s.Done.After(calls[k+1].start) {
			continue // overlaps the next reload: either revision is right
		}
		if s.Revision != calls[k].got {
			stale++
			if firstStale == "" {
				firstStale = fmt.Sprintf("sent %s after activation of %s, answered by %s",
					s.Sent.Sub(calls[k].end).Round(time.Microsecond), calls[k].got, s.Revision)
			}
		}
	}
	if firstStale != "" {
		rep.Event(nil, "first stale decision: %s", firstStale)
	}
	total := rep.Phases[len(rep.Phases)-1]
	rep.Check("failed requests", total.Failed == 0, fmt.Sprint(total.Failed), "0")
	rep.Check("wrong decisions", total.Wrong == 0, fmt.Sprint(total.Wrong), "0")
	rep.Check("reloads that failed", failedReloads == 0, fmt.Sprintf("%d of %d", failedReloads, len(calls)), "0")
	rep.Check("decisions from the old revision after an activation", stale == 0, fmt.Sprint(stale), "0")
	rep.Check("decisions from an unknown revision", unknown == 0, fmt.Sprint(unknown), "0")
	rep.Finish()
}
