package engine_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/acgs-lite/acgs/internal/engine"
	"github.com/acgs-lite/acgs/internal/testenv"
)

// revisionBundle is a bundle of revision rev whose policy allows input.n
// below limit.
func revisionBundle(rev, limit string) fstest.MapFS {
	return fstest.MapFS{
		".manifest":   {Data: []byte(`{"revision":"` + rev + `","roots":["t"],"metadata":{"constitutional_hash":"cdd01ef066bc6cf2"}}`)},
		"t/p.rego":    {Data: []byte("package t\nallow if input.n < data.t.limit\n")},
		"t/data.json": {Data: []byte(`{"limit":` + limit + `}`)},
	}
}

// TestSameRevisionOtherContentWarned: the revision is all that responses,
// decision logs and metrics name, so a bundle activated with the active
// revision but other content is warned about, and the activation log
// names both content digests. Two such bundles were one in the audit
// trail, with no word of it (review).
func TestSameRevisionOtherContentWarned(t *testing.T) {
	const warning = "policy bundle activated with the revision of the previous one but other content"
	for _, tc := range []struct {
		name          string
		rev, limit    string // of the second bundle; the first is v1 with limit 10
		warned        bool
		secondApplies bool // the second bundle is activated (not the active one again)
	}{
		{"same revision, other content", "v1", "1", true, true},
		{"other revision, other content", "v2", "1", false, true},
		{"same revision, same content", "v1", "10", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			var logs testenv.SyncBuffer
			e, err := engine.New(ctx, engine.FSSource{FS: revisionBundle("v1", "10"), Name: "first"}, engine.Options{
				ConstitutionalHash: "cdd01ef066bc6cf2", EvalTimeout: 10 * time.Second, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			if err != nil {
				t.Fatal(err)
			}
			b, err := engine.FSSource{FS: revisionBundle(tc.rev, tc.limit), Name: "second"}.Load(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := e.Activate(ctx, b, "second"); err != nil {
				t.Fatal(err)
			}
			d, err := e.Decide(ctx, "t/allow", map[string]any{"n": 5})
			if err != nil {
				t.Fatal(err)
			}
			if allowed := d.Result == true; allowed == tc.secondApplies {
				t.Fatalf("decision %v under revision %s: the second bundle applies: %v, want %v", d.Result, d.Revision, !allowed, tc.secondApplies)
			}
			out := logs.String()
			if got := strings.Contains(out, warning); got != tc.warned {
				t.Fatalf("warning logged: %v, want %v\n%s", got, tc.warned, out)
			}
			var digests []string
			for _, line := range strings.Split(out, "\n") {
				if strings.Contains(line, `msg="policy bundle activated"`) {
					_, after, ok := strings.Cut(line, " content_digest=")
					if !ok {
						t.Fatalf("activation log without content_digest: %s", line)
					}
					digests = append(digests, strings.Fields(after)[0])
				}
			}
			if want := map[bool]int{true: 2, false: 1}[tc.secondApplies]; len(digests) != want {
				t.Fatalf("%d activations logged, want %d\n%s", len(digests), want, out)
			}
			if tc.secondApplies && digests[0] == digests[1] {
				t.Fatalf("content digests %v of bundles with other content are equal", digests)
			}
		})
	}
}
