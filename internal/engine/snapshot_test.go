package engine

import (
	"context"
	"encoding/json"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/acgs-lite/acgs/internal/jsoneq"
)

// pathWarnings counts the warnings logged for each path (their "path" attribute).
type pathWarnings struct {
	mu sync.Mutex
	n  map[string]int
}

func (w *pathWarnings) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }

func (w *pathWarnings) Handle(_ context.Context, r slog.Record) error {
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "path" {
			w.mu.Lock()
			w.n[a.Value.String()]++
			w.mu.Unlock()
		}
		return true
	})
	return nil
}

func (w *pathWarnings) WithAttrs([]slog.Attr) slog.Handler { return w }
func (w *pathWarnings) WithGroup(string) slog.Handler      { return w }

func (w *pathWarnings) of(path string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n[path]
}

// keptEntries returns what the snapshot keeps prepared for path, for
// topdown and for the VM (nil when nothing).
func keptEntries(s *snapshot, path string) (topdown, compiled any) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if v, ok := s.queries[path]; ok {
		topdown = v
	}
	if v, ok := s.compiles[path]; ok {
		compiled = v
	}
	return topdown, compiled
}

// TestPreparedPathsKeepTheHotSet is the regression test for the bound on
// prepared queries, which stopped storing new paths once maxPreparedPaths
// had been asked: a path first asked after that (clients scan, an OPA
// client asks many policies) was prepared again on every request, and a
// path the VM cannot run logged why on every request. Each row asks more
// than twice the bound of distinct paths, and a hot path every few
// requests from the request hotFrom on: the hot path is prepared once and
// stays prepared, the maps stay within the bound, every answer is the
// policy's.
func TestPreparedPathsKeepTheHotSet(t *testing.T) {
	const policy = `package t

f[i] := i * input.k if some i in numbers.range(0, 999)

g(x) := 1 if x > 0
g(x) := 2 if x > 1

# topdown indexes the comprehension: the VM cannot run q
q if { x := input.x; c := {y.v | some y in input.ys; y.k == x; g(y.v) > 0}; count(c) > 0 }
`
	const every = 8 // the hot path is asked every so many requests
	scan := 2*maxPreparedPaths + 20
	input := map[string]any{"k": json.Number("3"), "x": "a", "ys": []any{map[string]any{"k": "a", "v": json.Number("1")}}}
	for _, tc := range []struct {
		name     string
		compiled bool
		hot      string
		want     any
		hotFrom  int // the scan request from which the hot path is asked
		parallel int // requests of the hot path made at once each time
		// kept: the maps that must keep the hot path (topdown's, the VM's).
		keptTopdown, keptVM bool
		warnings            int    // logged for the hot path
		evaluator           string // Evaluators' word for the hot path (compiled rows)
	}{
		{name: "topdown, first asked past the bound", hot: "t/f/7", want: json.Number("21"), hotFrom: maxPreparedPaths + 10, parallel: 1, keptTopdown: true},
		{name: "topdown, asked from the start", hot: "t/f/7", want: json.Number("21"), hotFrom: 0, parallel: 1, keptTopdown: true},
		{name: "vm, first asked past the bound", compiled: true, hot: "t/f/7", want: json.Number("21"), hotFrom: maxPreparedPaths + 10, parallel: 1, keptVM: true, evaluator: "vm"},
		{name: "vm cannot run it, first asked past the bound", compiled: true, hot: "t/q", want: true, hotFrom: maxPreparedPaths + 10, parallel: 1, keptTopdown: true, keptVM: true, warnings: 1, evaluator: "topdown: unsupported"},
		{name: "vm cannot run it, asked concurrently", compiled: true, hot: "t/q", want: true, hotFrom: 0, parallel: 8, keptTopdown: true, keptVM: true, warnings: 1, evaluator: "topdown: unsupported"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			warns := &pathWarnings{n: map[string]int{}}
			bundle := fstest.MapFS{
				".manifest": {Data: []byte(`{"revision":"lru","roots":["t"],"metadata":{"constitutional_hash":"` + fuzzHash + `"}}`)},
				"t/p.rego":  {Data: []byte(policy)},
			}
			e, err := New(ctx, FSSource{FS: bundle, Name: "lru"}, Options{
				ConstitutionalHash: fuzzHash, EvalTimeout: 10 * time.Second, Logger: slog.New(warns), Compiled: tc.compiled,
			})
			if err != nil {
				t.Fatal(err)
			}
			s := e.cur.Load()
			decide := func(path string, want any) {
				d, err := e.Decide(ctx, path, input)
				if err != nil {
					t.Errorf("%s: %v", path, err)
					return
				}
				if !d.Defined || !jsoneq.Equal(d.Result, want) {
					t.Errorf("%s: %v (defined %v), want %v", path, d.Result, d.Defined, want)
				}
			}
			var firstTopdown, firstVM any
			for i := range scan {
				decide("t/f/"+strconv.Itoa(100+i), json.Number(strconv.Itoa(3*(100+i))))
				if i < tc.hotFrom || (i-tc.hotFrom)%every != 0 {
					continue
				}
				var wg sync.WaitGroup
				for range tc.parallel {
					wg.Go(func() { decide(tc.hot, tc.want) })
				}
				wg.Wait()
				if i == tc.hotFrom {
					firstTopdown, firstVM = keptEntries(s, tc.hot)
				}
			}
			if t.Failed() {
				return
			}
			td, vm := keptEntries(s, tc.hot)
			if tc.keptTopdown && (td == nil || td != firstTopdown) {
				t.Errorf("%s is not kept prepared for topdown since its first request (first %p, now %p)", tc.hot, firstTopdown, td)
			}
			if tc.keptVM && (vm == nil || vm != firstVM) {
				t.Errorf("%s is not kept prepared for the VM since its first request (first %p, now %p)", tc.hot, firstVM, vm)
			}
			if n := warns.of(tc.hot); n != tc.warnings {
				t.Errorf("%d warnings logged for %s, want %d (once per preparation kept)", n, tc.hot, tc.warnings)
			}
			if got := e.Evaluators()[tc.hot]; !strings.HasPrefix(got, tc.evaluator) {
				t.Errorf("%s runs on %q, want %q", tc.hot, got, tc.evaluator)
			}
			s.mu.RLock()
			n := len(s.queries)
			if tc.compiled {
				n = len(s.compiles) // the scan's paths run on the VM
			}
			s.mu.RUnlock()
			if n != maxPreparedPaths {
				t.Errorf("%d queries kept after %d paths asked, want the bound, %d", n, scan+1, maxPreparedPaths)
			}
			// The scan's first path was dropped (the least recently used);
			// asked again, it is prepared again and answers as before.
			if td, vm := keptEntries(s, "t/f/100"); td != nil || vm != nil {
				t.Errorf("the scan's first path is still kept")
			}
			decide("t/f/100", json.Number("300"))
		})
	}
}
