package engine_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/rego"
	opaversion "github.com/open-policy-agent/opa/v1/version"

	"github.com/acgs-lite/acgs/internal/admission"
	"github.com/acgs-lite/acgs/internal/apierror"
	"github.com/acgs-lite/acgs/internal/cache"
	"github.com/acgs-lite/acgs/internal/engine"
	"github.com/acgs-lite/acgs/internal/jsoneq"
	"github.com/acgs-lite/acgs/internal/testenv"
	"github.com/acgs-lite/acgs/policies"
)

const hash = "cdd01ef066bc6cf2"

// MustOpen activates the embedded constitution with the given cache.
func mustOpen(tb testing.TB, c engine.Cache) *engine.Engine {
	tb.Helper()
	e, err := engine.New(context.Background(), engine.FSSource{FS: policies.FS, Name: "embedded"}, engine.Options{
		ConstitutionalHash: hash, EvalTimeout: time.Second, Cache: c, Logger: quiet,
	})
	if err != nil {
		tb.Fatalf("activating the embedded constitution: %v", err)
	}
	return e
}

// loadRequest reads testdata/requests/<name>.json decoded as the server decodes.
func loadRequest(tb testing.TB, name string) map[string]any {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "requests", name+".json"))
	if err != nil {
		tb.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v map[string]any
	if err := dec.Decode(&v); err != nil {
		tb.Fatal(err)
	}
	return v
}

func TestWorkedExamples(t *testing.T) {
	e := mustOpen(t, nil)
	for _, tc := range []struct {
		name  string
		allow bool
		score string
	}{
		{"safe", true, "0.96"},
		{"complex", true, ""},
		{"dangerous", false, "0"},
		{"low_trust", false, "0.96"},
		{"data_access", true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := e.Decide(context.Background(), "acgs/main/decision", loadRequest(t, tc.name))
			if err != nil {
				t.Fatal(err)
			}
			obj, ok := d.Result.(map[string]any)
			if !ok || !d.Defined {
				t.Fatalf("decision is not an object: %#v", d.Result)
			}
			if obj["allow"] != tc.allow {
				t.Errorf("allow = %v, want %v (reasons %v)", obj["allow"], tc.allow, obj["reasons"])
			}
			if tc.score != "" && obj["compliance_score"].(json.Number).String() != tc.score {
				t.Errorf("compliance_score = %v, want %s", obj["compliance_score"], tc.score)
			}
			if d.Source != engine.SourceFull || d.Revision != "constitution-1.0.0" {
				t.Errorf("source %v revision %q", d.Source, d.Revision)
			}
		})
	}
}

// bundleFS builds an in-memory bundle with a manifest carrying h.
func bundleFS(h, rego string) fstest.MapFS {
	return fstest.MapFS{
		".manifest":     {Data: []byte(`{"revision":"t1","roots":["acgs","t"],"metadata":{"constitutional_hash":"` + h + `"}}`)},
		"t/policy.rego": {Data: []byte(rego)},
	}
}

func TestActivationRefusesWrongHashAndKeepsOldBundle(t *testing.T) {
	e := mustOpen(t, nil)
	otherInData := bundleFS(hash, "package t\nx := 1\n")
	otherInData["acgs/config/data.json"] = &fstest.MapFile{Data: []byte(`{"constitutional_hash": "deadbeefdeadbeef"}`)}
	for name, tc := range map[string]struct {
		fsys fstest.MapFS
		want string // in the error
	}{
		"wrong hash":   {bundleFS("ffffffffffffffff", "package t\nx := 1\n"), "does not match"},
		"missing hash": {fstest.MapFS{".manifest": {Data: []byte(`{"revision":"t1"}`)}, "t/p.rego": {Data: []byte("package t\nx := 1\n")}}, "declares no"},
		"bad rego":     {bundleFS(hash, "package t\nx := \n"), "rego_parse_error"},
		"conflict":     {bundleFS(hash, "package t\nx := 1 if true\nx := 2 if true\ny := z\n"), "compile"},
		// The manifest is right, the data the policy compares with is not.
		"another hash in data": {otherInData, `data.acgs.config.constitutional_hash is "deadbeefdeadbeef"`},
	} {
		t.Run(name, func(t *testing.T) {
			// Reload's order: a bundle that does not load is recorded as a
			// failure, one that loads goes through Activate.
			b, err := engine.FSSource{FS: tc.fsys, Name: name}.Load(context.Background())
			if err != nil {
				e.RecordFailure(err)
			} else {
				err = e.Activate(context.Background(), b, name)
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want an error naming %q, got %v", tc.want, err)
			}
			info, ok := e.Info()
			if !ok || info.Revision != "constitution-1.0.0" || info.LastError == nil {
				t.Fatalf("old bundle not kept: %+v", info)
			}
			d, err := e.Decide(context.Background(), "acgs/main/decision", loadRequest(t, "safe"))
			if err != nil || d.Result.(map[string]any)["allow"] != true {
				t.Fatalf("old bundle does not answer: %v %v", d, err)
			}
		})
	}
}

// slowEngine is an engine on a bundle whose t/slow takes far longer than
// any test waits, with EVAL_TIMEOUT timeout.
func slowEngine(t *testing.T, timeout time.Duration) *engine.Engine {
	t.Helper()
	slow := "package t\nimport rego.v1\nslow := count([x | some x in numbers.range(1, 100000000); x % 7 == 0])\n"
	b, err := engine.FSSource{FS: bundleFS(hash, slow), Name: "slow"}.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	e, err := engine.New(context.Background(), nil, engine.Options{ConstitutionalHash: hash, EvalTimeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	// The slow rule is not in the default entry points, so activation succeeds.
	if err := e.Activate(context.Background(), b, "slow"); err != nil && !strings.Contains(err.Error(), "acgs") {
		t.Fatal(err)
	}
	return e
}

func TestEvalTimeoutFailsClosed(t *testing.T) {
	_, err := slowEngine(t, 20*time.Millisecond).Decide(context.Background(), "t/slow", nil)
	if apierror.CodeOf(err) != apierror.EvaluationError || !strings.Contains(err.Error(), "EVAL_TIMEOUT") {
		t.Fatalf("want an evaluation_error naming EVAL_TIMEOUT, got %v", err)
	}
}

// TestCallerLeavingIsNotAnEvalTimeout: an evaluation cut short because its
// caller left (a client that hung up, its own deadline) decided nothing: it
// is overloaded (503, Retry-After; counted as shed), not an evaluation
// error that exceeded EVAL_TIMEOUT, which counts and alerts as the policy's
// (review: three clients hanging up after 0.3 s were three 5 s timeouts).
func TestCallerLeavingIsNotAnEvalTimeout(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := slowEngine(t, time.Minute).Decide(ctx, "t/slow", nil)
	if errors.Is(err, engine.ErrEvalTimeout) || apierror.CodeOf(err) != apierror.Overloaded {
		t.Fatalf("want overloaded, not EVAL_TIMEOUT, got %v", err)
	}
}

func TestEvaluationErrorIsReturnedNotDecided(t *testing.T) {
	conflict := "package t\nimport rego.v1\nx := 1 if input.a\nx := 2 if input.b\n"
	b, err := engine.FSSource{FS: bundleFS(hash, conflict), Name: "conflict"}.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	e, _ := engine.New(context.Background(), nil, engine.Options{ConstitutionalHash: hash})
	if err := e.Activate(context.Background(), b, "conflict"); err != nil {
		t.Fatal(err)
	}
	d, err := e.Decide(context.Background(), "t/x", map[string]any{"a": true, "b": true})
	if apierror.CodeOf(err) != apierror.EvaluationError || d.Defined {
		t.Fatalf("want evaluation_error and no decision, got %+v %v", d, err)
	}
}

func TestNonDeterministicDecisionsAreNotCached(t *testing.T) {
	c, err := cache.New(context.Background(), cache.Config{L1Size: 100, TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	src := "package t\nimport rego.v1\nnow := time.now_ns() if input.nd\nnow := 1 if not input.nd\nother := input.x\n"
	b, err := engine.FSSource{FS: bundleFS(hash, src), Name: "nd"}.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	e, _ := engine.New(context.Background(), nil, engine.Options{ConstitutionalHash: hash, Cache: c})
	if err := e.Activate(context.Background(), b, "nd"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		d, err := e.Decide(context.Background(), "t/now", map[string]any{"nd": true})
		if err != nil || d.Source != engine.SourceFull {
			t.Fatalf("non-deterministic decision %d came from %v (%v)", i, d.Source, err)
		}
	}
	// A path that can reach a non-deterministic built-in is never cached,
	// even for an input that does not call it (its read set says so at
	// activation); a path that cannot reach one is cached.
	for i := 0; i < 2; i++ {
		if d, _ := e.Decide(context.Background(), "t/now", map[string]any{"nd": false}); d.Source != engine.SourceFull {
			t.Fatalf("decision of a path reaching time.now_ns came from %v", d.Source)
		}
	}
	_, _ = e.Decide(context.Background(), "t/other", map[string]any{"x": 1})
	d, _ := e.Decide(context.Background(), "t/other", map[string]any{"x": 1, "id": "r2"})
	if d.Source != engine.SourceL1 {
		t.Fatalf("deterministic decision not cached: %v", d.Source)
	}
	if rs, ok := e.ReadSet("t/now"); !ok || rs.Cacheable() || len(rs.Nondeterministic) != 1 {
		t.Fatalf("read set of t/now: %+v", rs)
	}
}

func TestCacheIsRevisionScoped(t *testing.T) {
	c, err := cache.New(context.Background(), cache.Config{L1Size: 100, TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	e := mustOpen(t, c)
	in := loadRequest(t, "safe")
	if _, err := e.Decide(context.Background(), "acgs/main/decision", in); err != nil {
		t.Fatal(err)
	}
	if d, _ := e.Decide(context.Background(), "acgs/main/decision", in); d.Source != engine.SourceL1 {
		t.Fatalf("second decision from %v, want l1", d.Source)
	}
	// The same bundle again (a SIGHUP with nothing changed) is not a new
	// revision: the cache stays (review: every reload purged it).
	if err := e.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d, _ := e.Decide(context.Background(), "acgs/main/decision", in); d.Source != engine.SourceL1 {
		t.Fatalf("after a reload of the same bundle the decision came from %v, want l1", d.Source)
	}
	// A bundle with the same revision string but different content must not share entries.
	fsys := fstest.MapFS{}
	_ = copyFS(policies.FS, fsys)
	fsys["acgs/extra.rego"] = &fstest.MapFile{Data: []byte("package acgs.extra\nx := 1\n")}
	b, err := engine.FSSource{FS: fsys, Name: "changed"}.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Activate(context.Background(), b, "changed"); err != nil {
		t.Fatal(err)
	}
	if d, _ := e.Decide(context.Background(), "acgs/main/decision", in); d.Source != engine.SourceFull {
		t.Fatalf("after a new revision the decision came from %v", d.Source)
	}
}

func copyFS(src interface {
	ReadFile(string) ([]byte, error)
	ReadDir(string) ([]os.DirEntry, error)
}, dst fstest.MapFS) error {
	var walk func(dir string) error
	walk = func(dir string) error {
		ents, err := src.ReadDir(dir)
		if err != nil {
			return err
		}
		for _, en := range ents {
			p := en.Name()
			if dir != "." {
				p = dir + "/" + p
			}
			if en.IsDir() {
				if err := walk(p); err != nil {
					return err
				}
				continue
			}
			b, err := src.ReadFile(p)
			if err != nil {
				return err
			}
			dst[p] = &fstest.MapFile{Data: b}
		}
		return nil
	}
	return walk(".")
}

// BenchmarkDecide compares full evaluation through engine.Decide (no cache)
// with raw rego.PreparedEvalQuery.Eval on a pre-parsed input, same query,
// same input, same run (performance.md: target ratio ≤ 1.1).
func BenchmarkDecide(b *testing.B) {
	for _, name := range []string{"safe", "complex", "dangerous"} {
		in := loadRequest(b, name)
		b.Run("engine/"+name, func(b *testing.B) {
			e := mustOpen(b, nil)
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := e.Decide(ctx, "acgs/main/decision", in); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("raw/"+name, func(b *testing.B) {
			bnd, err := engine.FSSource{FS: policies.FS, Name: "embedded"}.Load(context.Background())
			if err != nil {
				b.Fatal(err)
			}
			mods := make([]func(*rego.Rego), 0, len(bnd.Modules)+2)
			for _, m := range bnd.Modules {
				mods = append(mods, rego.ParsedModule(m.Parsed))
			}
			opts := append(mods, rego.Query("data.acgs.main.decision"), rego.Store(inmemStore(bnd.Data)))
			pq, err := rego.New(opts...).PrepareForEval(context.Background())
			if err != nil {
				b.Fatal(err)
			}
			v, err := ast.InterfaceToValue(in)
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := pq.Eval(ctx, rego.EvalParsedInput(v)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// panicCache is a Tiered cache whose Set panics: a bug in a cache.
type panicCache struct{ *cache.Tiered }

func (panicCache) Set(cache.Key, cache.Value) { panic("cache bug") }

// A panic while a cache miss is decided ends its flight: the request gets
// the decision (a panicking cache loses only the entry) or a failed
// evaluation (a panic elsewhere), and the next miss of the same key is
// decided again instead of waiting for a flight that never ends.
func TestFlightEndsWhateverPanics(t *testing.T) {
	c, err := cache.New(context.Background(), cache.Config{L1Size: 100, TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	in := loadRequest(t, "safe")
	for _, tc := range []struct {
		name      string
		cache     engine.Cache
		admit     func(context.Context, func()) (bool, error)
		wantAllow bool // else a failed evaluation (EvaluationError)
	}{
		{"the cache's Set panics", panicCache{c}, nil, true},
		{"admission panics before the evaluation", c, func(context.Context, func()) (bool, error) { panic("admission bug") }, false},
		{"admission panics after the evaluation", c, func(_ context.Context, fn func()) (bool, error) { fn(); panic("admission bug") }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c.Purge()
			e, err := engine.New(context.Background(), engine.FSSource{FS: policies.FS, Name: "embedded"}, engine.Options{
				ConstitutionalHash: hash, EvalTimeout: time.Second, Cache: tc.cache, Logger: quiet, Admit: tc.admit,
			})
			if err != nil {
				t.Fatal(err)
			}
			for i := range 2 {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				d, err := e.Decide(ctx, "acgs/main/decision", in)
				cancel()
				if tc.wantAllow {
					res, _ := d.Result.(map[string]any)
					if err != nil || res["allow"] != true {
						t.Fatalf("decision %d: %v, %v; want the constitution's allow", i, d.Result, err)
					}
					continue
				}
				if apierror.CodeOf(err) != apierror.EvaluationError {
					t.Fatalf("decision %d: %v, %v; want a failed evaluation", i, d.Result, err)
				}
			}
		})
	}
}

// flightEngine is the embedded constitution with a decision cache (a
// flight is per cache key) whose evaluations admit admits.
func flightEngine(t *testing.T, admit func(ctx context.Context, fn func()) (bool, error)) *engine.Engine {
	t.Helper()
	c, err := cache.New(context.Background(), cache.Config{L1Size: 100, TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	e, err := engine.New(context.Background(), engine.FSSource{FS: policies.FS, Name: "embedded"}, engine.Options{
		ConstitutionalHash: hash, EvalTimeout: time.Second, Logger: quiet, Admit: admit, Cache: c,
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// awaitFlightWaiter returns once a goroutine waits in decideMiss's select
// for another request's flight: a sleep guessed it, and a follower late
// under load started a flight of its own (the test then saw its own
// refusal, not the shared one's).
func awaitFlightWaiter(t *testing.T) {
	t.Helper()
	waiting := func(g testenv.Goroutine) bool {
		return g.State == "select" && strings.HasPrefix(g.Stack, "github.com/acgs-lite/acgs/internal/engine.(*Engine).decideMiss(")
	}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if testenv.Goroutines(waiting) > 0 {
			return
		}
	}
	t.Fatal("no request joined the flight within 30s")
}

// lateCtx is a context whose deadline has passed but whose timer has not
// yet cancelled it: what admission may see when it refuses a request at
// its deadline.
type lateCtx struct{ context.Context }

func (lateCtx) Deadline() (time.Time, bool) { return time.Now().Add(-time.Millisecond), true }

// A request that joined a shared evaluation is not refused because the
// request that started it was refused at its own deadline, even before
// that request's context was cancelled: it starts the evaluation again.
func TestFlightRetriesAfterItsLeadersDeadline(t *testing.T) {
	var calls atomic.Int32
	joined := make(chan struct{})
	e := flightEngine(t, func(ctx context.Context, fn func()) (bool, error) {
		if calls.Add(1) == 1 {
			<-joined // the second request waits on this flight
			return false, apierror.Wrap(apierror.Overloaded, context.DeadlineExceeded, "the request's deadline passed while it waited for an evaluation slot")
		}
		fn()
		return true, nil
	})
	in := loadRequest(t, "safe")
	leader := make(chan error, 1)
	go func() {
		_, err := e.Decide(lateCtx{context.Background()}, "acgs/main/decision", in)
		leader <- err
	}()
	for calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	follower := make(chan error, 1)
	var d engine.Decision
	go func() {
		var err error
		d, err = e.Decide(context.Background(), "acgs/main/decision", in)
		follower <- err
	}()
	awaitFlightWaiter(t) // the second request joins the flight
	close(joined)
	if err := <-leader; apierror.CodeOf(err) != apierror.Overloaded {
		t.Fatalf("the first request: %v, want overloaded", err)
	}
	if err := <-follower; err != nil {
		t.Fatalf("the request that joined the flight: %v, want the constitution's decision", err)
	}
	if res, _ := d.Result.(map[string]any); res["allow"] != true {
		t.Fatalf("the request that joined the flight: %v, want allow", d.Result)
	}
	if n := calls.Load(); n != 2 {
		t.Fatalf("%d admissions, want 2 (the refused flight and the one started again)", n)
	}
}

// A request that joined a shared evaluation and whose own deadline has
// passed when the request that started it is refused for its client going
// away is refused for its own deadline, not the other's cancellation: it
// was counted as cancelled (acgs_decisions_canceled_total) instead of shed
// (review).
func TestFlightFollowerKeepsItsOwnReason(t *testing.T) {
	var calls atomic.Int32
	joined := make(chan struct{})
	e := flightEngine(t, func(ctx context.Context, fn func()) (bool, error) {
		calls.Add(1)
		<-joined // the second request waits on this flight
		return false, apierror.Wrap(apierror.Overloaded, admission.ErrCanceled, "request cancelled while waiting for an evaluation slot")
	})
	in := loadRequest(t, "safe")
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	leader := make(chan error, 1)
	go func() {
		_, err := e.Decide(gone, "acgs/main/decision", in)
		leader <- err
	}()
	for calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	follower := make(chan error, 1)
	go func() {
		_, err := e.Decide(lateCtx{context.Background()}, "acgs/main/decision", in)
		follower <- err
	}()
	awaitFlightWaiter(t) // the second request joins the flight
	close(joined)
	if err := <-leader; !errors.Is(err, admission.ErrCanceled) {
		t.Fatalf("the first request: %v, want its cancellation", err)
	}
	err := <-follower
	if apierror.CodeOf(err) != apierror.Overloaded || !errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, admission.ErrCanceled) || errors.Is(err, context.Canceled) {
		t.Fatalf("the request that joined the flight: %v, want overloaded for its own deadline", err)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("%d admissions, want 1 (the request past its deadline does not start the evaluation again)", n)
	}
}

// seqSource hands out its bundles in turn; the first Load waits for
// release, so that a second reload can overtake it.
type seqSource struct {
	mu      sync.Mutex
	n       int
	fs      []fstest.MapFS
	release chan struct{}
	loading chan struct{} // closed when the first Load has begun
}

func (s *seqSource) Load(ctx context.Context) (*bundle.Bundle, error) {
	s.mu.Lock()
	i := s.n
	s.n++
	s.mu.Unlock()
	if i == 1 { // the first Load after New's own
		close(s.loading)
		<-s.release
	}
	return engine.FSSource{FS: s.fs[min(i, len(s.fs)-1)], Name: "seq"}.Load(ctx)
}

func (s *seqSource) String() string { return "seq" }

// Two reloads at once activate in the order they loaded: the one that
// began later, and loaded the newer bundle, is the one left active.
func TestConcurrentReloadsKeepTheLatestLoad(t *testing.T) {
	v := func(rev string) fstest.MapFS {
		f := bundleFS(hash, "package t\nx := 1\n")
		f[".manifest"] = &fstest.MapFile{Data: []byte(`{"revision":"` + rev + `","roots":["acgs","t"],"metadata":{"constitutional_hash":"` + hash + `"}}`)}
		return f
	}
	src := &seqSource{fs: []fstest.MapFS{v("v0"), v("v1"), v("v2")}, release: make(chan struct{}), loading: make(chan struct{})}
	e, err := engine.New(context.Background(), src, engine.Options{ConstitutionalHash: hash, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	first := make(chan error, 1)
	go func() { first <- e.Reload(context.Background()) }() // loads v1, slowly
	<-src.loading
	second := make(chan error, 1)
	go func() { second <- e.Reload(context.Background()) }() // v2
	time.Sleep(50 * time.Millisecond)
	close(src.release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if err := <-second; err != nil {
		t.Fatal(err)
	}
	if info, _ := e.Info(); info.Revision != "v2" {
		t.Fatalf("active revision %q after reloads of v1 then v2, want v2", info.Revision)
	}
}

// TestCacheScopeNamesTheDecisionSemantics: the scope of every cache key
// names the embedded OPA and the decision path's own semantics, so that
// replicas of two builds sharing an L2 do not serve each other's decisions.
func TestCacheScopeNamesTheDecisionSemantics(t *testing.T) {
	e := mustOpen(t, nil)
	inf, ok := e.Info()
	if !ok || !strings.Contains(inf.Scope, "#opa-"+opaversion.Version+"/acgs-") {
		t.Fatalf("scope %q", inf.Scope)
	}
}

// TestBatchDecidesIdenticalItemsOnce: items of a batch with one cache key
// are one decision. Each was decided apart, sharing an evaluation only when
// in flight at once: twenty identical items took ten slots, and under load
// one batch answered an input and shed its twin (review).
func TestBatchDecidesIdenticalItemsOnce(t *testing.T) {
	c, err := cache.New(context.Background(), cache.Config{L1Size: 100, TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var admitted atomic.Int64
	e, err := engine.New(context.Background(), engine.FSSource{FS: policies.FS, Name: "embedded"}, engine.Options{
		ConstitutionalHash: hash, EvalTimeout: 10 * time.Second, Cache: c, Logger: quiet,
		Admit: func(_ context.Context, fn func()) (bool, error) { admitted.Add(1); fn(); return true, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	admitted.Store(0)
	one, other := loadRequest(t, "safe"), loadRequest(t, "low_trust")
	batch := []any{one, other}
	for range 19 {
		batch = append(batch, loadRequest(t, "safe"), loadRequest(t, "low_trust"))
	}
	out, errs := e.DecideBatch(context.Background(), "acgs/main/decision", batch)
	if n := admitted.Load(); n != 2 {
		t.Errorf("%d evaluations for 2 distinct inputs", n)
	}
	for i := range batch {
		if errs[i] != nil || !jsoneq.Equal(out[i].Result, out[i%2].Result) {
			t.Fatalf("item %d: %v %v, want item %d's answer", i, out[i].Result, errs[i], i%2)
		}
	}
}
