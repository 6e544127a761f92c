package engine_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/acgs-lite/acgs/internal/cache"
	"github.com/acgs-lite/acgs/internal/engine"
	"github.com/acgs-lite/acgs/internal/inputgen"
	"github.com/acgs-lite/acgs/internal/jsoneq"
	"github.com/acgs-lite/acgs/internal/testenv"
	"github.com/acgs-lite/acgs/policies"
)

const signingKey = "0123456789abcdef0123456789abcdef-test"

func mustOpenTiered(tb testing.TB, redisURL string) (*engine.Engine, *cache.Tiered) {
	tb.Helper()
	c, err := cache.New(context.Background(), cache.Config{
		L1Size: 20000, TTL: 30 * time.Minute, RedisURL: redisURL, SigningKey: []byte(signingKey),
		L2Timeout: 200 * time.Millisecond, BatchSize: 64, BatchWindow: time.Millisecond,
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	e, err := engine.New(context.Background(), engine.FSSource{FS: policies.FS, Name: "embedded"}, engine.Options{
		ConstitutionalHash: hash, EvalTimeout: 10 * time.Second, Cache: c, Logger: quiet,
		PartialEval: true, PartialEvalKeys: planKeys, PlanCacheSize: 1024, Compiled: true,
	})
	if err != nil {
		tb.Fatal(err)
	}
	return e, c
}

// TestCachedDecisionsEqualFullEvaluation: for generated inputs, the decision
// served cold (plans or full evaluation), L1-warm, and L2-warm from a second
// instance sharing the Redis equals a fresh full evaluation.
func TestCachedDecisionsEqualFullEvaluation(t *testing.T) {
	n := 10000
	if testing.Short() {
		n = 1000
	}
	redis := testenv.StartRedis(t)
	a, ca := mustOpenTiered(t, redis.URL())
	b, _ := mustOpenTiered(t, redis.URL())
	ctx := context.Background()
	inputs := inputgen.New(11).Inputs(n)
	want := make([]engine.Decision, n)
	for i, in := range inputs {
		d, err := a.EvaluateFull(ctx, "acgs/main/decision", in)
		if err != nil {
			t.Fatal(err)
		}
		want[i] = d
	}
	check := func(stage string, e *engine.Engine, wantSources ...engine.Source) map[engine.Source]int {
		counts := map[engine.Source]int{}
		for i, in := range inputs {
			got, err := e.Decide(ctx, "acgs/main/decision", in)
			if err != nil {
				t.Fatalf("%s: input %d: %v", stage, i, err)
			}
			counts[got.Source]++
			if got.Defined != want[i].Defined || !jsoneq.SameText(got.Result, want[i].Result) {
				t.Fatalf("%s: input %d via %v differs at %s", stage, i, got.Source, jsoneq.Diff(want[i].Result, got.Result))
			}
		}
		t.Logf("%s: %v", stage, counts)
		return counts
	}
	check("cold", a)
	warm := check("L1-warm", a)
	// Inputs repeat in the generated set, so "cold" already warmed repeats; every input is now an L1 hit.
	if warm[engine.SourceL1] != n {
		t.Errorf("L1-warm pass: %d of %d from L1", warm[engine.SourceL1], n)
	}
	// Wait until the write-behind queue has reached Redis, then the second instance answers from L2.
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) && (ca.Stats().WriteQueueLen > 0 || ca.Stats().WriteEntries == 0) {
		time.Sleep(20 * time.Millisecond)
	}
	l2 := check("L2-warm (second instance)", b)
	if l2[engine.SourceL2] < n/2 {
		t.Errorf("second instance answered only %d of %d from L2", l2[engine.SourceL2], n)
	}
	if r := ca.Stats().L2Rejected; r != 0 {
		t.Errorf("%d L2 entries rejected", r)
	}

	// The same inputs carrying what agents add to a request (a never-repeated
	// request id, ids, timestamps and metadata beside the named fields):
	// keys on the read set answer them from the cache, and every answer must
	// be what full evaluation of the noisy input gives.
	gen := inputgen.New(12)
	orig := inputs
	withNoise := func(f func(map[string]any) map[string]any) {
		noisy := make([]map[string]any, n)
		for i, in := range orig {
			noisy[i] = f(in)
			d, err := a.EvaluateFull(ctx, "acgs/main/decision", noisy[i])
			if err != nil {
				t.Fatal(err)
			}
			want[i] = d
		}
		inputs = noisy
	}
	withNoise(gen.WithRequestNoise)
	hits := check("request-level noise, L1", a)
	if hits[engine.SourceL1] < n*99/100 {
		t.Errorf("request-level noise: only %d of %d answered from L1 (read-set keys should ignore it)", hits[engine.SourceL1], n)
	}
	// Noise at every level, inside the maps and lists the policy reads whole
	// too: fewer hits, never a wrong answer.
	withNoise(gen.WithNoise)
	check("noise at every level, L1", a)
	check("noise at every level, second instance", b)
	noisy := inputs

	// The batch path: a third instance, cold in L1, sharing the Redis.
	c, _ := mustOpenTiered(t, redis.URL())
	counts := map[engine.Source]int{}
	for lo := 0; lo < n; lo += 100 {
		hi := min(lo+100, n)
		batch := make([]any, 0, hi-lo)
		for _, in := range noisy[lo:hi] {
			batch = append(batch, in)
		}
		got, errs := c.DecideBatch(ctx, "acgs/main/decision", batch)
		for j := range got {
			i := lo + j
			if errs[j] != nil {
				t.Fatalf("batch: input %d: %v", i, errs[j])
			}
			counts[got[j].Source]++
			if got[j].Defined != want[i].Defined || !jsoneq.SameText(got[j].Result, want[i].Result) {
				t.Fatalf("batch: input %d via %v differs at %s", i, got[j].Source, jsoneq.Diff(want[i].Result, got[j].Result))
			}
		}
	}
	t.Logf("noisy, batch on a third instance: %v", counts)
}

// TestForgedL2EntryIsNeverServed overwrites a real L2 entry in Redis: the engine must evaluate instead.
func TestForgedL2EntryIsNeverServed(t *testing.T) {
	redis := testenv.StartRedis(t)
	a, ca := mustOpenTiered(t, redis.URL())
	ctx := context.Background()
	in := loadRequest(t, "dangerous")
	if _, err := a.Decide(ctx, "acgs/main/decision", in); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) && ca.Stats().WriteEntries == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	keys, err := redis.Do("KEYS", "acgs:d:*")
	if err != nil || keys == "" {
		t.Fatalf("no decision key in Redis: %q %v", keys, err)
	}
	// Overwrite every entry with an unsigned payload (signature forgery with
	// a wrong key is covered in internal/cache).
	for _, k := range strings.Fields(keys) {
		if _, err := redis.Do("SET", k, "forged-allow-payload"); err != nil {
			t.Fatal(err)
		}
	}
	b, cb := mustOpenTiered(t, redis.URL())
	d, err := b.Decide(ctx, "acgs/main/decision", in)
	if err != nil {
		t.Fatal(err)
	}
	if d.Source == engine.SourceL2 || d.Result.(map[string]any)["allow"] != false {
		t.Fatalf("forged entry served: %+v", d)
	}
	if cb.Stats().L2Rejected == 0 {
		t.Errorf("forged entry not counted as rejected")
	}
}

// TestRefHeadKeysAreReadWhole: a variable given to a type test and used as
// a key in a rule's head reference is read whole. The read set took it as
// read for its type only, so the cache (and a batch's merged twins)
// answered one role with another role's decision.
func TestRefHeadKeysAreReadWhole(t *testing.T) {
	c, err := cache.New(context.Background(), cache.Config{L1Size: 100, TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	src := `package t
grants[role].admin := true if { role := input.role; is_string(role) }
`
	b, err := engine.FSSource{FS: bundleFS(hash, src), Name: "refhead"}.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	e, err := engine.New(context.Background(), nil, engine.Options{ConstitutionalHash: hash, Cache: c, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Activate(context.Background(), b, "refhead"); err != nil {
		t.Fatal(err)
	}
	inputs := []any{map[string]any{"role": "root"}, map[string]any{"role": "guest"}}
	for _, path := range []string{"t/grants/root/admin", "t/grants"} {
		for _, in := range inputs { // root first: its decision is cached
			d, err := e.Decide(context.Background(), path, in)
			if err != nil {
				t.Fatal(err)
			}
			f, err := e.EvaluateFull(context.Background(), path, in)
			if err != nil {
				t.Fatal(err)
			}
			if d.Defined != f.Defined || !jsoneq.SameText(d.Result, f.Result) {
				t.Errorf("%s %v: decided %v (%v, from %v), full evaluation %v (%v)", path, in, d.Result, d.Defined, d.Source, f.Result, f.Defined)
			}
		}
	}
	c.Purge()
	ds, errs := e.DecideBatch(context.Background(), "t/grants/root/admin", inputs)
	for i, d := range ds {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if want := i == 0; d.Defined != want {
			t.Errorf("batch item %v: defined %v, want %v", inputs[i], d.Defined, want)
		}
	}
}
