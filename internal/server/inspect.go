package server

import (
	"context"
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
	trace   *topdown.BufferTracer // nil without ?explain
	metrics metrics.Metrics       // nil without ?metrics or ?instrument
}

// decideOPA decides one request of OPA's Data API: through decide (the
// cache, plans, the compiled evaluator) unless it asks for an inspection;
// ev is nil then.
func (s *Server) decideOPA(ctx context.Context, path string, input any, in inspection) (d decided, ev *inspected) {
	if !in.on() {
		return s.decide(ctx, path, input, ""), nil
	}
	return s.inspect(ctx, path, input, "", in)
}

// inspect evaluates one decision as in asks (engine.Inspect), recorded in
// metrics and the decision log as any evaluated decision.
func (s *Server) inspect(ctx context.Context, path string, input any, batchID string, in inspection) (decided, *inspected) {
	ev := &inspected{in: in}
	opts := engine.Inspection{StrictBuiltinErrors: in.strict, Instrument: in.instrument}
	if in.explain != "" {
		ev.trace = topdown.NewBufferTracer()
		opts.Tracer = ev.trace
	}
	if in.metrics || in.instrument {
		ev.metrics = metrics.New()
		opts.Metrics = ev.metrics
	}
	start := time.Now()
	d, err := s.d.Engine.Inspect(ctx, path, input, opts)
	return s.record(ctx, path, input, batchID, d, err, start, time.Since(start)), ev
}

// inspectMany decides a batch with in (?strict-builtin-errors), its items
// in parallel, in input order.
func (s *Server) inspectMany(ctx context.Context, path string, inputs []any, batchID string, in inspection) []decided {
	out := make([]decided, len(inputs))
	parallel.For(len(inputs), func(i int) { out[i], _ = s.inspect(ctx, path, inputs[i], batchID, in) })
	return out
}

// explanation is the answer's "explanation" as OPA's server gives it
// (getExplainResponse): the trace filtered for the mode, as TraceV1 (the
// events, or with pretty the lines of topdown's pretty trace). An
// undefined decision is explained only in full mode, and only there does
// failing to encode the trace fail the request (err); elsewhere it is
// left out (nil), as OPA does.
func explanation(mode types.ExplainModeV1, trace []*topdown.Event, defined, pretty bool) (types.TraceV1, error) {
	if !defined {
		if mode != types.ExplainFullV1 {
			return nil, nil
		}
		return types.NewTraceV1(lineage.Full(trace), pretty)
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
	if t, err := types.NewTraceV1(events, pretty); err == nil {
		return t, nil
	}
	return nil, nil // left out, as OPA's getExplainResponse leaves it
}
