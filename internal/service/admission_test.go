package service_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/acgs-lite/acgs/internal/config"
	"github.com/acgs-lite/acgs/internal/faults"
	"github.com/acgs-lite/acgs/internal/jsoneq"
	"github.com/acgs-lite/acgs/internal/service/servicetest"
	"github.com/acgs-lite/acgs/internal/testenv"
)

// Admission control end to end: the real service with one evaluation slot,
// which the test takes, so that every request that needs an evaluation is
// shed at once while cache hits and constant plans are still answered.

var admissionSeq atomic.Int64

// newSafe is an allowed request no cache has seen.
func newSafe() string {
	return fmt.Sprintf(`{"type":"constitutional_evaluation","constitutional_hash":"cdd01ef066bc6cf2","action":"data.read_public",`+
		`"context":{"environment":{"sandbox_enabled":true,"audit_enabled":true},"agent":{"id":"agent-adm-%d","trust_level":0.9,`+
		`"requested_resources":{"cpu_cores":1}},"current_usage_count":%d,"responsible_party":"load_test_user",`+
		`"explanation":"Safe public data access for dashboard"}}`, admissionSeq.Add(1), admissionSeq.Load()%100)
}

// newProhibited is a request for a prohibited action, which a constant
// partial-evaluation plan denies whatever the rest of the input says.
func newProhibited() string {
	return fmt.Sprintf(`{"type":"constitutional_evaluation","constitutional_hash":"cdd01ef066bc6cf2","action":"system.execute_shell",`+
		`"context":{"environment":{"sandbox_enabled":false},"agent":{"id":"rogue-adm-%d","trust_level":0.3}}}`, admissionSeq.Add(1))
}

type httpAnswer struct {
	status int
	header http.Header
	doc    map[string]any
	raw    string
}

func admissionDo(t *testing.T, method, url, body string) httpAnswer {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	a := httpAnswer{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	if err := json.Unmarshal(raw, &a.doc); err != nil {
		t.Fatalf("%s %s: answer is not a JSON object (%v): %s", method, url, err, raw)
	}
	return a
}

// wantShed checks an overloaded answer: 503, Retry-After, code and message.
func wantShed(t *testing.T, a httpAnswer, doc map[string]any) {
	t.Helper()
	if a.status != http.StatusServiceUnavailable {
		t.Errorf("status %d, want 503: %s", a.status, a.raw)
	}
	if ra := a.header.Get("Retry-After"); ra != "1" {
		t.Errorf("Retry-After %q, want 1", ra)
	}
	if doc["code"] != "overloaded" || !strings.Contains(fmt.Sprint(doc["message"]), "overloaded") {
		t.Errorf("want code overloaded and a message saying so: %v", doc)
	}
}

func TestAdmissionShedsOnlyEvaluations(t *testing.T) {
	in := servicetest.Start(t, func(c *config.Config) {
		c.Admission.MaxInFlight = 1
		c.Admission.QueueTimeout = time.Nanosecond // shed at once
	})
	cached := newSafe()
	if a := admissionDo(t, "POST", in.URL+"/v1/data/acgs/main/decision", cached); a.status != 200 || a.doc["allow"] != true {
		t.Fatalf("priming the cache: %d %s", a.status, a.raw)
	}
	release, err := in.Service.Admit.Admit(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	held := true
	defer func() {
		if held {
			release()
		}
	}()

	acgs := in.URL + "/v1/data/acgs/main/decision"
	for _, tc := range []struct {
		name, method, url, body string
		check                   func(t *testing.T, a httpAnswer)
	}{
		{"ACGS, new input: shed, still allow false", "POST", acgs, newSafe(), func(t *testing.T, a httpAnswer) {
			wantShed(t, a, a.doc)
			if a.doc["allow"] != false || a.doc["constitutional_hash"] != "cdd01ef066bc6cf2" || a.doc["decision_id"] == "" {
				t.Errorf("ACGS overloaded body: %s", a.raw)
			}
			if a.header.Get("X-Constitutional-Hash") != "cdd01ef066bc6cf2" {
				t.Errorf("no X-Constitutional-Hash")
			}
		}},
		{"ACGS, new input, ?pretty: same answer", "POST", acgs + "?pretty", newSafe(), func(t *testing.T, a httpAnswer) {
			wantShed(t, a, a.doc)
			if a.doc["allow"] != false {
				t.Errorf("allow: %v", a.doc["allow"])
			}
		}},
		{"ACGS, cached input: answered from the cache", "POST", acgs, cached, func(t *testing.T, a httpAnswer) {
			if a.status != 200 || a.doc["allow"] != true || a.doc["cache_hit"] != true {
				t.Errorf("cache hit shed or changed: %d %s", a.status, a.raw)
			}
		}},
		{"ACGS, prohibited action: a constant plan answers", "POST", acgs, newProhibited(), func(t *testing.T, a httpAnswer) {
			if a.status != 200 || a.doc["allow"] != false || a.doc["partial_evaluation"] != true || a.doc["code"] != nil {
				t.Errorf("constant plan shed or changed: %d %s", a.status, a.raw)
			}
		}},
		{"OPA v1, new input", "POST", acgs, `{"input":` + newSafe() + `}`, func(t *testing.T, a httpAnswer) {
			wantShed(t, a, a.doc)
			if _, ok := a.doc["result"]; ok {
				t.Errorf("a result in an overloaded answer: %s", a.raw)
			}
		}},
		{"OPA v1, other path, new input", "POST", in.URL + "/v1/data/acgs/main", `{"input":` + newSafe() + `}`, func(t *testing.T, a httpAnswer) {
			wantShed(t, a, a.doc)
		}},
		{"OPA v1, cached input", "POST", acgs, `{"input":` + cached + `}`, func(t *testing.T, a httpAnswer) {
			res, _ := a.doc["result"].(map[string]any)
			if a.status != 200 || res["allow"] != true {
				t.Errorf("cache hit shed: %d %s", a.status, a.raw)
			}
		}},
		{"OPA v1, a path naming a function: bad input, not shed", "POST", in.URL + "/v1/data/acgs/main/truncate", `{"input":` + newSafe() + `}`, func(t *testing.T, a httpAnswer) {
			if a.status != http.StatusBadRequest || a.doc["code"] != "invalid_parameter" {
				t.Errorf("function path under overload: %d %s", a.status, a.raw)
			}
		}},
		{"OPA v0, new input", "POST", in.URL + "/v0/data/acgs/main/decision", newSafe(), func(t *testing.T, a httpAnswer) {
			wantShed(t, a, a.doc)
		}},
		{"OPA default decision, new input", "POST", in.URL + "/", newSafe(), func(t *testing.T, a httpAnswer) {
			wantShed(t, a, a.doc)
		}},
		{"OPA batch, mixed: 207, the new item overloaded (\"500\", as Enterprise OPA's items say)", "POST", in.URL + "/v1/batch/data/acgs/main/decision",
			`{"inputs":{"hit":` + cached + `,"new":` + newSafe() + `}}`, func(t *testing.T, a httpAnswer) {
				if a.status != http.StatusMultiStatus || a.header.Get("Retry-After") != "1" {
					t.Errorf("status %d Retry-After %q, want 207 and 1", a.status, a.header.Get("Retry-After"))
				}
				rs, _ := a.doc["responses"].(map[string]any)
				hit, _ := rs["hit"].(map[string]any)
				item, _ := rs["new"].(map[string]any)
				if hit["http_status_code"] != "200" || hit["result"] == nil {
					t.Errorf("cached item: %v", hit)
				}
				if item["http_status_code"] != "500" || item["code"] != "overloaded" || item["result"] != nil {
					t.Errorf("shed item: %v", item)
				}
			}},
		{"OPA batch, every item new: 503", "POST", in.URL + "/v1/batch/data/acgs/main/decision",
			`{"inputs":{"a":` + newSafe() + `,"b":` + newSafe() + `}}`, func(t *testing.T, a httpAnswer) {
				if a.status != http.StatusServiceUnavailable || a.header.Get("Retry-After") != "1" {
					t.Errorf("status %d Retry-After %q, want 503 and 1", a.status, a.header.Get("Retry-After"))
				}
				rs, _ := a.doc["responses"].(map[string]any)
				for id, it := range rs {
					item, _ := it.(map[string]any)
					if _, has := item["http_status_code"]; has || item["code"] != "overloaded" {
						t.Errorf("item %s: %v", id, item)
					}
				}
			}},
		{"ACGS batch, mixed: 207, items carry their status", "POST", in.URL + "/v1/acgs/batch",
			`{"requests":[` + cached + `,` + newSafe() + `,{"type":"x"}]}`, func(t *testing.T, a httpAnswer) {
				if a.status != http.StatusMultiStatus || a.header.Get("Retry-After") != "1" {
					t.Errorf("status %d Retry-After %q, want 207 and 1", a.status, a.header.Get("Retry-After"))
				}
				rs, _ := a.doc["responses"].([]any)
				if len(rs) != 3 {
					t.Fatalf("responses: %s", a.raw)
				}
				hit, shed, bad := rs[0].(map[string]any), rs[1].(map[string]any), rs[2].(map[string]any)
				if hit["allow"] != true || hit["http_status_code"] != "200" {
					t.Errorf("cached item: %v", hit)
				}
				if shed["allow"] != false || shed["code"] != "overloaded" || shed["http_status_code"] != "503" {
					t.Errorf("shed item: %v", shed)
				}
				if bad["code"] != "invalid_parameter" || bad["http_status_code"] != "400" {
					t.Errorf("invalid item: %v", bad)
				}
			}},
		{"ACGS batch, every item new: 503", "POST", in.URL + "/v1/acgs/batch",
			`{"requests":[` + newSafe() + `,` + newSafe() + `]}`, func(t *testing.T, a httpAnswer) {
				if a.status != http.StatusServiceUnavailable || a.header.Get("Retry-After") != "1" {
					t.Errorf("status %d Retry-After %q, want 503 and 1", a.status, a.header.Get("Retry-After"))
				}
				for _, it := range a.doc["responses"].([]any) {
					if item := it.(map[string]any); item["allow"] != false || item["code"] != "overloaded" {
						t.Errorf("item: %v", item)
					}
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.check(t, admissionDo(t, tc.method, tc.url, tc.body)) })
	}

	// The overloaded ACGS body, compact and with ?pretty: the same
	// document (TestACGSBodyPathsAgree in internal/server also holds it to
	// the one built field by field).
	body := newSafe()
	fast, general := admissionDo(t, "POST", acgs, body), admissionDo(t, "POST", acgs+"?pretty", body)
	for _, k := range []string{"decision_id", "latency_ms"} {
		delete(fast.doc, k)
		delete(general.doc, k)
	}
	if d := jsoneq.Diff(general.doc, fast.doc); d != "" || fast.status != general.status {
		t.Errorf("overloaded bodies differ at %s (status %d vs %d)\nfast:    %s\ngeneral: %s", d, fast.status, general.status, fast.raw, general.raw)
	}

	shed, err := faults.Metric(in.URL, "acgs_decisions_shed_total")
	if err != nil || shed < 10 {
		t.Errorf("acgs_decisions_shed_total = %v (%v), want every shed decision counted", shed, err)
	}
	if f, _ := faults.Metric(in.URL, "acgs_evaluation_failures_total"); f != 0 {
		t.Errorf("acgs_evaluation_failures_total = %v: a shed request is not an evaluation failure", f)
	}
	if o, _ := faults.Metric(in.URL, "acgs_decisions_total", `outcome="overloaded"`); o != shed {
		t.Errorf("acgs_decisions_total{outcome=overloaded} = %v, want %v", o, shed)
	}

	// The shed input was not cached as anything: with the slot back, it is
	// evaluated and allowed.
	release()
	held = false
	again := newSafe()
	release, err = in.Service.Admit.Admit(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	a := admissionDo(t, "POST", acgs, again)
	wantShed(t, a, a.doc)
	release()
	if a := admissionDo(t, "POST", acgs, again); a.status != 200 || a.doc["allow"] != true || a.doc["cache_hit"] != false {
		t.Errorf("after the slot came back: %d %s", a.status, a.raw)
	}
}

// TestFlightOutlivesItsFirstRequest: a request that joined a shared
// evaluation is not shed because the request that started it gave up while
// it waited for a slot; it starts the evaluation again and is decided.
func TestFlightOutlivesItsFirstRequest(t *testing.T) {
	in := servicetest.Start(t, func(c *config.Config) {
		c.Admission.MaxInFlight = 1
		c.Admission.QueueTimeout = 10 * time.Second
	})
	release, err := in.Service.Admit.Admit(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	body := newSafe()
	url := in.URL + "/v1/data/acgs/main/decision"
	first := make(chan error, 1)
	go func() {
		client := &http.Client{Timeout: 300 * time.Millisecond}
		resp, err := client.Post(url, "application/json", bytes.NewReader([]byte(body)))
		if err == nil {
			resp.Body.Close()
		}
		first <- err
	}()
	time.Sleep(100 * time.Millisecond) // the first request leads the flight
	type answer struct {
		status int
		raw    []byte
		err    error
	}
	second := make(chan answer, 1)
	go func() {
		resp, err := http.Post(url, "application/json", strings.NewReader(body))
		if err != nil {
			second <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		raw, err := io.ReadAll(resp.Body)
		second <- answer{resp.StatusCode, raw, err}
	}()
	if err := <-first; err == nil {
		t.Fatal("the first request was answered while the only slot was held")
	}
	time.Sleep(100 * time.Millisecond) // the first request's wait has ended
	release()
	a := <-second
	var doc map[string]any
	if a.err != nil || a.status != 200 || json.Unmarshal(a.raw, &doc) != nil || doc["allow"] != true {
		t.Fatalf("the request that joined the flight: %d %s %v, want 200 allow", a.status, a.raw, a.err)
	}
}

// TestClientGoneWhileWaitingIsNotShed: a request whose client goes away
// while it waits for a slot is not shed (the service refused nothing): it
// is counted as cancelled, never as shed, an evaluation failure or a
// denial, and its unread 503 is recorded as 499 in the HTTP metrics; in
// both dialects and for batch items, with the cache (waiting for a shared
// evaluation) and without it (waiting for the slot itself).
func TestClientGoneWhileWaitingIsNotShed(t *testing.T) {
	for _, cacheOn := range []bool{true, false} {
		t.Run(fmt.Sprintf("cache=%v", cacheOn), func(t *testing.T) {
			in := servicetest.Start(t, func(c *config.Config) {
				c.Admission.MaxInFlight = 1
				c.Admission.QueueTimeout = 10 * time.Second
				c.Cache.Enabled = cacheOn
			})
			release, err := in.Service.Admit.Admit(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			defer release()
			reqs := []struct{ path, body string }{
				{"/v1/data/acgs/main/decision", newSafe()},                                                        // ACGS
				{"/v1/data/acgs/main/decision", `{"input":` + newSafe() + `}`},                                    // OPA
				{"/v1/acgs/batch", `{"requests":[` + newSafe() + `,` + newSafe() + `]}`},                          // ACGS batch: 2 items
				{"/v1/batch/data/acgs/main/decision", `{"inputs":{"a":` + newSafe() + `,"b":` + newSafe() + `}}`}, // OPA batch: 2 items
			}
			const decisions = 6
			errs := make(chan error, len(reqs))
			for _, rq := range reqs {
				go func() {
					client := &http.Client{Timeout: 300 * time.Millisecond}
					resp, err := client.Post(in.URL+rq.path, "application/json", strings.NewReader(rq.body))
					if err == nil {
						resp.Body.Close()
						err = fmt.Errorf("%s answered %s while the only slot was held", rq.path, resp.Status)
					} else {
						err = nil
					}
					errs <- err
				}()
			}
			for range reqs {
				if err := <-errs; err != nil {
					t.Fatal(err)
				}
			}
			deadline := time.Now().Add(10 * time.Second)
			for {
				n, _ := faults.Metric(in.URL, "acgs_decisions_canceled_total")
				h, _ := faults.Metric(in.URL, "acgs_http_requests_total", `code="499"`)
				if n == decisions && h == float64(len(reqs)) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("acgs_decisions_canceled_total = %v, want %d; acgs_http_requests_total{code=499} = %v, want %d", n, decisions, h, len(reqs))
				}
				time.Sleep(20 * time.Millisecond)
			}
			for _, m := range []struct{ name, label string }{
				{"acgs_decisions_shed_total", ""},
				{"acgs_decisions_total", `outcome="overloaded"`},
				{"acgs_decisions_total", `outcome="deny"`},
				{"acgs_evaluation_failures_total", ""},
				{"acgs_http_requests_total", `code="503"`},
				{"acgs_admission_refused_total", ""},
			} {
				var labels []string
				if m.label != "" {
					labels = append(labels, m.label)
				}
				if v, err := faults.Metric(in.URL, m.name, labels...); err != nil || v != 0 {
					t.Errorf("%s{%s} = %v (%v), want 0: a client that went away was counted as refused", m.name, m.label, v, err)
				}
			}
			if v, _ := faults.Metric(in.URL, "acgs_decisions_total", `outcome="canceled"`); v != decisions {
				t.Errorf(`acgs_decisions_total{outcome="canceled"} = %v, want %d`, v, decisions)
			}
		})
	}
}

// TestShedRequestsAreNotInTheWindow: the rolling window of /v1/metrics
// (request count, latencies, hit rates) holds decisions; a request shed for
// overload is none, in every dialect. ACGS requests and batch items were
// counted, with their fast 503s pulling p50 and p99 down, where the OPA
// dialect's were not (review).
func TestShedRequestsAreNotInTheWindow(t *testing.T) {
	in := servicetest.Start(t, func(c *config.Config) {
		c.Admission.MaxInFlight = 1
		c.Admission.QueueTimeout = time.Nanosecond // shed at once
	})
	count := func() string {
		a := admissionDo(t, "GET", in.URL+"/v1/metrics", "")
		return fmt.Sprint(a.doc["request_count"])
	}
	before := count()
	release, err := in.Service.Admit.Admit(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	for range 3 {
		a := admissionDo(t, "POST", in.URL+"/v1/data/acgs/main/decision", newSafe())
		wantShed(t, a, a.doc)
	}
	admissionDo(t, "POST", in.URL+"/v1/acgs/batch", `{"requests":[`+newSafe()+`,`+newSafe()+`]}`)
	admissionDo(t, "POST", in.URL+"/v1/data/acgs/main/decision", `{"input":`+newSafe()+`}`)
	if after := count(); after != before {
		t.Fatalf("request_count %s before the shed requests, %s after", before, after)
	}
}

// TestBatchAnswersBeforeWriteTimeout: a batch whose items cannot all be
// decided before WRITE_TIMEOUT is answered in time, its undecided items shed
// (overloaded). Items each waited for a slot and evaluated within their own
// bounds: the batch ran past WRITE_TIMEOUT, the connection was closed with
// no answer, and every item was still counted and logged as decided
// (review).
func TestBatchAnswersBeforeWriteTimeout(t *testing.T) {
	dir := testenv.WriteConstitution(t, t.TempDir(), nil, map[string]string{
		"acgs/slow/slow.rego": "package acgs.slow\n\n# n² iterations over two arrays of n numbers: slow, little memory\nresult := count([1 | some i in numbers.range(1, input.n); some j in numbers.range(1, input.n); i != j])\n",
	})
	in := servicetest.Start(t, func(c *config.Config) {
		c.Policy.BundlePath = dir
		// An evaluation may run past the batch's deadline (EVAL_TIMEOUT is
		// not bounded by WRITE_TIMEOUT): the items are shed at the deadline,
		// not failed by EVAL_TIMEOUT, however slow the machine (2.5s within
		// 3s failed the whole batch under -race: the first item's
		// EVAL_TIMEOUT came before the deadline, a 500).
		c.Policy.EvalTimeout = 5 * time.Second
		c.Server.WriteTimeout = time.Second
		c.Admission.MaxInFlight = 1
	})
	var inputs []string
	for i := range 60 {
		inputs = append(inputs, fmt.Sprintf(`"i%d":{"n":%d}`, i, 1000+i))
	}
	a := admissionDo(t, "POST", in.URL+"/v1/batch/data/acgs/slow/result", `{"inputs":{`+strings.Join(inputs, ",")+`}}`)
	if a.status != http.StatusMultiStatus && a.status != http.StatusServiceUnavailable {
		t.Fatalf("status %d: %.300s", a.status, a.raw)
	}
	shed := 0
	for id, it := range a.doc["responses"].(map[string]any) {
		item := it.(map[string]any)
		switch {
		case item["code"] == "overloaded":
			shed++
		case item["result"] == nil:
			t.Errorf("item %s: %v", id, item)
		}
	}
	if shed == 0 {
		t.Errorf("no item shed: the batch (60 evaluations of a million iterations on one slot) fitted in WRITE_TIMEOUT, and the test tests nothing")
	}
}

// TestSingleShedBeforeWriteTimeout: a single decision that cannot get an
// evaluation slot before WRITE_TIMEOUT is shed in time, its 503 with
// Retry-After received by the client, in every single-request handler.
// Only batches were bounded by WRITE_TIMEOUT: a single request waited the
// whole queue-wait limit from the end of its body, and its 503 was
// written on a connection already closed (review: the client read EOF).
// Each body arrives a second after its headers, so that a wait of
// ADMISSION_QUEUE_TIMEOUT (which alone fits in WRITE_TIMEOUT) from the
// body's end ends past WRITE_TIMEOUT from the request's start.
func TestSingleShedBeforeWriteTimeout(t *testing.T) {
	in := servicetest.Start(t, func(c *config.Config) {
		c.Admission.MaxInFlight = 1
		c.Server.WriteTimeout = 3 * time.Second
		c.Admission.QueueTimeout = 2500 * time.Millisecond
	})
	release, err := in.Service.Admit.Admit(context.Background()) // the only slot is busy throughout
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(release) // after the parallel subtests
	addr := strings.TrimPrefix(in.URL, "http://")
	for _, tc := range []struct{ name, target, body string }{
		{"acgs", "/v1/data/acgs/main/decision", newSafe()},
		{"opa input", "/v1/data/acgs/main/decision", `{"input":` + newSafe() + `}`},
		{"opa data", "/v1/data/acgs/main/allow", `{"input":` + newSafe() + `}`},
		{"v0 data", "/v0/data/acgs/main/allow", newSafe()},
		{"default decision", "/", newSafe()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", tc.target, addr, len(tc.body)); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Second)
			if _, err := io.WriteString(conn, tc.body); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			defer resp.Body.Close()
			raw, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatalf("answer cut: %v", err)
			}
			a := httpAnswer{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
			if err := json.Unmarshal(raw, &a.doc); err != nil {
				t.Fatalf("answer is not a JSON object (%v): %s", err, raw)
			}
			wantShed(t, a, a.doc)
			if tc.name == "acgs" && a.doc["allow"] != false {
				t.Errorf("the ACGS answer does not deny: %s", raw)
			}
		})
	}
}
