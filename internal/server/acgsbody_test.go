package server

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/acgs-lite/acgs/internal/apierror"
	"github.com/acgs-lite/acgs/internal/cache"
	"github.com/acgs-lite/acgs/internal/engine"
	"github.com/acgs-lite/acgs/internal/inputgen"
	"github.com/acgs-lite/acgs/internal/jsoneq"
	"github.com/acgs-lite/acgs/policies"
)

// general is the ACGS document acgsResponse builds for d, as acgsBody
// encodes it when no hand-written path applies.
func general(t *testing.T, s *Server, d decided, lat time.Duration) any {
	t.Helper()
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(s.acgsResponse(d, lat)); err != nil {
		t.Fatal(err)
	}
	return decodeDoc(t, out.Bytes())
}

func decodeDoc(t *testing.T, b []byte) any {
	t.Helper()
	v, err := decodeJSON(b, 64)
	if err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	return v
}

// TestACGSBodyPathsAgree: the hand-written ACGS documents (from a
// decision's cached JSON, and of an overloaded decision) equal the one
// built field by field, for generated requests decided by the real engine
// (cold, then from L1), and for decisions shed or failed.
func TestACGSBodyPathsAgree(t *testing.T) {
	const hash = "cdd01ef066bc6cf2"
	ctx := context.Background()
	c, err := cache.New(ctx, cache.Config{L1Size: 10000, TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	e, err := engine.New(ctx, engine.FSSource{FS: policies.FS, Name: "embedded"}, engine.Options{
		ConstitutionalHash: hash, EvalTimeout: 10 * time.Second, Cache: c, Compiled: true, PartialEval: true, PlanCacheSize: 64,
	})
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{hash: hash}
	lat := 1234567 * time.Nanosecond
	fastN := 0
	for _, in := range inputgen.New(3).Inputs(400) {
		b, _ := json.Marshal(in)
		input := decodeDoc(t, b)
		for round := 0; round < 2; round++ {
			dd, err := e.Decide(ctx, "acgs/main/decision", input)
			d := decided{Decision: dd, ID: "d-1", Err: err}
			got, err := s.acgsBody(nil, d, lat)
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := s.appendACGSFast(nil, d, lat); ok {
				fastN++
			}
			if diff := jsoneq.Diff(general(t, s, d, lat), decodeDoc(t, got)); diff != "" {
				t.Fatalf("round %d: acgsBody differs from the general document at %s\n%s\ninput %s", round, diff, got, b)
			}
		}
	}
	if fastN < 400 {
		t.Errorf("only %d of 800 decisions took the hand-written path", fastN)
	}
	for _, err := range []error{
		apierror.New(apierror.Overloaded, "no evaluation slot was free within 1s"),
		apierror.New(apierror.EvaluationError, "eval_conflict_error: <x> & \"y\""),
		engine.ErrEvalTimeout,
	} {
		d := decided{Decision: engine.Decision{Revision: "rev-1"}, ID: "d-2", Err: err}
		got, err2 := s.acgsBody(nil, d, lat)
		if err2 != nil {
			t.Fatal(err2)
		}
		if diff := jsoneq.Diff(general(t, s, d, lat), decodeDoc(t, got)); diff != "" {
			t.Errorf("%v: differs at %s\n%s", err, diff, got)
		}
	}
}
