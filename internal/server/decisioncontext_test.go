package server

import (
	"context"
	"errors"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/acgs-lite/acgs/internal/admission"
	"github.com/acgs-lite/acgs/internal/config"
)

// TestDecisionContextLateBody: the bound decisionContext gives a request's
// decisions, by how long after the request's start its body was read. A
// single request read after the decision window is bounded by
// WRITE_TIMEOUT less lateReserve, not by the window already passed (which
// admission refuses even with a free slot: a shed no load caused); one
// read past that too is too late (tooLate, admission.ErrLate), refused as
// late, not as overloaded; a batch keeps the window's bound, and one read after it is
// too late at once (its items were shed as overloaded, "no decision before
// the batch's deadline", on an idle service). The starts are put far from
// the bounds, so the test does not depend on how fast it runs.
func TestDecisionContextLateBody(t *testing.T) {
	for _, evalTimeout := range []time.Duration{
		100 * time.Millisecond, // the default: the reserve is a quarter of the window's
		500 * time.Millisecond, // the reserve is EVAL_TIMEOUT and lateMargin, 225 ms from the late body's start to the late bound
	} {
		cfg := config.Default()
		cfg.Server.WriteTimeout = 10 * time.Second
		cfg.Policy.EvalTimeout = evalTimeout
		s := &Server{cfg: cfg}
		window := cfg.Server.DecideWithin() // 9s
		reserve := lateReserve(cfg.Server.WriteTimeout, evalTimeout)
		if reserve < evalTimeout+lateMargin || reserve >= cfg.Server.WriteTimeout-window {
			t.Fatalf("EVAL_TIMEOUT %s: lateReserve %s: not EVAL_TIMEOUT and its margin within the window's reserve %s", evalTimeout, reserve, cfg.Server.WriteTimeout-window)
		}
		lateAt := window + (cfg.Server.WriteTimeout-window-reserve)/2
		for _, tc := range []struct {
			name    string
			ago     time.Duration // the request started this long before the context is made
			batch   bool
			want    time.Duration // the bound, from the request's start
			late    bool          // too late: tooLate
			expired bool
		}{
			{name: "in time", ago: time.Second, want: window},
			{name: "batch in time", ago: time.Second, batch: true, want: window},
			{name: "late body", ago: lateAt, want: cfg.Server.WriteTimeout - reserve},
			{name: "late batch", ago: lateAt, batch: true, want: window, late: true, expired: true},
			{name: "too late", ago: cfg.Server.WriteTimeout, want: cfg.Server.WriteTimeout - reserve, late: true, expired: true},
		} {
			t.Run(evalTimeout.String()+"/"+tc.name, func(t *testing.T) {
				checkDecisionContext(t, s, tc.ago, tc.batch, tc.want, tc.late, tc.expired)
			})
		}
	}
}

// TestDecisionContextEvalTimeoutBeyondReserve: when EVAL_TIMEOUT and its
// margin do not fit in the window's reserve, the late bound is the
// window's end, never before it: a single request whose body came after
// the window is too late, as a batch's is, since an evaluation it started
// on a free slot could run past WRITE_TIMEOUT (admission does not watch
// the deadline of one it runs at once), its answer cut off after it was
// counted and logged.
func TestDecisionContextEvalTimeoutBeyondReserve(t *testing.T) {
	for _, evalTimeout := range []time.Duration{time.Second, 5 * time.Second} {
		cfg := config.Default()
		cfg.Server.WriteTimeout = 10 * time.Second
		cfg.Policy.EvalTimeout = evalTimeout
		s := &Server{cfg: cfg}
		window := cfg.Server.DecideWithin()
		if got := lateReserve(cfg.Server.WriteTimeout, evalTimeout); got != cfg.Server.WriteTimeout-window {
			t.Errorf("EVAL_TIMEOUT %s: lateReserve %s, want the window's reserve %s", evalTimeout, got, cfg.Server.WriteTimeout-window)
		}
		t.Run(evalTimeout.String()+"/in time", func(t *testing.T) {
			checkDecisionContext(t, s, time.Second, false, window, false, false)
		})
		t.Run(evalTimeout.String()+"/late body", func(t *testing.T) {
			checkDecisionContext(t, s, window+(cfg.Server.WriteTimeout-window)/2, false, window, true, true)
		})
	}
}

// checkDecisionContext makes the decision context of a request that
// started ago and checks its bound (want, from the start), whether it is
// done, and whether it is too late (lateUntil), with its cause
// admission.ErrLate and its cache lookups' bound.
func checkDecisionContext(t *testing.T, s *Server, ago time.Duration, batch bool, want time.Duration, late, expired bool) {
	t.Helper()
	start := time.Now().Add(-ago)
	w := &statusWriter{ResponseWriter: httptest.NewRecorder(), start: start, batch: batch}
	ctx, cancel := s.decisionContext(w, httptest.NewRequest("POST", "/v1/data/acgs/main/decision", nil))
	defer cancel()
	dl, ok := ctx.Deadline()
	if !ok || !dl.Equal(start.Add(want)) {
		t.Errorf("deadline %v after the start (set: %v), want %v", dl.Sub(start), ok, want)
	}
	if got := ctx.Err() != nil; got != expired {
		t.Errorf("context done: %v, want %v", got, expired)
	}
	until, gotLate := lateUntil(ctx)
	if gotLate != late {
		t.Errorf("cause %v: too late %v, want %v", context.Cause(ctx), gotLate, late)
	}
	// A too-late request is shed for reason late (admission.ErrLate), not
	// deadline: its cause says so.
	if got := errors.Is(context.Cause(ctx), admission.ErrLate); got != late {
		t.Errorf("cause %v: admission.ErrLate %v, want %v", context.Cause(ctx), got, late)
	}
	// A too-late request's cache lookups are not bound by its passed
	// deadline, only by WRITE_TIMEOUT less time to write the answer
	// (lateReserve without an evaluation).
	if late {
		wt := s.cfg.Server.WriteTimeout
		want := wt - lateReserve(wt, 0)
		if want >= wt || want < s.cfg.Server.DecideWithin() {
			t.Errorf("lookup bound %v after the start: want before WRITE_TIMEOUT %v, not before the window %v", want, wt, s.cfg.Server.DecideWithin())
		}
		if !until.Equal(start.Add(want)) {
			t.Errorf("lookup bound %v after the start, want %v", until.Sub(start), want)
		}
	}
}

// TestDecisionContextNoWriteTimeout: without WRITE_TIMEOUT nothing bounds
// a request's decisions but the request itself.
func TestDecisionContextNoWriteTimeout(t *testing.T) {
	cfg := config.Default()
	cfg.Server.WriteTimeout = 0
	s := &Server{cfg: cfg}
	w := &statusWriter{ResponseWriter: httptest.NewRecorder(), start: time.Now().Add(-time.Hour)}
	ctx, cancel := s.decisionContext(w, httptest.NewRequest("POST", "/", nil))
	defer cancel()
	if dl, ok := ctx.Deadline(); ok || ctx.Err() != nil {
		t.Errorf("deadline %v, done %v: want none", dl, ctx.Err())
	}
}

// TestLateUntilDoesNotAllocate: every decision asks lateUntil, late or
// not; with errors.As it allocated on each (its target escaped).
func TestLateUntilDoesNotAllocate(t *testing.T) {
	live, cancel := context.WithCancel(context.Background())
	defer cancel()
	late, cancelLate := context.WithDeadlineCause(context.Background(), time.Now().Add(-time.Second), lateCause{lookupUntil: time.Now()})
	defer cancelLate()
	for _, c := range []struct {
		name string
		ctx  context.Context
		late bool
	}{{"live", live, false}, {"too late", late, true}} {
		if _, got := lateUntil(c.ctx); got != c.late {
			t.Errorf("%s: late %v, want %v", c.name, got, c.late)
		}
		if n := testing.AllocsPerRun(100, func() { lateUntil(c.ctx) }); n != 0 {
			t.Errorf("%s: lateUntil allocates %v times, want 0", c.name, n)
		}
	}
}
