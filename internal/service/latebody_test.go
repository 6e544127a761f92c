package service_test

import (
	"bufio"
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
	"github.com/acgs-lite/acgs/internal/service/servicetest"
	"github.com/acgs-lite/acgs/internal/testenv"
)

// lateBodyWriteTimeout is the WRITE_TIMEOUT of the late-body tests: the
// decision window (config.Server.DecideWithin) ends 4.5 s after a
// request's start, and a single decision whose body arrives after it may
// be made until 4.85 s (the server's lateReserve: EVAL_TIMEOUT, 100 ms by
// default, and a 50 ms margin, more than a quarter of the window's reserve
// of 0.5 s). The bodies arrive at lateBodyAfter, 200 ms past the window and
// 150 ms before that bound: margins for a slow machine under -race.
const (
	lateBodyWriteTimeout = 5 * time.Second
	lateBodyWindow       = 4500 * time.Millisecond
	lateBodyBound        = 4850 * time.Millisecond
	lateBodyAfter        = 4700 * time.Millisecond
	// With an EVAL_TIMEOUT of 300 ms (lateBodyTooLateEval) the late bound
	// is WRITE_TIMEOUT less 350 ms; a too-late body arrives 150 ms after it.
	lateBodyTooLateEval  = 300 * time.Millisecond
	lateBodyTooLateBound = 4650 * time.Millisecond
	lateBodyTooLateAfter = 4800 * time.Millisecond
)

// lateBody sends a request's headers and half its body at once and the
// rest after after, on a connection of its own, and returns the answer
// (its doc nil unless it is a JSON object).
//
// The body must complete after notBefore from the request's start (the
// decision window, or the late bound for a too-late request), or the test
// passes without testing what it means to; it does (the sleep), counted
// from before the headers were sent, which the server's start of the
// request follows. It must also complete before sentBy from the request's
// start (the next bound the test would cross): on a machine so slow that
// it did not, counted from the same point, the test cannot tell and is
// skipped, saying so. sent, when not nil, is called once the whole body
// was sent, before that skip: the server answers (and counts) that
// request all the same, and the skip waits for its answer, so that a
// test counting what the server saw counts it too.
func lateBody(t *testing.T, addr, target, body string, after, notBefore, sentBy time.Duration, sent func()) (httpAnswer, map[string]any) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now() // the server's start of the request is later
	if _, err := fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", target, addr, len(body)); err != nil {
		t.Fatal(err)
	}
	// Part of the body at once, the rest late: the handler is already
	// reading it.
	half := len(body) / 2
	if _, err := io.WriteString(conn, body[:half]); err != nil {
		t.Fatal(err)
	}
	time.Sleep(after)
	if _, err := io.WriteString(conn, body[half:]); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	if sent != nil {
		sent()
	}
	if took < notBefore {
		t.Fatalf("the body completed %s after the request's start, before %s: the test tests nothing", took, notBefore)
	}
	if took >= sentBy {
		// The server may still count it: its answer (or the connection's
		// end) comes before the test reads the metrics.
		_ = conn.SetReadDeadline(time.Now().Add(lateBodyWriteTimeout))
		if resp, err := http.ReadResponse(bufio.NewReader(conn), nil); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		t.Skipf("the body completed %s after the request's start, past %s: the machine is too slow for this test to tell", took, sentBy)
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
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("answer is not JSON (%v): %s", err, raw)
	}
	a.doc, _ = v.(map[string]any) // v0 answers a value, which may be true
	// The ACGS answer's latency_ms counts from the request's start on the
	// server's clock: one answered before notBefore read the body before it.
	if ms, ok := a.doc["latency_ms"].(float64); ok && time.Duration(ms*float64(time.Millisecond)) < notBefore {
		t.Fatalf("answered %v ms after the request's start on the server's clock, before %s: the body was not that late there, and the test tests nothing", ms, notBefore)
	}
	return a, a.doc
}

// lateBodyTargets are the single-decision handlers the late-body tests
// send to, each input new (an evaluation, not a cache hit).
func lateBodyTargets() []struct{ name, target, body, field string } {
	return []struct{ name, target, body, field string }{
		{"acgs", "/v1/data/acgs/main/decision", newSafe(), "allow"},
		{"opa input", "/v1/data/acgs/main/decision", `{"input":` + newSafe() + `}`, "result"},
		{"opa data", "/v1/data/acgs/main/allow", `{"input":` + newSafe() + `}`, "result"},
		{"v0 data", "/v0/data/acgs/main/allow", newSafe(), ""},
		{"default decision", "/", newSafe(), ""},
	}
}

// startLate starts an instance for the late-body tests: WRITE_TIMEOUT
// lateBodyWriteTimeout, then mutate; it returns the instance and its
// address, which lateBody dials.
func startLate(t *testing.T, mutate ...func(*config.Config)) (*servicetest.Instance, string) {
	t.Helper()
	in := servicetest.Start(t, append([]func(*config.Config){func(c *config.Config) {
		c.Server.WriteTimeout = lateBodyWriteTimeout
	}}, mutate...)...)
	return in, strings.TrimPrefix(in.URL, "http://")
}

// tooLateEval sets the EVAL_TIMEOUT of the too-late tests,
// lateBodyTooLateEval, which puts the late bound at lateBodyTooLateBound.
func tooLateEval(c *config.Config) { c.Policy.EvalTimeout = lateBodyTooLateEval }

// TestLateBodyDecidedOnIdleService: a single request whose body arrives
// after the decision window (WRITE_TIMEOUT less a tenth of it, counted
// from the request's start) but well before WRITE_TIMEOUT, on a service
// with every evaluation slot free, is decided: 200 with the policy's
// decision. Its decisions were bounded at the window's end, already
// passed when the body was read, so admission refused it with a free slot
// and it was answered 503 overloaded: a shed no overload caused.
func TestLateBodyDecidedOnIdleService(t *testing.T) {
	t.Parallel()
	_, addr := startLate(t)
	for _, tc := range lateBodyTargets() {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a, doc := lateBody(t, addr, tc.target, tc.body, lateBodyAfter, lateBodyWindow, lateBodyBound, nil)
			if a.status != http.StatusOK {
				t.Fatalf("status %d, want 200 with a decision: %s", a.status, a.raw)
			}
			var decision any
			switch tc.field {
			case "":
				// v0 and the default decision answer the value itself:
				// {"allow": true, ...} or true.
				var v any
				if err := json.Unmarshal([]byte(a.raw), &v); err != nil {
					t.Fatal(err)
				}
				if m, ok := v.(map[string]any); ok {
					decision = m["allow"]
				} else {
					decision = v
				}
			default:
				decision = doc[tc.field]
				if m, ok := decision.(map[string]any); ok { // the decision document of the OPA dialect
					decision = m["allow"]
				}
			}
			if decision != true {
				t.Errorf("a safe public read is allowed by the policy; answer: %s", a.raw)
			}
		})
	}
}

// TestLateBodyWaitShedBeforeWriteTimeout: a single request whose body
// arrives after the decision window and that then waits for an evaluation
// slot (the only one is held) is still shed before WRITE_TIMEOUT, its 503
// overloaded with Retry-After received by the client, as one whose body
// came in time (TestSingleShedBeforeWriteTimeout).
func TestLateBodyWaitShedBeforeWriteTimeout(t *testing.T) {
	t.Parallel()
	in, addr := startLate(t, func(c *config.Config) {
		c.Admission.MaxInFlight = 1
		c.Admission.QueueTimeout = 2 * time.Second // longer than what is left of WRITE_TIMEOUT
	})
	release, err := in.Service.Admit.Admit(context.Background()) // the only slot is busy throughout
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(release) // after the parallel subtests
	for _, tc := range lateBodyTargets() {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a, doc := lateBody(t, addr, tc.target, tc.body, lateBodyAfter, lateBodyWindow, lateBodyBound, nil)
			wantShed(t, a, doc)
			if tc.name == "acgs" && doc["allow"] != false {
				t.Errorf("the ACGS answer does not deny: %s", a.raw)
			}
		})
	}
}

// TestLateBodyTooLate: a single request whose body arrives after even its
// late bound (WRITE_TIMEOUT less the server's lateReserve) but before
// WRITE_TIMEOUT is refused, its 503 overloaded with Retry-After received,
// its message saying the body came too late, and counted as shed for
// reason "late": not "deadline", which ACGSShedding pages on to add
// instances, and not refused by admission (acgs_admission_refused_total
// stays 0), which the service never asks for it. With an EVAL_TIMEOUT of
// 300 ms the late bound is WRITE_TIMEOUT less 350 ms (EVAL_TIMEOUT and a
// 50 ms margin: an evaluation started on a free slot just before the bound
// runs EVAL_TIMEOUT with nothing to stop it), 4.65 s; the bodies arrive at
// 4.8 s. The late bound was WRITE_TIMEOUT less 125 ms whatever
// EVAL_TIMEOUT, and such a request was decided, its answer possibly cut
// off by WRITE_TIMEOUT.
func TestLateBodyTooLate(t *testing.T) {
	t.Parallel()
	in, addr := startLate(t, tooLateEval)
	var sent atomic.Int64 // what the server saw, answered or skipped here
	t.Run("targets", func(t *testing.T) {
		for _, tc := range lateBodyTargets() {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				a, doc := lateBody(t, addr, tc.target, tc.body, lateBodyTooLateAfter, lateBodyTooLateBound, lateBodyWriteTimeout-100*time.Millisecond, func() { sent.Add(1) })
				wantLate(t, a, doc)
				if tc.name == "acgs" && doc["allow"] != false {
					t.Errorf("the ACGS answer does not deny: %s", a.raw)
				}
			})
		}
	})
	n := float64(sent.Load())
	if n == 0 {
		t.Skip("no request could be sent in time on this machine")
	}
	wantLateCounted(t, in.URL, n)
}

// TestLateBatchRefusedAsLate: a batch whose body arrives after the decision
// window keeps that bound (its answer, up to MAX_BATCH_ITEMS items, needs
// the window's reserve), so on an idle service every item not in a cache
// is refused; each says its batch's body came too late and is counted as
// shed for reason "late". They were shed as overloaded, "no decision
// before the batch's deadline", counted for reason "deadline", which
// ACGSShedding pages on.
func TestLateBatchRefusedAsLate(t *testing.T) {
	t.Parallel()
	in, addr := startLate(t)
	var items atomic.Int64 // what the server saw, answered or skipped here
	t.Run("routes", func(t *testing.T) {
		for _, tc := range []struct{ name, target, body string }{
			{"acgs", "/v1/acgs/batch", `{"requests":[` + newSafe() + `,` + newSafe() + `]}`},
			{"opa", "/v1/batch/data/acgs/main/decision", `{"inputs":{"a":` + newSafe() + `,"b":` + newSafe() + `}}`},
		} {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				a, doc := lateBody(t, addr, tc.target, tc.body, lateBodyAfter, lateBodyWindow, lateBodyWriteTimeout-100*time.Millisecond, func() { items.Add(2) })
				if a.status != http.StatusServiceUnavailable || a.header.Get("Retry-After") != "1" {
					t.Errorf("status %d, Retry-After %q: want 503 with Retry-After 1 (every item refused): %s", a.status, a.header.Get("Retry-After"), a.raw)
				}
				var got []any
				switch r := doc["responses"].(type) {
				case []any:
					got = r
				case map[string]any:
					for _, it := range r {
						got = append(got, it)
					}
				}
				if len(got) != 2 {
					t.Fatalf("want 2 items: %s", a.raw)
				}
				for _, it := range got {
					item, _ := it.(map[string]any)
					if item["code"] != "overloaded" || !strings.Contains(fmt.Sprint(item["message"]), "too late") {
						t.Errorf("item %v: want code overloaded and a message saying the body came too late", it)
					}
				}
			})
		}
	})
	n := float64(items.Load())
	if n == 0 {
		t.Skip("no batch could be sent in time on this machine")
	}
	wantLateCounted(t, in.URL, n)
}

// wantLate checks the answer of a request refused as too late: 503, code
// overloaded (a decision not made, which clients retry) with Retry-After,
// and a message that says why.
func wantLate(t *testing.T, a httpAnswer, doc map[string]any) {
	t.Helper()
	if a.status != http.StatusServiceUnavailable {
		t.Errorf("status %d, want 503: %s", a.status, a.raw)
	}
	if ra := a.header.Get("Retry-After"); ra != "1" {
		t.Errorf("Retry-After %q, want 1", ra)
	}
	if doc["code"] != "overloaded" || !strings.Contains(fmt.Sprint(doc["message"]), "too late") {
		t.Errorf("want code overloaded and a message saying the body came too late: %s", a.raw)
	}
}

// wantLateCounted checks that n decisions were counted as shed for reason
// late, none for another reason, and that admission refused nothing.
func wantLateCounted(t *testing.T, url string, n float64) {
	t.Helper()
	if got, err := faults.Metric(url, "acgs_decisions_shed_total", `reason="late"`); err != nil || got != n {
		t.Errorf(`acgs_decisions_shed_total{reason="late"} = %v (%v), want %v`, got, err, n)
	}
	if got, err := faults.Metric(url, "acgs_decisions_shed_total"); err != nil || got != n {
		t.Errorf("acgs_decisions_shed_total = %v (%v), want %v, all late", got, err, n)
	}
	if got, err := faults.Metric(url, "acgs_admission_refused_total"); err != nil || got != 0 {
		t.Errorf("acgs_admission_refused_total = %v (%v), want 0: admission was not asked", got, err)
	}
}

// TestLateBodyTooLateFromL2: a too-late request (a single one past its
// late bound, a batch past the decision window) whose decisions only L2
// holds, written there by another instance, is answered from L2: 200, as
// a cache hit is never shed. Its L2 read ran under its passed deadline and
// gave up at once, a miss, so it was refused 503 as late.
func TestLateBodyTooLateFromL2(t *testing.T) {
	t.Parallel()
	testenv.RequireBinary(t, "redis-server", "redis-server")
	r := testenv.StartRedis(t)
	l2 := func(c *config.Config) {
		c.Cache.RedisURL = r.URL()
		c.Cache.SigningKey = strings.Repeat("late-signing-key-", 2)
		c.Cache.L2Timeout = 500 * time.Millisecond // a loaded machine must not turn a hit into a miss
		c.Policy.PartialEval = false               // no constant plan answers these: only the caches can
	}
	a, _ := startLate(t, tooLateEval, l2)
	b, addr := startLate(t, tooLateEval, l2)
	waitL2Healthy(t, a)
	waitL2Healthy(t, b)
	single, x, y := newSafe(), newSafe(), newSafe()
	known := map[string]bool{}
	for _, body := range []string{single, x, y} {
		if code, doc := abusePost(t, a.URL, []byte(body)); code != http.StatusOK || doc["allow"] != true {
			t.Fatalf("warming on A: %d %v", code, doc)
		}
		newL2Key(t, r, known) // written behind: wait until it is in Redis
	}
	t.Run("routes", func(t *testing.T) {
		t.Run("single", func(t *testing.T) {
			t.Parallel()
			a, doc := lateBody(t, addr, "/v1/data/acgs/main/decision", single, lateBodyTooLateAfter, lateBodyTooLateBound, lateBodyWriteTimeout-100*time.Millisecond, nil)
			if a.status != http.StatusOK || doc["allow"] != true || doc["cache_tier"] != "l2" {
				t.Errorf("status %d: want 200, allowed from cache tier l2: %s", a.status, a.raw)
			}
		})
		t.Run("batch", func(t *testing.T) {
			t.Parallel()
			a, doc := lateBody(t, addr, "/v1/acgs/batch", `{"requests":[`+x+`,`+y+`]}`, lateBodyAfter, lateBodyWindow, lateBodyWriteTimeout-100*time.Millisecond, nil)
			if a.status != http.StatusOK {
				t.Errorf("status %d: want 200: %s", a.status, a.raw)
			}
			items, _ := doc["responses"].([]any)
			if len(items) != 2 {
				t.Fatalf("want 2 items: %s", a.raw)
			}
			for _, it := range items {
				item, _ := it.(map[string]any)
				if item["allow"] != true || item["cache_tier"] != "l2" {
					t.Errorf("item %v: want allowed from cache tier l2", it)
				}
			}
		})
	})
	if got, err := faults.Metric(b.URL, "acgs_decisions_shed_total"); err != nil || got != 0 {
		t.Errorf("acgs_decisions_shed_total = %v (%v) on B, want 0: a cache hit is never shed", got, err)
	}
}

// TestLateBodyFunctionPath: a too-late request to a path that names a
// function (data.acgs.main.truncate) is bad input, 400 invalid_parameter,
// as one in time is: not 503 late, which says to retry what can never be
// answered. The engine's batch path, which answers too-late requests,
// refused the path only in an item's evaluation, never reached past the
// deadline.
func TestLateBodyFunctionPath(t *testing.T) {
	t.Parallel()
	in, addr := startLate(t, tooLateEval)
	t.Run("routes", func(t *testing.T) {
		for _, tc := range []struct {
			name, target, body string
			after, notBefore   time.Duration
		}{
			{"single", "/v1/data/acgs/main/truncate", `{"input":{}}`, lateBodyTooLateAfter, lateBodyTooLateBound},
			{"batch", "/v1/batch/data/acgs/main/truncate", `{"inputs":{"a":{},"b":{}}}`, lateBodyAfter, lateBodyWindow},
		} {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				a, doc := lateBody(t, addr, tc.target, tc.body, tc.after, tc.notBefore, lateBodyWriteTimeout-100*time.Millisecond, nil)
				if a.status != http.StatusBadRequest || doc["code"] != "invalid_parameter" || !strings.Contains(a.raw, "is a function") {
					t.Errorf("status %d: want 400 invalid_parameter, the path is a function: %s", a.status, a.raw)
				}
			})
		}
	})
	if got, err := faults.Metric(in.URL, "acgs_decisions_shed_total"); err != nil || got != 0 {
		t.Errorf("acgs_decisions_shed_total = %v (%v), want 0: bad input is not shed", got, err)
	}
}
