package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/acgs-lite/acgs/internal/admission"
	"github.com/acgs-lite/acgs/internal/apierror"
	"github.com/acgs-lite/acgs/internal/jsonenc"
	"github.com/acgs-lite/acgs/internal/version"
)

const decisionPath = "acgs/main/decision"

// handleDecision serves POST /v1/data/acgs/main/decision in both dialects: a
// body with a top-level "input" key is an OPA request, anything else an ACGS
// one. A body decided before, byte for byte, is answered from the raw-body
// tier without decoding it.
func (s *Server) handleDecision(w http.ResponseWriter, r *http.Request) {
	buf, ok := s.readRaw(w, r)
	if !ok {
		return
	}
	defer putBuf(buf)
	raw := buf.Bytes()
	hit, opa, rk, ok := s.rawLookup(r, decisionPath, raw, true)
	if ok {
		if opa {
			s.writeOPA(w, queryOf(r), hit, false, nil)
		} else {
			s.writeACGS(w, r, hit)
		}
		return
	}
	body, size, err := decodeJSONSized(raw, s.cfg.Server.MaxDepth)
	if err != nil {
		writeError(w, err)
		return
	}
	// The one input decided is the body or its "input" member: at most
	// the body's size.
	setInputSize(r, size)
	if obj, ok := body.(map[string]any); ok {
		if in, isOPA := obj["input"]; isOPA {
			q := queryOf(r)
			s.inputRead(w, decisionPath, q)
			ctx, cancel := s.decisionContext(w, r)
			defer cancel()
			d, ev := s.decideOPA(ctx, decisionPath, in, inspectionOf(q))
			if in != nil && ev == nil {
				s.rawRemember(r, decisionPath, rk, d, true)
			}
			s.writeOPA(w, q, d, in == nil, ev) // {"input": null}: no input, as in handleOPAData
			return
		}
	}
	req, err := s.validateACGS(body)
	if err != nil {
		writeError(w, err)
		return
	}
	ctx, cancel := s.decisionContext(w, r)
	defer cancel()
	d := s.decide(ctx, decisionPath, req, "")
	d.acgsChecked = s.acgsFastOK(d) // once, for the raw tier and the answer
	s.rawRemember(r, decisionPath, rk, d, false)
	s.writeACGS(w, r, d)
}

// writeACGS writes the ACGS response of one decision (acgsBody); a
// decision shed for overload is 503 with Retry-After and a body that still
// denies for a client that reads only "allow"; no active policy is OPA's
// 503 error; ?pretty indents the same document.
func (s *Server) writeACGS(w http.ResponseWriter, r *http.Request, d decided) {
	if unavailable(d.Err) {
		writeError(w, d.Err)
		return
	}
	buf := bufPool.Get().(*bytes.Buffer)
	defer putBuf(buf)
	buf.Reset()
	buf.Grow(len(d.JSON) + 512) // the pooled buffer holds the whole answer: appends past it would allocate every time
	b, err := s.acgsBody(buf.AvailableBuffer(), d, time.Since(startOf(w)))
	if err != nil {
		writeError(w, err)
		return
	}
	observeDecided(w, d, false)
	if boolParam(queryOf(r), "pretty") {
		var out bytes.Buffer
		_ = json.Indent(&out, b, "", "  ") // b is valid JSON: acgsBody wrote it
		b = out.Bytes()
	}
	b = append(b, '\n')
	w.Header()["Content-Type"] = jsonContentType
	if admission.Overloaded(d.Err) {
		w.Header().Set("Retry-After", retryAfter)
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_, _ = w.Write(b)
}

// acgsBody appends the ACGS document of one decision, compact, with no
// final newline: the one place a decision becomes ACGS bytes, for single
// requests and batch items. Written from the decision's cached JSON when it
// can (appendACGSFast) and by hand for an overloaded one; otherwise built
// field by field (acgsResponse) and encoded.
func (s *Server) acgsBody(dst []byte, d decided, lat time.Duration) ([]byte, error) {
	if admission.Overloaded(d.Err) {
		// Under overload every microsecond spent refusing is taken from
		// the evaluations: no map, no encoding/json.
		return s.appendACGSOverloaded(dst, d, lat), nil
	}
	if b, ok := s.appendACGSFast(dst, d, lat); ok {
		return b, nil
	}
	var out bytes.Buffer
	if err := json.NewEncoder(&out).Encode(s.acgsResponse(d, lat)); err != nil { // HTML-escaped, as the cached JSON appendACGSFast copies
		return dst, apierror.Wrap(apierror.InternalError, err, "encoding response: %v", err)
	}
	return append(dst, bytes.TrimSuffix(out.Bytes(), []byte("\n"))...), nil
}

// unavailable reports a decision refused because no policy is active (an
// instance with remote bundles before its first one). Such a request is
// answered 503, which a proxy retries on another instance, rather than with
// a fail-closed deny that the client would take for the constitution's
// answer; either way it is never an allow.
func unavailable(err error) bool {
	return err != nil && apierror.CodeOf(err) == apierror.Unavailable
}

// serverFields are the fields the server adds to an ACGS response.
var serverFields = [...]string{"decision_id", "policy_revision", "cache_hit", "cache_tier", "partial_evaluation", "latency_ms"}

// appendACGSFast appends the ACGS response of d built from the decision's
// cached JSON encoding, so that a cache hit is not encoded again. It applies
// only when the policy's object is complete and names none of the server's
// fields (acgsFastOK, or d.acgsChecked when the raw-body tier remembered
// that of the decision and d comes without its value); otherwise ok is
// false and acgsResponse builds the answer. Both paths give the same
// document (TestACGSBodyPathsAgree).
func (s *Server) appendACGSFast(dst []byte, d decided, lat time.Duration) ([]byte, bool) {
	if !d.acgsChecked && !s.acgsFastOK(d) {
		return dst, false
	}
	tier := d.Source.CacheTier()
	dst = append(dst, `{"decision_id":`...)
	dst = jsonenc.AppendString(dst, d.ID, true)
	dst = append(dst, `,"policy_revision":`...)
	dst = jsonenc.AppendString(dst, d.Revision, true)
	dst = append(dst, `,"cache_hit":`...)
	dst = strconv.AppendBool(dst, tier != "none")
	dst = append(dst, `,"cache_tier":"`...)
	dst = append(dst, tier...)
	dst = append(dst, `","partial_evaluation":`...)
	dst = strconv.AppendBool(dst, d.Source.Partial())
	dst = append(dst, `,"latency_ms":`...)
	dst = appendLatencyMS(dst, lat)
	if len(d.JSON) > 2 {
		dst = append(dst, ',')
	}
	dst = append(dst, d.JSON[1:]...)
	return dst, true
}

// acgsFastOK reports whether appendACGSFast may write d from its JSON: a
// complete ACGS object (allow, this service's hash, reasons, details,
// score) that names none of the server's fields.
func (s *Server) acgsFastOK(d decided) bool {
	if d.Err != nil || !d.Defined || len(d.JSON) < 2 || d.JSON[0] != '{' {
		return false
	}
	obj, ok := d.Result.(map[string]any)
	if !ok {
		return false
	}
	if _, ok := obj["allow"].(bool); !ok {
		return false
	}
	if h, _ := obj["constitutional_hash"].(string); h != s.hash {
		return false
	}
	for _, k := range [...]string{"reasons", "evaluation_details", "compliance_score"} {
		if _, ok := obj[k]; !ok {
			return false
		}
	}
	for _, k := range serverFields {
		if _, ok := obj[k]; ok {
			return false
		}
	}
	return true
}

// appendACGSOverloaded appends the ACGS body of a decision shed by
// admission control: the document acgsResponse builds for it (a test checks
// that they are the same), without a map or encoding/json.
func (s *Server) appendACGSOverloaded(dst []byte, d decided, lat time.Duration) []byte {
	msg := apierror.As(d.Err).Message
	dst = append(dst, `{"allow":false,"code":"overloaded","message":`...)
	dst = jsonenc.AppendString(dst, msg, true)
	dst = append(dst, `,"compliance_score":0,"constitutional_hash":`...)
	dst = jsonenc.AppendString(dst, s.hash, true)
	dst = append(dst, `,"reasons":[`...)
	dst = jsonenc.AppendString(dst, "Not evaluated: "+msg, true)
	dst = append(dst, `],"evaluation_details":{},"decision_id":`...)
	dst = jsonenc.AppendString(dst, d.ID, true)
	dst = append(dst, `,"policy_revision":`...)
	dst = jsonenc.AppendString(dst, d.Revision, true)
	dst = append(dst, `,"cache_hit":false,"cache_tier":"none","partial_evaluation":false,"latency_ms":`...)
	dst = appendLatencyMS(dst, lat)
	dst = append(dst, '}')
	return dst
}

// validateACGS checks the envelope of an ACGS request and its
// constitutional hash, counting mismatches.
func (s *Server) validateACGS(body any) (map[string]any, error) {
	obj, err := s.validateEnvelope(body)
	if err != nil {
		return nil, err
	}
	if obj["constitutional_hash"].(string) != s.hash {
		s.d.Metrics.HashMismatch()
		return nil, apierror.New(apierror.ConstitutionalHashMismatch, "Invalid constitutional hash. Expected: %s", s.hash)
	}
	return obj, nil
}

// validateEnvelope checks the fields of an ACGS request: required strings and
// optional objects. Fields inside the objects are the policy's to judge.
func (s *Server) validateEnvelope(body any) (map[string]any, error) {
	obj, ok := body.(map[string]any)
	if !ok {
		return nil, apierror.New(apierror.InvalidParameter, "request body must be a JSON object, got %s", jsonType(body))
	}
	for _, f := range []string{"type", "constitutional_hash"} {
		v, present := obj[f]
		if !present {
			return nil, apierror.New(apierror.InvalidParameter, "missing required field %q", f)
		}
		if _, ok := v.(string); !ok {
			return nil, apierror.New(apierror.InvalidParameter, "field %q must be a string, got %s", f, jsonType(v))
		}
	}
	if v, present := obj["action"]; present {
		if _, ok := v.(string); !ok {
			return nil, apierror.New(apierror.InvalidParameter, "field %q must be a string, got %s", "action", jsonType(v))
		}
	}
	for _, f := range []string{"context", "evolution_request", "data_request"} {
		if v, present := obj[f]; present {
			if _, ok := v.(map[string]any); !ok {
				return nil, apierror.New(apierror.InvalidParameter, "field %q must be an object, got %s", f, jsonType(v))
			}
		}
	}
	return obj, nil
}

// acgsResponse builds the ACGS response of a decision. An evaluation failure
// denies with a reason naming it (fail closed). A decision shed by admission
// control (overloaded) gets the same denying body plus the error's code and
// message, which the caller sends with 503 and Retry-After.
func (s *Server) acgsResponse(d decided, lat time.Duration) map[string]any {
	resp := make(map[string]any, 16)
	if d.Err == nil {
		if obj, ok := d.Result.(map[string]any); ok && d.Defined {
			for k, v := range obj {
				resp[k] = v
			}
		}
	}
	allow, ok := resp["allow"].(bool)
	switch {
	case admission.Overloaded(d.Err):
		e := apierror.As(d.Err)
		resp = failClosed(s.hash, "Not evaluated: "+e.Message)
		resp["code"], resp["message"] = e.Code, e.Message
	case d.Err != nil:
		resp = failClosed(s.hash, "Policy evaluation failed: "+apierror.As(d.Err).Message)
	case !ok:
		resp = failClosed(s.hash, "Policy produced no decision")
	default:
		resp["allow"] = allow
	}
	if _, ok := resp["reasons"]; !ok {
		resp["reasons"] = []any{}
	}
	if _, ok := resp["evaluation_details"]; !ok {
		resp["evaluation_details"] = map[string]any{}
	}
	if _, ok := resp["compliance_score"]; !ok {
		resp["compliance_score"] = 0
	}
	resp["constitutional_hash"] = s.hash
	resp["decision_id"] = d.ID
	resp["policy_revision"] = d.Revision
	resp["cache_hit"] = d.Source.CacheTier() != "none" && d.Err == nil
	resp["cache_tier"] = d.Source.CacheTier()
	resp["partial_evaluation"] = d.Source.Partial() && d.Err == nil
	resp["latency_ms"] = math.Round(float64(lat.Nanoseconds())/1e3) / 1e3
	return resp
}

func failClosed(hash, reason string) map[string]any {
	return map[string]any{
		"allow":               false,
		"compliance_score":    0,
		"constitutional_hash": hash,
		"reasons":             []any{reason},
		"evaluation_details":  map[string]any{},
	}
}

// handleACGSAllow serves GET /v1/data/acgs/main/allow?type=&constitutional_hash=&action=.
// With an "input" query parameter it is an ordinary OPA Data API GET.
func (s *Server) handleACGSAllow(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Has("input") {
		s.handleOPAData(w, r)
		return
	}
	input := map[string]any{}
	for _, f := range []string{"type", "constitutional_hash", "action"} {
		if q.Has(f) {
			input[f] = q.Get(f)
		}
	}
	allow := false
	if input["constitutional_hash"] == s.hash {
		ctx, cancel := s.decisionContext(w, r)
		defer cancel()
		d := s.decide(ctx, "acgs/main/allow", input, "")
		if unavailable(d.Err) {
			writeError(w, d.Err)
			return
		}
		if admission.Overloaded(d.Err) {
			if admission.ReasonOf(d.Err) == admission.ReasonCanceled {
				markCanceled(w)
			}
			e := apierror.As(d.Err)
			w.Header().Set("Retry-After", retryAfter)
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"allow": false, "code": e.Code, "message": e.Message}, boolParam(q, "pretty"))
			return
		}
		allow, _ = d.Result.(bool)
		allow = allow && d.Err == nil && d.Defined
		observe(w, sampleOf(d.Decision))
	} else {
		s.d.Metrics.HashMismatch()
	}
	writeJSON(w, http.StatusOK, map[string]any{"allow": allow}, boolParam(q, "pretty"))
}

// handleACGSHealth serves the original service's health document.
func (s *Server) handleACGSHealth(w http.ResponseWriter, r *http.Request) {
	// The active policy is read once: its revision, read sets and
	// evaluators are of one revision during a hot reload (review).
	pol := s.d.Engine.Active()
	info, active := pol.Info()
	status := "healthy"
	cacheStats := map[string]any{"l1_size": 0, "l1_max_size": s.cfg.Cache.L1Size, "l1_utilization": 0.0, "l2_enabled": false, "l2_healthy": nil}
	if s.d.Cache != nil {
		st := s.d.Cache.Stats()
		util := 0.0
		if st.L1Capacity > 0 {
			util = math.Round(float64(st.L1Entries)/float64(st.L1Capacity)*1e4) / 1e4
		}
		cacheStats["l1_size"] = st.L1Entries
		cacheStats["l1_max_size"] = st.L1Capacity
		cacheStats["l1_utilization"] = util
		cacheStats["l2_enabled"] = st.L2Enabled
		if st.L2Enabled {
			cacheStats["l2_healthy"] = st.L2Healthy
			cacheStats["l2_breaker"] = st.BreakerState
			if !st.L2Healthy {
				status = "degraded"
			}
		}
		cacheStats["epoch"] = st.Epoch
	}
	code := http.StatusOK
	if !active {
		status, code = "unhealthy", http.StatusServiceUnavailable
	}
	doc := map[string]any{
		"status":              status,
		"constitutional_hash": s.hash,
		"version":             version.Version,
		"policy_revision":     info.Revision,
		// Tells apart two bundles of one revision (acgs_policy_info has it too).
		"policy_content_digest": info.ContentDigest,
		"performance":           s.d.Window.Snapshot().HealthPerformance(s.targets),
		"cache_stats":           cacheStats,
	}
	if rs := pol.ReadSets(); len(rs) > 0 {
		// What each entry point's cache keys cover (acgs policy readset lists the paths).
		sets := make(map[string]any, len(rs))
		for path, set := range rs {
			sets[path] = map[string]any{"input_paths": len(set.Paths), "type_only_paths": len(set.Types), "whole_input": set.Whole, "cached": set.Cacheable()}
		}
		doc["read_sets"] = sets
	}
	if ev := pol.Evaluators(); len(ev) > 0 {
		// Which evaluator answers each prepared path's cache misses, and why
		// a path runs on topdown when the compiled evaluator cannot run it.
		doc["evaluators"] = ev
	}
	if info.LastError != nil {
		doc["last_reload_error"] = info.LastError.Error()
		doc["last_reload_error_at"] = info.LastErrorAt.UTC().Format(time.RFC3339)
	}
	writeJSON(w, code, doc, boolParam(queryOf(r), "pretty"))
}

// handleMetricsJSON serves /v1/metrics: the rolling-window summary, or the
// Prometheus exposition with ?format=prometheus.
func (s *Server) handleMetricsJSON(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("format") == "prometheus" {
		s.handlePrometheus(w, r)
		return
	}
	writeJSON(w, http.StatusOK, s.d.Window.Snapshot().MetricsJSON(s.targets), boolParam(queryOf(r), "pretty"))
}

func jsonType(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case string:
		return "a string"
	case json.Number, float64, int:
		return "a number"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

func itoa(n int) string { return fmt.Sprint(n) }

// appendLatencyMS appends lat in milliseconds rounded to the microsecond,
// as strconv.AppendFloat(dst, math.Round(µs)/1e3, 'f', -1, 64) writes it
// (the shortest decimal that reads back as the same float64), without
// the float formatting, which cost ~0.15 µs a warm request. For a whole
// number of microseconds k below 10^15 that decimal is k/1000 written
// out, trailing zeros dropped: it reads back as the float64 nearest to it,
// which is what the division gives, and no shorter decimal does (distinct
// decimals of at most 15 significant digits are distinct float64s).
// TestAppendLatencyMS holds the two equal.
func appendLatencyMS(dst []byte, lat time.Duration) []byte {
	us := math.Round(float64(lat.Nanoseconds()) / 1e3)
	if math.Signbit(us) || us >= 1e15 { // negative, and -0 (from -499..-1 ns): AppendFloat writes "-0"
		return strconv.AppendFloat(dst, us/1e3, 'f', -1, 64)
	}
	k := uint64(us)
	dst = strconv.AppendUint(dst, k/1000, 10)
	frac := k % 1000
	if frac == 0 {
		return dst
	}
	dst = append(dst, '.', byte('0'+frac/100))
	if frac%100 != 0 {
		dst = append(dst, byte('0'+frac/10%10))
		if frac%10 != 0 {
			dst = append(dst, byte('0'+frac%10))
		}
	}
	return dst
}
