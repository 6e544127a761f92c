package admission_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/acgs-lite/acgs/internal/admission"
	"github.com/acgs-lite/acgs/internal/apierror"
)

// waitFor polls cond every millisecond for up to 5 s: a bound for a
// failure, not a measurement.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// fill takes every slot of c and returns their releases.
func fill(t *testing.T, c *admission.Controller) []func() {
	t.Helper()
	var rel []func()
	for range c.Stats().MaxInFlight {
		r, err := c.Admit(context.Background())
		if err != nil {
			t.Fatalf("slot %d refused: %v", len(rel)+1, err)
		}
		rel = append(rel, r)
	}
	return rel
}

// wantOverloaded checks err is an overloaded apierror with cause.
func wantOverloaded(t *testing.T, err, cause error) {
	t.Helper()
	if err == nil {
		t.Fatal("admitted, want refused")
	}
	if apierror.CodeOf(err) != apierror.Overloaded {
		t.Errorf("code %q, want overloaded (%v)", apierror.CodeOf(err), err)
	}
	if apierror.CodeOf(err).Status() != 503 {
		t.Errorf("status %d, want 503", apierror.CodeOf(err).Status())
	}
	if !errors.Is(err, cause) {
		t.Errorf("error %v does not wrap %v", err, cause)
	}
}

type result struct {
	release func()
	err     error
	took    time.Duration // of the Admit call
	end     time.Time     // when Admit returned
}

// admitAsync asks for a slot in the background.
func admitAsync(ctx context.Context, c *admission.Controller) <-chan result {
	ch := make(chan result, 1)
	go func() {
		t0 := time.Now()
		r, err := c.Admit(ctx)
		end := time.Now()
		ch <- result{r, err, end.Sub(t0), end}
	}()
	return ch
}

// refusalReason is ReasonOf's answer for each of a Controller's refusals.
var refusalReason = map[error]string{
	admission.ErrQueueFull:    admission.ReasonQueueFull,
	admission.ErrQueueTimeout: admission.ReasonQueueTimeout,
	admission.ErrDeadline:     admission.ReasonDeadline,
	admission.ErrCanceled:     admission.ReasonCanceled,
}

// TestReasonOf: the service and the gateway count an undecided decision
// by ReasonOf (each had its own copy, and the gateway's had no "late"):
// nothing for a decision or a failed one; canceled for a request that
// went away, wherever the cancellation is in the chain; late, queue_full
// and queue_timeout by their causes; deadline for any other Overloaded
// (a passed deadline, a shared evaluation the request stopped waiting for).
func TestReasonOf(t *testing.T) {
	over := func(cause error) error { return apierror.Wrap(apierror.Overloaded, cause, "not decided") }
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"no error", nil, ""},
		{"an evaluation error", apierror.Wrap(apierror.EvaluationError, errors.New("boom"), "failed"), ""},
		{"a cancellation that is no Overloaded", context.Canceled, ""},
		{"cancelled waiting for a slot", over(admission.ErrCanceled), admission.ReasonCanceled},
		{"cancelled waiting for a shared evaluation", over(context.Canceled), admission.ReasonCanceled},
		{"too late", over(admission.ErrLate), admission.ReasonLate},
		{"too late, wrapped again", over(fmt.Errorf("batch item: %w", admission.ErrLate)), admission.ReasonLate},
		{"queue full", over(admission.ErrQueueFull), admission.ReasonQueueFull},
		{"queue-wait limit", over(admission.ErrQueueTimeout), admission.ReasonQueueTimeout},
		{"deadline waiting for a slot", over(admission.ErrDeadline), admission.ReasonDeadline},
		{"deadline waiting for a shared evaluation", over(context.DeadlineExceeded), admission.ReasonDeadline},
	} {
		if got := admission.ReasonOf(tc.err); got != tc.want {
			t.Errorf("%s: ReasonOf(%v) = %q, want %q", tc.name, tc.err, got, tc.want)
		}
		if got := admission.Overloaded(tc.err); got != (tc.want != "") {
			t.Errorf("%s: Overloaded(%v) = %v", tc.name, tc.err, got)
		}
	}
}

func TestRefusals(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   admission.Config
		ctx   func() (context.Context, context.CancelFunc)
		cause error
		// minTook bounds how long the refusal took from the making of
		// the context (where a deadline or a cancellation timer starts:
		// the Admit call may begin later, the goroutine making it being
		// descheduled), maxTook how long the Admit call took.
		minTook, maxTook time.Duration
	}{
		{
			name:    "no waiting allowed: refused at once",
			cfg:     admission.Config{MaxInFlight: 2, MaxWait: 0},
			ctx:     func() (context.Context, context.CancelFunc) { return context.Background(), func() {} },
			cause:   admission.ErrQueueFull,
			maxTook: time.Second,
		},
		{
			name:    "queue-wait limit",
			cfg:     admission.Config{MaxInFlight: 1, MaxWait: 30 * time.Millisecond},
			ctx:     func() (context.Context, context.CancelFunc) { return context.Background(), func() {} },
			cause:   admission.ErrQueueTimeout,
			minTook: 30 * time.Millisecond, maxTook: 5 * time.Second,
		},
		{
			name: "the request's deadline comes before the limit",
			cfg:  admission.Config{MaxInFlight: 1, MaxWait: 10 * time.Second},
			ctx: func() (context.Context, context.CancelFunc) {
				return context.WithTimeout(context.Background(), 30*time.Millisecond)
			},
			cause:   admission.ErrDeadline,
			minTook: 25 * time.Millisecond, maxTook: 5 * time.Second,
		},
		{
			name: "deadline already passed",
			cfg:  admission.Config{MaxInFlight: 1, MaxWait: 10 * time.Second},
			ctx: func() (context.Context, context.CancelFunc) {
				return context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
			},
			cause:   admission.ErrDeadline,
			maxTook: time.Second,
		},
		{
			// The cancellation of a context with a deadline still to come
			// (a batch's bound, when its client goes away).
			name: "parent cancelled while waiting",
			cfg:  admission.Config{MaxInFlight: 1, MaxWait: 10 * time.Second},
			ctx: func() (context.Context, context.CancelFunc) {
				parent, cancelParent := context.WithCancel(context.Background())
				ctx, cancel := context.WithTimeout(parent, time.Hour)
				time.AfterFunc(30*time.Millisecond, cancelParent)
				return ctx, func() { cancel(); cancelParent() }
			},
			cause:   admission.ErrCanceled,
			minTook: 25 * time.Millisecond, maxTook: 5 * time.Second,
		},
		{
			name: "cancelled while waiting",
			cfg:  admission.Config{MaxInFlight: 1, MaxWait: 10 * time.Second},
			ctx: func() (context.Context, context.CancelFunc) {
				ctx, cancel := context.WithCancel(context.Background())
				time.AfterFunc(30*time.Millisecond, cancel)
				return ctx, cancel
			},
			cause:   admission.ErrCanceled,
			minTook: 25 * time.Millisecond, maxTook: 5 * time.Second,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := admission.New(tc.cfg)
			rel := fill(t, c)
			made := time.Now()
			ctx, cancel := tc.ctx()
			defer cancel()
			r := <-admitAsync(ctx, c)
			wantOverloaded(t, r.err, tc.cause)
			if got, want := admission.ReasonOf(r.err), refusalReason[tc.cause]; got != want {
				t.Errorf("ReasonOf(%v) = %q, want %q", r.err, got, want)
			}
			if since := r.end.Sub(made); since < tc.minTook {
				t.Errorf("refused %s after the context was made, want at least %s", since, tc.minTook)
			}
			if r.took > tc.maxTook {
				t.Errorf("refused after %s, want at most %s", r.took, tc.maxTook)
			}
			// The queue-wait limit starts in the Admit call.
			if tc.cause == admission.ErrQueueTimeout && r.took < tc.cfg.MaxWait {
				t.Errorf("refused for the queue-wait limit after %s of Admit, want at least %s", r.took, tc.cfg.MaxWait)
			}
			st := c.Stats()
			if st.Waiting != 0 || st.InFlight != tc.cfg.MaxInFlight {
				t.Errorf("after the refusal: %+v", st)
			}
			// A cancelled request is counted apart from the refusals:
			// the service refused it nothing.
			wantCanceled := tc.cause == admission.ErrCanceled
			if refusals := st.QueueFull + st.Timeout + st.Deadline; (refusals == 0) != wantCanceled || (st.Canceled == 1) != wantCanceled {
				t.Errorf("counters %+v, want it counted as cancelled: %v", st, wantCanceled)
			}
			for _, f := range rel {
				f()
			}
			if st := c.Stats(); st.InFlight != 0 {
				t.Errorf("after releasing every slot: %d in flight", st.InFlight)
			}
		})
	}
}

func TestWaiterGetsReleasedSlot(t *testing.T) {
	c := admission.New(admission.Config{MaxInFlight: 1, MaxWait: 10 * time.Second})
	rel := fill(t, c)
	ch := admitAsync(context.Background(), c)
	waitFor(t, "a waiter", func() bool { return c.Stats().Waiting == 1 })
	rel[0]()
	r := <-ch
	if r.err != nil {
		t.Fatalf("waiter refused: %v", r.err)
	}
	if st := c.Stats(); st.InFlight != 1 || st.Waiting != 0 || st.Admitted != 2 || st.Queued != 1 {
		t.Errorf("the slot should have passed to the waiter: %+v", st)
	}
	r.release()
	if st := c.Stats(); st.InFlight != 0 {
		t.Errorf("in flight %d after the last release", st.InFlight)
	}
}

// TestOldestWaiterFirstWhileYoung: while the queue drains, first come,
// first served.
func TestOldestWaiterFirstWhileYoung(t *testing.T) {
	c := admission.New(admission.Config{MaxInFlight: 1, MaxWait: 10 * time.Second})
	rel := fill(t, c)
	old := admitAsync(context.Background(), c)
	waitFor(t, "the first waiter", func() bool { return c.Stats().Waiting == 1 })
	newer := admitAsync(context.Background(), c)
	waitFor(t, "the second waiter", func() bool { return c.Stats().Waiting == 2 })
	rel[0]()
	r := <-old
	if r.err != nil {
		t.Fatalf("oldest waiter refused: %v", r.err)
	}
	select {
	case r := <-newer:
		t.Fatalf("newest waiter answered (%v) while the slot is held", r.err)
	case <-time.After(20 * time.Millisecond):
	}
	r.release()
	if r := <-newer; r.err != nil {
		t.Fatalf("newest waiter refused after the second release: %v", r.err)
	} else {
		r.release()
	}
}

// TestNewestWaiterFirstWhenOld: once the oldest waiter has waited
// LIFOAfter, a released slot goes to the request that waited least, so
// that under sustained overload admitted requests have barely queued (a
// full queue does the same: TestFullQueueShedsOldest).
func TestNewestWaiterFirstWhenOld(t *testing.T) {
	c := admission.New(admission.Config{MaxInFlight: 1, MaxWait: 10 * time.Second, LIFOAfter: 10 * time.Millisecond})
	rel := fill(t, c)
	old := admitAsync(context.Background(), c)
	waitFor(t, "the first waiter", func() bool { return c.Stats().Waiting == 1 })
	newer := admitAsync(context.Background(), c)
	waitFor(t, "the second waiter", func() bool { return c.Stats().Waiting == 2 })
	time.Sleep(20 * time.Millisecond) // the oldest is now older than LIFOAfter
	rel[0]()
	r := <-newer
	if r.err != nil {
		t.Fatalf("newest waiter refused: %v", r.err)
	}
	select {
	case r := <-old:
		t.Fatalf("oldest waiter answered (%v) while the slot is held", r.err)
	case <-time.After(20 * time.Millisecond):
	}
	r.release()
	if r := <-old; r.err != nil {
		t.Fatalf("oldest waiter refused after the second release: %v", r.err)
	} else {
		r.release()
	}
}

// TestFullQueueShedsOldest: a newcomer to a full queue displaces the
// oldest waiter, which is refused at once instead of at its time limit.
func TestFullQueueShedsOldest(t *testing.T) {
	c := admission.New(admission.Config{MaxInFlight: 1, MaxQueue: 2, MaxWait: 10 * time.Second})
	rel := fill(t, c)
	var waiters []<-chan result
	for i := range 3 {
		waiters = append(waiters, admitAsync(context.Background(), c))
		if i < 2 {
			n := i + 1
			waitFor(t, "a waiter", func() bool { return c.Stats().Waiting == n })
		}
	}
	r := <-waiters[0]
	wantOverloaded(t, r.err, admission.ErrQueueFull)
	if r.took > 5*time.Second {
		t.Errorf("displaced after %s", r.took)
	}
	waitFor(t, "two waiters", func() bool { return c.Stats().Waiting == 2 })
	rel[0]()
	for _, i := range []int{2, 1} { // a full queue serves the newest first
		r := <-waiters[i]
		if r.err != nil {
			t.Fatalf("waiter %d refused: %v", i, r.err)
		}
		r.release()
	}
	st := c.Stats()
	if st.QueueFull != 1 || st.InFlight != 0 || st.Waiting != 0 || st.Admitted != 3 {
		t.Errorf("stats %+v", st)
	}
}

func TestDefaults(t *testing.T) {
	c := admission.New(admission.Config{MaxWait: time.Second})
	st := c.Stats()
	if st.MaxInFlight != admission.DefaultMaxInFlight() || st.MaxQueue != admission.DefaultMaxQueue(st.MaxInFlight) || st.MaxInFlight < 1 {
		t.Errorf("defaults: %+v", st)
	}
	if st := admission.New(admission.Config{MaxInFlight: 3}).Stats(); st.MaxQueue != 0 {
		t.Errorf("without a wait there is no queue: %+v", st)
	}
}

// TestDefaultQueueIsCapped: the default queue (64 waiters a slot) is at
// most MaxQueueCap, the bound an explicit ADMISSION_MAX_QUEUE has; with
// ADMISSION_MAX_IN_FLIGHT at its largest (100,000) it was 6.4 million.
func TestDefaultQueueIsCapped(t *testing.T) {
	for _, tc := range []struct{ inFlight, want int }{
		{1, 64},
		{2, 128},
		{15625, 1_000_000},
		{15626, 1_000_000},
		{100_000, 1_000_000},
	} {
		if got := admission.DefaultMaxQueue(tc.inFlight); got != tc.want {
			t.Errorf("DefaultMaxQueue(%d) = %d, want %d", tc.inFlight, got, tc.want)
		}
		st := admission.New(admission.Config{MaxInFlight: tc.inFlight, MaxWait: time.Second}).Stats()
		if st.MaxQueue != tc.want {
			t.Errorf("New with %d slots: queue of %d, want %d", tc.inFlight, st.MaxQueue, tc.want)
		}
	}
	if admission.MaxQueueCap != 1_000_000 {
		t.Errorf("MaxQueueCap %d: config and the README say 1000000", admission.MaxQueueCap)
	}
}

// TestConcurrentBound hammers a controller from many goroutines, with
// Admit alone and with Admit and Do together: never more evaluations in
// flight than slots, every request answered, every slot returned, and the
// counters add up.
func TestConcurrentBound(t *testing.T) {
	for _, tc := range []struct {
		name  string
		slots int
		do    func(worker int) bool // whether this worker calls Do (else Admit)
	}{
		{"admit", 3, func(int) bool { return false }},
		{"admit and do", 2, func(w int) bool { return w%4 != 0 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const workers, each = 32, 200
			c := admission.New(admission.Config{MaxInFlight: tc.slots, MaxQueue: 8, MaxWait: 2 * time.Millisecond})
			var running, peak, ok, refused, late atomic.Int64
			work := func() { track(&running, &peak, 30*time.Microsecond) }
			var wg sync.WaitGroup
			for w := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range each {
						ctx, cancel := context.Background(), context.CancelFunc(func() {})
						if (w+i)%7 == 0 {
							ctx, cancel = context.WithTimeout(ctx, time.Millisecond)
						}
						var err error
						if tc.do(w) {
							var started bool
							if started, err = c.Do(ctx, work); started && err != nil {
								late.Add(1) // its deadline passed while it ran: it did run
								err = nil
							}
						} else {
							var release func()
							if release, err = c.Admit(ctx); err == nil {
								work()
								release()
							}
						}
						cancel()
						if err != nil {
							if apierror.CodeOf(err) != apierror.Overloaded {
								t.Errorf("refusal with code %q", apierror.CodeOf(err))
							}
							refused.Add(1)
							continue
						}
						ok.Add(1)
					}
				}()
			}
			wg.Wait()
			waitFor(t, "every slot back", func() bool { return c.Stats().InFlight == 0 })
			if p := peak.Load(); p > int64(tc.slots) {
				t.Errorf("%d evaluations ran at once, limit %d", p, tc.slots)
			}
			st := c.Stats()
			if st.Waiting != 0 {
				t.Errorf("left over: %+v", st)
			}
			if got := ok.Load() + refused.Load(); got != workers*each {
				t.Errorf("%d answers for %d requests", got, workers*each)
			}
			if st.Admitted != uint64(ok.Load()) || st.QueueFull+st.Timeout+st.Deadline != uint64(refused.Load()) || st.Abandoned != uint64(late.Load()) {
				t.Errorf("counters %+v; ran %d (%d past their deadline), refused %d", st, ok.Load(), late.Load(), refused.Load())
			}
		})
	}
}

// track stands for an evaluation of d: it counts itself in running for
// that long and raises peak to the most seen at once.
func track(running, peak *atomic.Int64, d time.Duration) {
	n := running.Add(1)
	for {
		p := peak.Load()
		if n <= p || peak.CompareAndSwap(p, n) {
			break
		}
	}
	time.Sleep(d)
	running.Add(-1)
}

// BenchmarkAdmission: the cost of taking and returning a slot, with Admit
// and release, and with Do around an empty evaluation.
func BenchmarkAdmission(b *testing.B) {
	for _, bc := range []struct {
		name  string
		slots int
		one   func(c *admission.Controller, ctx context.Context) error
	}{
		{"admit-release", 4, func(c *admission.Controller, ctx context.Context) error {
			r, err := c.Admit(ctx)
			if err == nil {
				r()
			}
			return err
		}},
		{"do", 1, func(c *admission.Controller, ctx context.Context) error {
			_, err := c.Do(ctx, func() {})
			return err
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			c := admission.New(admission.Config{MaxInFlight: bc.slots, MaxWait: time.Second})
			ctx := context.Background()
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := bc.one(c, ctx); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// goid is the current goroutine's number, from its stack header: the tests
// below check which goroutine ran an evaluation.
func goid() string {
	b := make([]byte, 64)
	b = b[:runtime.Stack(b, false)]
	f := strings.Fields(string(b))
	return f[1]
}

type doResult struct {
	started bool
	err     error
	ranOn   string // goroutine that ran fn ("" if it did not run)
	caller  string
}

// doAsync calls Do in the background with an fn that records its goroutine
// and then waits for hold (nil: returns at once).
func doAsync(ctx context.Context, c *admission.Controller, hold <-chan struct{}) <-chan doResult {
	ch := make(chan doResult, 1)
	go func() {
		var r doResult
		r.caller = goid()
		var ran atomic.Pointer[string]
		r.started, r.err = c.Do(ctx, func() {
			id := goid()
			ran.Store(&id)
			if hold != nil {
				<-hold
			}
		})
		if p := ran.Load(); p != nil {
			r.ranOn = *p
		}
		ch <- r
	}()
	return ch
}

// TestDoRunsInlineWhenFree: with a free slot, Do runs fn in its caller's
// goroutine and returns the slot.
func TestDoRunsInlineWhenFree(t *testing.T) {
	c := admission.New(admission.Config{MaxInFlight: 1, MaxWait: time.Second})
	r := <-doAsync(context.Background(), c, nil)
	if !r.started || r.err != nil || r.ranOn != r.caller {
		t.Fatalf("Do on a free slot: %+v, want run in the caller", r)
	}
	if st := c.Stats(); st.InFlight != 0 || st.Admitted != 1 || st.Queued != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestDoInlineRunsToItsEnd: fn run in its caller's goroutine (a free
// slot) is not cut short by its context's end, cancelled or past its
// deadline: Do returns when fn does, with fn's outcome, abandoning nothing
// (Do's doc said it returned at once, which only a queued fn does).
func TestDoInlineRunsToItsEnd(t *testing.T) {
	for _, tc := range []struct {
		name string
		ctx  func() (context.Context, func())
	}{
		{"cancelled", func() (context.Context, func()) {
			ctx, cancel := context.WithCancel(context.Background())
			return ctx, cancel
		}},
		{"deadline", func() (context.Context, func()) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
			t.Cleanup(cancel)
			return ctx, func() {} // fn outlives the deadline
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := admission.New(admission.Config{MaxInFlight: 1, MaxWait: time.Second})
			ctx, end := tc.ctx()
			caller, ranOn, after := goid(), "", false
			started, err := c.Do(ctx, func() {
				ranOn = goid()
				end()
				<-ctx.Done()
				after = true
			})
			if !started || err != nil || ranOn != caller || !after {
				t.Fatalf("Do: started %v, err %v, ran in the caller %v, ran to its end %v", started, err, ranOn == caller, after)
			}
			if st := c.Stats(); st.InFlight != 0 || st.Admitted != 1 || st.Abandoned != 0 || st.Canceled != 0 || st.Deadline != 0 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

// TestDoWaitersRunOnTheSlotsGoroutine: queued Do waiters are run one after
// another by one goroutine that is none of their callers (no hand-off of
// the slot between them), and a queued Admit waiter then gets the slot.
func TestDoWaitersRunOnTheSlotsGoroutine(t *testing.T) {
	c := admission.New(admission.Config{MaxInFlight: 1, MaxQueue: 8, MaxWait: 10 * time.Second})
	rel := fill(t, c)
	var dos []<-chan doResult
	for i := range 3 {
		dos = append(dos, doAsync(context.Background(), c, nil))
		waitFor(t, "a Do waiter", func() bool { return c.Stats().Waiting == i+1 })
	}
	adm := admitAsync(context.Background(), c)
	waitFor(t, "the Admit waiter", func() bool { return c.Stats().Waiting == 4 })
	rel[0]()
	var runner string
	for i, ch := range dos {
		r := <-ch
		if !r.started || r.err != nil {
			t.Fatalf("Do waiter %d: %+v", i, r)
		}
		if r.ranOn == r.caller {
			t.Errorf("Do waiter %d ran in its caller's goroutine", i)
		}
		if runner == "" {
			runner = r.ranOn
		} else if r.ranOn != runner {
			t.Errorf("Do waiter %d ran on goroutine %s, the one before on %s", i, r.ranOn, runner)
		}
	}
	a := <-adm
	if a.err != nil {
		t.Fatalf("Admit waiter after the Do waiters: %v", a.err)
	}
	if st := c.Stats(); st.InFlight != 1 || st.Waiting != 0 || st.Admitted != 5 {
		t.Errorf("stats with the Admit waiter holding the slot: %+v", st)
	}
	a.release()
	if st := c.Stats(); st.InFlight != 0 {
		t.Errorf("in flight %d after the last release", st.InFlight)
	}
}

// TestDoRefusals: a Do waiter that is displaced, reaches the queue-wait
// limit or its deadline is refused and its fn never runs; once fn runs,
// the queue-wait limit no longer applies, and a deadline returns at once
// while fn runs on to its end.
func TestDoRefusals(t *testing.T) {
	t.Run("displaced", func(t *testing.T) {
		c := admission.New(admission.Config{MaxInFlight: 1, MaxQueue: 1, MaxWait: 10 * time.Second})
		rel := fill(t, c)
		first := doAsync(context.Background(), c, nil)
		waitFor(t, "a waiter", func() bool { return c.Stats().Waiting == 1 })
		second := doAsync(context.Background(), c, nil)
		r := <-first
		wantOverloaded(t, r.err, admission.ErrQueueFull)
		if r.started || r.ranOn != "" {
			t.Errorf("displaced waiter: %+v", r)
		}
		rel[0]()
		if r := <-second; !r.started || r.err != nil {
			t.Errorf("second waiter: %+v", r)
		}
	})
	t.Run("queue-wait limit", func(t *testing.T) {
		c := admission.New(admission.Config{MaxInFlight: 1, MaxWait: 20 * time.Millisecond})
		rel := fill(t, c)
		r := <-doAsync(context.Background(), c, nil)
		wantOverloaded(t, r.err, admission.ErrQueueTimeout)
		if r.started || r.ranOn != "" {
			t.Errorf("timed-out waiter: %+v", r)
		}
		rel[0]()
		if st := c.Stats(); st.InFlight != 0 || st.Waiting != 0 || st.Timeout != 1 {
			t.Errorf("stats %+v", st)
		}
	})
	t.Run("deadline while queued", func(t *testing.T) {
		c := admission.New(admission.Config{MaxInFlight: 1, MaxWait: 10 * time.Second})
		rel := fill(t, c)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		r := <-doAsync(ctx, c, nil)
		wantOverloaded(t, r.err, admission.ErrDeadline)
		if r.started || r.ranOn != "" {
			t.Errorf("expired waiter: %+v", r)
		}
		rel[0]()
	})
	t.Run("running past the queue-wait limit", func(t *testing.T) {
		// The waiter must be given the slot before its queue-wait limit
		// ends, which a loaded machine can delay past any limit: a set-up
		// that lost that race (the waiter timed out while queued) is not
		// the case under test, and is tried again with a longer limit.
		for maxWait := 300 * time.Millisecond; ; maxWait *= 2 {
			if maxWait > 10*time.Second {
				t.Fatal("the waiter timed out before it could be given the slot at every queue-wait limit up to 10 s")
			}
			c := admission.New(admission.Config{MaxInFlight: 1, MaxWait: maxWait})
			rel := fill(t, c)
			hold := make(chan struct{})
			ch := doAsync(context.Background(), c, hold)
			waitFor(t, "a waiter", func() bool { st := c.Stats(); return st.Waiting == 1 || st.Timeout > 0 })
			queued := time.Now()
			rel[0]()
			// Release passes the slot (counting it admitted) before it
			// returns, if the waiter is still queued.
			if st := c.Stats(); st.Admitted != 2 {
				r := <-ch
				wantOverloaded(t, r.err, admission.ErrQueueTimeout)
				t.Logf("the waiter timed out after %s before it was given the slot (%+v); again with a limit of %s", maxWait, st, 2*maxWait)
				continue
			}
			waitFor(t, "the waiter to run", func() bool { return c.Stats().Waiting == 0 })
			// Past the limit (twice over, for a timer firing late) while
			// fn runs.
			time.Sleep(2*maxWait - time.Since(queued))
			close(hold)
			if r := <-ch; !r.started || r.err != nil {
				t.Errorf("a running evaluation was cut by the queue-wait limit: %+v", r)
			}
			if st := c.Stats(); st.Timeout != 0 {
				t.Errorf("a queue-wait timeout counted for a waiter that was given the slot: %+v", st)
			}
			return
		}
	})
	t.Run("deadline while running", func(t *testing.T) {
		// As for the queue-wait limit: a set-up whose waiter reached its
		// deadline before it was given the slot is tried again with a
		// later one.
		for wait := 300 * time.Millisecond; ; wait *= 2 {
			if wait > 10*time.Second {
				t.Fatal("the waiter's deadline passed before it could be given the slot at every deadline up to 10 s")
			}
			c := admission.New(admission.Config{MaxInFlight: 1, MaxWait: time.Minute})
			rel := fill(t, c)
			hold := make(chan struct{})
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			ch := doAsync(ctx, c, hold)
			waitFor(t, "a waiter", func() bool { st := c.Stats(); return st.Waiting == 1 || st.Deadline > 0 })
			rel[0]()
			if st := c.Stats(); st.Admitted != 2 {
				r := <-ch
				wantOverloaded(t, r.err, admission.ErrDeadline)
				t.Logf("the waiter's deadline passed after %s before it was given the slot (%+v); again with %s", wait, st, 2*wait)
				cancel()
				continue
			}
			var r doResult
			select {
			case r = <-ch: // at the deadline, fn still held
			case <-time.After(wait + 10*time.Second): // a bound for a failure
				close(hold)
				t.Fatalf("Do did not return at its deadline while fn ran: %+v", <-ch)
			}
			wantOverloaded(t, r.err, admission.ErrDeadline)
			if !r.started {
				t.Errorf("want started: %+v", r)
			}
			// Admitted and running: abandoned, not refused; the slot is
			// held until fn ends.
			if st := c.Stats(); st.InFlight != 1 || st.Admitted != 2 || st.Deadline != 0 || st.Canceled != 0 || st.Abandoned != 1 {
				t.Errorf("stats %+v, want the slot held, 2 admitted, 1 abandoned, none refused", st)
			}
			close(hold)
			waitFor(t, "the slot to be free", func() bool { return c.Stats().InFlight == 0 })
			cancel()
			return
		}
	})
	t.Run("cancelled while running", func(t *testing.T) {
		c := admission.New(admission.Config{MaxInFlight: 1, MaxWait: 10 * time.Second})
		rel := fill(t, c)
		hold := make(chan struct{})
		ctx, cancel := context.WithCancel(context.Background())
		ch := doAsync(ctx, c, hold)
		waitFor(t, "a waiter", func() bool { return c.Stats().Waiting == 1 })
		rel[0]()
		waitFor(t, "the waiter to run", func() bool { return c.Stats().Waiting == 0 })
		cancel()
		r := <-ch
		wantOverloaded(t, r.err, admission.ErrCanceled)
		if !r.started {
			t.Errorf("want started: %+v", r)
		}
		if st := c.Stats(); st.InFlight != 1 {
			t.Errorf("the evaluation still runs, want its slot held: %+v", st)
		}
		// Admitted and running: abandoned, not refused.
		if st := c.Stats(); st.Admitted != 2 || st.Deadline != 0 || st.Canceled != 0 || st.Abandoned != 1 {
			t.Errorf("counters %+v, want 2 admitted, 1 abandoned, none refused", st)
		}
		close(hold)
		waitFor(t, "the slot to be free", func() bool { return c.Stats().InFlight == 0 })
	})
}

// TestDoneContextRefusedWithFreeSlot: a request whose deadline has passed
// (or that was cancelled) is refused even when a slot is free: nobody
// waits for its evaluation.
func TestDoneContextRefusedWithFreeSlot(t *testing.T) {
	c := admission.New(admission.Config{MaxInFlight: 1, MaxWait: time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := c.Admit(ctx)
	wantOverloaded(t, err, admission.ErrCanceled)
	ran := false
	started, err := c.Do(ctx, func() { ran = true })
	wantOverloaded(t, err, admission.ErrCanceled)
	if started || ran {
		t.Errorf("Do with a done context: started %v, ran %v", started, ran)
	}
	if st := c.Stats(); st.InFlight != 0 || st.Admitted != 0 || st.Deadline != 0 || st.Canceled != 2 {
		t.Errorf("stats %+v", st)
	}
	ctx, cancel = context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	if _, err := c.Admit(ctx); !errors.Is(err, admission.ErrDeadline) {
		t.Errorf("a passed deadline: %v, want ErrDeadline", err)
	}
}
