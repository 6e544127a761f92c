package telemetry

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"golang.org/x/sys/unix"

	"github.com/acgs-lite/acgs/internal/cache"
	"github.com/acgs-lite/acgs/internal/testenv"
)

// memSink collects what the log writes; delay makes it a slow sink.
type memSink struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	writes int
	sizes  []int // bytes per Write
	lines  []int // lines per Write
	delay  time.Duration
	fail   error
}

func (s *memSink) Write(p []byte) (int, error) {
	if s.delay > 0 {
		time.Sleep(s.delay)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return 0, s.fail
	}
	s.writes++
	s.sizes = append(s.sizes, len(p))
	s.lines = append(s.lines, bytes.Count(p, []byte("\n")))
	if len(p) == 0 || p[len(p)-1] != '\n' {
		return 0, errors.New("memSink: a write that does not end a line")
	}
	return s.buf.Write(p)
}

// events decodes the JSON lines written so far; every line must be one event.
func (s *memSink) events(t *testing.T) []map[string]any {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(s.buf.Bytes()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var e map[string]any
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("line %q is not one JSON event: %v", sc.Text(), err)
		}
		out = append(out, e)
	}
	return out
}

func closeLog(t *testing.T, l *DecisionLog) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := l.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func TestDecisionLogOneLinePerEvent(t *testing.T) {
	sink := &memSink{}
	l, err := NewDecisionLog(DecisionLogConfig{Writer: sink, Labels: map[string]string{"id": "inst-1", "version": "0.1.0"}})
	if err != nil {
		t.Fatal(err)
	}
	ts := time.Date(2026, 12, 1, 13, 0, 0, 0, time.FixedZone("CET", 3600))
	const n = 250
	for i := range n {
		l.Log(&DecisionEvent{
			DecisionID:         NewDecisionID(),
			Path:               "acgs/main/decision",
			Input:              map[string]any{"type": "data_access", "i": i, "html": "<b>&</b>"},
			Result:             map[string]any{"allow": i%2 == 0},
			Bundles:            map[string]BundleInfo{"acgs": {Revision: "rev-7"}},
			Timestamp:          ts,
			Metrics:            map[string]any{"timer_rego_query_eval_ns": 1234},
			RequestID:          "req-1",
			CacheTier:          "l1",
			ConstitutionalHash: "cdd01ef066bc6cf2",
		})
	}
	l.Log(&DecisionEvent{Path: "acgs/main/allow", Labels: map[string]string{"id": "own"}}) // the log fills the ID and timestamp
	closeLog(t, l)

	evs := sink.events(t)
	if len(evs) != n+1 || l.Written() != n+1 || l.Dropped() != 0 || l.Failed() != 0 {
		t.Fatalf("%d lines, written %d, dropped %d, failed %d; want %d lines all written", len(evs), l.Written(), l.Dropped(), l.Failed(), n+1)
	}
	first := evs[0]
	for k, want := range map[string]any{
		"path":                "acgs/main/decision",
		"timestamp":           "2026-12-01T12:00:00Z",
		"req_id":              "req-1",
		"cache_tier":          "l1",
		"constitutional_hash": "cdd01ef066bc6cf2",
	} {
		if first[k] != want {
			t.Errorf("%s = %v, want %v", k, first[k], want)
		}
	}
	if rev := first["bundles"].(map[string]any)["acgs"].(map[string]any)["revision"]; rev != "rev-7" {
		t.Errorf("bundles.acgs.revision = %v", rev)
	}
	if lb := first["labels"].(map[string]any); lb["id"] != "inst-1" || lb["version"] != "0.1.0" {
		t.Errorf("labels = %v, want the configured ones", lb)
	}
	if in := first["input"].(map[string]any); in["html"] != "<b>&</b>" {
		t.Errorf("input.html = %v: HTML must not be escaped", in["html"])
	}
	for _, k := range []string{"erased", "error", "batch_decision_id"} {
		if _, ok := first[k]; ok {
			t.Errorf("%s present although empty", k)
		}
	}
	last := evs[n]
	if id, _ := last["decision_id"].(string); uuid.Validate(id) != nil {
		t.Errorf("filled decision_id %q is not a UUID", id)
	}
	if ts, _ := last["timestamp"].(string); !strings.HasSuffix(ts, "Z") || strings.HasPrefix(ts, "0001") {
		t.Errorf("filled timestamp %q, want a current UTC time", ts)
	}
	if lb := last["labels"].(map[string]any); lb["id"] != "own" {
		t.Errorf("event's own labels replaced: %v", lb)
	}
}

func TestDecisionLogMask(t *testing.T) {
	input := func() map[string]any {
		return map[string]any{
			"type": "action_authorization",
			"context": map[string]any{
				"agent":    map[string]any{"id": "agent-7", "role": "reader"},
				"tokens":   []any{"t0", map[string]any{"secret": "s1", "keep": "k"}},
				"a/b":      "slash",
				"tilde~":   "tilde",
				"password": "hunter2",
			},
			"constitutional_hash": "cdd01ef066bc6cf2",
		}
	}
	tests := []struct {
		name       string
		mask       []string
		wantErased []string
		check      func(t *testing.T, in map[string]any)
	}{
		{
			name:       "nested object field",
			mask:       []string{"/context/agent/id"},
			wantErased: []string{"/input/context/agent/id"},
			check: func(t *testing.T, in map[string]any) {
				agent := in["context"].(map[string]any)["agent"].(map[string]any)
				if _, ok := agent["id"]; ok || agent["role"] != "reader" {
					t.Errorf("agent = %v, want id erased and role kept", agent)
				}
			},
		},
		{
			name:       "missing paths are skipped",
			mask:       []string{"/context/nope", "/nope/deeper", "/context/agent/id/deeper", "/context/tokens/9", "/context/tokens/x"},
			wantErased: nil,
			check: func(t *testing.T, in map[string]any) {
				if !reflect.DeepEqual(in, input()) {
					t.Errorf("input changed although no pointer matched: %v", in)
				}
			},
		},
		{
			name:       "array element and inside an array",
			mask:       []string{"/context/tokens/1/secret", "/context/tokens/0"},
			wantErased: []string{"/input/context/tokens/1/secret", "/input/context/tokens/0"},
			check: func(t *testing.T, in map[string]any) {
				toks := in["context"].(map[string]any)["tokens"].([]any)
				if len(toks) != 2 || toks[0] != nil || !reflect.DeepEqual(toks[1], map[string]any{"keep": "k"}) {
					t.Errorf("tokens = %#v, want [nil {keep:1}]", toks)
				}
			},
		},
		{
			name:       "escaped tokens and a whole subtree",
			mask:       []string{"/context/a~1b", "/context/tilde~0", "/context/agent"},
			wantErased: []string{"/input/context/a~1b", "/input/context/tilde~0", "/input/context/agent"},
			check: func(t *testing.T, in map[string]any) {
				ctx := in["context"].(map[string]any)
				for _, k := range []string{"a/b", "tilde~", "agent"} {
					if _, ok := ctx[k]; ok {
						t.Errorf("context[%q] not erased", k)
					}
				}
				if ctx["password"] != "hunter2" {
					t.Errorf("unmasked field lost")
				}
			},
		},
		{
			// The form OPA's mask policies use, and the log's erased field
			// shows: it must mask what the relative form masks.
			name:       "pointers under /input, as OPA writes them",
			mask:       []string{"/input/context/agent/id", "/input/context/tokens/1/secret", "/context/password"},
			wantErased: []string{"/input/context/agent/id", "/input/context/tokens/1/secret", "/input/context/password"},
			check: func(t *testing.T, in map[string]any) {
				ctx := in["context"].(map[string]any)
				if _, ok := ctx["agent"].(map[string]any)["id"]; ok {
					t.Errorf("/input/context/agent/id not erased: %v", ctx["agent"])
				}
				if _, ok := ctx["password"]; ok {
					t.Errorf("/context/password not erased")
				}
				if toks := ctx["tokens"].([]any); !reflect.DeepEqual(toks[1], map[string]any{"keep": "k"}) {
					t.Errorf("tokens = %#v, want the secret erased", toks)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sink := &memSink{}
			l, err := NewDecisionLog(DecisionLogConfig{Writer: sink, Mask: tt.mask})
			if err != nil {
				t.Fatal(err)
			}
			shared := input()
			l.Log(&DecisionEvent{Path: "acgs/main/decision", Input: shared})
			closeLog(t, l)
			if !reflect.DeepEqual(shared, input()) {
				t.Fatalf("the caller's input was modified: %v", shared)
			}
			evs := sink.events(t)
			if len(evs) != 1 {
				t.Fatalf("%d events", len(evs))
			}
			var erased []string
			if e, ok := evs[0]["erased"].([]any); ok {
				for _, x := range e {
					erased = append(erased, x.(string))
				}
			}
			if !reflect.DeepEqual(erased, tt.wantErased) {
				t.Errorf("erased = %v, want %v", erased, tt.wantErased)
			}
			in, _ := evs[0]["input"].(map[string]any)
			tt.check(t, in)
		})
	}
}

// TestMaskNonGenericInput: a typed input (struct) is converted through JSON
// before masking, and the struct itself is left alone.
func TestMaskNonGenericInput(t *testing.T) {
	type agent struct {
		ID   string `json:"id"`
		Role string `json:"role"`
	}
	type req struct {
		Agent agent `json:"agent"`
	}
	in := &req{Agent: agent{ID: "a1", Role: "r"}}
	p, err := parseMaskPointer("/agent/id")
	if err != nil {
		t.Fatal(err)
	}
	out, erased := maskInput(in, []maskPointer{p})
	if in.Agent.ID != "a1" {
		t.Fatal("typed input modified")
	}
	want := map[string]any{"agent": map[string]any{"role": "r"}}
	if !reflect.DeepEqual(out, want) || !reflect.DeepEqual(erased, []string{"/input/agent/id"}) {
		t.Errorf("masked = %v erased %v", out, erased)
	}
}

// TestNullInputLoggedWithAMask: a null input (cache.NullInput, as a
// request's input=null gives) is logged as "input": null whether a mask is
// configured or not, never like a request without input (no field).
func TestNullInputLoggedWithAMask(t *testing.T) {
	for _, mask := range [][]string{nil, {"/password"}} {
		path := filepath.Join(t.TempDir(), "decisions.jsonl")
		l, err := NewDecisionLog(DecisionLogConfig{Sink: "file:" + path, Mask: mask})
		if err != nil {
			t.Fatal(err)
		}
		l.Log(&DecisionEvent{Path: "t/x", Input: cache.NullInput})
		l.Log(&DecisionEvent{Path: "t/x"})
		closeLog(t, l)
		b, err := os.ReadFile(path)
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if err != nil || len(lines) != 2 || !strings.Contains(lines[0], `"input":null`) || strings.Contains(lines[1], `"input"`) {
			t.Errorf("mask %v: a null input, then none:\n%s", mask, b)
		}
	}
}

// TestMaskPointerForms: only a leading /input/ segment is taken off (an
// input field named input is /input/input/...), and /result is refused
// with a message that says result masking is not supported and names the
// form to use.
func TestMaskPointerForms(t *testing.T) {
	for p, want := range map[string][]string{
		"/context/agent/id":       {"context", "agent", "id"},
		"/input/context/agent/id": {"context", "agent", "id"},
		"/input/input/x":          {"input", "x"},
		"/inputs/x":               {"inputs", "x"},
		"/input~1x":               {"input/x"},
		"/results/x":              {"results", "x"},
		"/input/result/x":         {"result", "x"},
	} {
		mp, err := parseMaskPointer(p)
		if err != nil || !reflect.DeepEqual(mp.segs, want) {
			t.Errorf("parseMaskPointer(%q) = %q, %v; want %q", p, mp.segs, err, want)
		}
	}
	_, err := parseMaskPointer("/result/allow")
	if err == nil || !strings.Contains(err.Error(), "not supported") || !strings.Contains(err.Error(), "/input/context/agent/id") {
		t.Errorf("/result/allow: %v, want a refusal saying result masking is not supported and naming the input form", err)
	}
}

func TestParseDecisionLogSink(t *testing.T) {
	tests := []struct {
		sink    string
		wantErr bool
	}{
		{"off", false},
		{"", false},
		{"stdout", false},
		{"file:/var/log/acgs/decisions.jsonl", false},
		{"file:relative.jsonl", false},
		{"file:", true},
		{"stderr", true},
		{"STDOUT", true},
		{"http://collector", true},
	}
	for _, tt := range tests {
		t.Run(tt.sink, func(t *testing.T) {
			if err := ParseDecisionLogSink(tt.sink); (err != nil) != tt.wantErr {
				t.Errorf("ParseDecisionLogSink(%q) = %v, want error %v", tt.sink, err, tt.wantErr)
			}
		})
	}
}

func TestNewDecisionLogRejects(t *testing.T) {
	tests := []struct {
		name string
		cfg  DecisionLogConfig
	}{
		{"bad sink", DecisionLogConfig{Sink: "syslog"}},
		{"negative queue", DecisionLogConfig{Sink: "stdout", QueueSize: -1}},
		{"pointer without slash", DecisionLogConfig{Sink: "stdout", Mask: []string{"context/agent"}}},
		{"empty pointer", DecisionLogConfig{Sink: "stdout", Mask: []string{""}}},
		{"bad escape", DecisionLogConfig{Sink: "stdout", Mask: []string{"/a~2b"}}},
		{"the whole input, OPA's form", DecisionLogConfig{Sink: "stdout", Mask: []string{"/input"}}},
		{"a result field", DecisionLogConfig{Sink: "stdout", Mask: []string{"/result/reasons"}}},
		{"the whole result", DecisionLogConfig{Sink: "stdout", Mask: []string{"/result"}}},
		{"unwritable file", DecisionLogConfig{Sink: "file:/nonexistent-dir/x/decisions.jsonl"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if l, err := NewDecisionLog(tt.cfg); err == nil {
				_ = l.Close(context.Background())
				t.Errorf("NewDecisionLog(%+v) accepted", tt.cfg)
			}
		})
	}
}

func TestDecisionLogFileSink(t *testing.T) {
	path := filepath.Join(t.TempDir(), "decisions.jsonl")
	if err := os.WriteFile(path, []byte("{\"previous\":true}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := NewDecisionLog(DecisionLogConfig{Sink: "file:" + path})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		l.Log(&DecisionEvent{Path: "p"})
	}
	closeLog(t, l)
	l.Log(&DecisionEvent{Path: "after close"})
	if l.Dropped() != 1 {
		t.Errorf("Log after Close: dropped = %d, want 1", l.Dropped())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Count(string(b), "\n"); lines != 4 || !strings.HasPrefix(string(b), "{\"previous\":true}\n") {
		t.Errorf("file has %d lines, want the previous one kept and 3 appended:\n%s", lines, b)
	}
}

func TestDecisionLogOffAndNil(t *testing.T) {
	l, err := NewDecisionLog(DecisionLogConfig{Sink: "off"})
	if err != nil {
		t.Fatal(err)
	}
	var nilLog *DecisionLog
	for _, lg := range []*DecisionLog{l, nilLog} {
		lg.Log(&DecisionEvent{Path: "p"})
		if err := lg.Close(context.Background()); err != nil {
			t.Errorf("Close: %v", err)
		}
		if lg.Dropped()+lg.Written()+lg.Failed() != 0 || lg.Queued() != 0 || lg.QueueCapacity() != 0 {
			t.Errorf("an off log counted something")
		}
	}
}

func TestDecisionLogWriteAndEncodeErrors(t *testing.T) {
	sink := &memSink{fail: errors.New("disk full")}
	l, err := NewDecisionLog(DecisionLogConfig{Writer: sink})
	if err != nil {
		t.Fatal(err)
	}
	l.Log(&DecisionEvent{Path: "p"})
	l.Log(&DecisionEvent{Path: "p", Result: make(chan int)}) // cannot be encoded
	closeLog(t, l)
	if l.Failed() != 2 || l.Written() != 0 {
		t.Errorf("failed %d written %d, want 2 failed", l.Failed(), l.Written())
	}
}

// TestDecisionLogWriteBound checks that batches respect the Write size bound
// (4096 bytes for stdout, where larger writes to a pipe are not atomic) and
// hold whole lines; a single event larger than the bound goes alone.
func TestDecisionLogWriteBound(t *testing.T) {
	tests := []struct {
		name   string
		bound  int
		events []int // approximate input size of each event
	}{
		{"small events batch up to the bound", 4096, repeatInts(300, 2000)},
		{"an event larger than the bound goes alone", 4096, append(append(repeatInts(50, 10), 20000), repeatInts(50, 10)...)},
		{"tiny bound", 1, repeatInts(10, 100)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A slow first write lets the queue fill so that batching happens.
			sink := &memSink{delay: time.Millisecond}
			l, err := NewDecisionLog(DecisionLogConfig{Writer: sink, QueueSize: len(tt.events), batchBytes: tt.bound})
			if err != nil {
				t.Fatal(err)
			}
			for _, size := range tt.events {
				l.Log(&DecisionEvent{Path: "p", Input: map[string]any{"pad": strings.Repeat("x", size)}})
			}
			closeLog(t, l)
			if got := len(sink.events(t)); got != len(tt.events) || l.Failed() != 0 {
				t.Fatalf("%d events written (failed %d), want %d", got, l.Failed(), len(tt.events))
			}
			sink.mu.Lock()
			defer sink.mu.Unlock()
			var batched bool
			for i, n := range sink.sizes {
				if n > tt.bound && sink.lines[i] != 1 {
					t.Errorf("a write of %d bytes and %d lines exceeds the bound %d", n, sink.lines[i], tt.bound)
				}
				if sink.lines[i] > 1 {
					batched = true
				}
			}
			if tt.bound >= 4096 && !batched {
				t.Errorf("no batching seen: write sizes %v", sink.sizes)
			}
		})
	}
}

func repeatInts(v, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = v
	}
	return out
}

// TestDecisionLogCloseDeadline: a sink that never returns in time must not
// hold Close past its deadline, and what is abandoned is counted.
func TestDecisionLogCloseDeadline(t *testing.T) {
	release := make(chan struct{})
	blocked := writerFunc(func(p []byte) (int, error) { <-release; return len(p), nil })
	l, err := NewDecisionLog(DecisionLogConfig{Writer: blocked, QueueSize: 16})
	if err != nil {
		t.Fatal(err)
	}
	const n = 10
	for range n {
		l.Log(&DecisionEvent{Path: "p"})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := l.Close(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Close with a dead context = %v, want context.Canceled", err)
	}
	close(release)
	<-l.done
	if got := l.Written() + l.Dropped(); got != n {
		t.Errorf("written %d + dropped %d = %d, want %d", l.Written(), l.Dropped(), got, n)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// TestDecisionLogSlowSinkDrops: with a sink far slower than the callers, the
// queue fills and events are dropped and counted — Log does not wait. The
// per-call cost of Log with a slow and a fast sink is reported, not asserted.
func TestDecisionLogSlowSinkDrops(t *testing.T) {
	const n = 20000
	run := func(sink *memSink, queue int) (perLog time.Duration, l *DecisionLog) {
		l, err := NewDecisionLog(DecisionLogConfig{Writer: sink, QueueSize: queue})
		if err != nil {
			t.Fatal(err)
		}
		evs := make([]*DecisionEvent, n)
		for i := range evs {
			evs[i] = &DecisionEvent{DecisionID: NewDecisionID(), Path: "acgs/main/decision", Input: map[string]any{"i": i}, CacheTier: "l1"}
		}
		start := time.Now()
		for _, e := range evs {
			l.Log(e)
		}
		perLog = time.Since(start) / n
		closeLog(t, l)
		return perLog, l
	}
	slowSink := &memSink{delay: 5 * time.Millisecond}
	slowPer, slow := run(slowSink, 64)
	fastSink := &memSink{}
	fastPer, fast := run(fastSink, n)

	t.Logf("Log() with a slow sink (5ms per write, queue 64): %v per call; written %d, dropped %d, sink writes %d",
		slowPer, slow.Written(), slow.Dropped(), slowSink.writes)
	t.Logf("Log() with a fast sink (memory, queue %d):        %v per call; written %d, dropped %d, sink writes %d",
		n, fastPer, fast.Written(), fast.Dropped(), fastSink.writes)

	if slow.Dropped() == 0 {
		t.Errorf("slow sink: nothing dropped")
	}
	for name, l := range map[string]*DecisionLog{"slow": slow, "fast": fast} {
		if got := l.Written() + l.Dropped() + l.Failed(); got != n {
			t.Errorf("%s: written %d + dropped %d + failed %d = %d, want %d logged", name, l.Written(), l.Dropped(), l.Failed(), got, n)
		}
	}
	if got := uint64(len(slowSink.events(t))); got != slow.Written() {
		t.Errorf("slow sink holds %d lines, log says %d written", got, slow.Written())
	}
	if fast.Dropped() != 0 {
		t.Errorf("fast sink with a queue as large as the burst dropped %d", fast.Dropped())
	}
}

var uuidV4 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestNewDecisionID(t *testing.T) {
	seen := make(map[string]bool, 10000)
	for range 10000 {
		id := NewDecisionID()
		if !uuidV4.MatchString(id) {
			t.Fatalf("%q is not a version-4 UUID", id)
		}
		u := uuid.MustParse(id)
		if u.Version() != 4 || u.Variant() != uuid.RFC4122 {
			t.Fatalf("%q: version %v variant %v", id, u.Version(), u.Variant())
		}
		if seen[id] {
			t.Fatalf("duplicate %q", id)
		}
		seen[id] = true
	}
}

func BenchmarkNewDecisionID(b *testing.B) {
	b.Run("math-rand-v2", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				_ = NewDecisionID()
			}
		})
	})
	b.Run("uuid.NewString-crypto-rand", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				_ = uuid.NewString()
			}
		})
	})
}

// BenchmarkDecisionLogLog measures the request-path cost of Log with a sink
// that keeps up and with one that does not (drops).
func BenchmarkDecisionLogLog(b *testing.B) {
	for _, bc := range []struct {
		name  string
		delay time.Duration
	}{{"fast-sink", 0}, {"slow-sink-5ms", 5 * time.Millisecond}} {
		b.Run(bc.name, func(b *testing.B) {
			l, err := NewDecisionLog(DecisionLogConfig{Writer: &memSink{delay: bc.delay}, QueueSize: 1024})
			if err != nil {
				b.Fatal(err)
			}
			e := DecisionEvent{Path: "acgs/main/decision", Input: map[string]any{"type": "data_access"}, CacheTier: "l1"}
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					ev := e
					l.Log(&ev)
				}
			})
			b.StopTimer()
			_ = l.Close(context.Background())
			b.ReportMetric(float64(l.Dropped())/float64(b.N), "dropped/op")
		})
	}
}

// cutSink is a sink whose Writes can fail part-way, as a write to a full
// disk does: cut(call, p) returns how many bytes of the call-th Write (from
// 1) land before it fails, or -1 for a Write that succeeds. With hold set,
// the first Write waits for it to be closed, so that a test can queue a
// batch behind it.
type cutSink struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	calls int
	cut   func(call int, p []byte) int
	held  chan struct{} // the first Write has started (with hold)
	hold  chan struct{}
}

func (s *cutSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	s.calls++
	call := s.calls
	s.mu.Unlock()
	if call == 1 && s.hold != nil {
		close(s.held)
		<-s.hold
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := s.cut(call, p); n >= 0 {
		s.buf.Write(p[:n])
		return n, errors.New("no space left on device")
	}
	return s.buf.Write(p)
}

func (s *cutSink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// waitHandled waits until the log has written or failed n events in all.
func waitHandled(t *testing.T, l *DecisionLog, n uint64) {
	t.Helper()
	// A bound for a writer that stopped, not a speed: writing a 32 MiB
	// event under -race on a loaded machine took more than 10 s (flaky).
	deadline := time.Now().Add(60 * time.Second)
	for l.Written()+l.Failed() < n {
		if time.Now().After(deadline) {
			t.Fatalf("after 60s: written %d failed %d, want %d handled", l.Written(), l.Failed(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestDecisionLogPartialWrite: a Write that fails part-way (a full disk)
// leaves a fragment of a line. The next records must start on a line of
// their own and link to the fragment (the last line, as verify and a reopen
// see it), only the lines that landed whole count as written, and a Write
// that fails entirely must not leave the chain linking to records that
// never landed: verify then reports the fragment alone.
func TestDecisionLogPartialWrite(t *testing.T) {
	ts := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	event := func(name string) *DecisionEvent {
		return &DecisionEvent{
			DecisionID: "00000000-0000-4000-8000-00000000000" + name[:1],
			Path:       "acgs/main/decision", Input: map[string]any{"name": name, "pad": strings.Repeat("x", 200)},
			Timestamp: ts, CacheTier: "none",
		}
	}
	firstLine := func(p []byte) int { return bytes.IndexByte(p, '\n') + 1 }
	tests := []struct {
		name string
		// cut as in cutSink; batch, when set, queues the events after the
		// first behind a held first Write, so that they are written in
		// batches rather than one by one.
		cut       func(call int, p []byte) int
		batch     bool
		halfBatch bool
		events    []string
		lines     int   // lines in the sink
		torn      []int // 1-based lines that are fragments
		written   uint64
		failed    uint64
	}{
		{
			name:    "a write torn in the middle of a record",
			cut:     func(call int, p []byte) int { return map[bool]int{true: 20, false: -1}[call == 2] },
			events:  []string{"a", "b", "c"},
			lines:   3,
			torn:    []int{2},
			written: 2, failed: 1,
		},
		{
			name:    "a write that fails entirely",
			cut:     func(call int, p []byte) int { return map[bool]int{true: 0, false: -1}[call == 2] },
			events:  []string{"a", "b", "c"},
			lines:   2,
			written: 2, failed: 1,
		},
		{
			name: "the newline that ends the fragment fails too",
			cut: func(call int, p []byte) int {
				switch call {
				case 2:
					return 20
				case 3: // the newline before c
					return 0
				}
				return -1
			},
			events:  []string{"a", "b", "c", "d"},
			lines:   3, // a, b's fragment, d
			torn:    []int{2},
			written: 2, failed: 2,
		},
		{
			name: "a batch torn after its first record",
			cut: func(call int, p []byte) int {
				if call == 2 {
					return firstLine(p) + 10
				}
				return -1
			},
			batch:   true,
			events:  []string{"w", "a", "b", "c", "d"}, // a, b, c in one batch
			lines:   4,                                 // w, a, b's fragment, d
			torn:    []int{3},
			written: 3, failed: 2,
		},
		{
			name: "the flush before a record that would overflow the batch fails part-way",
			cut: func(call int, p []byte) int {
				if call == 2 {
					return 10
				}
				return -1
			},
			batch:     true,
			halfBatch: true, // a is flushed when b is encoded
			events:    []string{"w", "a", "b", "c"},
			lines:     4, // w, a's fragment, b, c
			torn:      []int{2},
			written:   3, failed: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sink := &cutSink{cut: tt.cut}
			if tt.batch {
				sink.held, sink.hold = make(chan struct{}), make(chan struct{})
			}
			cfg := DecisionLogConfig{Writer: sink, Chain: true, Logger: slog.New(slog.DiscardHandler)}
			if tt.halfBatch {
				e := event("a")
				e.PrevHash = ChainGenesis
				b, err := json.Marshal(e)
				if err != nil {
					t.Fatal(err)
				}
				cfg.batchBytes = (len(b) + 1) * 3 / 2
			}
			l, err := NewDecisionLog(cfg)
			if err != nil {
				t.Fatal(err)
			}
			for i, name := range tt.events {
				l.Log(event(name))
				switch {
				case !tt.batch:
					waitHandled(t, l, uint64(i+1))
				case i == 0:
					<-sink.held
				case i == len(tt.events)-2: // all but the last queued behind the first
					close(sink.hold)
					waitHandled(t, l, uint64(i+1))
				case i == len(tt.events)-1:
					waitHandled(t, l, uint64(i+1))
				}
			}
			closeLog(t, l)
			out := sink.String()
			lines := strings.SplitAfter(out, "\n")
			if lines[len(lines)-1] == "" {
				lines = lines[:len(lines)-1]
			}
			if len(lines) != tt.lines {
				t.Fatalf("%d lines, want %d:\n%s", len(lines), tt.lines, out)
			}
			if l.Written() != tt.written || l.Failed() != tt.failed {
				t.Errorf("written %d failed %d, want %d and %d", l.Written(), l.Failed(), tt.written, tt.failed)
			}
			rep := verify(t, out, VerifyChainOptions{Head: l.ChainHead()})
			var bad []int
			for _, p := range rep.Problems {
				bad = append(bad, p.Line)
				if !strings.Contains(p.Reason, "not a JSON record") {
					t.Errorf("line %d: %s", p.Line, p.Reason)
				}
			}
			if !reflect.DeepEqual(bad, tt.torn) {
				t.Errorf("verify found problems on lines %v, want only the fragments %v: %+v", bad, tt.torn, rep)
			}
			// The last event logged is always whole: the sink recovered.
			var last map[string]any
			if err := json.Unmarshal([]byte(lines[len(lines)-1]), &last); err != nil || last["input"].(map[string]any)["name"] != tt.events[len(tt.events)-1] {
				t.Errorf("last line %q is not the last event (%v)", lines[len(lines)-1], err)
			}
		})
	}
}

// followingLog is a chained file log at path that checks its path before
// every write, and the buffer its own messages go to.
func followingLog(t *testing.T, path string) (*DecisionLog, *testenv.SyncBuffer) {
	t.Helper()
	logBuf := &testenv.SyncBuffer{}
	l, err := NewDecisionLog(DecisionLogConfig{
		Sink: "file:" + path, Chain: true, reopenEvery: time.Nanosecond,
		Logger: slog.New(slog.NewTextHandler(logBuf, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	return l, logBuf
}

// followingLogWithARecord is followingLog with one record written.
func followingLogWithARecord(t *testing.T, path string) (*DecisionLog, *testenv.SyncBuffer) {
	t.Helper()
	l, logBuf := followingLog(t, path)
	l.Log(&DecisionEvent{Path: "p"})
	waitHandled(t, l, 1)
	return l, logBuf
}

// TestDecisionLogFollowsItsPath: a file renamed away (logrotate's default)
// or removed is followed by a new file at the path, and the chain runs on
// across the files: each verifies from the previous one's head.
func TestDecisionLogFollowsItsPath(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "decisions.jsonl")
	l, logBuf := followingLog(t, path)
	written := uint64(0)
	logN := func(n int) {
		for range n {
			l.Log(&DecisionEvent{Path: "p"})
		}
		written += uint64(n)
		waitHandled(t, l, written)
	}
	logN(3)
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	logN(2)
	if err := os.Rename(path, path+".2"); err != nil {
		t.Fatal(err)
	}
	// logrotate's create: an empty file is put at the path at once.
	if err := os.WriteFile(path, nil, 0o640); err != nil {
		t.Fatal(err)
	}
	logN(4)
	if err := os.Rename(path, path+".3"); err != nil {
		t.Fatal(err)
	}
	logN(1)
	removed, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	logN(2)
	closeLog(t, l)
	if l.Failed() != 0 || l.Dropped() != 0 {
		t.Fatalf("failed %d, dropped %d", l.Failed(), l.Dropped())
	}

	from := ""
	for _, f := range []struct {
		name    string
		records int
	}{{".1", 3}, {".2", 2}, {".3", 4}, {" (removed)", 1}, {"", 2}} {
		b := removed
		if f.name != " (removed)" {
			if b, err = os.ReadFile(path + f.name); err != nil {
				t.Fatal(err)
			}
		}
		rep, err := VerifyChain(bytes.NewReader(b), VerifyChainOptions{From: from})
		if err != nil {
			t.Fatal(err)
		}
		if !rep.OK() || rep.Records != f.records {
			t.Errorf("decisions.jsonl%s: %d records, problems %v; want %d records linked from %q", f.name, rep.Records, rep.Problems, f.records, from)
		}
		from = rep.Head
	}
	logged := logBuf.String()
	if got := strings.Count(logged, "writing to a new file at its path"); got != 4 {
		t.Errorf("logged %d switches, want 4:\n%s", got, logged)
	}
}

// TestDecisionLogFollowsIntoAFileThatHoldsLines: a file put at the path
// after a rename that already ends in a torn line gets our records on lines
// of their own after it, with a warning, as a file opened at start does.
func TestDecisionLogFollowsIntoAFileThatHoldsLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "decisions.jsonl")
	l, logBuf := followingLogWithARecord(t, path)
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(`{"path":"torn`), 0o640); err != nil {
		t.Fatal(err)
	}
	l.Log(&DecisionEvent{Path: "after"})
	closeLog(t, l)
	wantAfterFragment(t, path)
	logged := logBuf.String()
	if !strings.Contains(logged, "already holds lines") {
		t.Errorf("no warning that the new file held lines:\n%s", logged)
	}
}

// wantAfterFragment checks that the file at path holds the fragment
// {"path":"torn, then the record of path "after" on a line of its own.
func wantAfterFragment(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	var rec DecisionEvent
	if len(lines) != 2 || lines[0] != `{"path":"torn` || json.Unmarshal([]byte(lines[1]), &rec) != nil || rec.Path != "after" {
		t.Fatalf("want the fragment, then the record on a line of its own:\n%s", b)
	}
}

// TestDecisionLogStartsAfterATornLine: a file sink without the chain also
// starts its first record on a line of its own after a torn last line.
func TestDecisionLogStartsAfterATornLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "decisions.jsonl")
	if err := os.WriteFile(path, []byte(`{"path":"torn`), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := NewDecisionLog(DecisionLogConfig{Sink: "file:" + path})
	if err != nil {
		t.Fatal(err)
	}
	l.Log(&DecisionEvent{Path: "after"})
	closeLog(t, l)
	wantAfterFragment(t, path)
}

// TestDecisionLogWriteOnlyFile: a log without the chain may be a file it
// can write but not read (its last line is then unknown, and not needed);
// one with the chain needs that line, and says so. Root reads any file:
// the test needs another user.
func TestDecisionLogWriteOnlyFile(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root can read a write-only file")
	}
	path := filepath.Join(t.TempDir(), "decisions.jsonl")
	if err := os.WriteFile(path, []byte("{\"previous\":true}\n"), 0o200); err != nil {
		t.Fatal(err)
	}
	l, err := NewDecisionLog(DecisionLogConfig{Sink: "file:" + path})
	if err != nil {
		t.Fatalf("without the chain: %v", err)
	}
	l.Log(&DecisionEvent{Path: "p"})
	closeLog(t, l)
	if l.Written() != 1 {
		t.Errorf("written %d, want 1", l.Written())
	}
	if _, err := NewDecisionLog(DecisionLogConfig{Sink: "file:" + path, Chain: true}); err == nil {
		t.Error("with the chain: a file whose last line cannot be read was accepted")
	}
}

// TestDecisionLogFIFOWhoseReaderLeaves: a FIFO sink is opened write-only.
// Opened read-write, the log would be its own reader: once the real reader
// left, its writes would fill the pipe, counted as written, then block, and
// Close would time out. Write-only, they fail with EPIPE and are counted.
func TestDecisionLogFIFOWhoseReaderLeaves(t *testing.T) {
	path := filepath.Join(t.TempDir(), "decisions.fifo")
	if err := unix.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	read := make(chan int, 1)
	go func() { // reads a little, then leaves
		f, err := os.Open(path)
		if err != nil {
			read <- -1
			return
		}
		n, _ := io.ReadFull(f, make([]byte, 2000))
		_ = f.Close()
		read <- n
	}()
	l := openFIFOLog(t, path, DecisionLogConfig{Logger: slog.New(slog.DiscardHandler)})
	for range 50 { // more than the 2,000 bytes the reader takes
		l.Log(&DecisionEvent{Path: "before", Input: strings.Repeat("x", 100)})
	}
	if n := <-read; n != 2000 {
		t.Fatalf("the reader read %d bytes", n)
	}
	for range 2000 { // more than a pipe holds
		l.Log(&DecisionEvent{Path: "after", Input: strings.Repeat("x", 100)})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := l.Close(ctx); err != nil {
		t.Fatalf("Close: %v (written %d, failed %d)", err, l.Written(), l.Failed())
	}
	if l.Failed() == 0 {
		t.Errorf("written %d, failed 0: writes after the reader left were counted as written", l.Written())
	}
}

// openFIFOLog opens a decision log on the FIFO at path, waiting (as a log
// does at start) for a reader to open it: a started reader, waiting in its
// open for a writer, counts.
func openFIFOLog(t *testing.T, path string, cfg DecisionLogConfig) *DecisionLog {
	t.Helper()
	cfg.Sink = "file:" + path
	l, err := NewDecisionLog(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestDecisionLogFIFOWithoutAReader: a FIFO no process reads is waited for
// (a reader started later, as a sidecar is), then refused with a message
// that says why; the open used to wait for a reader for good, deaf to
// SIGTERM.
func TestDecisionLogFIFOWithoutAReader(t *testing.T) {
	path := filepath.Join(t.TempDir(), "decisions.fifo")
	if err := unix.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	logBuf := &testenv.SyncBuffer{}
	done := make(chan error, 1)
	go func() {
		l, err := NewDecisionLog(DecisionLogConfig{Sink: "file:" + path, Chain: true, startWait: 200 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(logBuf, nil))})
		if err == nil {
			closeLog(t, l)
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "no process has the FIFO open for reading") {
			t.Errorf("a FIFO without a reader: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("opening a FIFO without a reader waited past its bound")
	}
	if logged := logBuf.String(); !strings.Contains(logged, "waiting for a process to open the FIFO") {
		t.Errorf("no word that it waits for a reader:\n%s", logged)
	}
}

// TestDecisionLogSocketSink: a socket at the sink's path (or /dev/stdout
// when stdout is a socket, as under systemd) cannot be opened as a file,
// and the refusal says so rather than blaming a FIFO's reader.
func TestDecisionLogSocketSink(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, err = NewDecisionLog(DecisionLogConfig{Sink: "file:" + path, startWait: time.Second})
	if err == nil || !strings.Contains(err.Error(), "is a socket") || !strings.Contains(err.Error(), "give the sink stdout") {
		t.Errorf("a socket sink: %v", err)
	}
}

// TestDecisionLogDoesNotFollowIntoAFIFO: a log file renamed away with a
// FIFO put at its path (nobody reading it) stays on the renamed file, with
// a warning: a switch into the FIFO would wait for a reader, holding every
// record back and Close with them.
func TestDecisionLogDoesNotFollowIntoAFIFO(t *testing.T) {
	path := filepath.Join(t.TempDir(), "decisions.jsonl")
	l, logBuf := followingLogWithARecord(t, path)
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		l.Log(&DecisionEvent{Path: "p"})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := l.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if l.Written() != 6 || l.Failed() != 0 {
		t.Errorf("written %d, failed %d; want 6 written to the renamed file", l.Written(), l.Failed())
	}
	b, err := os.ReadFile(path + ".1")
	if err != nil {
		t.Fatal(err)
	}
	if rep, err := VerifyChain(bytes.NewReader(b), VerifyChainOptions{}); err != nil || !rep.OK() || rep.Records != 6 {
		t.Errorf("the renamed file: %+v, %v", rep, err)
	}
	if st, err := os.Lstat(path); err != nil || st.Mode().Type() != fs.ModeNamedPipe {
		t.Errorf("the FIFO at the path: %v, %v", st, err)
	}
	if logged := logBuf.String(); !strings.Contains(logged, "is not a regular file") {
		t.Errorf("no warning that the path is not a regular file:\n%s", logged)
	}
}

// TestDecisionLogFIFOSinkIsNotFollowed: a FIFO sink whose FIFO is removed
// (a log shipper that restarts with rm and mkfifo) does not get a regular
// file created in its place.
func TestDecisionLogFIFOSinkIsNotFollowed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "decisions.fifo")
	if err := unix.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	go func() { // reads everything
		if f, err := os.Open(path); err == nil {
			_, _ = io.Copy(io.Discard, f)
			_ = f.Close()
		}
	}()
	l := openFIFOLog(t, path, DecisionLogConfig{reopenEvery: time.Nanosecond, Logger: slog.New(slog.DiscardHandler)})
	l.Log(&DecisionEvent{Path: "p"})
	waitHandled(t, l, 1)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		l.Log(&DecisionEvent{Path: "p"})
	}
	closeLog(t, l)
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after the FIFO was removed, the path holds a file: %v", err)
	}
}

// TestDecisionLogTornThenTruncated: a write cut short leaves a fragment at
// the end of the file, which the next write ends with a newline; if the
// file was emptied in place meanwhile (copytruncate, or `: > file` to free
// the disk), that newline would be a first line that is not a record.
func TestDecisionLogTornThenTruncated(t *testing.T) {
	path := filepath.Join(t.TempDir(), "decisions.jsonl")
	l, _ := followingLogWithARecord(t, path)
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	// RLIMIT_FSIZE stands in for a full disk: the write past it is cut short.
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_FSIZE, &old); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setrlimit(unix.RLIMIT_FSIZE, &unix.Rlimit{Cur: uint64(st.Size()) + 40, Max: old.Max}); err != nil {
		t.Skipf("cannot lower RLIMIT_FSIZE: %v", err)
	}
	restore := func() {
		if err := unix.Setrlimit(unix.RLIMIT_FSIZE, &old); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(restore) // the limit is the process's: never left low for the tests that follow
	l.Log(&DecisionEvent{Path: "b", Input: strings.Repeat("x", 200)})
	waitHandled(t, l, 2)
	restore()
	if l.Failed() != 1 {
		t.Fatalf("the write past the limit: written %d, failed %d", l.Written(), l.Failed())
	}
	kept, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if kept[len(kept)-1] == '\n' {
		t.Fatalf("the cut write left no fragment:\n%s", kept)
	}
	if err := os.Truncate(path, 0); err != nil { // the copy is kept
		t.Fatal(err)
	}
	l.Log(&DecisionEvent{Path: "c"})
	closeLog(t, l)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	head, err := VerifyChain(bytes.NewReader(kept), VerifyChainOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep, err := VerifyChain(bytes.NewReader(b), VerifyChainOptions{From: head.Head}); err != nil || !rep.OK() || rep.Records != 1 {
		t.Errorf("the file emptied in place, verified from its copy's head: %+v, %v\n%q", rep, err, b)
	}
}

// TestDecisionLogRemovedDirectory: when the log's file is removed and no
// new one can be opened at its path (its directory is gone), records would
// go to a file with no name, lost at close and holding disk space until
// then: they are counted as failed, with a warning, until a file can be
// opened again.
func TestDecisionLogRemovedDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "logs")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "decisions.jsonl")
	l, logBuf := followingLogWithARecord(t, path)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		l.Log(&DecisionEvent{Path: "lost"})
	}
	waitHandled(t, l, 6)
	recordsLost(t, l, logBuf, 1, 5)
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		l.Log(&DecisionEvent{Path: "found"})
	}
	closeLog(t, l)
	if l.Written() != 3 || l.Failed() != 5 {
		t.Errorf("with the directory back: written %d, failed %d; want 3 and 5", l.Written(), l.Failed())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(b, []byte("found")); n != 2 {
		t.Errorf("the new file holds %d of the 2 records:\n%s", n, b)
	}
}

// TestDecisionLogTwoWritersAndAChain: a chained log holds its file's lock
// exclusively and a plain one shares it, so a second log on the path of a
// chained one (acgs serve and acgs gateway given one DECISION_LOG), and a
// chained log on the path of a plain one, are refused instead of putting
// records between the chain's that verify would report broken at each.
// Plain logs may share a file: each appends whole lines.
func TestDecisionLogTwoWritersAndAChain(t *testing.T) {
	path := filepath.Join(t.TempDir(), "decisions.jsonl")
	open := func(chain bool) (*DecisionLog, error) {
		return NewDecisionLog(DecisionLogConfig{Sink: "file:" + path, Chain: chain, startWait: -1})
	}
	refused := func(what string, chain bool) {
		t.Helper()
		if l, err := open(chain); err == nil {
			closeLog(t, l)
			t.Errorf("%s opened the file", what)
		} else if !strings.Contains(err.Error(), "its lock is held") {
			t.Errorf("%s: the refusal does not say why: %v", what, err)
		}
	}
	p1, err := open(false)
	if err != nil {
		t.Fatal(err)
	}
	p2, err := open(false)
	if err != nil {
		t.Fatalf("a second plain log: %v", err)
	}
	refused("a chained log beside plain ones", true)
	closeLog(t, p1)
	closeLog(t, p2)

	a, logBuf := followingLogWithARecord(t, path)
	refused("a second chained log", true)
	refused("a plain log beside a chained one", false)

	// Rotated, with another chained log first at the path: the first stays
	// on its renamed file and says why.
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	b, err := open(true)
	if err != nil {
		t.Fatal(err)
	}
	a.Log(&DecisionEvent{Path: "a"})
	waitHandled(t, a, 2)
	closeLog(t, b)
	closeLog(t, a)
	renamed, err := os.ReadFile(path + ".1")
	if err != nil {
		t.Fatal(err)
	}
	if rep, err := VerifyChain(bytes.NewReader(renamed), VerifyChainOptions{}); err != nil || !rep.OK() || rep.Records != 2 {
		t.Errorf("the renamed file: %+v %v", rep, err)
	}
	if logged := logBuf.String(); !strings.Contains(logged, "its lock is held") {
		t.Errorf("no warning that the new file is another log's:\n%s", logged)
	}
}

// TestDecisionLogWaitsForTheWriterBefore: a chained log started while
// another still holds the file (a gateway restarted as the one before
// finishes its calls and its log) waits for it, then continues its chain.
func TestDecisionLogWaitsForTheWriterBefore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "decisions.jsonl")
	before, err := NewDecisionLog(DecisionLogConfig{Sink: "file:" + path, Chain: true})
	if err != nil {
		t.Fatal(err)
	}
	before.Log(&DecisionEvent{Path: "before"})
	waitHandled(t, before, 1)
	// before is closed once the next log says it waits for it
	// (nextChainedLog fails the test if it never does), not after a
	// sleep: on a loaded machine the next open could begin after the
	// close, with nothing left to wait for.
	opened, _ := nextChainedLog(t, path)
	closeLog(t, before)
	logNext(t, opened)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if rep, err := VerifyChain(bytes.NewReader(b), VerifyChainOptions{}); err != nil || !rep.OK() || rep.Records != 2 {
		t.Errorf("one chain across the two writers: %+v %v\n%s", rep, err, b)
	}
}

// TestDecisionLogFileSystemWithoutLocks: a file system that takes no
// locks (NFS without its lock manager: ENOLCK) does not keep the log from
// opening, at start or at a switch; a warning says that a second writer
// would go unseen.
func TestDecisionLogFileSystemWithoutLocks(t *testing.T) {
	lockFileFn = func(*os.File, bool) error { return syscall.ENOLCK }
	defer func() { lockFileFn = lockFile }()
	path := filepath.Join(t.TempDir(), "decisions.jsonl")
	l, logBuf := followingLogWithARecord(t, path)
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	l.Log(&DecisionEvent{Path: "p"})
	closeLog(t, l)
	if l.Written() != 2 {
		t.Errorf("written %d, failed %d", l.Written(), l.Failed())
	}
	logged := logBuf.String()
	if n := strings.Count(logged, "takes no lock"); n != 2 {
		t.Errorf("%d warnings that the file is not locked, want 2 (start and switch):\n%s", n, logged)
	}
	if !strings.Contains(logged, "writing to a new file at its path") {
		t.Errorf("the log did not switch files:\n%s", logged)
	}
}

// TestDecisionLogDirectoryReplacedByAFile: the log's directory removed and
// a file put in its place (the path cannot even be checked: ENOTDIR); the
// open file has no name left, so records count as failed, with a warning.
func TestDecisionLogDirectoryReplacedByAFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "logs")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	l, logBuf := followingLogWithARecord(t, filepath.Join(dir, "decisions.jsonl"))
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		l.Log(&DecisionEvent{Path: "lost"})
	}
	closeLog(t, l)
	recordsLost(t, l, logBuf, 1, 3)
}

// recordsLost checks the log's counts of records written and failed, and
// that it warned that records are lost (its file removed, none at its path).
func recordsLost(t *testing.T, l *DecisionLog, logBuf *testenv.SyncBuffer, written, failed uint64) {
	t.Helper()
	if l.Written() != written || l.Failed() != failed {
		t.Errorf("written %d, failed %d; want %d and %d", l.Written(), l.Failed(), written, failed)
	}
	if logged := logBuf.String(); !strings.Contains(logged, "records are lost") {
		t.Errorf("no warning that records are lost:\n%s", logged)
	}
}

// TestDecisionLogWaitEndsWithItsContext: a stop signal (the log's Context
// ended) ends a wait at start, for a FIFO's reader or another writer's
// lock, at once instead of at its bound.
func TestDecisionLogWaitEndsWithItsContext(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "decisions.fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	chained := filepath.Join(dir, "decisions.jsonl")
	holder, _ := followingLogWithARecord(t, chained)
	defer closeLog(t, holder)
	for _, path := range []string{fifo, chained} {
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(200*time.Millisecond, cancel)
		done := make(chan error, 1)
		go func() {
			l, err := NewDecisionLog(DecisionLogConfig{Sink: "file:" + path, Chain: true, Context: ctx, startWait: time.Hour, Logger: slog.New(slog.DiscardHandler)})
			if err == nil {
				closeLog(t, l)
			}
			done <- err
		}()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("%s: %v, want the wait ended by its context", filepath.Base(path), err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: the wait did not end with its context", filepath.Base(path))
		}
		cancel()
	}
}

// TestDecisionLogLateFIFOReader: a FIFO's reader that starts while the log
// waits for one (a sidecar started after the service) is taken.
func TestDecisionLogLateFIFOReader(t *testing.T) {
	path := filepath.Join(t.TempDir(), "decisions.fifo")
	if err := unix.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	read := make(chan string, 1)
	time.AfterFunc(300*time.Millisecond, func() {
		f, err := os.Open(path)
		if err != nil {
			read <- err.Error()
			return
		}
		b, _ := io.ReadAll(f)
		_ = f.Close()
		read <- string(b)
	})
	l, err := NewDecisionLog(DecisionLogConfig{Sink: "file:" + path, startWait: 10 * time.Second, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	l.Log(&DecisionEvent{Path: "late"})
	closeLog(t, l)
	if got := <-read; !strings.Contains(got, `"path":"late"`) {
		t.Errorf("the reader read %q", got)
	}
}

// TestDecisionLogNoDeviceIsNotWaitedFor: a device with nothing behind it
// (ENXIO, as /dev/tty without a terminal) is refused at once: only a FIFO
// has a reader to wait for.
func TestDecisionLogNoDeviceIsNotWaitedFor(t *testing.T) {
	f, err := os.OpenFile("/dev/tty", os.O_WRONLY, 0)
	if err == nil {
		_ = f.Close()
		t.Skip("this process has a terminal: /dev/tty opens")
	}
	if !errors.Is(err, syscall.ENXIO) {
		t.Skipf("/dev/tty: %v, not ENXIO", err)
	}
	start := time.Now()
	_, err = NewDecisionLog(DecisionLogConfig{Sink: "file:/dev/tty", startWait: time.Hour, Logger: slog.New(slog.DiscardHandler)})
	if err == nil || strings.Contains(err.Error(), "FIFO") || time.Since(start) > 5*time.Second {
		t.Errorf("/dev/tty without a terminal: %v after %v", err, time.Since(start))
	}
}

// openChainedInBackground opens a chained log at path on another
// goroutine (its open may wait for the lock of the writer before it), with
// where the opened log will be sent and the buffer its own messages go to.
func openChainedInBackground(t *testing.T, path string) (<-chan openedLog, *testenv.SyncBuffer) {
	t.Helper()
	logBuf := &testenv.SyncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	opened := make(chan openedLog, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		l, err := NewDecisionLog(DecisionLogConfig{Sink: "file:" + path, Chain: true, Context: ctx, startWait: 20 * time.Second, Logger: slog.New(slog.NewTextHandler(logBuf, nil))})
		opened <- openedLog{l, err}
	}()
	// A test that ends before it took the log (a failure) ends the wait
	// and closes what was opened: nothing is left running past the test.
	t.Cleanup(func() {
		cancel()
		<-done
		select {
		case r := <-opened:
			if r.log != nil {
				_ = r.log.Close(context.Background())
			}
		default:
		}
	})
	return opened, logBuf
}

// openedLog is what openChainedInBackground's open gave.
type openedLog struct {
	log *DecisionLog
	err error
}

// nextChainedLog is openChainedInBackground, returning once the log waits
// for the lock of the writer before it (it says so in its own log).
func nextChainedLog(t *testing.T, path string) (<-chan openedLog, *testenv.SyncBuffer) {
	t.Helper()
	opened, logBuf := openChainedInBackground(t, path)
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(logBuf.String(), "waiting for the other writer"); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the next log does not wait for the lock:\n%s", logBuf.String())
		}
	}
	return opened, logBuf
}

// logNext takes the log opened in the background, writes one record with
// it and closes it.
func logNext(t *testing.T, opened <-chan openedLog) {
	t.Helper()
	next := <-opened
	if next.err != nil {
		t.Fatal(next.err)
	}
	next.log.Log(&DecisionEvent{Path: "next"})
	closeLog(t, next.log)
}

// chainAcross checks that the rotated file at path.1 holds rotatedRecords
// records, and that the file at path verifies from its head with
// liveRecords.
func chainAcross(t *testing.T, path string, rotatedRecords, liveRecords int) {
	t.Helper()
	rotated, err := os.ReadFile(path + ".1")
	if err != nil {
		t.Fatal(err)
	}
	head, err := VerifyChain(bytes.NewReader(rotated), VerifyChainOptions{})
	if err != nil || !head.OK() || head.Records != rotatedRecords {
		t.Fatalf("the rotated file: %+v %v, want %d records\n%s", head, err, rotatedRecords, rotated)
	}
	live, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if rep, err := VerifyChain(bytes.NewReader(live), VerifyChainOptions{From: head.Head}); err != nil || !rep.OK() || rep.Records != liveRecords {
		t.Errorf("the file at the path, from the rotated file's head: %+v %v, want %d records\n%s", rep, err, liveRecords, live)
	}
}

// TestDecisionLogRotatedDuringItsWait: a chained log waiting for the lock
// of the writer before it, which rotates the file meanwhile and moves on to
// a new one, ends on the file at the path, after the writer before's last
// record there: the chain does not fork into the rotated file.
func TestDecisionLogRotatedDuringItsWait(t *testing.T) {
	path := filepath.Join(t.TempDir(), "decisions.jsonl")
	before, _ := followingLogWithARecord(t, path)
	opened, _ := nextChainedLog(t, path)
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	before.Log(&DecisionEvent{Path: "p"}) // switches to a new file at the path
	waitHandled(t, before, 2)
	closeLog(t, before)
	logNext(t, opened)
	chainAcross(t, path, 1, 2)
}

// TestDecisionLogRotatedAndReleasedDuringItsWait: the writer before
// rotates its file away (logrotate with nocreate) and exits without another
// record; the log that waited for it starts the file at the path from the
// rotated file's last line, not from the genesis hash.
func TestDecisionLogRotatedAndReleasedDuringItsWait(t *testing.T) {
	path := filepath.Join(t.TempDir(), "decisions.jsonl")
	before, _ := followingLogWithARecord(t, path)
	opened, logBuf := nextChainedLog(t, path)
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	closeLog(t, before)
	logNext(t, opened)
	chainAcross(t, path, 1, 1)
	if !strings.Contains(logBuf.String(), "the chain goes on from the rotated file's last line") {
		t.Errorf("no word that the chain goes on from the rotated file:\n%s", logBuf.String())
	}
}

// TestDecisionLogRotatedBeforeItsFirstLock: the writer before rotates and
// moves on between the next log's open of the file and its first try at
// the lock, which then does not wait: the file is checked all the same.
func TestDecisionLogRotatedBeforeItsFirstLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "decisions.jsonl")
	before, _ := followingLogWithARecord(t, path)
	entered, release := make(chan struct{}), make(chan struct{})
	var first atomic.Bool
	lockFileFn = func(f *os.File, exclusive bool) error {
		if first.CompareAndSwap(false, true) { // the next log's first try; the writer before's pass
			close(entered)
			<-release
		}
		return lockFile(f, exclusive)
	}
	defer func() { lockFileFn = lockFile }()
	releaseOnce := sync.OnceFunc(func() { close(release) })
	defer releaseOnce() // a failure below does not leave the open stuck
	opened, _ := openChainedInBackground(t, path)
	<-entered // the next log has opened the file at the path, not yet locked it
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	before.Log(&DecisionEvent{Path: "p"}) // switches to a new file, frees the old one
	waitHandled(t, before, 2)
	closeLog(t, before)
	releaseOnce()
	logNext(t, opened)
	chainAcross(t, path, 1, 2)
}

// TestDecisionLogStoppedBeforeItsWait: a log opened once the stop has come
// is refused at once, without a word that it waits.
func TestDecisionLogStoppedBeforeItsWait(t *testing.T) {
	path := filepath.Join(t.TempDir(), "decisions.jsonl")
	holder, _ := followingLogWithARecord(t, path)
	defer closeLog(t, holder)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	logBuf := &testenv.SyncBuffer{}
	_, err := NewDecisionLog(DecisionLogConfig{Sink: "file:" + path, Chain: true, Context: ctx, startWait: time.Hour, Logger: slog.New(slog.NewTextHandler(logBuf, nil))})
	if !errors.Is(err, context.Canceled) || !errors.Is(err, errLocked) {
		t.Errorf("a log opened after the stop: %v", err)
	}
	if strings.Contains(logBuf.String(), "waiting") {
		t.Errorf("it said it waits:\n%s", logBuf.String())
	}
}

// renameAtFirstLock makes the first lock taken rename the file at path to
// path+suffix first: the file is rotated between a log's open and its lock.
func renameAtFirstLock(t *testing.T, path, suffix string) {
	t.Helper()
	var first atomic.Bool
	lockFileFn = func(f *os.File, exclusive bool) error {
		if first.CompareAndSwap(false, true) {
			if err := os.Rename(path, path+suffix); err != nil {
				t.Error(err)
			}
		}
		return lockFile(f, exclusive)
	}
	t.Cleanup(func() { lockFileFn = lockFile })
}

// TestDecisionLogUnchainedRotatedBeforeItsFirstLock: a log without the
// chain whose file is rotated between its open and its lock writes to the
// new file and says nothing of a chain.
func TestDecisionLogUnchainedRotatedBeforeItsFirstLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "decisions.jsonl")
	if err := os.WriteFile(path, []byte("{\"x\":1}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	renameAtFirstLock(t, path, ".1")
	logBuf := &testenv.SyncBuffer{}
	l, err := NewDecisionLog(DecisionLogConfig{Sink: "file:" + path, Logger: slog.New(slog.NewTextHandler(logBuf, nil))})
	if err != nil {
		t.Fatal(err)
	}
	l.Log(&DecisionEvent{Path: "p"})
	closeLog(t, l)
	if b, err := os.ReadFile(path); err != nil || bytes.Count(b, []byte("\n")) != 1 {
		t.Errorf("the new file: %q %v, want the one record", b, err)
	}
	if strings.Contains(logBuf.String(), "chain") {
		t.Errorf("a log without the chain speaks of one:\n%s", logBuf.String())
	}
}

// TestDecisionLogSwitchIntoAFileRotatedBeforeItsLock: a log switching files
// opens the new file at the path (another writer's, one line), which is
// rotated before the lock; it goes on in the empty file now there from its
// own head, and does not say that file holds lines.
func TestDecisionLogSwitchIntoAFileRotatedBeforeItsLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "decisions.jsonl")
	l, logBuf := followingLogWithARecord(t, path)
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("{\"other\":1}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	renameAtFirstLock(t, path, ".other")
	l.Log(&DecisionEvent{Path: "p"})
	waitHandled(t, l, 2)
	closeLog(t, l)
	chainAcross(t, path, 1, 1)
	if strings.Contains(logBuf.String(), "already holds lines") || strings.Contains(logBuf.String(), "rotated file's last line") {
		t.Errorf("the new file was empty and the chain goes on from the log's head, yet:\n%s", logBuf.String())
	}
}

// TestDecisionLogRotatedAtEveryLock: a file rotated again before each lock
// is opened again three times, then taken: the open ends.
func TestDecisionLogRotatedAtEveryLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "decisions.jsonl")
	var locks atomic.Int32
	lockFileFn = func(f *os.File, exclusive bool) error {
		n := locks.Add(1)
		if err := os.Rename(path, fmt.Sprintf("%s.%d", path, n)); err != nil {
			t.Error(err)
		}
		return lockFile(f, exclusive)
	}
	defer func() { lockFileFn = lockFile }()
	l, err := NewDecisionLog(DecisionLogConfig{Sink: "file:" + path, Chain: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	closeLog(t, l)
	if n := locks.Load(); n != 4 {
		t.Errorf("%d opens, want 4 (the first and three more)", n)
	}
}

func TestWritesToStdout(t *testing.T) {
	other := filepath.Join(t.TempDir(), "decisions.jsonl")
	if err := os.WriteFile(other, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for sink, want := range map[string]bool{
		"off": false, "": false, "stdout": true, "bogus": false,
		"file:/dev/stdout": true, "file:/proc/self/fd/1": true,
		"file:" + other: false, "file:" + other + ".new": false,
	} {
		if got := WritesToStdout(sink); got != want {
			t.Errorf("WritesToStdout(%q) = %t, want %t", sink, got, want)
		}
	}
}

// TestDecisionLogIdleFollowsItsPath: a file log rotated away while idle
// switches to a new file at its path within a period, without a record to
// write, chained or not. It kept the rotated file open (its space and lock
// held) and left the path without a file until the next record (review).
// Stopped and started again before that record, the new file's chain still
// goes on from the rotated file's head, as the switch logged: it started at
// genesis, and verify --from that head reported a break (review).
func TestDecisionLogIdleFollowsItsPath(t *testing.T) {
	for _, tc := range []struct{ chain, restart, removed bool }{
		{false, false, false}, {true, false, false}, {false, true, false}, {true, true, false}, {true, true, true},
	} {
		chain, restart, removed := tc.chain, tc.restart, tc.removed
		t.Run(fmt.Sprintf("chain=%v,restart=%v,removed=%v", chain, restart, removed), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "d.jsonl")
			l, err := NewDecisionLog(DecisionLogConfig{
				Sink: "file:" + path, Chain: chain, reopenEvery: 5 * time.Millisecond, checkpointEvery: 5 * time.Millisecond,
				Logger: slog.New(slog.DiscardHandler),
			})
			if err != nil {
				t.Fatal(err)
			}
			l.Log(&DecisionEvent{Path: "before"})
			waitHandled(t, l, 1)
			if err := os.Rename(path, path+".1"); err != nil {
				t.Fatal(err)
			}
			// Idle: no record is logged until the new file is there.
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
				if _, err := os.Stat(path); err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("after 10 s idle the log has not switched to a new file at its path")
				}
			}
			if restart {
				// Stopped and started again before the next record: the
				// new file is empty, and its first record must still
				// continue the rotated file's chain, as the switch logged.
				closeLog(t, l)
				if removed {
					// The empty file rotated away while stopped
					// (logrotate's nocreate): the next file is a new one,
					// whose chain starts at genesis, as README says.
					if err := os.Remove(path); err != nil {
						t.Fatal(err)
					}
				}
				if l, err = NewDecisionLog(DecisionLogConfig{
					Sink: "file:" + path, Chain: chain, reopenEvery: 5 * time.Millisecond, checkpointEvery: 5 * time.Millisecond,
					Logger: slog.New(slog.DiscardHandler),
				}); err != nil {
					t.Fatal(err)
				}
			}
			l.Log(&DecisionEvent{Path: "after"})
			closeLog(t, l)
			if got := readLines(t, path); len(got) != 1 || !strings.Contains(got[0], `"path":"after"`) {
				t.Fatalf("the new file holds %q, want the record logged after the switch", got)
			}
			if chain {
				old, err := os.ReadFile(path + ".1")
				if err != nil {
					t.Fatal(err)
				}
				first := verify(t, string(old), VerifyChainOptions{})
				next, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				from := first.Head
				if removed {
					from = ""
				}
				if rep := verify(t, string(next), VerifyChainOptions{From: from}); !rep.OK() || rep.Records != 1 {
					t.Errorf("the new file does not continue the rotated one's chain: %+v", rep)
				}
			}
		})
	}
}
