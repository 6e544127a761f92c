package cli

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
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
		code = 1 // what Execute makes of an error that is not an ExitError
		var ee *ExitError
		if errors.As(err, &ee) {
			code = ee.Code
		}
		out.WriteString("acgs: " + err.Error() + "\n") // as Execute prints it
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

// TestAuditVerifyExitCodes: verify exits 0 for an intact log, 1 when it
// found problems (a broken link, a head that does not match), and 2 when it
// could not check: a usage error, a --head or --from that is not a chain
// hash (named in the message, not reported as tampering), a file that
// cannot be opened or read.
func TestAuditVerifyExitCodes(t *testing.T) {
	dir := t.TempDir()
	intact := filepath.Join(dir, "intact.jsonl")
	l, err := telemetry.NewDecisionLog(telemetry.DecisionLogConfig{Sink: "file:" + intact, Chain: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		l.Log(&telemetry.DecisionEvent{Path: "acgs/main/decision", CacheTier: "none"})
	}
	if err := l.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	head := l.ChainHead()
	b, err := os.ReadFile(intact)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(b), "\n")
	tampered := filepath.Join(dir, "tampered.jsonl")
	if err := os.WriteFile(tampered, []byte(lines[0]+lines[2]), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.jsonl")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	other := telemetry.LineHash([]byte("x"))
	for _, tc := range []struct {
		name    string
		args    []string
		code    int
		want    []string
		notWant []string
	}{
		{"intact", []string{intact}, 0, []string{"intact: 3 records"}, nil},
		{"intact, its head", []string{intact, "--head", head}, 0, []string{"intact"}, nil},
		{"intact, from genesis", []string{intact, "--from", telemetry.ChainGenesis}, 0, []string{"intact"}, nil},
		{"a record removed", []string{tampered}, 1, []string{"BROKEN"}, nil},
		{"another head", []string{intact, "--head", other}, 1, []string{"BROKEN", "not at the expected head"}, nil},
		{"empty, another head", []string{empty, "--head", other}, 1, []string{empty + ": the log ends at", "BROKEN"}, []string{":0:"}},
		{"no file", []string{filepath.Join(dir, "missing.jsonl")}, 2, []string{"no such file"}, []string{"BROKEN"}},
		{"a directory", []string{dir}, 2, []string{"reading " + dir}, []string{"BROKEN"}},
		{"no argument", nil, 2, []string{"accepts 1 arg"}, nil},
		{"two arguments", []string{intact, empty}, 2, []string{"accepts 1 arg"}, nil},
		{"unknown flag", []string{intact, "--heads", head}, 2, []string{"unknown flag"}, nil},
		{"head not a hash", []string{intact, "--head", "garbage"}, 2, []string{"--head", "garbage"}, []string{"BROKEN"}},
		{"head upper-case", []string{intact, "--head", strings.ToUpper(head)}, 2, []string{"--head"}, []string{"BROKEN"}},
		{"head without its prefix", []string{intact, "--head", strings.TrimPrefix(head, "sha256:")}, 2, []string{"--head"}, []string{"BROKEN"}},
		{"from not a hash", []string{intact, "--from", "sha256:abc"}, 2, []string{"--from", "sha256:abc"}, []string{"BROKEN"}},
		{"empty head", []string{intact, "--head="}, 2, []string{"--head"}, []string{"intact"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, code := auditRun(t, append([]string{"verify"}, tc.args...)...)
			if code != tc.code {
				t.Errorf("exit %d, want %d:\n%s", code, tc.code, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("no %q in:\n%s", w, out)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(out, w) {
					t.Errorf("%q in:\n%s", w, out)
				}
			}
		})
	}
}
