package engine_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/acgs-lite/acgs/internal/apierror"
	"github.com/acgs-lite/acgs/internal/engine"
)

// TestPreparationCutShortIsNotAFailedEvaluation: a path that is not an
// entry point is prepared on its first use, within the evaluation's
// bounds. A preparation cut by the caller's context (a client that left, a
// batch's bound) decided nothing: overloaded, not an evaluation error (a
// 200 deny in the ACGS dialect); one cut by EVAL_TIMEOUT is a timeout, as
// an evaluation cut by either is (review: both were evaluation errors).
func TestPreparationCutShortIsNotAFailedEvaluation(t *testing.T) {
	open := func(t *testing.T, timeout time.Duration) *engine.Engine {
		t.Helper()
		b, err := engine.FSSource{FS: bundleFS(hash, "package t\nx := input.a\n"), Name: "t"}.Load(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		e, err := engine.New(context.Background(), nil, engine.Options{ConstitutionalHash: hash, EvalTimeout: timeout, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.Activate(context.Background(), b, "t"); err != nil {
			t.Fatal(err)
		}
		if e.Prepared("t/x") {
			t.Fatal("t/x is prepared at activation; the test needs a path prepared on first use")
		}
		return e
	}
	in := map[string]any{"a": 1}
	t.Run("the caller left", func(t *testing.T) {
		e := open(t, time.Minute)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := e.Decide(ctx, "t/x", in)
		if apierror.CodeOf(err) != apierror.Overloaded || errors.Is(err, engine.ErrEvalTimeout) {
			t.Fatalf("Decide: %v; want overloaded", err)
		}
		// Nothing was kept: the next request prepares and decides.
		d, err := e.Decide(context.Background(), "t/x", in)
		if err != nil || !d.Defined {
			t.Fatalf("the next request: %+v, %v", d, err)
		}
	})
	t.Run("EVAL_TIMEOUT", func(t *testing.T) {
		e := open(t, time.Nanosecond) // passed before the preparation begins
		for name, eval := range map[string]func() error{
			"Decide":       func() error { _, err := e.Decide(context.Background(), "t/x", in); return err },
			"EvaluateFull": func() error { _, err := e.EvaluateFull(context.Background(), "t/x", in); return err },
		} {
			if err := eval(); apierror.CodeOf(err) != apierror.EvaluationError || !errors.Is(err, engine.ErrEvalTimeout) {
				t.Errorf("%s: %v; want an evaluation_error for EVAL_TIMEOUT", name, err)
			}
		}
	})
}
