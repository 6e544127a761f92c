package engine_test

import (
	"context"
	"errors"
	"testing"

	"github.com/acgs-lite/acgs/internal/engine"
)

// TestDownloadFailureReported: a failed download is the last reload error
// until ClearDownloadFailure, told to OnReload as download_failure (a
// refusal is failure); clearing it shows again the refusal it replaced,
// and leaves a refusal recorded after it alone. An activation clears both.
func TestDownloadFailureReported(t *testing.T) {
	ctx := context.Background()
	results := map[string]int{}
	e, err := engine.New(ctx, nil, engine.Options{ConstitutionalHash: hash, Logger: quiet,
		OnReload: func(result string, _ engine.Info, _ error) { results[result]++ }})
	if err != nil {
		t.Fatal(err)
	}
	last := func() error {
		inf, _ := e.Info()
		return inf.LastError
	}
	refusal := errors.New("bundle refused: signature")
	down := errors.New("request failed: connection refused")
	down2 := errors.New("server replied with Bad Gateway")

	e.ClearDownloadFailure() // nothing recorded: nothing happens
	if err := last(); err != nil {
		t.Fatalf("last error %v with nothing recorded", err)
	}
	e.RecordDownloadFailure(down)
	if err := last(); !errors.Is(err, down) || err.Error() != down.Error() {
		t.Fatalf("last error %v, want %v", err, down)
	}
	e.ClearDownloadFailure()
	if err := last(); err != nil {
		t.Fatalf("last error %v after the download succeeded", err)
	}

	e.RecordFailure(refusal)
	e.RecordDownloadFailure(down)
	e.RecordDownloadFailure(down2)
	if err := last(); !errors.Is(err, down2) {
		t.Fatalf("last error %v, want %v", err, down2)
	}
	e.ClearDownloadFailure()
	if err := last(); err != refusal {
		t.Fatalf("last error %v after the download succeeded, want the refusal back", err)
	}
	e.ClearDownloadFailure()
	if err := last(); err != refusal {
		t.Fatalf("a refusal %v cleared as a download failure", err)
	}
	if results["failure"] != 1 || results["download_failure"] != 3 {
		t.Fatalf("OnReload results %v, want 1 failure and 3 download_failure", results)
	}

	e.RecordDownloadFailure(down)
	b, err := engine.FSSource{FS: inspectBundle("one", "package t\n\nv := 1\n"), Name: "one"}.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Activate(ctx, b, "one"); err != nil {
		t.Fatal(err)
	}
	if err := last(); err != nil {
		t.Fatalf("last error %v after an activation", err)
	}
}
