// Package admission bounds the policy evaluations in flight, so that more
// work than the CPUs can do is refused quickly and honestly (an
// apierror.Overloaded, which the server answers 503 with Retry-After)
// instead of queueing until every evaluation runs past its deadline and is
// answered as a fail-closed denial that no policy made.
//
// A Controller has a fixed number of slots and a bounded queue of waiters.
// A waiter gets a slot within MaxWait (or before its context's deadline), or
// it is shed; when the queue is full, a newcomer displaces (sheds) the
// oldest waiter at once. A freed slot goes to the oldest waiter (first come,
// first served) while the queue is at most half full and its oldest member
// has waited less than half of MaxWait, and to the newest one otherwise.
// A closed group of clients (a connection pool, a closed-loop benchmark)
// can never fill more of the queue than it has members, so it is served in
// turn; sustained overload fills the queue, and then serving its oldest
// member first would make every admitted request wait as long as the queue
// is deep, while newest-first admits requests that have barely waited and
// sheds the ones that have waited longest, whose clients are the likeliest
// to have given up. This is the adaptive LIFO of Facebook's "Fail at Scale"
// (ACM Queue, 2015), switched by the depth and age of the queue.
//
// Why not golang.org/x/sync/semaphore: its waiters are strictly first come,
// first served and unbounded in number, which under sustained overload
// makes every admitted request wait the whole limit (docs/reliability.md).
//
// Do runs an evaluation on a slot rather than lending the slot to its
// caller: when a slot's evaluation ends and a Do waiter is next, the same
// goroutine runs that waiter's evaluation at once. Handing the slot to the
// waiter's own goroutine instead (as Admit must) leaves the slot idle until
// the Go scheduler runs that goroutine, which under overload is behind
// every runnable request goroutine: measured in docs/reliability.md, the
// slot then did evaluations only about half of the time.
//
// The package knows nothing of HTTP, policies or caches; it must not be
// asked for a slot by a request that a cache or a constant plan answers.
package admission

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/acgs-lite/acgs/internal/apierror"
)

// Causes of a refusal, wrapped by the *apierror.Error (code Overloaded)
// that Admit returns; errors.Is tells them apart (for metrics).
var (
	// ErrQueueFull: a newer request displaced this one from a full queue.
	ErrQueueFull = errors.New("admission queue full")
	// ErrQueueTimeout: no slot was free within the queue-wait limit.
	ErrQueueTimeout = errors.New("admission queue-wait limit reached")
	// ErrDeadline: the request's own deadline passed while it waited for
	// a slot.
	ErrDeadline = errors.New("request deadline passed while waiting for an evaluation slot")
	// ErrCanceled: the request was cancelled (its client went away) while
	// it waited for a slot, or while its Do evaluation ran. It is not a
	// refusal of the service's: it is counted apart (Stats.Canceled), and
	// its error still has the code Overloaded, so that whatever answers
	// it never reads it as a decision.
	ErrCanceled = errors.New("request cancelled while waiting for an evaluation slot")
	// ErrLate: the request came too late to be decided and answered in
	// time (internal/server: its body arrived after its late bound,
	// before anything was asked). No load refused it: it is shed for
	// reason "late", which the shedding alert does not page on.
	ErrLate = errors.New("the request's body arrived too late for its decisions to be made and answered before WRITE_TIMEOUT")
)

// Reasons a decision was not made (ReasonOf): the reason label of
// acgs_decisions_shed_total, or ReasonCanceled, which is not a shed.
const (
	ReasonCanceled     = "canceled"
	ReasonLate         = "late"
	ReasonQueueFull    = "queue_full"
	ReasonQueueTimeout = "queue_timeout"
	ReasonDeadline     = "deadline"
)

// Overloaded reports a decision that was not made because no evaluation
// slot was free in time, or because its request went away or came too
// late (code apierror.Overloaded): never a decision nor a failed one.
func Overloaded(err error) bool {
	return err != nil && apierror.CodeOf(err) == apierror.Overloaded
}

// ReasonOf is why a decision was not made, for its metrics, as the service
// and the gateway count them: "" when err is not Overloaded (a decision,
// or a failed one); ReasonCanceled when its request was cancelled (its
// client went away) while it waited for a slot or a shared evaluation,
// which refused nothing and is counted apart; otherwise the shed reason:
// ReasonLate (ErrLate), ReasonQueueFull, ReasonQueueTimeout, or
// ReasonDeadline for any other cause (ErrDeadline, a deadline that passed
// while a shared evaluation ran).
func ReasonOf(err error) string {
	switch {
	case !Overloaded(err):
		return ""
	case errors.Is(err, ErrCanceled) || errors.Is(err, context.Canceled):
		return ReasonCanceled
	case errors.Is(err, ErrLate):
		return ReasonLate
	case errors.Is(err, ErrQueueFull):
		return ReasonQueueFull
	case errors.Is(err, ErrQueueTimeout):
		return ReasonQueueTimeout
	default:
		return ReasonDeadline
	}
}

// Config sizes a Controller.
type Config struct {
	// MaxInFlight is the number of evaluations run at once; 0 means
	// DefaultMaxInFlight().
	MaxInFlight int
	// MaxQueue is the number of requests that may wait for a slot; beyond
	// it a newcomer displaces the oldest waiter. 0 means DefaultMaxQueue
	// (MaxInFlight); negative means no waiting at all.
	MaxQueue int
	// MaxWait bounds the wait for a slot (a context deadline may shorten
	// it); 0 means no waiting at all.
	MaxWait time.Duration
	// LIFOAfter: once the oldest waiter has waited this long, freed slots
	// go to the newest waiter instead (as they do while the queue is more
	// than half full). 0 means MaxWait/2.
	LIFOAfter time.Duration
}

// DefaultMaxInFlight is GOMAXPROCS-1, at least 1. An evaluation is CPU
// work: more of them at once than there are CPUs only makes each slower.
// One CPU's worth is kept for the front door (reading and decoding
// requests, cache hits, refusals): when every CPU evaluates, the requests
// that would be answered from the cache, or refused in microseconds, queue
// behind evaluations, and a refusal that cannot be made in time is no
// protection. Measured in docs/reliability.md; ADMISSION_MAX_IN_FLIGHT
// overrides it.
func DefaultMaxInFlight() int { return max(1, runtime.GOMAXPROCS(0)-1) }

// DefaultMaxQueue is the number of waiters allowed for maxInFlight slots:
// enough for a few dozen concurrent clients per slot to queue in turn
// (about 30 ms of evaluations of the built-in constitution per slot); under
// sustained overload a full queue is what makes the oldest be shed at once
// rather than at the end of MaxWait. It is at most MaxQueueCap, as an
// explicit ADMISSION_MAX_QUEUE is: 64 × 100,000 slots was 6.4 million.
func DefaultMaxQueue(maxInFlight int) int { return min(64*maxInFlight, MaxQueueCap) }

// MaxQueueCap is the largest queue: the bound config puts on
// ADMISSION_MAX_QUEUE, and DefaultMaxQueue's.
const MaxQueueCap = 1_000_000

// Stats is a snapshot of a Controller.
type Stats struct {
	MaxInFlight int
	MaxQueue    int
	InFlight    int
	Waiting     int
	Admitted    uint64 // slots granted, at once or after waiting
	Queued      uint64 // requests that had to wait for a slot, admitted or not
	QueueFull   uint64 // refused: displaced from a full queue
	Timeout     uint64 // refused: queue-wait limit
	Deadline    uint64 // refused: the request's deadline passed while it waited
	// Canceled: requests cancelled (their client went away) while they
	// waited for a slot: not refused by the service, not counted above.
	Canceled uint64
	// Abandoned: queued Do evaluations whose request's deadline passed
	// (or which were cancelled) while they ran on a slot's goroutine: the
	// caller was answered overloaded, the evaluation ran to its end on its
	// slot. Counted in Admitted, not as refused. (A Do that found a slot
	// free runs fn in its caller's goroutine, to its end.)
	Abandoned uint64
}

// Controller hands out evaluation slots. Its zero value is not usable; build
// one with New. All methods are safe for concurrent use.
type Controller struct {
	maxInFlight int
	maxQueue    int
	maxWait     time.Duration
	lifoAfter   time.Duration
	releaseFn   func() // c.release, made once: a method value allocates

	mu    sync.Mutex
	inUse int
	// The queue: a list of waiters linked through the waiters themselves,
	// oldest first, so that taking its oldest or newest, displacing or
	// removing one costs the same at any depth (a slice cost a copy of the
	// whole queue for each, under the lock: 127 µs per arrival at 300,000
	// waiters, review), and nothing is allocated for it in advance.
	oldest, newest *waiter
	waiting        int

	admitted, queued            atomic.Uint64
	queueFull, timeout, expired atomic.Uint64
	canceled                    atomic.Uint64
	abandoned                   atomic.Uint64
}

// waiter is one request waiting for a slot. ch receives exactly once, under
// the controller's lock, when the waiter is granted a slot or displaced, or
// (a Do waiter, whose fn is set) when its fn has run or it was displaced;
// state says which.
type waiter struct {
	ch    chan struct{}
	state uint8
	since time.Time
	fn    func() // Do's evaluation, run by the goroutine that holds the slot
	// older and newer link the waiter in the queue while it is there.
	older, newer *waiter
}

const (
	waiting uint8 = iota
	granted
	displaced
	running  // a Do waiter whose fn a slot's goroutine is running
	finished // a Do waiter whose fn has returned
)

var waiterPool = sync.Pool{New: func() any { return &waiter{ch: make(chan struct{}, 1)} }}

// New returns a controller for cfg.
func New(cfg Config) *Controller {
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = DefaultMaxInFlight()
	}
	switch {
	case cfg.MaxQueue == 0:
		cfg.MaxQueue = DefaultMaxQueue(cfg.MaxInFlight)
	case cfg.MaxQueue < 0:
		cfg.MaxQueue = 0
	}
	if cfg.MaxWait <= 0 {
		cfg.MaxQueue = 0
	}
	if cfg.LIFOAfter <= 0 {
		cfg.LIFOAfter = cfg.MaxWait / 2
	}
	c := &Controller{maxInFlight: cfg.MaxInFlight, maxQueue: cfg.MaxQueue, maxWait: cfg.MaxWait, lifoAfter: cfg.LIFOAfter}
	c.releaseFn = c.release
	return c
}

// Admit waits for an evaluation slot for at most the queue-wait limit and
// at most until ctx's deadline. On success the caller must call release
// exactly once when its evaluation ends. Otherwise err is an *apierror.Error
// with code Overloaded that wraps ErrQueueFull, ErrQueueTimeout, ErrDeadline
// or ErrCanceled.
func (c *Controller) Admit(ctx context.Context) (release func(), err error) {
	c.mu.Lock()
	free, wait, refused := c.admitNow(ctx)
	if refused != nil {
		return nil, refused
	}
	if free {
		return c.releaseFn, nil
	}
	w := c.enqueue(nil)
	c.mu.Unlock()

	timer := time.NewTimer(wait)
	var cause error
	select {
	case <-w.ch:
		timer.Stop()
		return c.settle(w)
	case <-timer.C:
		cause = timeoutCause(ctx)
	case <-ctx.Done():
		timer.Stop()
		cause = doneCause(ctx)
	}
	c.mu.Lock()
	if w.state != waiting {
		// Granted or displaced between the wake-up and the lock: the
		// channel holds the signal; take it so that w can be reused.
		c.mu.Unlock()
		<-w.ch
		return c.settle(w)
	}
	c.remove(w)
	c.mu.Unlock()
	waiterPool.Put(w)
	return nil, c.refuse(cause)
}

// admitNow takes a free slot, or answers how long the caller may wait for
// one (refused: the error to return at once). Called with c.mu held; on a
// free slot or a refusal it unlocks.
func (c *Controller) admitNow(ctx context.Context) (free bool, wait time.Duration, refused error) {
	if ctx.Err() != nil {
		// Nobody waits for this evaluation any more.
		c.mu.Unlock()
		return false, 0, c.refuse(doneCause(ctx))
	}
	if c.inUse < c.maxInFlight {
		c.inUse++
		c.mu.Unlock()
		c.admitted.Add(1)
		return true, 0, nil
	}
	wait = c.maxWait
	if dl, ok := ctx.Deadline(); ok {
		wait = min(wait, time.Until(dl))
	}
	if c.maxQueue > 0 && wait <= 0 {
		c.mu.Unlock()
		return false, 0, c.refuse(ErrDeadline)
	}
	if c.maxQueue == 0 {
		c.mu.Unlock()
		return false, 0, c.refuse(ErrQueueFull)
	}
	return false, wait, nil
}

// enqueue adds a waiter (fn nil for Admit), displacing the oldest when the
// queue is full. Called with c.mu held.
func (c *Controller) enqueue(fn func()) *waiter {
	if c.waiting >= c.maxQueue {
		old := c.oldest
		c.remove(old)
		old.state = displaced
		old.ch <- struct{}{}
	}
	w := waiterPool.Get().(*waiter)
	w.state, w.since, w.fn = waiting, time.Now(), fn
	w.older = c.newest
	if c.newest != nil {
		c.newest.newer = w
	} else {
		c.oldest = w
	}
	c.newest = w
	c.waiting++
	c.queued.Add(1)
	return w
}

// remove takes w, which is in the queue, out of it. Called with c.mu held.
func (c *Controller) remove(w *waiter) {
	if w.older != nil {
		w.older.newer = w.newer
	} else {
		c.oldest = w.newer
	}
	if w.newer != nil {
		w.newer.older = w.older
	} else {
		c.newest = w.older
	}
	w.older, w.newer = nil, nil
	c.waiting--
}

// Do runs fn on an evaluation slot: in the caller's goroutine when a slot
// is free, else after waiting in the queue (the same bounds, order and
// displacement as Admit), run by the goroutine of the slot that frees, which
// goes on to the next Do waiter without a goroutine switch. started reports
// whether fn began; err is nil when fn has returned.
//
// fn run in the caller's goroutine (a slot was free) is not interrupted by
// ctx: Do returns when fn does, so fn must bound itself (the engine's
// evaluations end at EVAL_TIMEOUT, which config fits in the time a request
// has to decide). Running it on another goroutine so that Do could return
// at ctx's end would cost every evaluation a goroutine and a switch (about
// 0.5 µs and 3 allocations unloaded; under load the slot would wait for
// the scheduler, as above). When ctx is done while a queued fn runs on a
// slot's goroutine, Do returns at once with started true and an overloaded
// error (ErrDeadline, or ErrCanceled), and fn runs to its end on the slot:
// fn must not need its caller to be waiting, and must not panic (on a
// slot's goroutine a panic would end the process). Its signature fits
// engine.Options.Admit.
func (c *Controller) Do(ctx context.Context, fn func()) (started bool, err error) {
	c.mu.Lock()
	free, wait, refused := c.admitNow(ctx)
	if refused != nil {
		return false, refused
	}
	if free {
		defer c.release()
		fn()
		return true, nil
	}
	w := c.enqueue(fn)
	c.mu.Unlock()

	timer := time.NewTimer(wait)
	defer timer.Stop()
	tick := timer.C
	for {
		var cause error
		select {
		case <-w.ch:
			return c.settleDo(w)
		case <-tick:
			cause = timeoutCause(ctx)
		case <-ctx.Done():
			cause = doneCause(ctx)
		}
		c.mu.Lock()
		switch w.state {
		case waiting:
			c.remove(w)
			c.mu.Unlock()
			w.fn = nil
			waiterPool.Put(w)
			return false, c.refuse(cause)
		case running:
			c.mu.Unlock()
			if cause == ErrQueueTimeout {
				// The queue-wait limit bounds the wait for a slot, not
				// the evaluation: wait for fn (or ctx) without it.
				tick = nil
				continue
			}
			// fn goes on without its caller; w is left to the collector,
			// since the slot's goroutine still signals it.
			c.abandoned.Add(1)
			if cause == ErrCanceled {
				return true, apierror.Wrap(apierror.Overloaded, ErrCanceled, "request cancelled while its evaluation was running")
			}
			return true, apierror.Wrap(apierror.Overloaded, ErrDeadline, "service overloaded: the request's deadline passed while its evaluation was running; retry later")
		default:
			// Finished or displaced between the wake-up and the lock:
			// the channel holds the signal.
			c.mu.Unlock()
			<-w.ch
			return c.settleDo(w)
		}
	}
}

// settleDo ends a Do wait whose signal was received.
func (c *Controller) settleDo(w *waiter) (bool, error) {
	st := w.state
	w.fn = nil
	waiterPool.Put(w)
	if st == finished {
		return true, nil
	}
	return false, c.refuse(ErrQueueFull)
}

// work runs Do waiters on a slot, one after another while the next waiter
// is one, starting with w (already marked running). It returns the slot
// (to an Admit waiter or free) when no Do waiter is next.
func (c *Controller) work(w *waiter) {
	for w != nil {
		w.fn()
		c.mu.Lock()
		w.state = finished
		w.ch <- struct{}{}
		w = c.pass()
	}
}

// pass gives a slot whose work ended to the next waiter: an Admit waiter
// is granted it, a Do waiter is returned (marked running) for the caller
// to run, and with no waiter the slot is freed. Called with c.mu held; it
// unlocks.
func (c *Controller) pass() *waiter {
	w := c.next()
	switch {
	case w == nil:
		c.inUse--
	case w.fn == nil:
		c.admitted.Add(1)
		w.state = granted
		w.ch <- struct{}{}
		w = nil
	default:
		c.admitted.Add(1)
		w.state = running
	}
	c.mu.Unlock()
	return w
}

// next takes the waiter a freed slot goes to (the oldest while the queue
// is shallow and young, else the newest), or nil. Called with c.mu held.
func (c *Controller) next() *waiter {
	if c.waiting == 0 {
		return nil
	}
	w := c.newest
	if 2*c.waiting <= c.maxQueue && time.Since(c.oldest.since) < c.lifoAfter {
		w = c.oldest
	}
	c.remove(w)
	return w
}

// settle ends a wait whose signal was received.
func (c *Controller) settle(w *waiter) (func(), error) {
	st := w.state
	waiterPool.Put(w)
	if st == granted {
		return c.releaseFn, nil
	}
	return nil, c.refuse(ErrQueueFull)
}

// release passes the slot of an Admit holder, or of a Do that ran in its
// caller's goroutine, to the next waiter (a Do waiter's fn then runs on a
// new goroutine, which keeps the slot for the Do waiters after it), or
// frees it.
func (c *Controller) release() {
	c.mu.Lock()
	if w := c.pass(); w != nil {
		go c.work(w)
	}
}

// timeoutCause is why a wait for a slot ended when its timer fired: the
// queue-wait limit, or ctx's end when it has ended (or its deadline passed)
// too.
func timeoutCause(ctx context.Context) error {
	if ctx.Err() != nil {
		return doneCause(ctx)
	}
	if dl, ok := ctx.Deadline(); ok && !dl.After(time.Now()) {
		return ErrDeadline
	}
	return ErrQueueTimeout
}

// doneCause is why a wait for a slot ended with ctx: its cancellation
// (the client went away: context.Canceled, also when it reaches a context
// with a deadline through its parent) or its deadline.
func doneCause(ctx context.Context) error {
	if errors.Is(ctx.Err(), context.Canceled) {
		return ErrCanceled
	}
	return ErrDeadline
}

func (c *Controller) refuse(cause error) error {
	var msg string
	switch cause {
	case ErrQueueFull:
		c.queueFull.Add(1)
		msg = fmt.Sprintf("service overloaded: all %d evaluation slots busy and %d requests already waiting; retry later", c.maxInFlight, c.maxQueue)
	case ErrQueueTimeout:
		c.timeout.Add(1)
		msg = fmt.Sprintf("service overloaded: no evaluation slot free within %s; retry later", c.maxWait)
	case ErrCanceled:
		c.canceled.Add(1)
		msg = "request cancelled while it waited for an evaluation slot"
	default:
		c.expired.Add(1)
		msg = "service overloaded: the request's deadline passed while it waited for an evaluation slot; retry later"
	}
	return apierror.Wrap(apierror.Overloaded, cause, "%s", msg)
}

// Stats returns a snapshot of the controller.
func (c *Controller) Stats() Stats {
	c.mu.Lock()
	inUse, waiting := c.inUse, c.waiting
	c.mu.Unlock()
	return Stats{
		MaxInFlight: c.maxInFlight, MaxQueue: c.maxQueue,
		InFlight: inUse, Waiting: waiting,
		Admitted: c.admitted.Load(), Queued: c.queued.Load(),
		QueueFull: c.queueFull.Load(), Timeout: c.timeout.Load(), Deadline: c.expired.Load(),
		Canceled:  c.canceled.Load(),
		Abandoned: c.abandoned.Load(),
	}
}
