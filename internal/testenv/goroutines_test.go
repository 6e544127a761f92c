package testenv

import (
	"strings"
	"testing"
	"time"
)

func TestParseGoroutines(t *testing.T) {
	dump := "goroutine 1 [running]:\nmain.main()\n\t/x/main.go:3 +0x1\n\n" +
		"goroutine 7 [select, 2 minutes]:\npkg.(*T).wait(0x1)\n\t/x/t.go:9 +0x2\ncreated by pkg.start in goroutine 1\n\n" +
		"goroutine 8 [chan receive]:\npkg.recv()\n\t/x/r.go:4 +0x3\n"
	want := []Goroutine{
		{State: "running", Stack: "main.main()\n\t/x/main.go:3 +0x1"},
		{State: "select", Stack: "pkg.(*T).wait(0x1)\n\t/x/t.go:9 +0x2\ncreated by pkg.start in goroutine 1"},
		{State: "chan receive", Stack: "pkg.recv()\n\t/x/r.go:4 +0x3"},
	}
	got := parseGoroutines(dump)
	if len(got) != len(want) {
		t.Fatalf("parsed %d goroutines, want %d: %q", len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("goroutine %d = %q, want %q", i, got[i], want[i])
		}
	}
}

// parkedInSelect waits in a select until release is closed.
func parkedInSelect(release chan struct{}, done chan struct{}) {
	defer close(done)
	select {
	case <-release:
	case <-time.After(time.Hour):
	}
}

// Goroutines finds goroutines parked in a function's select, and stops
// counting them once they return.
func TestGoroutines(t *testing.T) {
	parked := func(g Goroutine) bool {
		return g.State == "select" && strings.HasPrefix(g.Stack, "github.com/acgs-lite/acgs/internal/testenv.parkedInSelect(")
	}
	release := make(chan struct{})
	var dones []chan struct{}
	for range 3 {
		done := make(chan struct{})
		dones = append(dones, done)
		go parkedInSelect(release, done)
	}
	await := func(want int) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); Goroutines(parked) != want; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%d goroutines parked in parkedInSelect after 10s, want %d", Goroutines(parked), want)
			}
		}
	}
	await(3)
	close(release)
	for _, done := range dones {
		<-done
	}
	await(0)
}
