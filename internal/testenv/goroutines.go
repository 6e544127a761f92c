package testenv

import (
	"runtime"
	"strings"
)

// Goroutine is one goroutine of a runtime.Stack dump.
type Goroutine struct {
	// State is what the goroutine is doing: "running", "select",
	// "chan receive", "sync.Mutex.Lock", ... (the dump's bracket, without
	// how long it has waited).
	State string
	// Stack is its frames, innermost first: a function's frame starts a
	// line ("github.com/acgs-lite/acgs/internal/engine.(*Engine).decideMiss(").
	Stack string
}

// Goroutines counts this process's goroutines that match. A test that must
// wait until another goroutine is parked at a given point (joined a
// shared download, waits on a flight) has no other way to see it: a sleep
// only guesses it, and guesses wrong on a loaded machine.
func Goroutines(match func(Goroutine) bool) int {
	n := 0
	for _, g := range parseGoroutines(allStacks()) {
		if match(g) {
			n++
		}
	}
	return n
}

// allStacks is runtime.Stack of every goroutine, in a buffer grown until
// the dump fits (a cut one would miss goroutines).
func allStacks() string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return string(buf[:n])
		}
		buf = make([]byte, 2*len(buf))
	}
}

// parseGoroutines splits a runtime.Stack dump into its goroutines: each a
// "goroutine N [state, wait]:" line and its frames, separated by a blank
// line.
func parseGoroutines(dump string) []Goroutine {
	var gs []Goroutine
	for g := range strings.SplitSeq(strings.TrimSpace(dump), "\n\n") {
		head, stack, _ := strings.Cut(g, "\n")
		_, state, ok := strings.Cut(head, " [")
		if !ok {
			continue
		}
		state, _, _ = strings.Cut(state, "]")
		state, _, _ = strings.Cut(state, ",")
		gs = append(gs, Goroutine{State: state, Stack: stack})
	}
	return gs
}
