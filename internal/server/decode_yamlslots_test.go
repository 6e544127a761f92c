package server

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/acgs-lite/acgs/internal/admission"
	"github.com/acgs-lite/acgs/internal/cache"
	"github.com/acgs-lite/acgs/internal/config"
	"github.com/acgs-lite/acgs/internal/engine"
	"github.com/acgs-lite/acgs/internal/telemetry"
	"github.com/acgs-lite/acgs/policies"
)

// TestYAMLOverloadShedsBeforeDecoding: a YAML body is parsed only on one of
// yamlSlots. With them all held, a YAML body is answered 503 overloaded
// with Retry-After on every route that reads a body, without being parsed:
// a body that would be refused as invalid YAML (a duplicate key) is not
// refused as such. JSON bodies, and YAML-labelled bodies that are JSON,
// are served meanwhile. Evaluations saturated (their own admission
// controller, no slot free) shed new decisions but not a YAML body whose
// decision is cached: the YAML bound is not the evaluations'. Each shed
// body is counted in acgs_decisions_shed_total{reason="yaml_busy"}, a
// series there at zero from the start, and one whose client had gone in
// acgs_decisions_canceled_total instead. The slots are the Server's: a
// second Server in the process parses YAML while the first's are all held.
func TestYAMLOverloadShedsBeforeDecoding(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg := config.Default()
	cfg.Admission.QueueTimeout = time.Millisecond // the wait for a YAML slot: a shed test need not wait long
	c, err := cache.New(ctx, cache.Config{L1Size: 1000, TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	evals := admission.New(admission.Config{MaxInFlight: 1, MaxQueue: -1})
	e, err := engine.New(ctx, engine.FSSource{FS: policies.FS, Name: "embedded"}, engine.Options{
		ConstitutionalHash: cfg.Policy.ConstitutionalHash, EvalTimeout: time.Second, Cache: c, Admit: evals.Do,
	})
	if err != nil {
		t.Fatal(err)
	}
	newServer := func() *Server {
		t.Helper()
		s, err := New(Deps{Config: cfg, Engine: e, Cache: c, Metrics: telemetry.NewMetrics(telemetry.BuildInfo{}), Window: telemetry.NewWindow(time.Minute)})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s, other := newServer(), newServer() // other: a second Server in the process
	sendTo := func(s *Server, path, body, ct string) *httptest.ResponseRecorder {
		t.Helper()
		r := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
		if ct != "" {
			r.Header.Set("Content-Type", ct)
		}
		w := httptest.NewRecorder()
		s.ServeHTTP(w, r)
		return w
	}
	send := func(path, body, ct string) *httptest.ResponseRecorder {
		t.Helper()
		return sendTo(s, path, body, ct)
	}
	// wantMetrics fails unless s's exposition has each of the lines.
	wantMetrics := func(when string, lines ...string) {
		t.Helper()
		w := httptest.NewRecorder()
		s.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/metrics", nil))
		for _, line := range lines {
			if !strings.Contains(w.Body.String(), "\n"+line+"\n") {
				t.Errorf("%s: want %s in the metrics", when, line)
			}
		}
	}
	const (
		yamlBusy = `acgs_decisions_shed_total{reason="yaml_busy"}`
		canceled = `acgs_decisions_canceled_total`
	)
	wantMetrics("a new Server", yamlBusy+" 0", canceled+" 0")
	const ya = "application/yaml"
	read := func(name string) string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "requests", name+".json"))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	safe, uncached := read("safe"), read("complex") // uncached: a decision not cached
	safeYAML, err := yaml.JSONToYAML([]byte(safe))
	if err != nil {
		t.Fatal(err)
	}
	const invalid = "type: a\ntype: b\n" // refused (400) once parsed: a duplicate key
	routes := []string{"/v1/data/acgs/main/decision", "/v1/data/acgs/main/allow", "/v0/data/acgs/main/decision", "/", "/v1/batch/data/acgs/main/decision"}
	if w := send(routes[0], string(safeYAML), ya); w.Code != http.StatusOK {
		t.Fatalf("YAML body, nothing held: %d %s", w.Code, w.Body)
	}

	// The evaluations' one slot held: a new decision is shed, a YAML body
	// whose decision is cached is answered.
	releaseEval, err := evals.Admit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if w := send(routes[0], uncached, ""); w.Code != http.StatusServiceUnavailable {
		t.Fatalf("new decision with the evaluation slot held: %d %s, want 503", w.Code, w.Body)
	}
	if w := send(routes[0], string(safeYAML), ya); w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `"cache_hit":true`) {
		t.Fatalf("cached YAML body with the evaluation slot held: %d %s, want 200 from the cache", w.Code, w.Body)
	}
	releaseEval()

	// Every YAML slot held: YAML bodies are shed unparsed.
	slots := s.yaml.c
	var held []func()
	for range slots.Stats().MaxInFlight {
		release, err := slots.Admit(ctx)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, release)
	}
	for _, path := range routes {
		w := send(path, invalid, ya)
		if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" || !strings.Contains(w.Body.String(), `"code":"overloaded"`) {
			t.Errorf("%s: YAML body with every YAML slot held: %d (Retry-After %q) %s; want 503 overloaded with Retry-After, unparsed", path, w.Code, w.Header().Get("Retry-After"), w.Body)
		}
	}
	if w := send(routes[0], safe, ""); w.Code != http.StatusOK {
		t.Errorf("JSON body with every YAML slot held: %d %s", w.Code, w.Body)
	}
	if w := send(routes[0], safe, ya); w.Code != http.StatusOK {
		t.Errorf("YAML-labelled JSON body with every YAML slot held: %d %s", w.Code, w.Body)
	}
	wantMetrics("a YAML body shed on each route", fmt.Sprintf("%s %d", yamlBusy, len(routes)), canceled+" 0")
	// The second Server's slots are its own: it parses YAML meanwhile.
	if w := sendTo(other, routes[0], invalid, ya); w.Code != http.StatusBadRequest {
		t.Errorf("invalid YAML body to a second Server, the first's YAML slots held: %d %s, want 400 (parsed)", w.Code, w.Body)
	}
	if w := sendTo(other, routes[0], string(safeYAML), ya); w.Code != http.StatusOK {
		t.Errorf("YAML body to a second Server, the first's YAML slots held: %d %s", w.Code, w.Body)
	}
	// A YAML body whose client has gone is not parsed either, and is no
	// refusal: the metrics count it 499 and canceled, not shed, as a
	// decision whose client left while it waited for an evaluation slot.
	gone, cancel := context.WithCancel(ctx)
	cancel()
	r := httptest.NewRequestWithContext(gone, http.MethodPost, routes[0], strings.NewReader(invalid))
	r.Header.Set("Content-Type", ya)
	s.ServeHTTP(httptest.NewRecorder(), r)
	wantMetrics("a YAML body whose client had gone", `acgs_http_requests_total{code="499",handler="acgs_decision"} 1`,
		fmt.Sprintf("%s %d", yamlBusy, len(routes)), canceled+" 1")
	for _, release := range held {
		release()
	}

	// Slots free again: the same bodies are parsed, and refused or answered.
	for _, path := range routes {
		if w := send(path, invalid, ya); w.Code != http.StatusBadRequest {
			t.Errorf("%s: invalid YAML body, slots free: %d %s, want 400", path, w.Code, w.Body)
		}
	}
	if st := slots.Stats(); st.InFlight != 0 || st.Waiting != 0 {
		t.Errorf("YAML slots after the test: %d in flight, %d waiting", st.InFlight, st.Waiting)
	}
}
