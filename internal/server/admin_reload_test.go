package server_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/acgs-lite/acgs/internal/config"
	"github.com/acgs-lite/acgs/internal/engine"
	"github.com/acgs-lite/acgs/internal/remote"
	"github.com/acgs-lite/acgs/internal/server"
	"github.com/acgs-lite/acgs/internal/telemetry"
	"github.com/acgs-lite/acgs/policies"
)

// TestReloadErrorStatuses: POST /v1/admin/reload answers each way a reload
// fails with its own status, the reason in the message. Only a reload the
// configuration does not do (polled remote bundles) is the client's error
// (400); a source that could not be read or reached is 503 unavailable, a
// bundle that was read and refused 500 internal_error. Every failure was
// 400 invalid_parameter (review).
func TestReloadErrorStatuses(t *testing.T) {
	ctx := context.Background()
	// A local bundle that is not there, and one that does not parse.
	_, missing := engine.PathSource{Path: filepath.Join(t.TempDir(), "nope.tar.gz")}.Load(ctx)
	broken := t.TempDir()
	if err := os.WriteFile(filepath.Join(broken, "broken.rego"), []byte("package broken\n\nallow if {"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, unparsable := engine.PathSource{Path: broken}.Load(ctx)
	if missing == nil || unparsable == nil {
		t.Fatalf("the local sources loaded: %v, %v", missing, unparsable)
	}
	download := &remote.DownloadError{Err: errors.New(`remote bundle "acgs": request failed: Get "http://127.0.0.1:1/b.tar.gz": connection refused`)}
	refused := errors.New(`bundle remote acgs: constitutional hash 0123456789abcdef does not match the configured cdd01ef066bc6cf2`)

	active := openReload(t, true)
	inactive := openReload(t, false)
	for _, tc := range []struct {
		name     string
		h        *reloadHarness
		err      error
		code     int
		errCode  string
		contains []string
	}{
		{"polled remote bundles", active, remote.ErrPolled, 400, "invalid_parameter", []string{"trigger: manual", "the previous policy stays active"}},
		{"polled, no policy yet", inactive, remote.ErrPolled, 400, "invalid_parameter", []string{"trigger: manual", "no policy is active"}},
		{"shutting down", active, remote.ErrStopped, 503, "unavailable", []string{"reload not made", "shutting down", "the previous policy stays active"}},
		{"download failed", active, download, 503, "unavailable", []string{"bundle source is unavailable", "the previous policy stays active", "connection refused"}},
		{"download failed, no policy yet", inactive, download, 503, "unavailable", []string{"no policy is active", "connection refused"}},
		{"two downloads failed", active, errors.Join(download, &remote.DownloadError{Err: errors.New("server replied with Bad Gateway")}), 503, "unavailable", []string{"Bad Gateway"}},
		{"local bundle missing", active, missing, 503, "unavailable", []string{"no such file"}},
		{"reload past its deadline", active, fmt.Errorf("remote bundles acgs not downloaded: %w", context.DeadlineExceeded), 503, "unavailable", []string{"deadline"}},
		{"local bundle does not parse", active, unparsable, 500, "internal_error", []string{"reload refused, the previous policy stays active", "broken.rego"}},
		{"bundle refused", active, refused, 500, "internal_error", []string{"reload refused, the previous policy stays active", "constitutional hash"}},
		{"bundle refused, no policy yet", inactive, refused, 500, "internal_error", []string{"reload refused, no policy is active"}},
		{"one refused, one not downloaded", active, errors.Join(download, refused), 500, "internal_error", []string{"constitutional hash", "connection refused"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.h.err = tc.err
			r := tc.h.do(t, "POST", "/v1/admin/reload", nil, map[string]string{"Authorization": "Bearer " + adminToken})
			msg, _ := r.obj["message"].(string)
			if r.code != tc.code || r.obj["code"] != tc.errCode {
				t.Fatalf("%d %s, want %d %s", r.code, r.body, tc.code, tc.errCode)
			}
			for _, s := range tc.contains {
				if !strings.Contains(msg, s) {
					t.Errorf("message %q does not say %q", msg, s)
				}
			}
		})
	}
	active.err = nil
	if r := active.do(t, "POST", "/v1/admin/reload", nil, map[string]string{"Authorization": "Bearer " + adminToken}); r.code != 200 || r.obj["reloaded"] != true {
		t.Fatalf("a reload that succeeded: %d %s", r.code, r.body)
	}
}

// reloadHarness is a server whose reload fails with err (nil: succeeds).
type reloadHarness struct {
	*harness
	err error
}

// openReload is a server on the embedded constitution (active), or on no
// policy, whose reload returns the harness's err.
func openReload(tb testing.TB, active bool) *reloadHarness {
	tb.Helper()
	cfg := config.Default()
	cfg.AdminTok = []string{adminToken}
	var src engine.BundleSource
	if active {
		src = engine.FSSource{FS: policies.FS, Name: "embedded"}
	}
	e, err := engine.New(context.Background(), src, engine.Options{ConstitutionalHash: cfg.Policy.ConstitutionalHash, EvalTimeout: time.Second})
	if err != nil {
		tb.Fatal(err)
	}
	rh := &reloadHarness{}
	s, err := server.New(server.Deps{
		Config: cfg, Engine: e, Metrics: telemetry.NewMetrics(telemetry.BuildInfo{}), Window: telemetry.NewWindow(time.Minute),
		Reload: func(context.Context) error { return rh.err },
	})
	if err != nil {
		tb.Fatal(err)
	}
	rh.harness = &harness{srv: s, eng: e}
	return rh
}
