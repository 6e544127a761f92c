package telemetry

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

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
			// The failure is counted before it is warned about: wait for
			// the warning (reading the buffer at once was a race, flaky).
			for deadline := time.Now().Add(30 * time.Second); !strings.Contains(logBuf.String(), "write failed") && time.Now().Before(deadline); {
				time.Sleep(time.Millisecond)
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

// openChained opens a chained file log at path whose own log lines go to
// the returned buffer.
func openChained(t *testing.T, path string, cfg DecisionLogConfig) (*DecisionLog, *testenv.SyncBuffer) {
	t.Helper()
	logBuf := &testenv.SyncBuffer{}
	cfg.Sink, cfg.Chain = "file:"+path, true
	cfg.Logger = slog.New(slog.NewTextHandler(logBuf, nil))
	l, err := NewDecisionLog(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return l, logBuf
}

// wantCheckpoint checks that the head checkpoint beside path holds head
// and the file's size.
func wantCheckpoint(t *testing.T, path, head string) {
	t.Helper()
	ck, ok, err := ReadHeadCheckpoint(path + HeadCheckpointSuffix)
	st, serr := os.Stat(path)
	if err != nil || !ok || serr != nil || ck.Head != head || ck.Size != st.Size() {
		t.Fatalf("checkpoint %+v (%v %v), want head %s and the file's size (%v)", ck, ok, err, head, st)
	}
}

// TestDecisionLogChainStart: a chained file log says where its chain
// starts, and compares the file's end with the head checkpoint the last
// log left beside it (always replaced at close): records removed or edited
// at the end, or the whole file emptied or removed, while no log had it
// open, are warned about naming both hashes; a file that goes on past the
// checkpoint (a run killed before it could close the log) is not. The log
// starts in every case.
func TestDecisionLogChainStart(t *testing.T) {
	lastHash := func(t *testing.T, path string) string {
		lines := readLines(t, path)
		return LineHash([]byte(strings.TrimSuffix(lines[len(lines)-1], "\n")))
	}
	for _, tc := range []struct {
		name    string
		prepare func(t *testing.T, path string) (ckHead, fileLast string) // the hashes a warning must name
		want    []string                                                  // in the log's own lines
		notWant []string
	}{
		{
			name:    "new file",
			prepare: func(*testing.T, string) (string, string) { return "", "" },
			want:    []string{"level=INFO msg=\"decision log: a new file; the hash chain starts at genesis\" prev_hash=" + ChainGenesis},
			notWant: []string{"WARN"},
		},
		{
			name: "empty file without a checkpoint",
			prepare: func(t *testing.T, path string) (string, string) {
				if err := os.WriteFile(path, nil, 0o600); err != nil {
					t.Fatal(err)
				}
				return "", ""
			},
			want: []string{"level=WARN msg=\"decision log: the file is empty; the hash chain starts at genesis"},
		},
		{
			name: "empty file, as the last log left it",
			prepare: func(t *testing.T, path string) (string, string) {
				writeChained(t, path, 0, 0)
				return "", ""
			},
			want:    []string{"level=INFO msg=\"decision log: the file is empty, as the last log left it", "head_checkpoint=matches"},
			notWant: []string{"WARN"},
		},
		{
			name: "records, as the last log left them",
			prepare: func(t *testing.T, path string) (string, string) {
				writeChained(t, path, 0, 3)
				return "", ""
			},
			want:    []string{"level=INFO msg=\"decision log: the hash chain continues from the file's last line\"", "head_checkpoint=matches"},
			notWant: []string{"WARN"},
		},
		{
			name: "last record removed",
			prepare: func(t *testing.T, path string) (string, string) {
				writeChained(t, path, 0, 3)
				ck := lastHash(t, path)
				lines := readLines(t, path)
				if err := os.WriteFile(path, []byte(strings.Join(lines[:2], "")), 0o600); err != nil {
					t.Fatal(err)
				}
				return ck, lastHash(t, path)
			},
			want: []string{"level=WARN msg=\"decision log: the file does not end where its head checkpoint says", "head_checkpoint=differs"},
		},
		{
			name: "last record edited, same length",
			prepare: func(t *testing.T, path string) (string, string) {
				writeChained(t, path, 0, 3)
				ck := lastHash(t, path)
				b, _ := os.ReadFile(path)
				i := bytes.LastIndex(b, []byte(`"allow":true`))
				if i < 0 {
					t.Fatalf("no allow in %s", b)
				}
				copy(b[i:], `"allow":nope`)
				if err := os.WriteFile(path, b, 0o600); err != nil {
					t.Fatal(err)
				}
				return ck, lastHash(t, path)
			},
			want: []string{"level=WARN msg=\"decision log: the file does not end where its head checkpoint says"},
		},
		{
			name: "file emptied",
			prepare: func(t *testing.T, path string) (string, string) {
				writeChained(t, path, 0, 3)
				ck := lastHash(t, path)
				if err := os.Truncate(path, 0); err != nil {
					t.Fatal(err)
				}
				return ck, ChainGenesis
			},
			want: []string{
				"level=WARN msg=\"decision log: the file does not end where its head checkpoint says",
				"level=WARN msg=\"decision log: the file is empty; the hash chain starts at genesis",
			},
		},
		{
			name: "file removed (or rotated while stopped)",
			prepare: func(t *testing.T, path string) (string, string) {
				writeChained(t, path, 0, 3)
				ck := lastHash(t, path)
				if err := os.Rename(path, path+".1"); err != nil {
					t.Fatal(err)
				}
				return ck, ChainGenesis
			},
			want: []string{
				"level=WARN msg=\"decision log: the file does not end where its head checkpoint says",
				"level=INFO msg=\"decision log: a new file; the hash chain starts at genesis\"",
			},
		},
		{
			name: "records past the checkpoint (the last run was killed)",
			prepare: func(t *testing.T, path string) (string, string) {
				writeChained(t, path, 0, 3)
				old, err := os.ReadFile(path + HeadCheckpointSuffix)
				if err != nil {
					t.Fatal(err)
				}
				writeChained(t, path, 3, 2)
				if err := os.WriteFile(path+HeadCheckpointSuffix, old, 0o600); err != nil {
					t.Fatal(err)
				}
				return "", ""
			},
			want:    []string{"level=INFO msg=\"decision log: the hash chain continues from the file's last line\"", "the last run stopped without closing the log"},
			notWant: []string{"WARN"},
		},
		{
			name: "checkpoint unreadable",
			prepare: func(t *testing.T, path string) (string, string) {
				writeChained(t, path, 0, 3)
				if err := os.WriteFile(path+HeadCheckpointSuffix, []byte("garbage\n"), 0o600); err != nil {
					t.Fatal(err)
				}
				return "", ""
			},
			want: []string{"level=WARN msg=\"decision log: the head checkpoint cannot be read", "head_checkpoint=\"not compared"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "d.jsonl")
			ckHead, fileLast := tc.prepare(t, path)
			l, logBuf := openChained(t, path, DecisionLogConfig{})
			l.Log(&DecisionEvent{Path: "after"})
			closeLog(t, l)
			logged := logBuf.String()
			if ckHead != "" {
				tc.want = append(tc.want, "checkpoint_head="+ckHead, "file_last_line="+fileLast)
			}
			for _, w := range tc.want {
				if !strings.Contains(logged, w) {
					t.Errorf("no %q in the log's lines:\n%s", w, logged)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(logged, w) {
					t.Errorf("%q in the log's lines:\n%s", w, logged)
				}
			}
			if l.Written() != 1 {
				t.Errorf("written %d, want 1: the log must start whatever it found", l.Written())
			}
			wantCheckpoint(t, path, l.ChainHead())
		})
	}
}

// TestDecisionLogCheckpointWhileWriting: the head checkpoint is replaced
// while the log writes, not only at close, so that a process killed before
// it could close its log (a stdio host that exits and kills it) leaves a
// recent head; a log reopened after such a kill finds the file going on
// past the checkpoint, and does not take that for tampering.
func TestDecisionLogCheckpointWhileWriting(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.jsonl")
	l, _ := openChained(t, path, DecisionLogConfig{checkpointEvery: 5 * time.Millisecond})
	defer closeLog(t, l)
	l.Log(&DecisionEvent{Path: "first"})
	waitHandled(t, l, 1)
	head := LineHash([]byte(strings.TrimSuffix(readLines(t, path)[0], "\n")))
	deadline := time.Now().Add(10 * time.Second)
	for {
		ck, ok, err := ReadHeadCheckpoint(path + HeadCheckpointSuffix)
		if err != nil {
			t.Fatal(err)
		}
		if ok && ck.Head == head {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10 s the checkpoint is %+v (%v), want head %s", ck, ok, head)
		}
		time.Sleep(time.Millisecond)
	}
	wantCheckpoint(t, path, head)
}

// TestDecisionLogCloseLineNamesTheHead: the close line gives the head and
// where it is kept beside the file (the one record of it a stdio host that
// has exited cannot lose); when the close deadline passes before the
// writer is done, it says why there is no head instead of leaving it out.
func TestDecisionLogCloseLineNamesTheHead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.jsonl")
	l, _ := openChained(t, path, DecisionLogConfig{})
	l.Log(&DecisionEvent{Path: "p"})
	closeBuf := &testenv.SyncBuffer{}
	l.CloseAndReport(slog.New(slog.NewTextHandler(closeBuf, nil)), "file:"+path, time.Minute)
	want := "head=" + l.ChainHead() + " head_use="
	if got := closeBuf.String(); !strings.Contains(got, want) || !strings.Contains(got, "head_checkpoint="+path+HeadCheckpointSuffix) {
		t.Errorf("close line %q: want %q and the checkpoint's path", got, want)
	}

	release := make(chan struct{})
	stuck := &stuckWriter{release: release, entered: make(chan struct{})}
	l, err := NewDecisionLog(DecisionLogConfig{Writer: stuck, Chain: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	l.Log(&DecisionEvent{Path: "p"})
	<-stuck.entered
	closeBuf = &testenv.SyncBuffer{}
	l.CloseAndReport(slog.New(slog.NewTextHandler(closeBuf, nil)), "stdout", 10*time.Millisecond)
	close(release)
	if got := closeBuf.String(); !strings.Contains(got, "msg=\"decision log closed\"") || !strings.Contains(got, "head=\"unknown: the writer had not finished when the close deadline passed") {
		t.Errorf("close line past the deadline %q: want the reason the head is unknown", got)
	}
}

// stuckWriter blocks its first Write until release is closed.
type stuckWriter struct {
	release chan struct{}
	entered chan struct{}
	once    sync.Once
}

func (w *stuckWriter) Write(b []byte) (int, error) {
	w.once.Do(func() { close(w.entered) })
	<-w.release
	return len(b), nil
}

// TestDecisionLogIdleRotationIsNotTakenForACut: a file rotated away while
// the log is idle (no record since, so the log has not switched files) is
// not described by the checkpoint the log leaves at close: the next log,
// finding the rotation's new empty file or none at the path, starts
// without a warning that records were removed.
func TestDecisionLogIdleRotationIsNotTakenForACut(t *testing.T) {
	for _, tc := range []struct {
		name   string
		create bool // logrotate's create: an empty file put at the path
		want   string
	}{
		{"rotated, a new empty file put at the path", true, "level=INFO msg=\"decision log: the file is empty, as the last log left it"},
		{"rotated, no file put at the path", false, "level=INFO msg=\"decision log: a new file; the hash chain starts at genesis\""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "d.jsonl")
			l, first := openChained(t, path, DecisionLogConfig{reopenEvery: time.Hour})
			for range 3 {
				l.Log(&DecisionEvent{Path: "before"})
			}
			waitHandled(t, l, 3)
			if err := os.Rename(path, path+".1"); err != nil {
				t.Fatal(err)
			}
			if tc.create {
				if err := os.WriteFile(path, nil, 0o640); err != nil {
					t.Fatal(err)
				}
			}
			closeLog(t, l)
			head := l.ChainHead()
			if w := "the file was rotated; its head is the rotated file's last line"; !strings.Contains(first.String(), w) || !strings.Contains(first.String(), "head="+head) {
				t.Errorf("no %q naming head %s in the first log's lines:\n%s", w, head, first)
			}
			l2, logBuf := openChained(t, path, DecisionLogConfig{})
			l2.Log(&DecisionEvent{Path: "after"})
			closeLog(t, l2)
			logged := logBuf.String()
			if !strings.Contains(logged, tc.want) || strings.Contains(logged, "WARN") {
				t.Errorf("the next log's lines, want %q and no warning:\n%s", tc.want, logged)
			}
			wantCheckpoint(t, path, l2.ChainHead())
		})
	}
}

// TestDecisionLogRotatedAwayLeavesAnotherLogsCheckpoint: after a rotation
// another log may take the new file at the path (a gateway restarted while
// the old one finishes: the old one's lock is on the rotated file) and
// write its own checkpoint. The old log closing later leaves that
// checkpoint alone, and its close line names none, since no checkpoint
// holds its head (review: it removed the new log's checkpoint, and named
// it).
func TestDecisionLogRotatedAwayLeavesAnotherLogsCheckpoint(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.jsonl")
	l1, _ := openChained(t, path, DecisionLogConfig{reopenEvery: time.Hour, checkpointEvery: 5 * time.Millisecond})
	l1.Log(&DecisionEvent{Path: "first"})
	waitHandled(t, l1, 1)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if _, ok, _ := ReadHeadCheckpoint(path + HeadCheckpointSuffix); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no checkpoint while writing")
		}
	}
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, nil, 0o640); err != nil {
		t.Fatal(err)
	}
	l2, _ := openChained(t, path, DecisionLogConfig{})
	l2.Log(&DecisionEvent{Path: "second"})
	closeLog(t, l2)
	wantCheckpoint(t, path, l2.ChainHead())
	var closed testenv.SyncBuffer
	l1.CloseAndReport(slog.New(slog.NewTextHandler(&closed, nil)), "file:"+path, 5*time.Second)
	wantCheckpoint(t, path, l2.ChainHead())
	if strings.Contains(closed.String(), "head_checkpoint=") {
		t.Errorf("the rotated log's close line names a checkpoint, which does not hold its head:\n%s", closed.String())
	}
}

// TestDecisionLogRestartThenRotationIsNotTakenForACut: a log that takes a
// file with its checkpoint (an ordinary restart), writes little or
// nothing, and has the file rotated away before it closes, replaces that
// checkpoint (it is this log's file's) rather than leaving the old one
// beside the new file (review: the next start warned of removed records).
func TestDecisionLogRestartThenRotationIsNotTakenForACut(t *testing.T) {
	for _, records := range []int{0, 3} {
		t.Run(fmt.Sprint(records, " records"), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "d.jsonl")
			writeChained(t, path, 0, 3)
			l1, _ := openChained(t, path, DecisionLogConfig{reopenEvery: time.Hour})
			for range records {
				l1.Log(&DecisionEvent{Path: "before"})
			}
			waitHandled(t, l1, uint64(records))
			if err := os.Rename(path, path+".1"); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, nil, 0o640); err != nil {
				t.Fatal(err)
			}
			closeLog(t, l1)
			l2, logBuf := openChained(t, path, DecisionLogConfig{})
			closeLog(t, l2)
			if strings.Contains(logBuf.String(), "WARN") {
				t.Errorf("the next log warned:\n%s", logBuf.String())
			}
		})
	}
}
