package engine_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/acgs-lite/acgs/internal/apierror"
	"github.com/acgs-lite/acgs/internal/engine"
)

// TestInspectorKeepsItsRevision: an Inspector answers from the revision
// active when it was made, after another was activated (a batch's items
// all from one revision); Engine.Inspect answers from the active one. An
// Inspector made with no policy active stays unavailable.
func TestInspectorKeepsItsRevision(t *testing.T) {
	ctx := context.Background()
	e, err := engine.New(ctx, nil, engine.Options{ConstitutionalHash: hash, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	none := e.Inspector()
	activate := func(rev, src string) {
		t.Helper()
		b, err := engine.FSSource{FS: inspectBundle(rev, src), Name: rev}.Load(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.Activate(ctx, b, rev); err != nil {
			t.Fatal(err)
		}
	}
	activate("one", "package t\n\nv := 1\n")
	ins := e.Inspector()
	activate("two", "package t\n\nv := 2\n")
	in := engine.Inspection{StrictBuiltinErrors: true}
	d, err := ins.Inspect(ctx, "t/v", nil, in)
	if err != nil || d.Revision != "one" || d.Result != json.Number("1") {
		t.Fatalf("inspector of revision one after two was activated: %+v, %v", d, err)
	}
	d, err = e.Inspect(ctx, "t/v", nil, in)
	if err != nil || d.Revision != "two" || d.Result != json.Number("2") {
		t.Fatalf("engine after two was activated: %+v, %v", d, err)
	}
	if _, err := none.Inspect(ctx, "t/v", nil, in); apierror.CodeOf(err) != apierror.Unavailable {
		t.Fatalf("inspector made before any activation: %v, want unavailable", err)
	}
}
