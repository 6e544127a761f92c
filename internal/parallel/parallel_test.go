package parallel

import (
	"runtime"
	"sync/atomic"
	"testing"
)

func TestFor(t *testing.T) {
	tests := []struct {
		name  string
		n     int
		procs int // GOMAXPROCS for the run
	}{
		{"zero items", 0, 4},
		{"negative n", -3, 4},
		{"one item", 1, 4},
		{"fewer items than procs", 3, 8},
		{"more items than procs", 1000, 4},
		{"one proc runs in order", 50, 1},
		{"two procs", 257, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(tt.procs))

			size := max(tt.n, 0)
			calls := make([]atomic.Int32, size)
			var running, peak atomic.Int32
			var order []int // only appended to with one proc
			For(tt.n, func(i int) {
				cur := running.Add(1)
				for {
					p := peak.Load()
					if cur <= p || peak.CompareAndSwap(p, cur) {
						break
					}
				}
				if tt.procs == 1 {
					order = append(order, i)
				}
				runtime.Gosched() // let other workers overlap with this one
				calls[i].Add(1)
				running.Add(-1)
			})

			for i := range calls {
				if c := calls[i].Load(); c != 1 {
					t.Errorf("f(%d) called %d times, want 1", i, c)
				}
			}
			if limit := int32(min(tt.procs, size)); peak.Load() > limit {
				t.Errorf("%d calls ran at once, want at most %d", peak.Load(), limit)
			}
			if tt.procs == 1 {
				for i, got := range order {
					if got != i {
						t.Fatalf("with one proc, call %d was f(%d), want in order", i, got)
					}
				}
			}
		})
	}
}
