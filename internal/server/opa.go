package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/acgs-lite/acgs/internal/apierror"
	"github.com/acgs-lite/acgs/internal/datapath"
	"github.com/acgs-lite/acgs/internal/engine"
	"github.com/acgs-lite/acgs/internal/jsonenc"
	"github.com/acgs-lite/acgs/internal/version"
)

// dataPath extracts the data path after a route prefix such as /v1/data
// (routeRest) and checks that it names a document. Each segment is
// unescaped on its own, as OPA's server reads a path, and written back as
// datapath.Segment writes a key: a segment holding an escaped slash
// (a%2Fb) is the single key "a/b" (the path a%2Fb), never the two keys a
// and b, another document.
func dataPath(r *http.Request, prefix string) (string, error) {
	p := strings.Trim(routeRest(r, prefix), "/")
	if strings.Contains(p, "%") {
		segs := strings.Split(p, "/")
		for i, seg := range segs {
			if u, err := url.PathUnescape(seg); err == nil {
				seg = u
			}
			segs[i] = datapath.Segment(seg)
		}
		p = strings.Join(segs, "/")
	}
	if err := datapath.Check(p); err != nil {
		return "", err
	}
	return p, nil
}

// requestPath extracts the unescaped path after a route prefix such as
// /v1/policies (routeRest).
func requestPath(r *http.Request, prefix string) string {
	rest := routeRest(r, prefix)
	if up, err := url.PathUnescape(rest); err == nil {
		rest = up
	}
	return strings.Trim(rest, "/")
}

// routeRest returns the escaped path of r after the segments of its
// route's prefix (such as /v1/data, written unescaped), as OPA's server
// takes it (escapedPathValue): the prefix is skipped by counting its
// segments, not by comparing text, so that a prefix spelled with an escape
// (/v1/%64ata/a/b, which the router matched unescaped) is still followed
// by a/b, not read as the document v1/data/a/b (review).
func routeRest(r *http.Request, prefix string) string {
	esc := r.URL.EscapedPath()
	if !strings.Contains(esc, "%") {
		// Nothing escaped: the path is its own escaped form.
		return strings.TrimPrefix(strings.TrimPrefix(esc, prefix), "/")
	}
	for range strings.Count(prefix, "/") + 1 {
		i := strings.IndexByte(esc, '/')
		if i < 0 {
			return ""
		}
		esc = esc[i+1:]
	}
	return esc
}

// handleOPAData serves OPA's v1 Data API: GET with ?input=<json>, POST with
// {"input": ...}. A POST body decided before, byte for byte, is answered
// from the raw-body tier without decoding it (never one with a query
// string: the tier is not consulted then, so an inspection, inspectionOf,
// is always evaluated).
func (s *Server) handleOPAData(w http.ResponseWriter, r *http.Request) {
	path, err := dataPath(r, "/v1/data")
	if err != nil {
		writeError(w, err)
		return
	}
	q := queryOf(r)
	in := inspectionOf(q)
	if r.Method == http.MethodGet {
		var input any // none without ?input: OPA warns of a missing input only on POST
		if vals := q["input"]; len(vals) > 0 {
			raw := vals[len(vals)-1] // the last, as OPA's server reads it
			v, err := decodeJSON([]byte(raw), s.cfg.Server.MaxDepth)
			if err != nil {
				writeError(w, apierror.New(apierror.InvalidParameter, "query parameter input: %s", apierror.As(err).Message))
				return
			}
			input = v
			if v == nil {
				input = engine.NullInput // ?input=null: input is null, as OPA reads it
			}
		}
		s.inputRead(w, path, q)
		ctx, cancel := s.decisionContext(w, r)
		defer cancel()
		d, ev := s.decideOPA(ctx, path, input, in)
		s.writeOPA(w, q, d, false, ev)
		return
	}
	buf, ok := s.readRaw(w, r)
	if !ok {
		return
	}
	defer putBuf(buf)
	raw := buf.Bytes()
	if len(bytes.TrimSpace(raw)) == 0 {
		s.inputRead(w, path, q)
		ctx, cancel := s.decisionContext(w, r)
		defer cancel()
		d, ev := s.decideOPA(ctx, path, nil, in)
		s.writeOPA(w, q, d, true, ev)
		return
	}
	hit, _, rk, ok := s.rawLookup(r, path, raw, false)
	if ok {
		s.writeOPA(w, q, hit, false, nil)
		return
	}
	body, err := decodeJSON(raw, s.cfg.Server.MaxDepth)
	if err != nil {
		writeError(w, err)
		return
	}
	obj, ok := body.(map[string]any)
	if !ok && body != nil { // a body of null is one without input, as to OPA's server
		writeError(w, apierror.New(apierror.InvalidParameter, "request body must be a JSON object like {\"input\": ...}, got %s", jsonType(body)))
		return
	}
	// {"input": null} is no input, with OPA's warning, as OPA's server
	// decodes it (DataRequestV1.Input is a pointer).
	input := obj["input"]
	s.inputRead(w, path, q)
	ctx, cancel := s.decisionContext(w, r)
	defer cancel()
	d, ev := s.decideOPA(ctx, path, input, in)
	if input != nil && ev == nil {
		s.rawRemember(r, path, rk, d, true) // a repeat answered from it has no warning to give
	}
	s.writeOPA(w, q, d, input == nil, ev)
}

// writeOPA writes OPA's Data API response of one decision: {"decision_id",
// "result"} from the decision's cached JSON in the common case, else built
// field by field with what the query asks for (?metrics, ?provenance,
// ?pretty, read as OPA reads them: boolParam), OPA's warning when a POST
// had no input (warnNoInput) and what an inspected evaluation gathered (ev,
// nil for others: ?instrument's metrics, ?explain's explanation).
//
// q is the request's query (queryOf), parsed once by the caller: a GET's
// ?input= can be the larger part of the URL.
func (s *Server) writeOPA(w http.ResponseWriter, q url.Values, d decided, warnNoInput bool, ev *inspected) {
	// A failed evaluation is a decision the window counts (its time is
	// the slowest there is, EVAL_TIMEOUT), as the ACGS dialect's and
	// batch items' are; only a shed one is not.
	observeDecided(w, d, false)
	if d.Err != nil {
		writeError(w, d.Err)
		return
	}
	metrics, provenance, pretty := boolParam(q, "metrics"), boolParam(q, "provenance"), boolParam(q, "pretty")
	if !warnNoInput && (d.JSON != nil || !d.Defined) && !metrics && !provenance && !pretty && ev == nil {
		buf := bufPool.Get().(*bytes.Buffer)
		defer putBuf(buf)
		buf.Reset()
		buf.Grow(len(d.JSON) + 128) // the whole answer fits the pooled buffer
		// d.JSON is set or the result undefined: nothing to encode, no error.
		b, _ := appendOPADecision(buf.AvailableBuffer(), d)
		b = append(b, "}\n"...)
		w.Header()["Content-Type"] = jsonContentType
		_, _ = w.Write(b)
		return
	}
	resp := make(map[string]any, 6)
	if d.Defined {
		resp["result"] = d.Result
	}
	resp["decision_id"] = d.ID
	if warnNoInput {
		resp["warning"] = map[string]any{"code": "api_usage_warning", "message": "'input' key missing from the request"}
	}
	if ev != nil && ev.trace != nil {
		expl, err := explanation(ev.in.explain, ev.trace, d.Defined, pretty)
		switch {
		case errors.Is(err, errExplainTooLarge):
			if !warnNoInput {
				resp["warning"] = map[string]any{"code": "explanation_too_large", "message": err.Error()}
			}
		case err != nil:
			writeError(w, apierror.Wrap(apierror.InternalError, err, "encoding the explanation: %v", err))
			return
		case len(expl) > 0:
			resp["explanation"] = expl
		}
	}
	if m := opaMetrics(w, d, ev, metrics); m != nil {
		resp["metrics"] = m
	}
	if provenance {
		resp["provenance"] = s.provenance(d.Revision)
	}
	writeJSON(w, http.StatusOK, resp, pretty)
}

// boolParam reads a boolean query parameter as OPA does: set when given
// without a value (?pretty) or with the value true in any case; absent,
// false (?pretty=false) or anything else is unset.
func boolParam(q url.Values, name string) bool {
	vs, ok := q[name]
	if !ok {
		return false
	}
	if len(vs) == 1 && vs[0] == "" {
		return true
	}
	for _, v := range vs {
		if strings.EqualFold(v, "true") {
			return true
		}
	}
	return false
}

// queryOf is r's query, nil without one (most requests: no parsing).
func queryOf(r *http.Request) url.Values {
	if r.URL.RawQuery == "" {
		return nil
	}
	return r.URL.Query()
}

// appendOPADecision appends OPA's answer to one decision,
// {"decision_id": ..., "result": ...} with the result left out when it is
// undefined, and leaves the object open for the caller's members (a batch
// item's http_status_code). The result is the decision's cached JSON, or
// encoded here when it has none.
func appendOPADecision(b []byte, d decided) ([]byte, error) {
	b = append(b, `{"decision_id":`...)
	b = jsonenc.AppendString(b, d.ID, true)
	if !d.Defined {
		return b, nil
	}
	res := d.JSON
	if res == nil {
		var err error
		if res, err = json.Marshal(d.Result); err != nil {
			return b, apierror.Wrap(apierror.InternalError, err, "encoding result: %v", err)
		}
	}
	b = append(b, `,"result":`...)
	return append(b, res...), nil
}

// inputRead notes what ?metrics (or ?instrument) reports of a request
// that asks for it, once its input is decoded and before its decision:
// timer_rego_input_parse_ns, the time from the request's start (OPA's
// timer covers reading the body and decoding it), and whether the query of
// path was prepared before (counter_server_query_cache_hit).
func (s *Server) inputRead(w http.ResponseWriter, path string, q url.Values) {
	if len(q) == 0 || (!boolParam(q, "metrics") && !boolParam(q, "instrument")) {
		return
	}
	if sw, ok := w.(*statusWriter); ok {
		sw.inputNS = time.Since(sw.start).Nanoseconds()
		sw.prepared = s.d.Engine.Prepared(path)
	}
}

// inputParseNS is the timer_rego_input_parse_ns inputRead noted on w.
func inputParseNS(w http.ResponseWriter) int64 {
	if sw, ok := w.(*statusWriter); ok {
		return sw.inputNS
	}
	return 0
}

// opaMetrics is the "metrics" of OPA's answer to decision d on w, nil for
// none: with an inspection that gathered them (ev, ?metrics or
// ?instrument), OPA's metrics of the evaluation (with ?instrument
// topdown's detailed ones, and its prepared-query counter) and the
// server's; else with ?metrics (metrics), decisionMetrics.
func opaMetrics(w http.ResponseWriter, d decided, ev *inspected, metrics bool) map[string]any {
	if ev != nil && ev.metrics != nil {
		m := ev.metrics.All()
		m["timer_server_handler_ns"] = time.Since(startOf(w)).Nanoseconds()
		m["timer_rego_input_parse_ns"] = inputParseNS(w)
		for k, v := range cacheCounters(d.Decision) {
			m[k] = v
		}
		return m
	}
	if metrics {
		return decisionMetrics(w, d)
	}
	return nil
}

// decisionMetrics is ?metrics of decision d answered on w: OPA's server
// timers and its prepared-query counter, which is 1 when no query had to
// be prepared for the decision (a cache or a constant plan answered it, or
// the query was prepared before: inputRead), and the decision cache's
// counters.
func decisionMetrics(w http.ResponseWriter, d decided) map[string]any {
	prepared := 0
	if sw, ok := w.(*statusWriter); ok && sw.prepared || d.Source != engine.SourceFull && d.Source != engine.SourceVM {
		prepared = 1
	}
	m := map[string]any{
		"timer_server_handler_ns":        time.Since(startOf(w)).Nanoseconds(),
		"timer_rego_query_eval_ns":       d.EvalNS,
		"timer_rego_input_parse_ns":      inputParseNS(w),
		"counter_server_query_cache_hit": prepared,
	}
	for k, v := range cacheCounters(d.Decision) {
		m[k] = v
	}
	return m
}

func cacheCounters(d engine.Decision) map[string]any {
	hit := func(b bool) int {
		if b {
			return 1
		}
		return 0
	}
	return map[string]any{
		"counter_decision_cache_hit":    hit(d.Source == engine.SourceL1 || d.Source == engine.SourceL2),
		"counter_decision_cache_l1_hit": hit(d.Source == engine.SourceL1),
		"counter_decision_cache_l2_hit": hit(d.Source == engine.SourceL2),
		"counter_partial_eval_plan":     hit(d.Source.Partial()),
	}
}

func (s *Server) provenance(rev string) map[string]any {
	return map[string]any{
		"version":      version.Version,
		"build_commit": version.Commit(),
		"revision":     rev,
		"bundles":      map[string]any{"acgs": map[string]any{"revision": rev}},
	}
}

// handleV0Data serves OPA's v0 Data API: the raw body is the input and the
// raw value is returned; undefined is 404.
func (s *Server) handleV0Data(w http.ResponseWriter, r *http.Request) {
	path, err := dataPath(r, "/v0/data")
	if err != nil {
		writeError(w, err)
		return
	}
	s.serveRaw(w, r, path)
}

// handleDefaultDecision serves POST /: OPA's default decision.
func (s *Server) handleDefaultDecision(w http.ResponseWriter, r *http.Request) {
	s.serveRaw(w, r, s.cfg.Policy.DefaultDecision) // a path, as config checks
}

// serveRaw answers a raw body as the input of the document at path (a path
// datapath.Check accepts).
func (s *Server) serveRaw(w http.ResponseWriter, r *http.Request, path string) {
	input, _, ok := s.readJSON(w, r, true)
	if !ok {
		return
	}
	if input == nil {
		input = engine.NullInput // a body of null, or none: OPA evaluates input as null
	}
	ctx, cancel := s.decisionContext(w, r)
	defer cancel()
	d := s.decide(ctx, path, input, "")
	observeDecided(w, d, false)
	if d.Err != nil {
		writeError(w, d.Err)
		return
	}
	if !d.Defined {
		writeError(w, apierror.New(apierror.UndefinedDocument, "document undefined: data.%s", strings.ReplaceAll(path, "/", ".")))
		return
	}
	writeJSON(w, http.StatusOK, d.Result, boolParam(queryOf(r), "pretty"))
}

// handleHealth is OPA's /health: 200 {} when a policy is active.
func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.d.Engine.Info(); !ok {
		writeJSON(w, http.StatusInternalServerError, map[string]any{"error": "no policy bundle is active"}, false)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{}, false)
}

// handleLive answers while the process is up.
func (s *Server) handleLive(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{}, false)
}

// handleReady answers 200 while a policy is active and the server is not draining.
func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	if s.draining.Load() {
		writeJSON(w, http.StatusInternalServerError, map[string]any{"error": "shutting down"}, false)
		return
	}
	s.handleHealth(w, r)
}

func (s *Server) handlePrometheus(w http.ResponseWriter, r *http.Request) {
	s.d.Metrics.Handler().ServeHTTP(w, r)
}

type policyDoc struct {
	ID  string          `json:"id"`
	Raw string          `json:"raw"`
	AST json.RawMessage `json:"ast,omitempty"`
}

func policyOf(m engine.Module) policyDoc {
	doc := policyDoc{ID: m.ID, Raw: m.Raw}
	if m.AST != nil {
		if b, err := json.Marshal(m.AST); err == nil {
			doc.AST = b
		}
	}
	return doc
}

// handlePolicies lists the active modules (read-only: policies come from bundles).
func (s *Server) handlePolicies(w http.ResponseWriter, r *http.Request) {
	mods := s.d.Engine.Modules()
	out := make([]policyDoc, 0, len(mods))
	for _, m := range mods {
		out = append(out, policyOf(m))
	}
	writeJSON(w, http.StatusOK, map[string]any{"result": out}, boolParam(queryOf(r), "pretty"))
}

func (s *Server) handlePolicy(w http.ResponseWriter, r *http.Request) {
	id := requestPath(r, "/v1/policies")
	for _, m := range s.d.Engine.Modules() {
		if m.ID == id {
			writeJSON(w, http.StatusOK, map[string]any{"result": policyOf(m)}, boolParam(queryOf(r), "pretty"))
			return
		}
	}
	writeError(w, apierror.New(apierror.ResourceNotFound, "storage_not_found_error: policy id %q", id))
}
