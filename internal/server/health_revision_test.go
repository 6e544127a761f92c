package server_test

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/open-policy-agent/opa/v1/bundle"

	"github.com/acgs-lite/acgs/internal/cache"
	"github.com/acgs-lite/acgs/internal/config"
	"github.com/acgs-lite/acgs/internal/engine"
	"github.com/acgs-lite/acgs/internal/server"
	"github.com/acgs-lite/acgs/internal/telemetry"
	"github.com/acgs-lite/acgs/internal/testenv"
)

// reloadingCache is the real cache whose Stats, which the health document
// reads while it is built, first activates another bundle once: a reload
// at that moment, deterministically.
type reloadingCache struct {
	*cache.Tiered
	once   sync.Once
	reload func()
}

func (c *reloadingCache) Stats() cache.Stats {
	c.once.Do(c.reload)
	return c.Tiered.Stats()
}

// probeBundle is the constitution with revision rev and, when probe, an
// extra entry point (t/probe), so that its health document's read sets
// differ from the constitution's.
func probeBundle(tb testing.TB, rev string, probe bool) *bundle.Bundle {
	tb.Helper()
	fsys := fstest.MapFS{}
	for p, b := range testenv.ConstitutionFiles(tb, func(m map[string]any) {
		m["roots"] = []string{"acgs", "t"}
		m["revision"] = rev
	}) {
		fsys[p] = &fstest.MapFile{Data: b}
	}
	if probe {
		fsys["t/probe.rego"] = &fstest.MapFile{Data: []byte("package t\n\n# METADATA\n# entrypoint: true\nprobe := input.probe\n")}
	}
	b, err := engine.FSSource{FS: fsys, Name: rev}.Load(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// TestHealthOneRevision: the ACGS health document describes one active
// policy, although another is activated while it is built. It read the
// active policy once for its revision and again for its read sets (and its
// evaluators), so a hot reload in between answered the old revision with
// the new one's read sets (review).
func TestHealthOneRevision(t *testing.T) {
	plain, probed := probeBundle(t, "rev-plain", false), probeBundle(t, "rev-probe", true)
	cfg := config.Default()
	c, err := cache.New(context.Background(), cache.Config{L1Size: 100, TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	e, err := engine.New(context.Background(), nil, engine.Options{
		ConstitutionalHash: cfg.Policy.ConstitutionalHash, EvalTimeout: time.Second, Cache: c, Compiled: true,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Activate(context.Background(), plain, "rev-plain"); err != nil {
		t.Fatal(err)
	}
	rc := &reloadingCache{Tiered: c, reload: func() {
		if err := e.Activate(context.Background(), probed, "rev-probe"); err != nil {
			t.Error(err)
		}
	}}
	s, err := server.New(server.Deps{Config: cfg, Engine: e, Cache: rc, Window: telemetry.NewWindow(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{srv: s, eng: e, cache: c}
	r := h.do(t, "GET", "/v1/data/acgs/main/health", nil, nil)
	if r.code != 200 {
		t.Fatalf("health: %d %s", r.code, r.body)
	}
	if inf, _ := e.Info(); inf.Revision != "rev-probe" {
		t.Fatalf("the reload did not happen while the document was built: %q active", inf.Revision)
	}
	rev := r.obj["policy_revision"]
	sets, _ := r.obj["read_sets"].(map[string]any)
	evals, _ := r.obj["evaluators"].(map[string]any)
	_, setProbe := sets["t/probe"]
	_, evalProbe := evals["t/probe"]
	if want := rev == "rev-probe"; setProbe != want || evalProbe != want {
		t.Fatalf("policy_revision %v with read sets %v and evaluators %v: two revisions in one document", rev, sets, evals)
	}
}

// TestHealthTellsSameRevisionApart: two bundles of one manifest revision
// with other content are two policies to the cache; health and the admin
// reload name their content digests, which the revision alone could not.
func TestHealthTellsSameRevisionApart(t *testing.T) {
	cfg := config.Default()
	e, err := engine.New(context.Background(), nil, engine.Options{
		ConstitutionalHash: cfg.Policy.ConstitutionalHash, EvalTimeout: time.Second,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	s, err := server.New(server.Deps{Config: cfg, Engine: e, Window: telemetry.NewWindow(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{srv: s, eng: e}
	var digests []any
	for _, probe := range []bool{false, true} {
		if err := e.Activate(context.Background(), probeBundle(t, "rev-same", probe), "test"); err != nil {
			t.Fatal(err)
		}
		r := h.do(t, "GET", "/v1/data/acgs/main/health", nil, nil)
		inf, _ := e.Info()
		if r.code != 200 || r.obj["policy_revision"] != "rev-same" || r.obj["policy_content_digest"] != inf.ContentDigest || len(inf.ContentDigest) != 16 {
			t.Fatalf("health %d %s, want revision rev-same and content digest %q", r.code, r.body, inf.ContentDigest)
		}
		digests = append(digests, r.obj["policy_content_digest"])
	}
	if digests[0] == digests[1] {
		t.Fatalf("two bundles of one revision with other content: one content digest %v", digests[0])
	}
}
