package server

import (
	"context"
	"errors"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/acgs-lite/acgs/internal/admission"
	"github.com/acgs-lite/acgs/internal/apierror"
	"github.com/acgs-lite/acgs/internal/config"
)

// TestDecisionContextLateBody: the bound decisionContext gives a request's
// decisions, by how long after the request's start its body was read. A
// single request read after the decision window is bounded by
// WRITE_TIMEOUT less lateReserve, not by the window already passed (which
// admission refuses even with a free slot: a shed no load caused); one
// read past that too is refused as late (errLate), not as overloaded; a
// batch keeps the window's bound. The starts are put far from the bounds,
// so the test does not depend on how fast it runs.
func TestDecisionContextLateBody(t *testing.T) {
	cfg := config.Default()
	cfg.Server.WriteTimeout = 10 * time.Second
	s := &Server{cfg: cfg}
	window := cfg.Server.DecideWithin() // 9s
	reserve := lateReserve(cfg.Server.WriteTimeout)
	if reserve <= 0 || reserve >= cfg.Server.WriteTimeout-window {
		t.Fatalf("lateReserve %s: not within the window's reserve %s", reserve, cfg.Server.WriteTimeout-window)
	}
	for _, tc := range []struct {
		name    string
		ago     time.Duration // the request started this long before the context is made
		batch   bool
		want    time.Duration // the bound, from the request's start
		late    bool          // the bound has passed: errLate
		expired bool
	}{
		{name: "in time", ago: time.Second, want: window},
		{name: "batch in time", ago: time.Second, batch: true, want: window},
		{name: "late body", ago: window + (cfg.Server.WriteTimeout-window-reserve)/2, want: cfg.Server.WriteTimeout - reserve},
		{name: "late batch", ago: window + (cfg.Server.WriteTimeout-window-reserve)/2, batch: true, want: window, expired: true},
		{name: "too late", ago: cfg.Server.WriteTimeout, want: cfg.Server.WriteTimeout - reserve, late: true, expired: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now().Add(-tc.ago)
			w := &statusWriter{ResponseWriter: httptest.NewRecorder(), start: start, batch: tc.batch}
			ctx, cancel := s.decisionContext(w, httptest.NewRequest("POST", "/v1/data/acgs/main/decision", nil))
			defer cancel()
			dl, ok := ctx.Deadline()
			if !ok || !dl.Equal(start.Add(tc.want)) {
				t.Errorf("deadline %v after the start (set: %v), want %v", dl.Sub(start), ok, tc.want)
			}
			if expired := ctx.Err() != nil; expired != tc.expired {
				t.Errorf("context done: %v, want %v", expired, tc.expired)
			}
			if late := errors.Is(context.Cause(ctx), errLate); late != tc.late {
				t.Errorf("cause %v: late %v, want %v", context.Cause(ctx), late, tc.late)
			}
			// What admission answers a context done before it asks is
			// stated as the request's lateness when it is that.
			shed := apierror.Wrap(apierror.Overloaded, admission.ErrDeadline, "service overloaded: the request's deadline passed while it waited for an evaluation slot; retry later")
			err := lateErr(ctx, shed)
			if got := errors.Is(err, errLate); got != tc.late {
				t.Errorf("lateErr: %v, late %v, want %v", err, got, tc.late)
			}
			if !overloaded(err) || clientGone(err) {
				t.Errorf("lateErr: %v is not answered as a shed decision (503, Retry-After)", err)
			}
		})
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
