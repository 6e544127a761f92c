package server_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/acgs-lite/acgs/internal/config"
	"github.com/acgs-lite/acgs/internal/inputgen"
	"github.com/acgs-lite/acgs/internal/jsoneq"
)

// metric returns the value of the series named exactly series (name and
// labels as the exposition writes them) in h's /metrics, 0 when absent.
func (h *harness) metric(tb testing.TB, series string) float64 {
	tb.Helper()
	r := h.do(tb, "GET", "/metrics", nil, nil)
	sc := bufio.NewScanner(bytes.NewReader(r.body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				tb.Fatalf("%s: %v", series, err)
			}
			return f
		}
	}
	return 0
}

// comparable drops what differs between any two responses to one request.
func comparable(r resp) map[string]any {
	delete(r.obj, "decision_id")
	delete(r.obj, "latency_ms")
	return r.obj
}

// TestRawTierAnswersLikeTheNormalPath sends generated requests twice, in
// both dialects and on both routes that take a body, to a server with the
// raw-body tier and to one without: the repeats the tier answers give the
// same status, document, decision metrics and cache counters as the
// repeats the other server decodes.
func TestRawTierAnswersLikeTheNormalPath(t *testing.T) {
	on := mustOpen(t)
	off := mustOpen(t, func(c *config.Config) { c.Cache.RawSize = 0 })
	type call struct{ path, body string }
	var calls []call
	for _, in := range inputgen.New(11).Inputs(150) {
		b, _ := json.Marshal(in)
		calls = append(calls,
			call{"/v1/data/acgs/main/decision", string(b)},
			call{"/v1/data/acgs/main/decision", `{"input":` + string(b) + `}`},
			call{"/v1/data/acgs/main/allow", `{"input":` + string(b) + `}`},
			// The same bytes on v0 are the input itself, answered as the
			// bare document: the tier must not answer them with the ACGS
			// decision remembered for them. (This was the v1 route with a
			// trailing slash, which is now redirected as OPA does.)
			call{"/v0/data/acgs/main/decision", string(b)},
		)
	}
	for round := 0; round < 2; round++ {
		for _, c := range calls {
			got := on.do(t, "POST", c.path, strings.NewReader(c.body), nil)
			want := off.do(t, "POST", c.path, strings.NewReader(c.body), nil)
			if got.code != want.code {
				t.Fatalf("round %d %s: status %d with the raw tier, %d without, for %s", round, c.path, got.code, want.code, c.body)
			}
			if d := jsoneq.Diff(comparable(want), comparable(got)); d != "" {
				t.Fatalf("round %d %s: differs at %s\nraw tier: %s\nnormal:   %s", round, c.path, d, got.body, want.body)
			}
		}
	}
	// At least three of the four kinds of call can be remembered, less the
	// generated requests refused before any decision (a wrong hash, a
	// malformed envelope).
	hits := on.metric(t, `acgs_raw_body_lookups_total{result="hit"}`)
	if hits < float64(len(calls))/2 {
		t.Errorf("the raw tier answered %v of %d repeats", hits, len(calls))
	}
	if v := off.metric(t, `acgs_raw_body_lookups_total{result="hit"}`) + off.metric(t, `acgs_raw_body_lookups_total{result="miss"}`); v != 0 {
		t.Errorf("RAW_CACHE_SIZE=0 still looked up %v bodies", v)
	}
	for _, series := range []string{
		`acgs_decisions_total{outcome="allow",path="acgs/main/decision"}`,
		`acgs_decisions_total{outcome="deny",path="acgs/main/decision"}`,
		`acgs_decisions_total{outcome="allow",path="acgs/main/allow"}`,
		`acgs_decisions_total{outcome="deny",path="acgs/main/allow"}`,
		`acgs_decision_duration_seconds_count{source="l1"}`,
		`acgs_decision_duration_seconds_count{source="vm"}`,
		`acgs_decision_duration_seconds_count{source="full"}`,
	} {
		if a, b := on.metric(t, series), off.metric(t, series); a != b {
			t.Errorf("%s: %v with the raw tier, %v without", series, a, b)
		}
	}
	if a, b := on.cache.Stats(), off.cache.Stats(); a.L1Hits != b.L1Hits || a.L1Misses != b.L1Misses {
		t.Errorf("L1 hits/misses %d/%d with the raw tier, %d/%d without", a.L1Hits, a.L1Misses, b.L1Hits, b.L1Misses)
	}
}

// TestRawTierFollowsTheCache: a remembered body whose L1 entry is gone (a
// purge, a new bundle that decides it differently) is decided again, never
// answered from what the tier remembered.
func TestRawTierFollowsTheCache(t *testing.T) {
	h := mustOpen(t)
	body := `{"type":"constitutional_evaluation","constitutional_hash":"` + hash + `","action":"data.read_public",` +
		`"context":{"agent":{"trust_level":0.9},"environment":{"sandbox_enabled":true,"audit_enabled":true},"explanation":"read the public dashboard data","responsible_party":"ops"}}`
	post := func() resp {
		return h.do(t, "POST", "/v1/data/acgs/main/decision", strings.NewReader(body), nil)
	}
	first := post()
	if first.code != 200 || first.obj["allow"] != true {
		t.Fatalf("first answer: %d %s", first.code, first.body)
	}
	if r := post(); r.obj["cache_tier"] != "l1" || h.metric(t, `acgs_raw_body_lookups_total{result="hit"}`) != 1 {
		t.Fatalf("the repeat was not answered by the raw tier: %s", r.body)
	}

	h.cache.Purge()
	if r := post(); r.obj["cache_tier"] != "none" || r.obj["allow"] != true {
		t.Fatalf("after a purge: %s", r.body)
	}
	if hits := h.metric(t, `acgs_raw_body_lookups_total{result="hit"}`); hits != 1 {
		t.Fatalf("the tier answered after a purge (%v hits)", hits)
	}

	// A bundle with the same revision whose data prohibits the action.
	b := mustBundle(t)
	cfg := b.Data["acgs"].(map[string]any)["config"].(map[string]any)
	cfg["prohibited_actions"] = append(cfg["prohibited_actions"].([]any), "data.read_public")
	if err := h.eng.Activate(context.Background(), b, "test"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if r := post(); r.obj["allow"] != false {
			t.Fatalf("request %d after the new bundle still allowed: %s", i, r.body)
		}
	}
}

// TestRawTierOffWithDecisionLog: the decision log records each request's
// decoded input, so with it on every body is decoded.
func TestRawTierOffWithDecisionLog(t *testing.T) {
	h := mustOpen(t, func(c *config.Config) { c.Log.DecisionLog = "file:" + filepath.Join(t.TempDir(), "decisions.log") })
	body := request(t, "safe")
	for i := 0; i < 3; i++ {
		if r := h.do(t, "POST", "/v1/data/acgs/main/decision", strings.NewReader(body), nil); r.code != 200 {
			t.Fatalf("%d %s", r.code, r.body)
		}
	}
	if v := h.metric(t, `acgs_raw_body_lookups_total{result="miss"}`) + h.metric(t, `acgs_raw_body_lookups_total{result="hit"}`); v != 0 {
		t.Errorf("the raw tier looked up %v bodies with the decision log on", v)
	}
}
