package engine_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/acgs-lite/acgs/internal/engine"
)

// levels keeps "LEVEL message" of every record logged through its logger.
type levels struct {
	mu   sync.Mutex
	recs []string
}

func (l *levels) Enabled(context.Context, slog.Level) bool { return true }

func (l *levels) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.recs = append(l.recs, r.Level.String()+" "+r.Message)
	return nil
}

func (l *levels) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *levels) WithGroup(string) slog.Handler      { return l }

func (l *levels) refusedErrors() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, r := range l.recs {
		if strings.HasPrefix(r, "ERROR policy bundle refused") {
			n++
		}
	}
	return n
}

// TestTryActivateReportsNoRefusal: a bundle TryActivate refuses (OPA's
// persisted file at start, which the last accepted copy then stands in
// for) is neither logged, shown as the last reload error nor told to
// OnReload as a failure (acgs_policy_reloads_total{result="failure"}):
// the engine reported it as a failed reload, at ERROR, although the
// accepted copy then served. Activate's refusal still is all three, and
// a bundle TryActivate accepts is activated as Activate's is.
func TestTryActivateReportsNoRefusal(t *testing.T) {
	ctx := context.Background()
	wrong, err := engine.FSSource{FS: bundleFS("ffffffffffffffff", "package t\nx := 1\n"), Name: "wrong"}.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	good, err := engine.FSSource{FS: inspectBundle("good", "package t\n\nv := 1\n"), Name: "good"}.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		try      bool // TryActivate, else Activate
		reported bool // the refusal is logged at ERROR, the last error and a failure
	}{
		{"Activate", false, true},
		{"TryActivate", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs := &levels{}
			results := map[string]int{}
			e, err := engine.New(ctx, nil, engine.Options{ConstitutionalHash: hash, Logger: slog.New(logs),
				OnReload: func(result string, _ engine.Info, _ error) { results[result]++ }})
			if err != nil {
				t.Fatal(err)
			}
			activate := e.Activate
			if tc.try {
				activate = e.TryActivate
			}
			if err := activate(ctx, wrong, "wrong"); err == nil || !strings.Contains(err.Error(), "does not match") {
				t.Fatalf("refusal %v, want the constitutional hash's", err)
			}
			inf, _ := e.Info()
			reported := []bool{logs.refusedErrors() == 1, inf.LastError != nil, results["failure"] == 1}
			for i, what := range []string{"logged at ERROR", "the last reload error", "counted as a failure"} {
				if reported[i] != tc.reported {
					t.Errorf("refusal %s: %v, want %v (OnReload %v, log %v)", what, reported[i], tc.reported, results, logs.recs)
				}
			}
			if err := activate(ctx, good, "good"); err != nil {
				t.Fatal(err)
			}
			if inf, _ := e.Info(); inf.Revision != "good" || results["success"] != 1 {
				t.Fatalf("revision %q active, OnReload %v, want good and 1 success", inf.Revision, results)
			}
		})
	}
}
