package memlimit

import (
	"runtime"
	"runtime/metrics"
	"strings"
	"testing"
	"time"
)

func TestHeadroomPercent(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		name                  string
		live, roots, headroom int64
		want                  int
	}{
		{"small live heap: goal live + headroom", 8 * mib, 0, 20 * mib, 250},
		{"stacks and globals count as the runtime counts them", 8 * mib, 2 * mib, 20 * mib, 200},
		{"rounded up so the goal is not below live + headroom", 6 * mib, 0, 20 * mib, 334},
		{"live heap as large as the headroom: Go's default", 20 * mib, 0, 20 * mib, 100},
		{"many goroutines' stacks: Go's default", 8 * mib, 64 * mib, 20 * mib, 100},
		{"live heap larger: Go's default, never less", 200 * mib, 0, 20 * mib, 100},
		{"no headroom", 8 * mib, 0, 0, 100},
		// The runtime keeps a goal of at least 4 MiB × GOGC/100: the
		// percent is bounded so that it stays within live + headroom.
		{"a live heap of a few MiB: bounded by the least goal", 1 * mib, mib / 4, 20 * mib, 525},
		{"no live heap reported yet", 0, 0, 20 * mib, 500},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := HeadroomPercent(tc.live, tc.roots, tc.headroom); got != tc.want {
				t.Errorf("HeadroomPercent(%d, %d, %d) = %d, want %d", tc.live, tc.roots, tc.headroom, got, tc.want)
			}
		})
	}
}

func TestStartHeadroomLeavesThePacingAlone(t *testing.T) {
	before := readGC(t)
	for _, tc := range []struct {
		gogc   string
		mib    int
		source HeadroomSource
		reason string
	}{
		{"200", 20, HeadroomFromGOGC, "GOGC=200 is set"},
		{"off", 20, HeadroomFromGOGC, "GOGC=off is set"},
		{"", 0, HeadroomOff, "GC_MIN_HEADROOM_MB=0"},
	} {
		h := StartHeadroom(tc.gogc, tc.mib)
		if h.Source != tc.source || !strings.Contains(h.Reason, tc.reason) {
			t.Errorf("StartHeadroom(%q, %d) = %s (%s), want %s (%q)", tc.gogc, tc.mib, h.Source, h.Reason, tc.source, tc.reason)
		}
		runtime.GC()
		if got := readGC(t); got.percent != before.percent {
			t.Errorf("StartHeadroom(%q, %d) changed GOGC from %d to %d", tc.gogc, tc.mib, before.percent, got.percent)
		}
		h.Stop() // does nothing: nothing was started
	}
}

// ballast is kept live by the test that needs a large live heap.
var ballast [][]byte

func TestHeadroomFollowsTheLiveHeap(t *testing.T) {
	const mib = 1 << 20
	const headroom = 64 // MiB
	// A live heap of 16 MiB: the percent lands between Go's default and
	// the bound of the runtime's least goal, where the formula decides.
	ballast = [][]byte{make([]byte, 16*mib)}
	defer func() { ballast = nil }()
	h := StartHeadroom("", headroom)
	defer h.Stop()
	if h.Source != HeadroomOn || h.Min != headroom*mib {
		t.Fatalf("StartHeadroom: %s, %d bytes", h.Source, h.Min)
	}
	wantGoal := func(g gcState) {
		t.Helper()
		if g.goal < g.live+h.Min-h.Min/16 || g.goal > g.live+h.Min+h.Min/8 {
			t.Errorf("live heap %d MiB, GOGC %d: heap goal %d MiB, want about live + %d MiB", g.live/mib, g.percent, g.goal/mib, headroom)
		}
	}

	g := waitGC(t, func(g gcState) bool { return g.percent > 100 })
	if g.percent >= int((g.live+h.Min)*100/minimumHeap) {
		t.Fatalf("live heap %d MiB: GOGC %d is the bound, not the formula", g.live/mib, g.percent)
	}
	wantGoal(g)

	// A live heap larger than the headroom: Go's default pacing again.
	for range 10 {
		ballast = append(ballast, make([]byte, 16*mib))
	}
	g = waitGC(t, func(g gcState) bool { return g.percent == 100 })
	if g.live < 160*mib {
		t.Errorf("live heap %d with 160 MiB held", g.live)
	}

	// Small again: raised again.
	ballast = [][]byte{ballast[0]} // a new array: the old one would keep the rest live
	wantGoal(waitGC(t, func(g gcState) bool { return g.percent > 100 }))

	h.Stop()
	runtime.GC()
	time.Sleep(20 * time.Millisecond) // a cleanup queued before Stop must not set GOGC again
	runtime.GC()
	if g := readGC(t); g.percent != 100 {
		t.Errorf("after Stop: GOGC %d, want 100", g.percent)
	}
}

type gcState struct {
	percent    int
	live, goal int64
}

func readGC(t *testing.T) gcState {
	t.Helper()
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}, {Name: "/gc/heap/live:bytes"}, {Name: "/gc/heap/goal:bytes"}}
	metrics.Read(s)
	for _, x := range s {
		if x.Value.Kind() != metrics.KindUint64 {
			t.Fatalf("%s is not reported by this runtime", x.Name)
		}
	}
	return gcState{percent: int(s[0].Value.Uint64()), live: int64(s[1].Value.Uint64()), goal: int64(s[2].Value.Uint64())}
}

// waitGC collects until ok holds of the pacing (the adjustment runs on a
// cleanup goroutine after a collection), and fails after 10 s.
func waitGC(t *testing.T, ok func(gcState) bool) gcState {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		runtime.GC()
		time.Sleep(5 * time.Millisecond)
		g := readGC(t)
		if ok(g) {
			// The goal of the collection that follows the adjustment.
			runtime.GC()
			return readGC(t)
		}
		if time.Now().After(deadline) {
			t.Fatalf("pacing not as wanted after 10 s: GOGC %d, live %d, goal %d", g.percent, g.live, g.goal)
		}
	}
}
