package faults_test

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/acgs-lite/acgs/internal/faults"
)

type soakPoint struct {
	at         time.Duration
	rssKiB     int
	goroutines float64
	heap       float64 // heap in use
	retained   float64 // idle heap not returned to the OS (heap_idle - heap_released)
	nextGC     float64
	load1      string
}

// TestFaultSoak runs a fixed rate against one instance (with Redis) for
// FAULTS_SOAK_DURATION (10m): after the warm-up (the first fifth), resident
// memory may grow less than 10% and the goroutine count must stay flat.
// Only scripts/faults.sh soak runs it (ACGS_FAULTS_SOAK=1).
func TestFaultSoak(t *testing.T) {
	if os.Getenv("ACGS_FAULTS_SOAK") != "1" {
		t.Skip("the soak runs from scripts/faults.sh soak (ACGS_FAULTS_SOAK=1)")
	}
	bin := acgsBin(t)
	r := requireRedis(t)
	rate := envFloat("FAULTS_SOAK_RATE", 100)
	dur := envDur("FAULTS_SOAK_DURATION", 10*time.Minute)
	warm := dur / 5
	const l2Timeout = 20 * time.Millisecond
	a := faults.StartACGS(t, bin, t.TempDir(), "acgs",
		"REDIS_URL="+r.URL(), "CACHE_SIGNING_KEY="+signingKey, "L2_TIMEOUT="+l2Timeout.String(), "LOG_LEVEL=warn", "EVAL_TIMEOUT="+evalTimeout())
	rep := faults.NewReport(t, "soak", map[string]any{
		"rate_rps": rate, "duration": dur.String(), "warm_up": warm.String(), "L2_TIMEOUT": l2Timeout.String(),
		"cache": "defaults (L1 10,000) + Redis", "workload": "acgs-mixed", "EVAL_TIMEOUT": evalTimeout(),
	})
	load, err := faults.StartLoad(faults.LoadConfig{URL: a.URL, Rate: rate, Duration: dur, Seed: 6})
	if err != nil {
		t.Fatal(err)
	}
	var pts []soakPoint
	every := 10 * time.Second
	for at := time.Duration(0); at <= dur; at += every {
		load.SleepUntil(at)
		rss, err := a.RSSKiB()
		if err != nil {
			t.Fatal(err)
		}
		g, _ := faults.Metric(a.URL, "go_goroutines")
		h, _ := faults.Metric(a.URL, "go_memstats_heap_inuse_bytes")
		idle, _ := faults.Metric(a.URL, "go_memstats_heap_idle_bytes")
		released, _ := faults.Metric(a.URL, "go_memstats_heap_released_bytes")
		next, _ := faults.Metric(a.URL, "go_memstats_next_gc_bytes")
		la, _ := os.ReadFile("/proc/loadavg")
		pts = append(pts, soakPoint{at, rss, g, h, idle - released, next, strings.Fields(string(la) + " ?")[0]})
	}
	samples := load.Wait()
	phases := []faults.Phase{{Name: "warm-up", From: 0, To: warm}}
	step := (dur - warm) / 4
	for i := 0; i < 4; i++ {
		from := warm + time.Duration(i)*step
		phases = append(phases, faults.Phase{Name: fmt.Sprintf("segment %d", i+1), From: from, To: from + step})
	}
	rep.Phases = faults.Summarize(load.Start, samples, phases)

	// Baseline: the mean of the three readings at the end of the warm-up;
	// end: the mean of the last three.
	var base, end []soakPoint
	for _, p := range pts {
		if p.at >= warm && len(base) < 3 {
			base = append(base, p)
		}
	}
	end = pts[max(0, len(pts)-3):]
	mean := func(ps []soakPoint, f func(soakPoint) float64) float64 {
		s := 0.0
		for _, p := range ps {
			s += f(p)
		}
		return s / float64(len(ps))
	}
	rss := func(p soakPoint) float64 { return float64(p.rssKiB) }
	gor := func(p soakPoint) float64 { return p.goroutines }
	rssBase, rssEnd := mean(base, rss), mean(end, rss)
	gBase, gEnd := mean(base, gor), mean(end, gor)
	gMin, gMax := gBase, gBase
	for _, p := range pts {
		if p.at >= warm {
			gMin, gMax = min(gMin, p.goroutines), max(gMax, p.goroutines)
		}
	}
	for _, p := range pts {
		if int(p.at.Seconds())%60 == 0 {
			rep.Event(nil, "t=%4.0fs VmRSS %6.1f MiB, goroutines %3.0f, heap in use %6.1f MiB, idle heap kept %6.1f MiB, next GC at %6.1f MiB, load1 %s",
				p.at.Seconds(), float64(p.rssKiB)/1024, p.goroutines, p.heap/(1<<20), p.retained/(1<<20), p.nextGC/(1<<20), p.load1)
		}
	}
	growth := (rssEnd - rssBase) / rssBase
	heapGrowth := (mean(end, func(p soakPoint) float64 { return p.heap }) - mean(base, func(p soakPoint) float64 { return p.heap })) /
		mean(base, func(p soakPoint) float64 { return p.heap })
	rep.Event(nil, "heap in use after warm-up: %+.1f%% (end vs start, means of three readings)", heapGrowth*100)
	total := rep.Phases[len(rep.Phases)-1]
	rep.Check("failed requests", total.Failed == 0, fmt.Sprint(total.Failed), "0")
	rep.Check("wrong decisions", total.Wrong == 0, fmt.Sprint(total.Wrong), "0")
	rep.Check("VmRSS growth after warm-up", growth < 0.10,
		fmt.Sprintf("%.1f%% (%.1f → %.1f MiB)", growth*100, rssBase/1024, rssEnd/1024), "< 10%")
	rep.Check("goroutines after warm-up (end vs start, min–max)", gEnd-gBase <= max(5, gBase*0.1),
		fmt.Sprintf("%.0f → %.0f (range %.0f–%.0f)", gBase, gEnd, gMin, gMax), "flat: end ≤ start + max(5, 10%)")
	rep.Finish()
}
