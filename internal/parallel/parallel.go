// Package parallel runs independent pieces of work over an index range on a
// bounded number of goroutines.
//
// For runs f(i) for every i in [0, n) on at most GOMAXPROCS goroutines:
// the work it is used for (evaluating policies, warming caches) is CPU-bound,
// so more goroutines than the runtime can run at once would only add
// scheduling and memory (a stack per goroutine) and slow down everything
// else on the machine, and one goroutine per item would make a large batch
// start thousands of them. It does not recover panics, cancel, or return
// errors: f records its own result at index i.
package parallel

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// For calls f(i) for each i in [0, n), each exactly once, on at most
// GOMAXPROCS goroutines (fewer when n is smaller), and returns when every
// call has returned. With one worker it runs f on the calling goroutine, in
// order. f must be safe to call concurrently for different i.
func For(n int, f func(i int)) {
	workers := min(runtime.GOMAXPROCS(0), n)
	if workers <= 1 {
		for i := 0; i < n; i++ {
			f(i)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				f(i)
			}
		}()
	}
	wg.Wait()
}
