package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"image/png"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/perf/benchfmt"
)

func TestRunBench(t *testing.T) {
	w, err := DefaultWorkload()
	if err != nil {
		t.Fatal(err)
	}
	h := &judgeHandler{}
	srv := newLoopbackServer(t, h)
	res, err := RunBench(context.Background(), Target{BaseURL: srv.URL}, w, BenchConfig{
		Requests: 40, Concurrency: []int{4, 1}, Count: 2, ColdSamples: 10, WarmRepeats: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Scenarios) != 3 {
		t.Fatalf("%d scenarios, want 3", len(res.Scenarios))
	}
	for _, s := range res.Scenarios {
		if len(s.Levels) != 2 || s.Levels[0].Concurrency != 1 || s.Levels[1].Concurrency != 4 {
			t.Fatalf("%s: levels not sorted: %+v", s.Name, s.Levels)
		}
		for _, l := range s.Levels {
			if l.Requests != 80 || len(l.Runs) != 2 || l.Failures != 0 {
				t.Errorf("%s c=%d: %d requests in %d runs, %d failures", s.Name, l.Concurrency, l.Requests, len(l.Runs), l.Failures)
			}
		}
		if s.Levels[0].Efficiency != 1 {
			t.Errorf("%s: efficiency of the base level %v, want 1 by definition", s.Name, s.Levels[0].Efficiency)
		}
		cw := s.ColdWarm
		if cw == nil || cw.Cold.Count != 20 || cw.Warm.Count != 40 || len(cw.Runs) != 2 || cw.Speedup <= 0 {
			t.Errorf("%s: cold/warm %+v", s.Name, cw)
		}
	}

	// Cold inputs are unique (each sent once cold, then only as its warm
	// repeats) and carry the run's nonce, so they cannot hit a cache filled
	// by earlier runs or by the warm-up pass.
	coldBodies := 0
	for body, n := range h.bodies {
		if strings.Contains(body, res.Nonce) {
			coldBodies++
			if n != 3 {
				t.Errorf("cold input sent %d times, want 1 cold + 2 warm: %s", n, body)
			}
		}
	}
	if coldBodies != 60 {
		t.Errorf("%d distinct cold inputs, want 10 per scenario and repetition", coldBodies)
	}

	var buf bytes.Buffer
	if err := res.WriteBenchfmt(&buf); err != nil {
		t.Fatal(err)
	}
	r := benchfmt.NewReader(bytes.NewReader(buf.Bytes()), "bench.txt")
	names := map[string]int{}
	for r.Scan() {
		switch rec := r.Result().(type) {
		case *benchfmt.SyntaxError:
			t.Fatalf("benchfmt cannot read our output: %v\n%s", rec, buf.String())
		case *benchfmt.Result:
			names[rec.Name.String()]++
			if _, ok := rec.Value("sec/op"); !ok {
				t.Errorf("%s: no ns/op", rec.Name)
			}
		}
	}
	if names["HTTP/scenario=safe_action/c=4"] != 2 || names["HTTPCold/scenario=dangerous_action"] != 2 {
		t.Fatalf("unexpected benchmark names: %v\n%s", names, buf.String())
	}
	buf.Reset()
	if err := res.WriteTable(&buf); err != nil || !strings.Contains(buf.String(), "speedup") {
		t.Fatalf("table: %v\n%s", err, buf.String())
	}
}

func TestWriteReport(t *testing.T) {
	w, err := DefaultWorkload()
	if err != nil {
		t.Fatal(err)
	}
	srv := newLoopbackServer(t, &judgeHandler{})
	res, err := RunOpen(context.Background(), OpenLoop{Rate: 200, Duration: 1500 * time.Millisecond, Connections: 4}, Options{
		Target: Target{BaseURL: srv.URL}, Workload: w,
	})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	rep := LoadSLO{P99Ms: 1000, MaxErrorRate: 0.01, MinCompliance: 0.95}.Evaluate(res)
	files, err := WriteReport(dir, res, rep)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 3 {
		t.Fatalf("files %v", files)
	}
	for _, name := range []string{"latency-over-time.png", "latency-distribution.png"} {
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if b := img.Bounds(); b.Dx() < 300 || b.Dy() < 100 {
			t.Fatalf("%s: tiny image %v", name, b)
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Mode       string          `json:"mode"`
		TargetRate float64         `json:"target_rate"`
		Total      ScenarioStats   `json:"total"`
		Timeline   []TimelinePoint `json:"timeline"`
		SLO        Report          `json:"slo"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Mode != "open" || doc.TargetRate != 200 || doc.Total.Requests != 300 || len(doc.Timeline) == 0 || len(doc.SLO.Checks) == 0 {
		t.Fatalf("results.json incomplete: %+v", doc)
	}
}

// TestRunBenchCountsShedApart: requests shed for overload are counted in
// their own column, not as failures, and stay out of the latency figures.
func TestRunBenchCountsShedApart(t *testing.T) {
	w, err := ParseWorkload([]byte(`{"name":"one","path":"/v1/data/acgs/main/decision","scenarios":[
		{"name":"safe","weight":1,"expect":{"allow":true},"vary":{"context.agent.id":{"format":"a-%d","cardinality":10}},
		 "request":{"type":"constitutional_evaluation","action":"data.read_public","context":{"agent":{"id":"a-0"}}}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	j := &judgeHandler{}
	var n atomic.Int64
	srv := newLoopbackServer(t, http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if n.Add(1)%3 == 0 {
			rw.Header().Set("Retry-After", "1")
			rw.WriteHeader(http.StatusServiceUnavailable)
			_, _ = rw.Write([]byte(`{"allow":false,"code":"overloaded","message":"service overloaded"}`))
			return
		}
		j.ServeHTTP(rw, r)
	}))
	res, err := RunBench(context.Background(), Target{BaseURL: srv.URL}, w, BenchConfig{Requests: 30, Concurrency: []int{1}, ColdSamples: 6, WarmRepeats: 1})
	if err != nil {
		t.Fatal(err)
	}
	l := res.Scenarios[0].Levels[0]
	if l.Failures != 0 || l.Shed == 0 || l.Latency.Count != l.Requests-l.Shed {
		t.Errorf("level: %d requests, %d failures, %d shed, %d latencies", l.Requests, l.Failures, l.Shed, l.Latency.Count)
	}
	if failed, _ := res.Failures(); failed != 0 {
		t.Errorf("%d failures, want shed requests counted apart", failed)
	}
	// Throughput is decisions: the shed third is not in req/s.
	run := l.Runs[0]
	if want := float64(run.Requests-run.Shed) / (run.ElapsedMs / 1000); math.Abs(run.RPS-want) > 1e-6*want {
		t.Errorf("run req/s %.2f, want the decisions' %.2f (%d requests, %d shed)", run.RPS, want, run.Requests, run.Shed)
	}
	if shed, total := res.Shed(); shed < l.Shed || total < l.Requests {
		t.Errorf("Shed() = %d of %d", shed, total)
	}
	var b bytes.Buffer
	if err := res.WriteBenchfmt(&b); err != nil || !strings.Contains(b.String(), " shed") {
		t.Errorf("benchfmt without the shed count: %v\n%s", err, b.String())
	}
}
