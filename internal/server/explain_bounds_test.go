package server

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/server/types"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// events makes n trace events whose locals hold a string of size bytes.
func events(n, size int) []*topdown.Event {
	out := make([]*topdown.Event, n)
	big := ast.String(strings.Repeat("x", size))
	for i := range out {
		locals := ast.NewValueMap()
		locals.Put(ast.Var("v"), big)
		out[i] = &topdown.Event{Op: topdown.EvalOp, QueryID: uint64(i), Node: ast.MustParseExpr("v = 1"), Locals: locals, Message: "m<&>"}
	}
	return out
}

// TestEncodeTraceIsNewTraceV1: encoded a few events at a time, the raw
// explanation is byte for byte OPA's (types.NewTraceV1), whatever the
// number of events around the chunk size.
func TestEncodeTraceIsNewTraceV1(t *testing.T) {
	for _, n := range []int{0, 1, explainChunk - 1, explainChunk, explainChunk + 1, 3*explainChunk + 5} {
		for _, pretty := range []bool{false, true} {
			ev := events(n, 8)
			want, err := types.NewTraceV1(ev, pretty)
			if err != nil {
				t.Fatal(err)
			}
			got, err := encodeTrace(ev, pretty)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("%d events (pretty %v): %s, %v; want %s", n, pretty, got, err, want)
			}
		}
	}
}

// TestExplanationBounds: a trace of more than maxExplainEvents events, or
// whose JSON is over maxExplainBytes, is left out with errExplainTooLarge
// (the answer's warning), in every mode and for an undefined decision too.
func TestExplanationBounds(t *testing.T) {
	full := &explainTrace{BufferTracer: topdown.NewBufferTracer()}
	for _, e := range events(maxExplainEvents+1, 1) {
		full.TraceEvent(*e)
	}
	if len(*full.BufferTracer) != maxExplainEvents || !full.over {
		t.Fatalf("kept %d events (over %v), want %d and over", len(*full.BufferTracer), full.over, maxExplainEvents)
	}
	large := &explainTrace{BufferTracer: topdown.NewBufferTracer()}
	for _, e := range events(2*explainChunk, maxExplainBytes/explainChunk) {
		large.TraceEvent(*e)
	}
	for _, c := range []struct {
		name    string
		trace   *explainTrace
		mode    types.ExplainModeV1
		defined bool
	}{
		{"too many events, full", full, types.ExplainFullV1, true},
		{"too many events, notes", full, types.ExplainNotesV1, true},
		{"too many events, undefined", full, types.ExplainFullV1, false},
		{"too many bytes, full", large, types.ExplainFullV1, true},
		{"too many bytes, debug", large, types.ExplainDebugV1, true},
		{"too many bytes, undefined", large, types.ExplainFullV1, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := explanation(c.mode, c.trace, c.defined, false)
			if !errors.Is(err, errExplainTooLarge) || got != nil {
				t.Fatalf("got %d bytes, %v; want none and errExplainTooLarge", len(got), err)
			}
		})
	}
}
