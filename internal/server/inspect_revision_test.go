package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/bundle"

	"github.com/acgs-lite/acgs/internal/config"
	"github.com/acgs-lite/acgs/internal/engine"
	"github.com/acgs-lite/acgs/internal/server"
	"github.com/acgs-lite/acgs/internal/telemetry"
)

// revisionBundles returns two bundles of the constitution that decide the
// safe request differently: "rev-allow" as the constitution does, and
// "rev-deny", whose data prohibits its action.
func revisionBundles(tb testing.TB) (allow, deny *bundle.Bundle) {
	tb.Helper()
	allow = mustBundle(tb)
	allow.Manifest.Revision = "rev-allow"
	deny = mustBundle(tb)
	deny.Manifest.Revision = "rev-deny"
	cfg := deny.Data["acgs"].(map[string]any)["config"].(map[string]any)
	cfg["prohibited_actions"] = append(cfg["prohibited_actions"].([]any), "data.read_public")
	return allow, deny
}

// openWithAdmit is a server on an engine with rev-allow active whose
// evaluations go through admit (engine.Options.Admit).
func openWithAdmit(tb testing.TB, allow *bundle.Bundle, admit func(ctx context.Context, fn func()) (bool, error)) *harness {
	tb.Helper()
	cfg := config.Default()
	cfg.Server.MaxBatchItems = 50
	e, err := engine.New(context.Background(), nil, engine.Options{
		ConstitutionalHash: cfg.Policy.ConstitutionalHash, EvalTimeout: 30 * time.Second, Admit: admit,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		tb.Fatal(err)
	}
	if err := e.Activate(context.Background(), allow, "rev-allow"); err != nil {
		tb.Fatal(err)
	}
	s, err := server.New(server.Deps{Config: cfg, Engine: e, Window: telemetry.NewWindow(time.Minute)})
	if err != nil {
		tb.Fatal(err)
	}
	return &harness{srv: s, eng: e}
}

// safeBatch is a batch of n copies of the safe request.
func safeBatch(tb testing.TB, n int) string {
	tb.Helper()
	var in any
	if err := json.Unmarshal([]byte(request(tb, "safe")), &in); err != nil {
		tb.Fatal(err)
	}
	inputs := map[string]any{}
	for i := range n {
		inputs[fmt.Sprint(i)] = in
	}
	return mustJSON(tb, map[string]any{"inputs": inputs})
}

// batchAllows returns how many items of a batch answer allow true and false.
func batchAllows(tb testing.TB, r resp) (allowed, denied int) {
	tb.Helper()
	if r.code != 200 {
		tb.Fatalf("batch: %d %s", r.code, r.body)
	}
	for id, v := range responsesOf(tb, r) {
		item, _ := v.(map[string]any)
		res, _ := item["result"].(map[string]any)
		switch res["allow"] {
		case true:
			allowed++
		case false:
			denied++
		default:
			tb.Fatalf("item %s has no allow: %v", id, item)
		}
	}
	return allowed, denied
}

// inspectedBatchQueries are the batch parameters that evaluate each item
// with engine.Inspect.
var inspectedBatchQueries = []string{"?strict-builtin-errors", "?instrument", "?strict-builtin-errors&instrument&metrics"}

// TestInspectedBatchOneRevision: a batch evaluated item by item for an
// inspection (?strict-builtin-errors, ?instrument) answers every item from
// one revision, although another is activated while its items are
// evaluated. Each item read the active revision for itself, so a reload
// during the batch answered some identical inputs allow (the old revision)
// and others deny (the new one) in one response (review). The hook
// (engine.Options.Admit, which every inspection passes) activates the
// other bundle at the batch's first evaluation and holds the others until
// it is active, so the items still to come see the new revision.
func TestInspectedBatchOneRevision(t *testing.T) {
	allow, deny := revisionBundles(t)
	for _, q := range inspectedBatchQueries {
		t.Run(q, func(t *testing.T) {
			var armed atomic.Bool
			var once sync.Once
			var h *harness
			h = openWithAdmit(t, allow, func(_ context.Context, fn func()) (bool, error) {
				if armed.Load() {
					once.Do(func() {
						if err := h.eng.Activate(context.Background(), deny, "rev-deny"); err != nil {
							t.Error(err)
						}
					})
				}
				fn()
				return true, nil
			})
			armed.Store(true)
			const n = 24
			allowed, denied := batchAllows(t, h.do(t, "POST", "/v1/batch/data/acgs/main/decision"+q, strings.NewReader(safeBatch(t, n)), nil))
			if allowed != n && denied != n {
				t.Fatalf("one batch answered %d items allow and %d deny for the same input: two revisions", allowed, denied)
			}
			if inf, _ := h.eng.Info(); inf.Revision != "rev-deny" {
				t.Fatalf("revision %q active after the batch, want rev-deny", inf.Revision)
			}
			// The next batch is the new revision's.
			if allowed, _ := batchAllows(t, h.do(t, "POST", "/v1/batch/data/acgs/main/decision"+q, strings.NewReader(safeBatch(t, 4)), nil)); allowed != 0 {
				t.Fatalf("%d items allowed after rev-deny was activated", allowed)
			}
		})
	}
}

// TestInspectedBatchOneRevisionDuringReloads: batches with the inspection
// parameters while the two bundles are activated back and forth, for a
// bounded time: no batch mixes the revisions. It runs 4 s, longer (at most
// 60 s) until two activations happened while batches ran: under -race on
// a loaded machine one activation took most of 10 s (CI bfed6f6).
func TestInspectedBatchOneRevisionDuringReloads(t *testing.T) {
	allow, deny := revisionBundles(t)
	h := openWithAdmit(t, allow, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	soft := time.Now().Add(4 * time.Second)
	var wg sync.WaitGroup
	var activations atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			b, rev := allow, "rev-allow"
			if i%2 == 0 {
				b, rev = deny, "rev-deny"
			}
			if err := h.eng.Activate(context.Background(), b, rev); err != nil {
				t.Error(err)
				return
			}
			activations.Add(1)
		}
	}()
	body := safeBatch(t, 16)
	batches, mixed := 0, 0
	for i := 0; ctx.Err() == nil && (time.Now().Before(soft) || activations.Load() < 2); i++ {
		q := inspectedBatchQueries[i%len(inspectedBatchQueries)]
		allowed, denied := batchAllows(t, h.do(t, "POST", "/v1/batch/data/acgs/main/decision"+q, strings.NewReader(body), nil))
		batches++
		if allowed > 0 && denied > 0 {
			mixed++
			t.Errorf("batch %d (%s): %d items allow and %d deny for the same input", i, q, allowed, denied)
		}
	}
	cancel()
	wg.Wait()
	t.Logf("%d batches, %d mixed, %d activations", batches, mixed, activations.Load())
	if activations.Load() < 2 {
		t.Fatalf("only %d activations during the batches", activations.Load())
	}
}
