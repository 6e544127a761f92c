package telemetry

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/acgs-lite/acgs/internal/testenv"
)

// lowerFileSizeLimit sets RLIMIT_FSIZE, the stand-in for a full disk (a
// write at or past it fails with EFBIG; Go ignores SIGXFSZ), to size for
// the rest of the test or until the returned func restores it. The limit
// is the process's: it is never left low for the tests that follow.
func lowerFileSizeLimit(t *testing.T, size int64) (restore func()) {
	t.Helper()
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_FSIZE, &old); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setrlimit(unix.RLIMIT_FSIZE, &unix.Rlimit{Cur: uint64(size), Max: old.Max}); err != nil {
		t.Skipf("cannot lower RLIMIT_FSIZE: %v", err)
	}
	restore = func() {
		if err := unix.Setrlimit(unix.RLIMIT_FSIZE, &old); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(restore)
	return restore
}

// TestDecisionLogStartsOnAFullDiskAfterATornLine: a file whose last line
// was torn (a write cut off by a full disk), with the disk still full when
// the service starts, must not keep acgs serve or acgs gateway from
// starting: the newline that ends the fragment is written before the first
// record, as after a write that failed part-way, and while it cannot be the
// records are counted as failed and warned about. Once there is room the
// next record starts a line of its own, linked to the fragment.
func TestDecisionLogStartsOnAFullDiskAfterATornLine(t *testing.T) {
	for _, chain := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "chained"}[chain], func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "decisions.jsonl")
			if err := os.WriteFile(path, []byte(`{"path":"torn`), 0o600); err != nil {
				t.Fatal(err)
			}
			logBuf := &testenv.SyncBuffer{}
			restore := lowerFileSizeLimit(t, int64(len(`{"path":"torn`)))
			l, err := NewDecisionLog(DecisionLogConfig{Sink: "file:" + path, Chain: chain, Logger: slog.New(slog.NewTextHandler(logBuf, nil))})
			if err != nil {
				t.Fatalf("the log refused to start on a full disk after a torn line: %v", err)
			}
			l.Log(&DecisionEvent{Path: "lost"})
			waitHandled(t, l, 1)
			restore()
			if l.Failed() != 1 || l.Written() != 0 {
				t.Errorf("on the full disk: written %d, failed %d; want 0 and 1", l.Written(), l.Failed())
			}
			if !strings.Contains(logBuf.String(), "write failed") {
				t.Errorf("no warning that the write failed:\n%s", logBuf)
			}
			l.Log(&DecisionEvent{Path: "after"})
			closeLog(t, l)
			wantAfterFragment(t, path)
			if !chain {
				return
			}
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			rep, err := VerifyChain(bytes.NewReader(b), VerifyChainOptions{})
			if err != nil || len(rep.Problems) != 1 || rep.Problems[0].Line != 1 || rep.Head != l.ChainHead() {
				t.Errorf("want one problem, the fragment at line 1, and the log's head: %+v %v (head %s)", rep, err, l.ChainHead())
			}
		})
	}
}
