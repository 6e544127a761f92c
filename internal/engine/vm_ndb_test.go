package engine_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/acgs-lite/acgs/internal/engine"
)

// TestTopdownAfterTheVMAndNonDeterministicBuiltins: topdown answering
// after the VM reuses the answers of the VM's non-deterministic calls
// when the VM failed (a conflict topdown never reaches): the policy's
// http.send reaches its server once. After a VM that ran out of its share
// of EVAL_TIMEOUT, topdown calls again, since the VM's deadline may have
// cut the call (with raise_error false, an error answer).
func TestTopdownAfterTheVMAndNonDeterministicBuiltins(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	const policy = `package t

f(x) := 1 if x > 0
f(x) := 2 if x > 1
code := http.send({"method": "GET", "url": input.url, "raise_error": false}).status_code

# METADATA
# entrypoint: true
# scope: document
p if {
	code == 200
	input.role == "admin"
}

p if {
	code == 200
	some x in input.arr
	f(x) == 1
}

p if {
	code == 200
	some a in input.items
	some b in input.items
	a.id == b.parent
}
`
	ctx := context.Background()
	e, err := engine.New(ctx, engine.FSSource{FS: fstest.MapFS{
		".manifest": {Data: []byte(`{"revision":"nd-1","roots":["t"],"metadata":{"constitutional_hash":"` + hash + `"}}`)},
		"t/p.rego":  {Data: []byte(policy)},
	}, Name: "nd"}, engine.Options{ConstitutionalHash: hash, EvalTimeout: 300 * time.Millisecond, Logger: quiet, Compiled: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := e.Evaluators()["t/p"]; got != "vm" {
		t.Fatalf("t/p runs on %q, want the VM", got)
	}
	items := make([]any, 3000) // 9,000,000 pairs: past the VM's share
	for i := range items {
		items[i] = map[string]any{"id": i, "parent": -1}
	}
	for _, tc := range []struct {
		name     string
		input    map[string]any
		wantHits int64
	}{
		// The VM raises the conflict of f(2) in a body topdown leaves at
		// its first x; topdown answers with the VM's http.send answer.
		{"the VM failed", map[string]any{"url": srv.URL, "role": "user", "arr": []any{1, 2}, "items": []any{}}, 1},
		// The VM runs out in the third body; topdown answers from the
		// first, calling http.send again.
		{"the VM ran out of time", map[string]any{"url": srv.URL, "role": "admin", "arr": []any{}, "items": items}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hits.Store(0)
			d, err := e.Decide(ctx, "t/p", tc.input)
			if err != nil || d.Result != true {
				t.Fatalf("decision %+v, %v; want true", d, err)
			}
			if d.Source != engine.SourceFull {
				t.Errorf("source %s, want %s (topdown after the VM)", d.Source, engine.SourceFull)
			}
			if got := hits.Load(); got != tc.wantHits {
				t.Errorf("http.send reached its server %d times, want %d", got, tc.wantHits)
			}
		})
	}
}
