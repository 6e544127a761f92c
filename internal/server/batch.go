package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/server/types"

	"github.com/acgs-lite/acgs/internal/admission"
	"github.com/acgs-lite/acgs/internal/apierror"
	"github.com/acgs-lite/acgs/internal/engine"
	"github.com/acgs-lite/acgs/internal/jsonenc"
	"github.com/acgs-lite/acgs/internal/telemetry"
)

// sampleOf is what the rolling window records of a decision answered alone.
func sampleOf(d engine.Decision) telemetry.Sample {
	return telemetry.Sample{CacheTier: d.Source.CacheTier(), Partial: d.Source.Partial()}
}

// itemSampleOf is what it records of a decision answered in a batch.
func itemSampleOf(d engine.Decision) telemetry.Sample {
	smp := sampleOf(d)
	smp.Batch = true
	return smp
}

// batchSample is what it records of a batch of n items as a whole.
func batchSample(n int) telemetry.Sample {
	return telemetry.Sample{CacheTier: "none", BatchSize: n, WholeBatch: true}
}

// deepMerge returns common with input merged over it: objects merge
// recursively, and on any other conflict the input wins. Neither argument is
// modified.
func deepMerge(common, input any) any {
	co, ok1 := common.(map[string]any)
	io, ok2 := input.(map[string]any)
	if !ok1 || !ok2 {
		return input
	}
	out := make(map[string]any, len(co)+len(io))
	for k, v := range co {
		out[k] = v
	}
	for k, v := range io {
		if cv, ok := out[k]; ok {
			out[k] = deepMerge(cv, v)
		} else {
			out[k] = v
		}
	}
	return out
}

// handleOPABatch serves Enterprise OPA's batch API, reading its body as
// Enterprise OPA decodes it (into {inputs, common_input}): other members
// are ignored; a body without inputs (none, null, {}, {"inputs": null})
// is answered 200 with its warning and no responses; common_input is
// merged under the object inputs when it is an object, and ignored
// otherwise.
//
// Its query parameters are Enterprise OPA's: ?pretty,
// ?strict-builtin-errors and ?instrument (each item then evaluated by
// topdown for itself, as a single request asking for them), ?metrics
// (each item's, as a single request's, and the batch's) and ?provenance
// (each item's). ?explain is refused: an explanation per item is bounded
// only item by item (maxExplainBytes), so a batch's could take the memory
// of the service; a single request explains one input.
func (s *Server) handleOPABatch(w http.ResponseWriter, r *http.Request) {
	path, err := dataPath(r, "/v1/batch/data")
	if err != nil {
		writeError(w, err)
		return
	}
	q := queryOf(r)
	if explainParam(q) != "" {
		writeError(w, apierror.New(apierror.InvalidParameter, "?explain is not supported by the batch API: explain one input with POST /v1/data/%s?explain=...", path))
		return
	}
	body, _, ok := s.readJSON(w, r, true)
	if !ok {
		return
	}
	obj, ok := body.(map[string]any)
	if !ok && body != nil {
		writeError(w, apierror.New(apierror.InvalidParameter, "batch body must be an object like {\"inputs\": {\"id\": ...}}, got %s", jsonType(body)))
		return
	}
	s.inputRead(w, path, q)
	if obj["inputs"] == nil {
		resp := map[string]any{
			"batch_decision_id": telemetry.NewDecisionID(),
			"warning":           types.NewWarning(types.CodeAPIUsageWarn, msgInputsKeyMissing),
		}
		if boolParam(q, types.ParamMetricsV1) {
			resp["metrics"] = batchMetrics(w, nil)
		}
		writeJSON(w, http.StatusOK, resp, boolParam(q, "pretty"))
		return
	}
	inputs, ok := obj["inputs"].(map[string]any)
	if !ok {
		writeError(w, apierror.New(apierror.InvalidParameter, "batch field \"inputs\" must be an object mapping ids to inputs, got %s", jsonType(obj["inputs"])))
		return
	}
	if len(inputs) > s.cfg.Server.MaxBatchItems {
		writeError(w, apierror.New(apierror.RequestTooLarge, "batch has %d inputs, more than MAX_BATCH_ITEMS (%d)", len(inputs), s.cfg.Server.MaxBatchItems))
		return
	}
	common, hasCommon := obj["common_input"].(map[string]any)
	ids := make([]string, 0, len(inputs))
	items := make([]any, 0, len(inputs))
	for id, in := range inputs {
		if hasCommon {
			in = deepMerge(common, in) // an input that is not an object is as it is
		}
		if in == nil {
			in = engine.NullInput // an item's value is its input, null too
		}
		ids = append(ids, id)
		items = append(items, in)
	}
	batchID := telemetry.NewDecisionID()
	ctx, cancel := s.decisionContext(w, r)
	defer cancel()
	in := inspectionOf(q)
	var results []decided
	var evs []*inspected // with an inspection, each item's
	if in.on() {
		results, evs = s.inspectMany(ctx, path, items, batchID, in)
	} else {
		results = s.decideMany(ctx, path, items, batchID)
	}
	for _, d := range results {
		// No active policy, or a path no query can name: the same for
		// every item, so the whole batch is answered with it.
		if unavailable(d.Err) || errors.Is(d.Err, engine.ErrPathNotQueryable) {
			writeError(w, d.Err)
			return
		}
	}
	s.d.Metrics.ObserveBatch(len(items))
	failed, shed := 0, 0
	for _, d := range results {
		if d.Err != nil {
			failed++
		}
		if admission.Overloaded(d.Err) {
			shed++
		}
	}
	mixed := failed > 0 && failed < len(results)
	metrics, provenance := boolParam(q, types.ParamMetricsV1), boolParam(q, types.ParamProvenanceV1)
	// Items are encoded one by one, successful ones from the decision's
	// cached JSON, so a warm batch is not re-encoded result by result.
	encoded := make([][]byte, len(results))
	for i, d := range results {
		observeDecided(w, d, true)
		var item []byte
		if d.Err != nil {
			// Enterprise OPA's items carry "200" or "500", and only in a
			// 207 (its SDKs accept nothing else); the code says which
			// failure (overloaded, evaluation_error).
			status := 0
			if mixed {
				status = http.StatusInternalServerError
			}
			item = appendErrorItem(nil, apierror.As(d.Err), d.ID, status)
		} else if metrics || provenance || in.instrument {
			// What a single request asking for them gets, as Enterprise
			// OPA's items carry them.
			var ev *inspected
			if evs != nil {
				ev = evs[i]
			}
			resp := map[string]any{"decision_id": d.ID}
			if d.Defined {
				resp["result"] = d.Result
			}
			if m := opaMetrics(w, d, ev, metrics); m != nil {
				resp["metrics"] = m
			}
			if provenance {
				resp["provenance"] = s.provenance(d.Revision)
			}
			if mixed {
				resp["http_status_code"] = "200"
			}
			var err error
			if item, err = json.Marshal(resp); err != nil {
				writeError(w, apierror.Wrap(apierror.InternalError, err, "encoding result: %v", err))
				return
			}
		} else {
			var err error
			if item, err = appendOPADecision(item, d); err != nil {
				writeError(w, err)
				return
			}
			if mixed {
				item = append(item, `,"http_status_code":"200"`...)
			}
			item = append(item, '}')
		}
		encoded[i] = item
	}
	status := batchStatus(len(results), failed, shed)
	if shed > 0 {
		w.Header().Set("Retry-After", retryAfter)
	}
	observe(w, batchSample(len(results)))
	if pretty := boolParam(q, "pretty"); pretty || metrics {
		responses := make(map[string]json.RawMessage, len(results))
		for i, item := range encoded {
			responses[ids[i]] = item
		}
		resp := map[string]any{"batch_decision_id": batchID, "responses": responses}
		if metrics {
			resp["metrics"] = batchMetrics(w, results)
		}
		writeJSON(w, status, resp, pretty)
		return
	}
	writeBatch(w, status, batchID, ids, encoded)
}

// batchMetrics is a batch's own ?metrics, as Enterprise OPA gives them
// beside its items': the handler's time, the input's (the body's) and
// whether a query was prepared for it (counter_server_query_cache_hit 0)
// or not (1: it was prepared before, or every item came from a cache or
// a constant plan).
func batchMetrics(w http.ResponseWriter, results []decided) map[string]any {
	hit := 0
	if sw, ok := w.(*statusWriter); ok && sw.prepared {
		hit = 1
	} else if len(results) > 0 && !slices.ContainsFunc(results, func(d decided) bool {
		return d.Err == nil && (d.Source == engine.SourceFull || d.Source == engine.SourceVM)
	}) {
		hit = 1
	}
	return map[string]any{
		"timer_server_handler_ns":        time.Since(startOf(w)).Nanoseconds(),
		"timer_rego_input_parse_ns":      inputParseNS(w),
		"counter_server_query_cache_hit": hit,
	}
}

// msgInputsKeyMissing is Enterprise OPA's warning of a batch without
// inputs (its batchquery.MsgInputsKeyMissing), worded as OPA's
// types.MsgInputKeyMissing is for a single request.
const msgInputsKeyMissing = "'inputs' key missing from the request"

// batchStatus is the HTTP status of a batch of n items of which failed
// failed, shed of them for overload, after Enterprise OPA's batch API: 200
// when none failed, 207 when some did (every item then carries its own
// http_status_code), 500 when all failed. When all failed for overload
// alone it is 503 (with Retry-After): nothing was decided and the whole
// batch can be retried, as for a single request.
func batchStatus(n, failed, shed int) int {
	switch {
	case failed == 0:
		return http.StatusOK
	case failed < n:
		return http.StatusMultiStatus
	case shed == n:
		return http.StatusServiceUnavailable
	default:
		return http.StatusInternalServerError
	}
}

// writeBatch writes {"batch_decision_id": ..., "responses": {id: item}}
// from the items' encodings, ids in sorted order as encoding/json writes a
// map (the OPA batch). encoding/json would validate and compact every item
// again (a tenth of the CPU of a warm batch), and the items are compact JSON
// already.
func writeBatch[T ~[]byte](w http.ResponseWriter, status int, batchID string, ids []string, items []T) {
	writeBatchEnvelope(w, status, batchID, ids, items, true)
}

// writeBatchArray writes {"batch_decision_id": ..., "responses": [item, ...]}
// as writeBatch does (the ACGS batch).
func writeBatchArray[T ~[]byte](w http.ResponseWriter, status int, batchID string, items []T) {
	writeBatchEnvelope(w, status, batchID, nil, items, false)
}

func writeBatchEnvelope[T ~[]byte](w http.ResponseWriter, status int, batchID string, ids []string, items []T, keyed bool) {
	order := make([]int, len(items))
	size := 64
	for i := range order {
		order[i] = i
		size += len(items[i]) + 4
		if keyed {
			size += len(ids[i])
		}
	}
	open, end := `,"responses":[`, "]}\n"
	if keyed {
		slices.SortFunc(order, func(a, b int) int { return strings.Compare(ids[a], ids[b]) })
		open, end = `,"responses":{`, "}}\n"
	}
	b := make([]byte, 0, size)
	b = append(b, `{"batch_decision_id":`...)
	b = jsonenc.AppendString(b, batchID, true)
	b = append(b, open...)
	for n, i := range order {
		if n > 0 {
			b = append(b, ',')
		}
		if keyed {
			b = jsonenc.AppendString(b, ids[i], true)
			b = append(b, ':')
		}
		b = append(b, items[i]...)
	}
	b = append(b, end...)
	w.Header()["Content-Type"] = jsonContentType
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// handleACGSBatch serves POST /v1/acgs/batch for the original clients: each
// request is validated on its own and a bad one gets its error in place.
func (s *Server) handleACGSBatch(w http.ResponseWriter, r *http.Request) {
	body, _, ok := s.readJSON(w, r, false)
	if !ok {
		return
	}
	obj, ok := body.(map[string]any)
	if !ok {
		writeError(w, apierror.New(apierror.InvalidParameter, "batch body must be an object like {\"requests\": [...]}, got %s", jsonType(body)))
		return
	}
	reqs, ok := obj["requests"].([]any)
	if !ok {
		writeError(w, apierror.New(apierror.InvalidParameter, "field \"requests\" must be an array of ACGS requests, got %s", jsonType(obj["requests"])))
		return
	}
	if len(reqs) > s.cfg.Server.MaxBatchItems {
		writeError(w, apierror.New(apierror.RequestTooLarge, "batch has %d requests, more than MAX_BATCH_ITEMS (%d)", len(reqs), s.cfg.Server.MaxBatchItems))
		return
	}
	batchID := telemetry.NewDecisionID()
	responses := make([]json.RawMessage, len(reqs))
	codes := make([]int, len(reqs)) // each item's status, for a 207
	valid := make([]any, 0, len(reqs))
	pos := make([]int, 0, len(reqs))
	for i, item := range reqs {
		req, err := s.validateACGS(item)
		if err != nil {
			e := apierror.As(err)
			responses[i] = appendErrorItem(nil, e, "", 0) // refused before any decision
			codes[i] = e.Code.Status()
			continue
		}
		valid = append(valid, req)
		pos = append(pos, i)
	}
	ctx, cancel := s.decisionContext(w, r)
	defer cancel()
	decisions := s.decideMany(ctx, decisionPath, valid, batchID)
	shed := 0
	for _, d := range decisions {
		if unavailable(d.Err) {
			writeError(w, d.Err)
			return
		}
		if admission.Overloaded(d.Err) {
			shed++
		}
	}
	lat := time.Since(startOf(w))
	for j, d := range decisions {
		b, err := s.acgsBody(nil, d, lat)
		if err != nil {
			writeError(w, err)
			return
		}
		observeDecided(w, d, true)
		responses[pos[j]] = b
		codes[pos[j]] = http.StatusOK
		if admission.Overloaded(d.Err) {
			codes[pos[j]] = http.StatusServiceUnavailable
		}
	}
	// As the original API did, a batch is 200 with every item in place,
	// invalid ones included, while nothing was shed. Items shed for
	// overload make it 503 when every item was shed, else Enterprise OPA's
	// 207 (every item then carries its http_status_code: 200, 400, 503);
	// either way with Retry-After, and each shed item still says
	// "allow": false.
	status := http.StatusOK
	if shed > 0 {
		w.Header().Set("Retry-After", retryAfter)
		status = http.StatusServiceUnavailable
		if shed < len(reqs) {
			status = http.StatusMultiStatus
			for i, item := range responses {
				responses[i] = withStatusCode(item, codes[i])
			}
		}
	}
	s.d.Metrics.ObserveBatch(len(reqs))
	observe(w, batchSample(len(reqs)))
	if boolParam(queryOf(r), "pretty") {
		writeJSON(w, status, map[string]any{"batch_decision_id": batchID, "responses": responses}, true)
		return
	}
	writeBatchArray(w, status, batchID, responses)
}

// appendErrorItem appends the batch item of a refused request:
// {"code": ..., "message": ...}, as OPA words its errors, with
// "decision_id" (when id is not "": Enterprise OPA gives every item of its
// batch one, failed or not), "errors" (the details, when the error has
// them) and "http_status_code" (when status is not 0) between them, where
// encoding/json's sorted keys put them, HTML-escaped as json.Marshal (and
// writeJSON) writes them.
func appendErrorItem(dst []byte, e *apierror.Error, id string, status int) []byte {
	dst = append(dst, `{"code":`...)
	dst = jsonenc.AppendString(dst, string(e.Code), true)
	if id != "" {
		dst = append(dst, `,"decision_id":`...)
		dst = jsonenc.AppendString(dst, id, true)
	}
	if len(e.Errors) > 0 {
		// OPA's details (an evaluation error's code and location), as a
		// single answer carries them; members in encoding/json's order.
		var b bytes.Buffer
		if json.NewEncoder(&b).Encode(e.Errors) == nil {
			dst = append(dst, `,"errors":`...)
			dst = append(dst, bytes.TrimSuffix(b.Bytes(), []byte{'\n'})...)
		}
	}
	if status != 0 {
		dst = append(dst, `,"http_status_code":"`...)
		dst = strconv.AppendInt(dst, int64(status), 10)
		dst = append(dst, '"')
	}
	dst = append(dst, `,"message":`...)
	dst = jsonenc.AppendString(dst, e.Message, true)
	return append(dst, '}')
}

// withStatusCode returns the object item with "http_status_code" (the
// item's status as a string, as Enterprise OPA's 207 answers carry it)
// as its first member.
func withStatusCode(item []byte, code int) []byte {
	out := make([]byte, 0, len(item)+28)
	out = append(out, `{"http_status_code":"`...)
	out = strconv.AppendInt(out, int64(code), 10)
	out = append(out, '"')
	if len(item) > 2 {
		out = append(out, ',')
	}
	return append(out, item[1:]...)
}
