package cli

import (
	"context"
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
	out, code, err := perfRun(t, append([]string{"audit"}, args...)...)
	if err != nil {
		out += "acgs: " + err.Error() + "\n" // as Execute prints it
	}
	return out, code
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

// chainedLog writes n records with a chained file log at path (continuing
// what the file holds) and closes it, which replaces its head checkpoint.
func chainedLog(t *testing.T, path string, n int) {
	t.Helper()
	l, err := telemetry.NewDecisionLog(telemetry.DecisionLogConfig{Sink: "file:" + path, Chain: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	for range n {
		l.Log(&telemetry.DecisionEvent{Path: "acgs/main/decision", CacheTier: "none"})
	}
	if err := l.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestAuditVerifyCheckpoint: verify --checkpoint FILE.head compares the log
// with its head checkpoint as the gateway does when it opens the file: a
// log whose gateway was killed after records written since its last
// checkpoint holds the checkpoint's head at its size and goes on past it,
// which is a note (exit 0), not a cut (review: verify --head with the
// checkpoint's head reported records removed where the start calls the
// file "behind"); a log cut before the checkpoint's size or edited at it
// is a problem (exit 1); a checkpoint that cannot be read is exit 2.
// --head with a bare hash still wants the log to end there.
func TestAuditVerifyCheckpoint(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "gateway.jsonl")
	ckPath := path + telemetry.HeadCheckpointSuffix
	chainedLog(t, path, 3)
	atThree, err := os.ReadFile(ckPath)
	if err != nil {
		t.Fatal(err)
	}
	closed, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	chainedLog(t, path, 2)
	// As a kill leaves it: two records written after the last checkpoint.
	killedCk := filepath.Join(dir, "killed.head")
	if err := os.WriteFile(killedCk, atThree, 0o600); err != nil {
		t.Fatal(err)
	}
	full, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(full), "\n")
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cut := write("cut.jsonl", lines[0]+lines[1])
	shorter := write("shorter.jsonl", lines[0]+lines[1]+strings.Replace(lines[2], `"none"`, `"l1"`, 1)+lines[3]+lines[4])
	edited := write("edited.jsonl", lines[0]+lines[1]+strings.Replace(lines[2], `"none"`, `"nonE"`, 1)+lines[3]+lines[4])
	empty := write("empty.jsonl", "")
	emptyCk := write("empty.head", telemetry.ChainGenesis+"\n0\n")
	notACk := write("garbage.head", "not a checkpoint\n")
	ckHead := strings.SplitN(string(atThree), "\n", 2)[0]
	for _, tc := range []struct {
		name    string
		args    []string
		code    int
		want    []string
		notWant []string
	}{
		{"ends at the checkpoint", []string{path, "--checkpoint", ckPath}, 0, []string{"intact: 5 records"}, []string{"note"}},
		{"the checkpoint's line, the file as it was then", []string{write("three.jsonl", string(closed)), "--checkpoint", killedCk}, 0, []string{"intact: 3 records"}, []string{"note"}},
		{"goes on past the checkpoint", []string{path, "--checkpoint", killedCk}, 0, []string{"note: the last 2 record(s) (after line 3) are not covered", "intact: 5 records"}, []string{"BROKEN"}},
		{"the checkpoint's head as --head", []string{path, "--head", ckHead}, 1, []string{"not at the expected head", "BROKEN"}, nil},
		{"cut before the checkpoint", []string{cut, "--checkpoint", killedCk}, 1, []string{"before its head checkpoint's size", "BROKEN"}, []string{"note"}},
		{"the checkpoint's line edited", []string{edited, "--checkpoint", killedCk}, 1, []string{edited + ":3: the line at the head checkpoint's size", "BROKEN"}, []string{"note"}},
		{"a record up to the checkpoint shortened", []string{shorter, "--checkpoint", killedCk}, 1, []string{shorter + ":4: the head checkpoint's size", "falls inside this line", "BROKEN"}, []string{"note"}},
		{"empty, an empty checkpoint", []string{empty, "--checkpoint", emptyCk}, 0, []string{"no records"}, []string{"BROKEN"}},
		{"records after an empty checkpoint", []string{path, "--checkpoint", emptyCk}, 0, []string{"the last 5 record(s) (all of them"}, []string{"BROKEN"}},
		{"no checkpoint file", []string{path, "--checkpoint", filepath.Join(dir, "missing.head")}, 2, []string{"--checkpoint", "missing.head"}, []string{"BROKEN", "intact"}},
		{"not a checkpoint", []string{path, "--checkpoint", notACk}, 2, []string{"not a head checkpoint"}, []string{"BROKEN", "intact"}},
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

// TestAuditVerifyLongLine: a line longer than --max-line-bytes is reported
// as not checked; when nothing else is wrong verify exits 2 (the log could
// not be checked whole, which is not a finding of tampering), and 1 when
// it found problems besides. The records after the line are checked (it is
// hashed as it is read), and so is its own link, read from its end: a
// record removed before it was not found (review).
func TestAuditVerifyLongLine(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "gateway.jsonl")
	l, err := telemetry.NewDecisionLog(telemetry.DecisionLogConfig{Sink: "file:" + path, Chain: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	l.Log(&telemetry.DecisionEvent{Path: "before"})
	l.Log(&telemetry.DecisionEvent{Path: "long", Input: map[string]any{"blob": strings.Repeat("y", 4096)}})
	l.Log(&telemetry.DecisionEvent{Path: "after"})
	l.Log(&telemetry.DecisionEvent{Path: "last"})
	if err := l.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(b), "\n")
	removed := filepath.Join(dir, "removed.jsonl")
	if err := os.WriteFile(removed, []byte(lines[0]+lines[1]+lines[3]), 0o600); err != nil {
		t.Fatal(err)
	}
	removedBefore := filepath.Join(dir, "removed-before.jsonl")
	if err := os.WriteFile(removedBefore, []byte(lines[1]+lines[2]+lines[3]), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"within the default bound", []string{path}, 0, []string{"intact: 4 records"}},
		{"a line past the bound", []string{path, "--max-line-bytes", "1024"}, 2, []string{path + ":2: longer than 1024 bytes", "NOT CHECKED WHOLE: 1 line(s)"}},
		{"a line past the bound and a record after it removed", []string{removed, "--max-line-bytes", "1024"}, 1, []string{removed + ":2: longer than 1024 bytes", removed + ":3: prev_hash", "BROKEN: 2 problem(s)"}},
		{"a line past the bound and the record before it removed", []string{removedBefore, "--max-line-bytes", "1024"}, 1, []string{removedBefore + ":1: the first record does not start a chain", removedBefore + ":1: longer than 1024 bytes", "BROKEN: 2 problem(s)"}},
		{"a bound too small", []string{path, "--max-line-bytes", "10"}, 2, []string{"--max-line-bytes 10"}},
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
		})
	}
}
