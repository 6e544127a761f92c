package cli

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/acgs-lite/acgs/internal/telemetry"
)

// auditRun runs `acgs audit ...` and returns its output and exit code.
func auditRun(t *testing.T, args ...string) (string, int) {
	t.Helper()
	root := NewRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(append([]string{"audit"}, args...))
	code := 0
	if err := root.ExecuteContext(context.Background()); err != nil {
		code = 1
		var ee *ExitError
		if errors.As(err, &ee) {
			code = ee.Code
		}
	}
	return out.String(), code
}

// TestAuditVerifyEmptyLog: a chained log closed before its first decision
// is an empty file whose recorded head is the genesis hash. Verifying it
// against that head passes, says the file has no records, and prints the
// head rather than a blank one.
func TestAuditVerifyEmptyLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gateway.jsonl")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	out, code := auditRun(t, "verify", path, "--head", telemetry.ChainGenesis)
	if code != 0 || !strings.Contains(out, "no records") || !strings.Contains(out, "head "+telemetry.ChainGenesis) {
		t.Fatalf("exit %d:\n%s\nwant 0, a note that the file has no records, and the genesis head", code, out)
	}
	out, code = auditRun(t, "verify", path)
	if code != 0 || !strings.Contains(out, "head "+telemetry.ChainGenesis) {
		t.Fatalf("without --head: exit %d:\n%s", code, out)
	}
	other := telemetry.LineHash([]byte("x"))
	if out, code := auditRun(t, "verify", path, "--head", other); code != 1 || !strings.Contains(out, "BROKEN") {
		t.Fatalf("an empty file against another head: exit %d:\n%s, want 1 and BROKEN", code, out)
	}
}
