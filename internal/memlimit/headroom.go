package memlimit

import (
	"fmt"
	"math"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
)

// DefaultHeadroomMiB is the collector's minimum headroom by default, in MiB.
//
// Warm, acgs serve keeps about 8 MB live and allocates about 2.5 KB a
// request (most of it net/http's). Go's default pacing (GOGC=100) lets the
// heap grow by about the live heap's size between collections, 9 MB: a
// collection every 65 ms at 45,000 requests a second, 8% of the CPU. A heap
// goal 20 MiB above the live heap lets it grow by 21 MB, a collection about
// every 190 ms (docs/performance.md). With 10,000 different decisions in L1
// the live heap is about 13 MiB and the goal 32 MiB instead of 26: resident
// memory 74 MB instead of 63, under the 80 MB target.
const DefaultHeadroomMiB = 20

// HeadroomSource says what decides the collector's pacing.
type HeadroomSource string

const (
	// HeadroomFromGOGC: GOGC is set in the environment and wins; nothing is changed.
	HeadroomFromGOGC HeadroomSource = "GOGC"
	// HeadroomOff: the minimum headroom is 0; Go's default pacing (GOGC=100).
	HeadroomOff HeadroomSource = "off"
	// HeadroomOn: the heap goal is kept at least the headroom above the live heap.
	HeadroomOn HeadroomSource = "headroom"
)

// Headroom keeps the garbage collector's heap goal at least Min bytes above
// the live heap, and never below Go's default: after each collection it
// raises GOGC so that the runtime's goal, live + (live + stacks + globals) ×
// GOGC/100, is live + Min, when that takes more than GOGC=100. A small live
// heap is then not collected every few megabytes, while a large one (or
// one with many goroutines' stacks) is paced as Go paces it. GOMEMLIMIT,
// when set, still bounds the heap.
//
// No library here does this (automemlimit sizes GOMEMLIMIT only); the
// mechanism is the runtime's own: a cleanup on an object made unreachable at
// once runs after the next collection, reads the live heap and the roots the
// collector scanned from runtime/metrics and sets GOGC with
// debug.SetGCPercent. Until that cleanup runs after a collection, the goal
// is the one the previous percent gives for the new live heap.
type Headroom struct {
	Source HeadroomSource
	Min    int64  // bytes; 0 unless Source is HeadroomOn
	Reason string // for the startup log

	stopped atomic.Bool
	mu      sync.Mutex // one adjustment at a time; percent is the last set
	percent int
	sample  []metrics.Sample
}

// StartHeadroom decides the pacing for a process whose GOGC variable is
// gogc ("" when unset) and a minimum headroom of mib MiB (0: off), and
// starts keeping it when it is on. Stop undoes it.
func StartHeadroom(gogc string, mib int) *Headroom {
	switch {
	case gogc != "":
		return &Headroom{Source: HeadroomFromGOGC, Reason: fmt.Sprintf("GOGC=%s is set in the environment and wins over GC_MIN_HEADROOM_MB", gogc)}
	case mib <= 0:
		return &Headroom{Source: HeadroomOff, Reason: "GC_MIN_HEADROOM_MB=0: Go's default pacing (GOGC=100)"}
	}
	h := &Headroom{
		Source:  HeadroomOn,
		Min:     int64(mib) << 20,
		Reason:  fmt.Sprintf("the heap goal is kept at least %d MiB above the live heap (GOGC raised while the live heap is under %d MiB)", mib, mib),
		percent: 100,
		sample: []metrics.Sample{
			{Name: "/gc/heap/live:bytes"}, {Name: "/gc/scan/stack:bytes"}, {Name: "/gc/scan/globals:bytes"},
		},
	}
	h.adjust()
	h.arm()
	return h
}

// Stop ends the adjustments and gives the runtime back GOGC=100; for tests,
// and for a process that hands its pacing back.
func (h *Headroom) Stop() {
	if h.Source != HeadroomOn || h.stopped.Swap(true) {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	debug.SetGCPercent(100)
	h.percent = 100
}

// arm registers the cleanup that runs after the next collection. The
// sentinel is 64 bytes so that it is an allocation of its own (the tiny
// allocator packs smaller pointer-free objects together, and a block is freed
// only when all of them are unreachable).
func (h *Headroom) arm() {
	if h.stopped.Load() {
		return
	}
	sentinel := new([64]byte)
	runtime.AddCleanup(sentinel, func(h *Headroom) {
		h.adjust()
		h.arm()
	}, h)
}

// adjust sets GOGC for the live heap the last collection marked. It is
// called once a collection, so it only touches the runtime when the percent
// moves by more than 1/16 (the goal is then within 7% of live + Min).
func (h *Headroom) adjust() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped.Load() {
		return
	}
	metrics.Read(h.sample)
	var v [3]int64
	for i, x := range h.sample {
		if x.Value.Kind() != metrics.KindUint64 {
			return // not reported by this runtime: leave Go's pacing
		}
		v[i] = int64(x.Value.Uint64())
	}
	p := HeadroomPercent(v[0], v[1]+v[2], h.Min)
	if d := p - h.percent; d > h.percent/16 || -d > h.percent/16 {
		debug.SetGCPercent(p)
		h.percent = p
	}
}

// minimumHeap is the runtime's least heap goal at GOGC=100 (4 MiB,
// runtime/mgcpacer.go), which it scales with GOGC.
const minimumHeap = 4 << 20

// HeadroomPercent is the GOGC that puts the runtime's heap goal, live +
// (live + roots) × GOGC/100 with roots the stacks and globals it scans,
// headroom bytes above a live heap of live bytes, and at least Go's default
// of 100. It is bounded so that the least goal the runtime keeps, 4 MiB ×
// GOGC/100, is not above live + headroom either, as it would be for a live
// heap of a few MiB.
func HeadroomPercent(live, roots, headroom int64) int {
	live, roots = max(live, 0), max(roots, 0)
	p := 100.0
	if base := live + roots; base > 0 {
		p = math.Ceil(float64(headroom) * 100 / float64(base))
	} else if headroom > 0 {
		p = math.Inf(1)
	}
	bound := math.Floor(float64(live+headroom) * 100 / minimumHeap)
	return int(max(100, min(p, bound)))
}
