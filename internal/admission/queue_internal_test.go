package admission

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// order is the queue, oldest first.
func (c *Controller) order() []*waiter {
	var q []*waiter
	for w := c.oldest; w != nil; w = w.newer {
		q = append(q, w)
	}
	return q
}

// TestQueueMatchesItsModel drives the queue (enqueue with displacement,
// remove from anywhere, next in either order) at random and checks it
// against the slice it replaced, operation by operation: the same waiter
// displaced, removed or taken, the same order, the same count, in both
// directions of the links.
func TestQueueMatchesItsModel(t *testing.T) {
	for _, maxQueue := range []int{1, 2, 3, 8, 33} {
		t.Run(fmt.Sprint(maxQueue), func(t *testing.T) {
			c := New(Config{MaxInFlight: 1, MaxQueue: maxQueue, MaxWait: time.Minute, LIFOAfter: time.Minute})
			c.inUse = 1
			rng := rand.New(rand.NewPCG(1, uint64(maxQueue)))
			var model []*waiter // the former c.waiters
			old := time.Now().Add(-time.Hour)
			for op := range 20000 {
				switch r := rng.IntN(10); {
				case r < 5: // an arrival
					var gone *waiter
					if len(model) >= maxQueue {
						gone, model = model[0], model[1:]
					}
					w := c.enqueue(nil)
					if w.since = time.Now(); rng.IntN(4) == 0 {
						w.since = old // waited longer than LIFOAfter
					}
					model = append(model, w)
					if gone != nil && (gone.state != displaced || len(gone.ch) != 1) {
						t.Fatalf("op %d: the oldest was not displaced", op)
					}
				case r < 7: // a waiter gives up
					if len(model) == 0 {
						continue
					}
					i := rng.IntN(len(model))
					c.remove(model[i])
					model = slices.Delete(model, i, i+1)
				default: // a slot frees
					var want *waiter
					if n := len(model); n > 0 {
						if 2*n <= maxQueue && time.Since(model[0].since) < c.lifoAfter {
							want, model = model[0], model[1:]
						} else {
							want, model = model[n-1], model[:n-1]
						}
					}
					if got := c.next(); got != want {
						t.Fatalf("op %d: next took %p, want %p", op, got, want)
					}
				}
				if got := c.order(); !slices.Equal(got, model) || c.Stats().Waiting != len(model) {
					t.Fatalf("op %d: queue %v (%d waiting), want %v", op, got, c.Stats().Waiting, model)
				}
				var back []*waiter
				for w := c.newest; w != nil; w = w.older {
					back = append(back, w)
				}
				slices.Reverse(back)
				if !slices.Equal(back, model) {
					t.Fatalf("op %d: newest to oldest %v, want %v", op, back, model)
				}
			}
		})
	}
}

// BenchmarkFullQueue: the cost, under the lock, of what sustained overload
// does to a full queue at each depth: an arrival displacing the oldest
// waiter, a waiter in the middle giving up (its wait ended), and a freed
// slot going to the oldest (first come, first served). Each should cost
// the same at any depth; with the queue in a slice each copied it whole.
func BenchmarkFullQueue(b *testing.B) {
	for _, depth := range []int{1_000, 10_000, 100_000, 1_000_000} {
		full := func(b *testing.B) *Controller {
			c := New(Config{MaxInFlight: 1, MaxQueue: depth, MaxWait: time.Minute})
			c.inUse = 1
			for range depth {
				c.enqueue(nil)
			}
			b.ResetTimer()
			return c
		}
		b.Run(fmt.Sprintf("arrival/%d", depth), func(b *testing.B) {
			c := full(b)
			for b.Loop() {
				c.mu.Lock()
				old := c.oldest
				c.enqueue(nil)
				c.mu.Unlock()
				<-old.ch
				waiterPool.Put(old)
			}
		})
		b.Run(fmt.Sprintf("give-up/%d", depth), func(b *testing.B) {
			c := full(b)
			mid := c.oldest
			for range depth / 2 {
				mid = mid.newer
			}
			for b.Loop() {
				c.mu.Lock()
				w := mid
				mid = mid.newer // never nil: the newest is enqueued after it
				c.remove(w)
				c.enqueue(nil) // the queue full again
				c.mu.Unlock()
				waiterPool.Put(w)
			}
		})
		b.Run(fmt.Sprintf("oldest-first/%d", depth), func(b *testing.B) {
			c := full(b)
			c.maxQueue = 2 * depth // half full: first come, first served
			for b.Loop() {
				c.mu.Lock()
				w := c.next()
				c.enqueue(nil)
				c.mu.Unlock()
				waiterPool.Put(w)
			}
		})
	}
}
