package server

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/server/types"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/open-policy-agent/opa/v1/topdown/lineage"

	"github.com/acgs-lite/acgs/internal/engine"
	"github.com/acgs-lite/acgs/internal/parallel"
)

// inspection is what a request of OPA's Data API asks of its evaluation
// beyond the result, read from its query as OPA's server reads it:
// ?strict-builtin-errors (a built-in error fails the decision), ?explain
// (the answer's "explanation") and ?instrument (topdown's detailed
// metrics, which bring "metrics" with them as in OPA). A request asking
// for any of them is evaluated by topdown for itself (engine.Inspect): the
// decision cache, constant plans and the compiled evaluator answer only
// what OPA answers without them.
type inspection struct {
	strict     bool
	explain    types.ExplainModeV1 // "" when off
	instrument bool
	metrics    bool // ?metrics too: the evaluation's metrics are gathered
}

// inspectionOf reads q (queryOf: nil without a query string, then nothing
// is looked up).
func inspectionOf(q url.Values) inspection {
	if len(q) == 0 {
		return inspection{}
	}
	return inspection{
		strict:     boolParam(q, types.ParamStrictBuiltinErrors),
		explain:    explainParam(q),
		instrument: boolParam(q, types.ParamInstrumentV1),
		metrics:    boolParam(q, types.ParamMetricsV1),
	}
}

// on reports whether the request needs an evaluation of its own.
func (in inspection) on() bool { return in.strict || in.explain != "" || in.instrument }

// explainParam reads ?explain as OPA's server does (getExplain): the first
// value that names a mode; others are ignored, and none is off ("").
func explainParam(q url.Values) types.ExplainModeV1 {
	for _, v := range q[types.ParamExplainV1] {
		switch m := types.ExplainModeV1(v); m {
		case types.ExplainNotesV1, types.ExplainFailsV1, types.ExplainFullV1, types.ExplainDebugV1:
			return m
		}
	}
	return ""
}

// inspected is what an inspected evaluation gathered for the answer
// besides its decision.
type inspected struct {
	in      inspection
	trace   *explainTrace   // nil without ?explain
	metrics metrics.Metrics // nil without ?metrics or ?instrument
}

// decideOPA decides one request of OPA's Data API: through decide (the
// cache, plans, the compiled evaluator) unless it asks for an inspection;
// ev is nil then.
func (s *Server) decideOPA(ctx context.Context, path string, input any, in inspection) (d decided, ev *inspected) {
	if !in.on() {
		return s.decide(ctx, path, input, ""), nil
	}
	return s.inspect(ctx, s.d.Engine, path, input, "", in)
}

// inspector is what inspect evaluates with: the engine (the revision active
// now) or an engine.Inspector (one revision for a whole batch).
type inspector interface {
	Inspect(ctx context.Context, path string, input any, in engine.Inspection) (engine.Decision, error)
}

// inspect evaluates one decision as in asks (ins.Inspect), recorded in
// metrics and the decision log as any evaluated decision. An inspection
// is always evaluated, never answered from a cache, so a too-late
// request's (lateUntil) is refused as late (engine.Inspection.TooLate)
// without asking admission, which would refuse its passed deadline and
// count that as overload's.
func (s *Server) inspect(ctx context.Context, ins inspector, path string, input any, batchID string, in inspection) (decided, *inspected) {
	ev := &inspected{in: in}
	opts := engine.Inspection{StrictBuiltinErrors: in.strict, Instrument: in.instrument}
	if in.explain != "" {
		ev.trace = &explainTrace{BufferTracer: topdown.NewBufferTracer()}
		opts.Tracer = ev.trace
	}
	if in.metrics || in.instrument {
		ev.metrics = metrics.New()
		opts.Metrics = ev.metrics
	}
	_, opts.TooLate = lateUntil(ctx)
	start := time.Now()
	d, err := ins.Inspect(ctx, path, input, opts)
	return s.record(ctx, path, input, batchID, d, err, start, time.Since(start)), ev
}

// inspectMany decides a batch with in (?strict-builtin-errors,
// ?instrument), its items in parallel, in input order, with what each
// inspection gathered. Every item is answered by the revision active when
// the batch began (one engine.Inspector), as decideMany's are: a reload
// during the batch answered identical inputs from two revisions in one
// response (review).
func (s *Server) inspectMany(ctx context.Context, path string, inputs []any, batchID string, in inspection) ([]decided, []*inspected) {
	out := make([]decided, len(inputs))
	evs := make([]*inspected, len(inputs))
	ins := s.d.Engine.Inspector()
	parallel.For(len(inputs), func(i int) { out[i], evs[i] = s.inspect(ctx, ins, path, inputs[i], batchID, in) })
	return out, evs
}

// Bounds of ?explain. OPA's server bounds neither; its trace of one
// decision of the constitution is 5.9 MB in full mode, and every event of
// a full or debug trace carries the bindings of its moment, so the JSON
// grows with the square of an input a rule iterates over: without a bound
// a few requests could take the memory of the service. A trace past
// either bound is left out of the answer, with a warning (as OPA leaves
// out one it cannot encode).
const (
	maxExplainEvents = 50000    // events kept of one evaluation
	maxExplainBytes  = 16 << 20 // of the explanation's JSON
	explainChunk     = 16       // events encoded at a time, checked against maxExplainBytes
)

// explainTrace is ?explain's tracer: topdown's events, at most
// maxExplainEvents of them (over: more came).
type explainTrace struct {
	*topdown.BufferTracer
	over bool
}

// TraceEvent keeps evt unless the trace is full.
func (t *explainTrace) TraceEvent(evt topdown.Event) {
	if len(*t.BufferTracer) >= maxExplainEvents {
		t.over = true
		return
	}
	t.BufferTracer.TraceEvent(evt)
}

// errExplainTooLarge: the trace is past maxExplainEvents or maxExplainBytes.
var errExplainTooLarge = fmt.Errorf("the explanation is larger than this service sends (%d events or %d MiB of JSON); ask with ?explain=notes or fails, or a smaller input", maxExplainEvents, maxExplainBytes>>20)

// explanation is the answer's "explanation" as OPA's server gives it
// (getExplainResponse): the trace filtered for the mode, as TraceV1 (the
// events, or with pretty the lines of topdown's pretty trace). An
// undefined decision is explained only in full mode, and only there does
// failing to encode the trace fail the request (err); elsewhere it is
// left out (nil), as OPA does. A trace past the bounds is left out in
// every mode (errExplainTooLarge, for the answer's warning).
func explanation(mode types.ExplainModeV1, t *explainTrace, defined, pretty bool) (types.TraceV1, error) {
	if t.over {
		return nil, errExplainTooLarge
	}
	trace := []*topdown.Event(*t.BufferTracer)
	if !defined {
		if mode != types.ExplainFullV1 {
			return nil, nil
		}
		return encodeTrace(lineage.Full(trace), pretty)
	}
	var events []*topdown.Event
	switch mode {
	case types.ExplainNotesV1:
		events = lineage.Notes(trace)
	case types.ExplainFailsV1:
		events = lineage.Fails(trace)
	case types.ExplainFullV1:
		events = lineage.Full(trace)
	case types.ExplainDebugV1:
		events = lineage.Debug(trace)
	default:
		return nil, nil
	}
	if enc, err := encodeTrace(events, pretty); err == nil || errors.Is(err, errExplainTooLarge) {
		return enc, err
	}
	return nil, nil // left out, as OPA's getExplainResponse leaves it
}

// encodeTrace is types.NewTraceV1 within maxExplainBytes. The events are
// encoded a few at a time and joined: each is encoded on its own, so the
// array is byte for byte NewTraceV1's, and the bound is checked before the
// whole is made. The pretty lines (no bindings, one line per event) are
// made whole and then checked.
func encodeTrace(events []*topdown.Event, pretty bool) (types.TraceV1, error) {
	if pretty {
		t, err := types.NewTraceV1(events, true)
		if err == nil && len(t) > maxExplainBytes {
			return nil, errExplainTooLarge
		}
		return t, err
	}
	out := []byte{'['}
	for i := 0; i < len(events); i += explainChunk {
		part, err := types.NewTraceV1(events[i:min(i+explainChunk, len(events))], false)
		if err != nil {
			return nil, err
		}
		if len(out) > 1 {
			out = append(out, ',')
		}
		out = append(out, part[1:len(part)-1]...)
		if len(out) > maxExplainBytes {
			return nil, errExplainTooLarge
		}
	}
	return types.TraceV1(append(out, ']')), nil
}
