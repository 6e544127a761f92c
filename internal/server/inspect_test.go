package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/acgs-lite/acgs/internal/cache"
	"github.com/acgs-lite/acgs/internal/config"
	"github.com/acgs-lite/acgs/internal/engine"
	"github.com/acgs-lite/acgs/internal/jsoneq"
	"github.com/acgs-lite/acgs/internal/server"
	"github.com/acgs-lite/acgs/internal/telemetry"
	"github.com/acgs-lite/acgs/internal/testenv"
)

// inspectRego is served next to the constitution for the tests of
// ?strict-builtin-errors, ?explain and ?instrument: built-in errors that
// decide (n, j) or are passed over (num's else), a note (trace) on a rule
// that may be undefined; and rules that tell a null input from none.
const inspectRego = `package t

input_null if input == null

no_input if not input

n := to_number(input.s)

j := json.unmarshal(input.s)

num := x if {
	x := to_number(input.s)
} else := "not a number"

noted if {
	trace(sprintf("checking %v", [input.s]))
	input.s == "x"
}
`

// inspectBundle writes the constitution with package t to a directory, for
// stock OPA and for acgs alike.
func inspectBundle(tb testing.TB) string {
	tb.Helper()
	return testenv.WriteConstitution(tb, tb.TempDir(), func(m map[string]any) {
		m["roots"] = []string{"acgs", "t"}
		m["revision"] = "inspect-test"
	}, map[string]string{"t/inspect.rego": inspectRego})
}

// openInspect is the real server on the bundle in dir with every fast path
// that could answer a decision without topdown: the decision cache (and
// the raw-body tier), constant plans keyed on input.s and the compiled
// evaluator.
func openInspect(tb testing.TB, dir string) *harness {
	h, _ := openInspectLogged(tb, dir, "off")
	return h
}

// openInspectLogged is openInspect with the decision log sink given
// (DECISION_LOG), returned unless off.
func openInspectLogged(tb testing.TB, dir, sink string) (*harness, *telemetry.DecisionLog) {
	tb.Helper()
	cfg := config.Default()
	cfg.Log.DecisionLog = sink
	c, err := cache.New(context.Background(), cache.Config{L1Size: 1000, TTL: time.Minute})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	e, err := engine.New(context.Background(), engine.PathSource{Path: dir}, engine.Options{
		ConstitutionalHash: cfg.Policy.ConstitutionalHash, EvalTimeout: 30 * time.Second, Cache: c,
		Compiled: true, PartialEval: true, PartialEvalKeys: []string{"input.s"},
	})
	if err != nil {
		tb.Fatal(err)
	}
	var dlog *telemetry.DecisionLog
	if sink != "off" {
		if dlog, err = telemetry.NewDecisionLog(telemetry.DecisionLogConfig{Sink: sink}); err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { _ = dlog.Close(context.Background()) })
	}
	s, err := server.New(server.Deps{Config: cfg, Engine: e, Cache: c, Metrics: telemetry.NewMetrics(telemetry.BuildInfo{}),
		Window: telemetry.NewWindow(time.Minute), DecisionLog: dlog})
	if err != nil {
		tb.Fatal(err)
	}
	return &harness{srv: s, eng: e, cache: c}, dlog
}

// inspectCall is one request of the OPA dialect: GET with input in
// ?input= (none when empty), POST with body.
type inspectCall struct {
	name, method, target, input, body string
}

func (c inspectCall) request() (method, target string, body io.Reader) {
	if c.method == "GET" {
		target = c.target
		if c.input != "" {
			sep := "?"
			if strings.Contains(target, "?") {
				sep = "&"
			}
			target += sep + "input=" + url.QueryEscape(c.input)
		}
		return "GET", target, nil
	}
	b := c.body
	if b == "" {
		b = `{"input":` + c.input + `}`
	}
	return "POST", c.target, strings.NewReader(b)
}

// inspectCalls are the requests both servers answer: every parameter in
// both methods, on package t and on the constitution.
var inspectCalls = []inspectCall{
	// ?strict-builtin-errors: an error where the built-in error decides.
	{"strict to_number", "POST", "/v1/data/t/n?strict-builtin-errors", `{"s":"x"}`, ""},
	{"strict=true GET", "GET", "/v1/data/t/n?strict-builtin-errors=true", `{"s":"x"}`, ""},
	{"strict json.unmarshal", "POST", "/v1/data/t/j?strict-builtin-errors=TRUE", `{"s":"{bad"}`, ""},
	{"strict passed-over error", "POST", "/v1/data/t/num?strict-builtin-errors", `{"s":"x"}`, ""},
	{"strict no error", "POST", "/v1/data/t/num?strict-builtin-errors", `{"s":"12"}`, ""},
	{"strict operand type", "POST", "/v1/data/t/n?strict-builtin-errors&pretty", `{"s":[1]}`, ""},
	{"strict=false", "POST", "/v1/data/t/n?strict-builtin-errors=false", `{"s":"x"}`, ""},
	{"without strict", "POST", "/v1/data/t/num", `{"s":"x"}`, ""},
	{"strict on the decision route", "POST", "/v1/data/acgs/main/decision?strict-builtin-errors", `{"type":"action_authorization","constitutional_hash":"cdd01ef066bc6cf2","action":"data.read_public"}`, ""},
	{"strict with metrics", "POST", "/v1/data/t/num?strict-builtin-errors&metrics", `{"s":"12"}`, ""},
	// ?explain, every mode, raw and pretty, defined and undefined.
	{"notes", "POST", "/v1/data/t/noted?explain=notes", `{"s":"x"}`, ""},
	{"notes GET", "GET", "/v1/data/t/noted?explain=notes", `{"s":"x"}`, ""},
	{"notes pretty", "POST", "/v1/data/t/noted?explain=notes&pretty", `{"s":"x"}`, ""},
	{"notes undefined", "POST", "/v1/data/t/noted?explain=notes", `{"s":"y"}`, ""},
	{"fails", "POST", "/v1/data/t/num?explain=fails", `{"s":"x"}`, ""},
	{"fails pretty", "POST", "/v1/data/t/num?explain=fails&pretty=true", `{"s":"x"}`, ""},
	{"full", "POST", "/v1/data/t/noted?explain=full", `{"s":"x"}`, ""},
	{"full undefined", "POST", "/v1/data/t/noted?explain=full", `{"s":"y"}`, ""},
	{"full undefined pretty", "GET", "/v1/data/t/noted?explain=full&pretty", `{"s":"y"}`, ""},
	{"debug", "POST", "/v1/data/t/noted?explain=debug", `{"s":"x"}`, ""},
	{"debug pretty", "POST", "/v1/data/t/noted?explain=debug&pretty", `{"s":"x"}`, ""},
	{"an unknown mode, then full", "POST", "/v1/data/t/noted?explain=all&explain=full", `{"s":"x"}`, ""},
	{"an unknown mode alone", "POST", "/v1/data/t/noted?explain=all", `{"s":"x"}`, ""},
	{"full without input", "POST", "/v1/data/t/noted?explain=full", "", `{"x":1}`},
	{"full of the root", "GET", "/v1/data?explain=notes", "", ""},
	{"full of the decision", "POST", "/v1/data/acgs/main/decision?explain=full", `{"type":"action_authorization","constitutional_hash":"cdd01ef066bc6cf2","action":"data.read_public"}`, ""},
	{"full of a denial, GET", "GET", "/v1/data/acgs/main/decision?explain=fails", `{"type":"action_authorization","constitutional_hash":"cdd01ef066bc6cf2","action":"system.delete_all"}`, ""},
	{"strict and explain", "POST", "/v1/data/t/n?explain=full&strict-builtin-errors", `{"s":"x"}`, ""},
	// ?instrument: metrics with topdown's timers, counters and histograms.
	{"instrument", "POST", "/v1/data/t/noted?instrument", `{"s":"x"}`, ""},
	{"instrument GET", "GET", "/v1/data/t/num?instrument=true", `{"s":"x"}`, ""},
	{"instrument and metrics", "POST", "/v1/data/t/noted?instrument&metrics", `{"s":"y"}`, ""},
	{"instrument the decision", "POST", "/v1/data/acgs/main/decision?instrument", `{"type":"action_authorization","constitutional_hash":"cdd01ef066bc6cf2","action":"data.read_public"}`, ""},
	{"instrument=false", "POST", "/v1/data/t/noted?instrument=false", `{"s":"x"}`, ""},
	{"everything", "POST", "/v1/data/t/num?instrument&explain=notes&strict-builtin-errors&provenance", `{"s":"3"}`, ""},
	// A null input is not no input: ?input=null and a v0 body of null (or
	// none) make input null; {"input": null} is no input, with a warning.
	{"GET ?input=null", "GET", "/v1/data/t/input_null", "null", ""},
	{"GET ?input=null, not input", "GET", "/v1/data/t/no_input", "null", ""},
	{"GET without input", "GET", "/v1/data/t/no_input", "", ""},
	{"input null", "POST", "/v1/data/t/input_null", "null", ""},
	{"input null, not input", "POST", "/v1/data/t/no_input", "null", ""},
	{"input null on the decision route", "POST", "/v1/data/acgs/main/decision", "null", ""},
	{"v0 body null", "POST", "/v0/data/t", "", "null"},
	{"v0 body null, not input", "POST", "/v0/data/t/no_input", "", "null"},
	{"v0 body empty", "POST", "/v0/data/t", "", " "},
	{"v0 object", "POST", "/v0/data/t/no_input", "", "{}"},
	{"v0 of the root", "POST", "/v0/data", "", `{"s":"1"}`},
	{"v1 body null", "POST", "/v1/data/t/no_input", "", "null"},
}

// TestInspectionsAnswerAsStockOPA sends every call of inspectCalls twice
// to stock `opa run --server` and to acgs on the same bundle, and compares
// the second answers (both servers have prepared the query by then) after
// normalise: status and document must be equal, but for what legitimately
// differs (decision ids, timings, file names, the documented error code
// and the keys only one server's metrics have).
func TestInspectionsAnswerAsStockOPA(t *testing.T) {
	dir := inspectBundle(t)
	opaURL := testenv.StartOPA(t, dir)
	h := openInspect(t, dir)
	client := &http.Client{Timeout: 30 * time.Second}
	for _, c := range inspectCalls {
		t.Run(c.name, func(t *testing.T) {
			var wantCode, gotCode int
			var want, got []byte
			for range 2 {
				method, target, body := c.request()
				req, err := http.NewRequest(method, opaURL+target, body)
				if err != nil {
					t.Fatal(err)
				}
				resp, err := client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				want, _ = io.ReadAll(resp.Body)
				resp.Body.Close()
				wantCode = resp.StatusCode
				method, target, body = c.request()
				r := h.do(t, method, target, body, nil)
				gotCode, got = r.code, r.body
			}
			if gotCode != wantCode {
				t.Fatalf("status %d, OPA's %d\nacgs: %s\nopa:  %s", gotCode, wantCode, got, want)
			}
			w, g := normalise(t, want, true), normalise(t, got, false)
			if d := jsoneq.Diff(w, g); d != "" {
				t.Fatalf("differs at %s\nacgs: %s\nopa:  %s", d, got, want)
			}
			if len(want) > 600 {
				want = want[:600]
			}
			t.Logf("%d %s", wantCode, want)
		})
	}
}

// metricsOnlyOPA are what OPA's metrics have and acgs's have not (its
// query compile timers, and the hits of the inter-query value cache OPA's
// server configures for compiled regular expressions: acgs leaves them to
// topdown's own regex cache); metricsOnlyACGS are the
// decision-cache counters acgs adds (all zero: an inspection is never a
// cache hit or a plan).
var (
	metricsOnlyOPA  = regexp.MustCompile(`^(timer_rego_query_compile_ns|timer_(query_)?compile_stage_.*|counter_rego_builtin_regex_interquery_value_cache_hits)$`)
	metricsOnlyACGS = map[string]bool{"counter_decision_cache_hit": true, "counter_decision_cache_l1_hit": true, "counter_decision_cache_l2_hit": true, "counter_partial_eval_plan": true}
	// prettyLocation splits a line of a pretty explanation into its location
	// column and its event.
	prettyLocation = regexp.MustCompile(`^(\S*)\s+(.*)$`)
)

// normalise decodes an answer of OPA's Data API and drops what differs
// legitimately between stock OPA and acgs.
func normalise(t *testing.T, body []byte, opa bool) map[string]any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var obj map[string]any
	if err := dec.Decode(&obj); err != nil {
		t.Fatalf("decoding %s: %v", body, err)
	}
	delete(obj, "decision_id") // OPA gives none without decision logs
	if p, ok := obj["provenance"].(map[string]any); ok {
		obj["provenance"] = p["bundles"] != nil // versions and revisions are each server's
	}
	if obj["code"] == "internal_error" && opa {
		obj["code"] = "evaluation_error" // documented: OPA's evaluation errors are internal_error
	}
	if _, ok := obj["code"]; ok {
		delete(obj, "message") // each server's wording
	}
	errs, _ := obj["errors"].([]any)
	for _, e := range errs {
		e := e.(map[string]any)
		delete(e, "stack_trace") // documented: not given
		if loc, ok := e["location"].(map[string]any); ok {
			loc["file"] = path.Base(fmt.Sprint(loc["file"]))
		}
	}
	if m, ok := obj["metrics"].(map[string]any); ok {
		n := map[string]any{}
		for k, v := range m {
			switch {
			case opa && metricsOnlyOPA.MatchString(k), !opa && metricsOnlyACGS[k]:
				if !opa && v != json.Number("0") {
					t.Errorf("%s is %v for an inspected decision", k, v)
				}
			case strings.HasPrefix(k, "counter_"):
				n[k] = v // counts of what topdown did: equal
			default:
				n[k] = "a timing" // timer_, histogram_
			}
		}
		obj["metrics"] = n
	}
	if lines, ok := obj["explanation"].([]any); ok && len(lines) > 0 {
		for _, ev := range lines {
			if ev, ok := ev.(map[string]any); ok {
				// An event's locals come from a hash map, in no order.
				locals, _ := ev["locals"].([]any)
				sort.Slice(locals, func(i, j int) bool { return mustJSON(t, locals[i]) < mustJSON(t, locals[j]) })
			}
		}
		if _, pretty := lines[0].(string); pretty {
			for i, l := range lines {
				// The location column: each server's file names, padded to
				// the longest.
				m := prettyLocation.FindStringSubmatch(l.(string))
				if m == nil {
					continue
				}
				lines[i] = path.Base(m[1]) + " " + m[2]
			}
		}
	}
	return obj
}

// TestStrictBuiltinErrorsAroundTheCache: a decision cached (and planned)
// without ?strict-builtin-errors does not answer the request with it, which
// fails as OPA's does, is counted as an evaluation error and stores
// nothing: the same request without the parameter is answered, from the
// cache, as before; in the batch API too.
func TestStrictBuiltinErrorsAroundTheCache(t *testing.T) {
	h := openInspect(t, inspectBundle(t))
	for _, tc := range []struct {
		name, path, input string
		result            string // without strict: "" undefined
	}{
		{"undefined", "t/n", `{"s":"x"}`, ""},
		{"an else", "t/num", `{"s":"x"}`, `"not a number"`},
		{"json.unmarshal", "t/j", `{"s":"{bad"}`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			target := "/v1/data/" + tc.path
			body := `{"input":` + tc.input + `}`
			plain := func(query string) resp {
				r := h.do(t, "POST", target+query, strings.NewReader(body), nil)
				res := ""
				if v, ok := r.obj["result"]; ok {
					res = mustJSON(t, v)
				}
				if r.code != 200 || res != tc.result {
					t.Fatalf("without strict: %d %s, want 200 with result %q", r.code, r.body, tc.result)
				}
				return r
			}
			plain("")
			failures := h.metric(t, `acgs_evaluation_failures_total{reason="error"}`)
			errored := fmt.Sprintf(`acgs_decisions_total{outcome="error",path=%q}`, tc.path)
			decided := h.metric(t, errored)
			for _, q := range []string{"?strict-builtin-errors", "?strict-builtin-errors=true&metrics"} {
				r := h.do(t, "POST", target+q, strings.NewReader(body), nil)
				errs, _ := r.obj["errors"].([]any)
				if r.code != 500 || r.obj["code"] != "evaluation_error" || len(errs) != 1 || errs[0].(map[string]any)["code"] != "eval_builtin_error" {
					t.Fatalf("strict %s: %d %s", q, r.code, r.body)
				}
			}
			if got := h.metric(t, `acgs_evaluation_failures_total{reason="error"}`) - failures; got != 2 {
				t.Errorf("%v evaluation errors counted for two strict requests", got)
			}
			if got := h.metric(t, errored) - decided; got != 2 {
				t.Errorf("%v failed decisions counted for two strict requests", got)
			}
			r := plain("?metrics")
			if m, _ := r.obj["metrics"].(map[string]any); m["counter_decision_cache_l1_hit"] != json.Number("1") {
				t.Fatalf("after the strict requests the decision did not come from the cache: %s", r.body)
			}
			// A batch: the item is an error with the parameter, the same
			// decision as before without it.
			batch := `{"inputs":{"a":` + tc.input + `,"b":{"s":"1"}}}`
			br := h.do(t, "POST", "/v1/batch/data/"+tc.path+"?strict-builtin-errors", strings.NewReader(batch), nil)
			rs := responsesOf(t, br)
			a, _ := rs["a"].(map[string]any)
			if br.code != 207 || a["code"] != "evaluation_error" || a["http_status_code"] != "500" || a["errors"] == nil {
				t.Fatalf("strict batch: %d %s", br.code, br.body)
			}
			br = h.do(t, "POST", "/v1/batch/data/"+tc.path, strings.NewReader(batch), nil)
			rs = responsesOf(t, br)
			a, _ = rs["a"].(map[string]any)
			res := ""
			if v, ok := a["result"]; ok {
				res = mustJSON(t, v)
			}
			if br.code != 200 || res != tc.result {
				t.Fatalf("batch without strict: %d %s", br.code, br.body)
			}
			plain("")
		})
	}
}

// TestInspectionsAreDecisionLogged: a decision evaluated for an inspection
// is logged as any evaluated decision: its input, its result or its error,
// source full.
func TestInspectionsAreDecisionLogged(t *testing.T) {
	logPath := filepath.Join(t.TempDir(), "decisions.log")
	h, dlog := openInspectLogged(t, inspectBundle(t), "file:"+logPath)
	for _, tc := range []struct {
		target, body string
		code         int
	}{
		{"/v1/data/t/noted?explain=notes", `{"input":{"s":"x"}}`, 200},
		{"/v1/data/t/num?instrument", `{"input":{"s":"x"}}`, 200},
		{"/v1/data/t/n?strict-builtin-errors", `{"input":{"s":"x"}}`, 500},
	} {
		if r := h.do(t, "POST", tc.target, strings.NewReader(tc.body), nil); r.code != tc.code {
			t.Fatalf("%s: %d %s", tc.target, r.code, r.body)
		}
	}
	if err := dlog.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	events := map[string]telemetry.DecisionEvent{}
	for _, line := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
		var ev telemetry.DecisionEvent
		if err := json.Unmarshal(line, &ev); err != nil {
			t.Fatalf("%v: %s", err, line)
		}
		events[ev.Path] = ev
	}
	for path, want := range map[string]struct {
		result any
		error  bool
	}{
		"t/noted": {true, false},
		"t/num":   {"not a number", false},
		"t/n":     {nil, true},
	} {
		ev, ok := events[path]
		switch {
		case !ok:
			t.Errorf("no decision logged for %s: %s", path, b)
		case ev.Input == nil || !jsoneq.Equal(ev.Result, want.result) || (ev.Error != "") != want.error || ev.Labels["source"] != map[bool]string{false: "full", true: "error"}[want.error]:
			t.Errorf("%s logged as %+v", path, ev)
		}
	}
}

// TestBatchNullItem: a batch item whose value is null has a null input (as
// ?input=null does), not none, twice (the second from the cache), with and
// without common_input; an empty object is neither.
func TestBatchNullItem(t *testing.T) {
	h := openInspect(t, inspectBundle(t))
	for _, body := range []string{
		`{"inputs":{"null":null,"empty":{}}}`,
		`{"inputs":{"null":null,"empty":{}}}`,
		`{"common_input":{"c":1},"inputs":{"null":null,"empty":{}}}`,
	} {
		for path, want := range map[string]map[string]string{
			"t/input_null": {"null": "true", "empty": ""},
			"t/no_input":   {"null": "", "empty": ""},
		} {
			r := h.do(t, "POST", "/v1/batch/data/"+path, strings.NewReader(body), nil)
			rs := responsesOf(t, r)
			for id, w := range want {
				item, _ := rs[id].(map[string]any)
				got := ""
				if v, ok := item["result"]; ok {
					got = mustJSON(t, v)
				}
				if r.code != 200 || got != w {
					t.Errorf("%s %s item %s: %d result %q, want %q\n%s", path, body, id, r.code, got, w, r.body)
				}
			}
		}
	}
}
