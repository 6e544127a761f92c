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

	"github.com/maypok86/otter/v2"

	"github.com/acgs-lite/acgs/internal/cache"
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

// stored returns path's entry of c without counting it as a use (nil when
// none): each computation of a path stores a new pointer.
func stored[V any](c *otter.Cache[string, *V], path string) any {
	if e, ok := c.GetEntryQuietly(path); ok {
		return e.Value
	}
	return nil
}

// size returns the number of paths c keeps, once its pending maintenance is done.
func size[V any](c *otter.Cache[string, V]) int {
	c.CleanUp()
	return c.EstimatedSize()
}

// admitWithin is how many requests of a path first asked when its cache is
// full of one-off paths may compute it before it stays: otter (W-TinyLFU)
// admits a new path in place of another only once its sketched frequency
// is the higher, which a scan's paths (asked once, but for the sketch's
// collisions) reach in one or two requests. Measured: two at most, in 40
// runs of this test and in 5000 of its sequence on otter alone.
const admitWithin = 4

// TestPreparedPathsKeepTheHotSet is the regression test for the bounds on
// what a snapshot keeps per path (prepared queries, the VM's, read sets),
// which stopped storing new paths once full: a path first asked after that
// (clients scan, an OPA client asks many policies) was prepared, or had its
// read set computed, again on every request, and a path the VM cannot run
// logged why on every request. Each row asks more than twice the bound of
// distinct paths, and a hot path every few requests from the request
// hotFrom on: the hot path is computed once, or, first asked when the cache
// is already full, at most admitWithin times, and then stays; the caches
// stay within their bound; every answer is the policy's; the VM's why is
// logged once per preparation stored.
func TestPreparedPathsKeepTheHotSet(t *testing.T) {
	const policy = `package t

f[i] := i * input.k if some i in numbers.range(0, 999)

g(x) := 1 if x > 0
g(x) := 2 if x > 1

# topdown indexes the comprehension: the VM cannot run q
q if { x := input.x; c := {y.v | some y in input.ys; y.k == x; g(y.v) > 0}; count(c) > 0 }
`
	const every = 8 // the hot path is asked every so many requests
	input := map[string]any{"k": json.Number("3"), "x": "a", "ys": []any{map[string]any{"k": "a", "v": json.Number("1")}}}
	type kept uint8
	const (
		topdown kept = 1 << iota // the prepared query
		vm                       // the VM's preparation
		reads                    // the read set
	)
	for _, tc := range []struct {
		name     string
		compiled bool
		// reads: with a decision cache, whose keys are on the path's read
		// set; the scan asks the read sets only (Engine.ReadSet, what a
		// request computes first), not decisions, to be quick.
		reads    bool
		hot      string
		want     any
		late     bool // the hot path is first asked once the bound's worth of paths has been
		parallel int  // requests of the hot path made at once each time
		kept     kept // the caches that must keep the hot path
		// warnings: the hot path's warnings are one per VM preparation
		// stored (else none).
		warnings  bool
		evaluator string // Evaluators' word for the hot path (compiled rows)
	}{
		{name: "topdown, first asked past the bound", hot: "t/f/7", want: json.Number("21"), late: true, parallel: 1, kept: topdown},
		{name: "topdown, asked from the start", hot: "t/f/7", want: json.Number("21"), parallel: 1, kept: topdown},
		{name: "vm, first asked past the bound", compiled: true, hot: "t/f/7", want: json.Number("21"), late: true, parallel: 1, kept: vm, evaluator: "vm"},
		{name: "vm cannot run it, first asked past the bound", compiled: true, hot: "t/q", want: true, late: true, parallel: 1, kept: topdown | vm, warnings: true, evaluator: "topdown: unsupported"},
		{name: "vm cannot run it, asked concurrently", compiled: true, hot: "t/q", want: true, parallel: 8, kept: topdown | vm, warnings: true, evaluator: "topdown: unsupported"},
		{name: "read sets, first asked past the bound", reads: true, hot: "t/f/7", want: json.Number("21"), late: true, parallel: 1, kept: reads},
		{name: "read sets, asked from the start", reads: true, hot: "t/f/7", want: json.Number("21"), parallel: 4, kept: reads},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			bound := maxPreparedPaths
			if tc.reads {
				bound = maxReadSetPaths
			}
			scan := 2*bound + 20
			hotFrom := 0
			if tc.late {
				hotFrom = bound + 10
			}
			opts := Options{ConstitutionalHash: fuzzHash, EvalTimeout: 10 * time.Second, Compiled: tc.compiled}
			warns := &pathWarnings{n: map[string]int{}}
			opts.Logger = slog.New(warns)
			if tc.reads {
				l1, err := cache.New(ctx, cache.Config{Logger: slog.New(slog.DiscardHandler)})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { l1.Close() })
				opts.Cache = l1
			}
			bundle := fstest.MapFS{
				".manifest": {Data: []byte(`{"revision":"lru","roots":["t"],"metadata":{"constitutional_hash":"` + fuzzHash + `"}}`)},
				"t/p.rego":  {Data: []byte(policy)},
			}
			e, err := New(ctx, FSSource{FS: bundle, Name: "lru"}, opts)
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
			// What each cache kept for the hot path after each of its
			// requests (nil: nothing).
			type entries struct{ topdown, vm, reads any }
			var seen []entries
			for i := range scan {
				if p := "t/f/" + strconv.Itoa(100+i); !tc.reads {
					decide(p, json.Number(strconv.Itoa(3*(100+i))))
				} else if _, ok := e.ReadSet(p); !ok {
					t.Fatalf("no read set for %s", p)
				}
				if i < hotFrom || (i-hotFrom)%every != 0 {
					continue
				}
				var wg sync.WaitGroup
				for range tc.parallel {
					wg.Go(func() { decide(tc.hot, tc.want) })
				}
				wg.Wait()
				seen = append(seen, entries{stored(s.queries, tc.hot), stored(s.compiles, tc.hot), stored(s.reads.m, tc.hot)})
			}
			if t.Failed() {
				return
			}
			// The hot path must be kept from its first request on, or, first
			// asked when the cache is full, from its request admitWithin on;
			// computed is how many entries were stored for it.
			limit := 1
			if tc.late {
				limit = admitWithin
			}
			check := func(what string, entry func(entries) any) (computed int) {
				for i, en := range seen {
					if entry(en) != nil && (i == 0 || entry(seen[i-1]) != entry(en)) {
						computed++
					}
				}
				last := entry(seen[len(seen)-1])
				from := len(seen) // the hot path's request from which last was kept, from 1
				for from > 1 && entry(seen[from-2]) == last {
					from--
				}
				switch {
				case last == nil:
					t.Errorf("%s is not kept (%s) after its %d requests (%d entries stored)", tc.hot, what, len(seen), computed)
				case from > limit:
					t.Errorf("%s is kept (%s) from its request %d of %d on (%d entries stored), want from its request %d at the latest", tc.hot, what, from, len(seen), computed, limit)
				}
				return computed
			}
			vmPrepared := 0
			if tc.kept&topdown != 0 {
				check("prepared for topdown", func(en entries) any { return en.topdown })
			}
			if tc.kept&vm != 0 {
				vmPrepared = check("prepared for the VM", func(en entries) any { return en.vm })
			}
			if tc.kept&reads != 0 {
				check("its read set", func(en entries) any { return en.reads })
			}
			want := 0
			if tc.warnings {
				want = vmPrepared
			}
			if n := warns.of(tc.hot); n != want {
				t.Errorf("%d warnings logged for %s, want %d (once per preparation stored)", n, tc.hot, want)
			}
			if got := e.Evaluators()[tc.hot]; !strings.HasPrefix(got, tc.evaluator) {
				t.Errorf("%s runs on %q, want %q", tc.hot, got, tc.evaluator)
			}
			// The scan's paths, each asked once, are answered by topdown:
			// the VM is prepared only for a path asked again (the hot one).
			n, what := size(s.queries), "prepared queries"
			if tc.reads {
				n, what = size(s.reads.m), "read sets"
			}
			if got := size(s.compiles); tc.compiled && got != 1 {
				t.Errorf("%d VM preparations kept after %d paths asked once and %s again and again, want 1", got, scan, tc.hot)
			}
			if n != bound {
				t.Errorf("%d %s kept after %d paths asked, want the bound, %d", n, what, scan+1, bound)
			}
			// The first path of the scan is asked again: prepared again
			// if it was dropped, it answers as before.
			decide("t/f/100", json.Number("300"))
		})
	}
}

// TestVMPreparedForAPathAskedAgain: preparing a path for the VM plans every
// rule it reaches, so a path other than an entry point is answered by
// topdown on its first request and by the VM from its second; an entry
// point (prepared at activation) runs on the VM from its first.
func TestVMPreparedForAPathAskedAgain(t *testing.T) {
	const policy = `package t

# METADATA
# entrypoint: true
e := input.k * 2

f[i] := i * input.k if some i in numbers.range(0, 9)
`
	var mu sync.Mutex
	var ran []string
	opts := Options{ConstitutionalHash: fuzzHash, EvalTimeout: 10 * time.Second, Compiled: true, Logger: slog.New(slog.DiscardHandler),
		OnEvaluator: func(name string) { mu.Lock(); ran = append(ran, name); mu.Unlock() }}
	bundle := fstest.MapFS{
		".manifest": {Data: []byte(`{"revision":"again","roots":["t"],"metadata":{"constitutional_hash":"` + fuzzHash + `"}}`)},
		"t/p.rego":  {Data: []byte(policy)},
	}
	ctx := context.Background()
	e, err := New(ctx, FSSource{FS: bundle, Name: "again"}, opts)
	if err != nil {
		t.Fatal(err)
	}
	input := map[string]any{"k": json.Number("3")}
	for _, step := range []struct {
		path, evaluator string
		want            any
	}{
		{"t/e", "vm", json.Number("6")},
		{"t/f/2", "topdown", json.Number("6")},
		{"t/f/2", "vm", json.Number("6")},
		{"t/f/3", "topdown", json.Number("9")},
		{"t/f/2", "vm", json.Number("6")},
	} {
		mu.Lock()
		ran = ran[:0]
		mu.Unlock()
		d, err := e.Decide(ctx, step.path, input)
		if err != nil {
			t.Fatalf("%s: %v", step.path, err)
		}
		if !d.Defined || !jsoneq.Equal(d.Result, step.want) {
			t.Errorf("%s: %v, want %v", step.path, d.Result, step.want)
		}
		mu.Lock()
		if len(ran) != 1 || ran[0] != step.evaluator {
			t.Errorf("%s ran on %v, want %s", step.path, ran, step.evaluator)
		}
		mu.Unlock()
	}
}

// TestEntryPointsStayPrepared: what activation prepared for an entry point
// (its topdown query, the VM's preparation, its read set) is never evicted
// by other paths, however many clients ask, each twice (so that the VM is
// prepared for them too).
func TestEntryPointsStayPrepared(t *testing.T) {
	const policy = `package t

# METADATA
# entrypoint: true
e := input.k * 2

f[i] := i * input.k if some i in numbers.range(0, 999)
`
	l1, err := cache.New(context.Background(), cache.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l1.Close() })
	opts := Options{ConstitutionalHash: fuzzHash, EvalTimeout: 10 * time.Second, Compiled: true, Cache: l1, Logger: slog.New(slog.DiscardHandler)}
	bundle := fstest.MapFS{
		".manifest": {Data: []byte(`{"revision":"pinned","roots":["t"],"metadata":{"constitutional_hash":"` + fuzzHash + `"}}`)},
		"t/p.rego":  {Data: []byte(policy)},
	}
	ctx := context.Background()
	e, err := New(ctx, FSSource{FS: bundle, Name: "pinned"}, opts)
	if err != nil {
		t.Fatal(err)
	}
	s := e.cur.Load()
	before := []any{stored(s.queries, "t/e"), stored(s.compiles, "t/e"), stored(s.reads.m, "t/e")}
	for i, v := range before {
		if v == nil {
			t.Fatalf("entry point t/e: nothing stored by activation (cache %d)", i)
		}
	}
	for i := range maxReadSetPaths + 100 { // more than every cache's bound
		p := "t/f/" + strconv.Itoa(i%1000)
		for range 2 {
			if _, err := e.Decide(ctx, p, map[string]any{"k": json.Number(strconv.Itoa(i))}); err != nil {
				t.Fatal(err)
			}
		}
	}
	after := []any{stored(s.queries, "t/e"), stored(s.compiles, "t/e"), stored(s.reads.m, "t/e")}
	for i := range before {
		if after[i] != before[i] {
			t.Errorf("entry point t/e: cache %d holds %v, want what activation stored (%v)", i, after[i], before[i])
		}
	}
	if n := size(s.compiles); n > maxPreparedPaths+1 {
		t.Errorf("%d VM preparations kept, more than the bound (%d) and the entry point", n, maxPreparedPaths)
	}
	if got := e.Evaluators()["t/e"]; got != "vm" {
		t.Errorf("t/e runs on %q, want vm", got)
	}
}

// TestLocalZoneTellsZonesApart: the cache scope names the local time zone
// (time.date(ns, "Local") and its kind answer by it), so replicas in
// different zones sharing an L2 do not serve each other's decisions.
func TestLocalZoneTellsZonesApart(t *testing.T) {
	saved := time.Local
	defer func() { time.Local = saved }()
	seen := map[string]string{}
	// Alike today, not in the past: Indianapolis kept no summer time
	// until 2006, Chisinau and Bucharest change clocks at other instants.
	for _, name := range []string{"UTC", "Europe/Paris", "America/New_York", "Australia/Sydney", "Asia/Kolkata",
		"America/Indiana/Indianapolis", "Europe/Chisinau", "Europe/Bucharest"} {
		loc, err := time.LoadLocation(name)
		if err != nil {
			t.Skipf("no zone database: %v", err)
		}
		time.Local = loc
		z := localZone()
		if other, ok := seen[z]; ok {
			t.Errorf("%s and %s are both %q", name, other, z)
		}
		seen[z] = name
	}
}
