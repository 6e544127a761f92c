package telemetry

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestDecisionLogCopytruncateWhileIdleIsNotTakenForACut: a file emptied by
// a copytruncate rotation while the log is idle, then closed, leaves a
// checkpoint of the head the log had and size 0: the empty file the next
// log finds is as the last log left it, whatever that head (review: the
// restart warned that records were removed).
func TestDecisionLogCopytruncateWhileIdleIsNotTakenForACut(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.jsonl")
	l, _ := openChained(t, path, DecisionLogConfig{})
	for range 3 {
		l.Log(&DecisionEvent{Path: "before"})
	}
	waitHandled(t, l, 3)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path+".1", b, 0o640); err != nil { // the copy
		t.Fatal(err)
	}
	if err := os.Truncate(path, 0); err != nil { // the truncation
		t.Fatal(err)
	}
	closeLog(t, l)
	if ck, ok, err := ReadHeadCheckpoint(path + HeadCheckpointSuffix); err != nil || !ok || ck.Size != 0 {
		t.Fatalf("checkpoint after close %+v (%v %v), want size 0", ck, ok, err)
	}
	l2, logBuf := openChained(t, path, DecisionLogConfig{})
	closeLog(t, l2)
	logged := logBuf.String()
	if want := "the file is empty, as the last log left it"; !strings.Contains(logged, want) || strings.Contains(logged, "WARN") {
		t.Errorf("the next log's lines, want %q and no warning:\n%s", want, logged)
	}
}

// TestDecisionLogCarriedHeadIntoACreatedFileIsNotTakenForACut: a log
// restarted while the one before still holds the file waits for its lock;
// meanwhile the file is rotated with logrotate's create, and the one
// before closes idle, leaving a checkpoint of the empty new file (genesis,
// size 0). The next log takes the new file and goes on from the rotated
// file's head (carried): the empty file is as the checkpoint says, and no
// cut is warned about (review: it was, since the heads differ).
func TestDecisionLogCarriedHeadIntoACreatedFileIsNotTakenForACut(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.jsonl")
	before, _ := openChained(t, path, DecisionLogConfig{reopenEvery: time.Hour, checkpointEvery: 5 * time.Millisecond})
	before.Log(&DecisionEvent{Path: "p"})
	waitHandled(t, before, 1)
	opened, logBuf := nextChainedLog(t, path)
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, nil, 0o640); err != nil { // logrotate's create
		t.Fatal(err)
	}
	closeLog(t, before)
	if ck, ok, err := ReadHeadCheckpoint(path + HeadCheckpointSuffix); err != nil || !ok || ck != (HeadCheckpoint{Head: ChainGenesis, Size: 0}) {
		t.Fatalf("checkpoint left by the log before %+v (%v %v), want genesis and size 0", ck, ok, err)
	}
	logNext(t, opened)
	chainAcross(t, path, 1, 1)
	logged := logBuf.String()
	if want := "head_checkpoint=matches"; !strings.Contains(logged, want) || strings.Contains(logged, "the file does not end") {
		t.Errorf("the next log's lines, want %q and no warning of a cut:\n%s", want, logged)
	}
}

// TestCompareCheckpoint: how a file's end compares with a head checkpoint.
// A checkpoint of size 0 (the last log left the file empty) is matched by
// an empty file and gone past by a longer one, whatever head it names.
func TestCompareCheckpoint(t *testing.T) {
	const line1, line2 = `{"n":1}`, `{"n":2}`
	h1, h2 := LineHash([]byte(line1)), LineHash([]byte(line2))
	other := LineHash([]byte("other"))
	two := line1 + "\n" + line2 + "\n"
	size1, size2 := int64(len(line1)+1), int64(len(two))
	for _, tc := range []struct {
		name, file string
		ck         HeadCheckpoint
		want       checkpointVerdict
	}{
		{"empty, checkpoint empty at genesis", "", HeadCheckpoint{ChainGenesis, 0}, checkpointMatches},
		{"empty, checkpoint empty at another head", "", HeadCheckpoint{other, 0}, checkpointMatches},
		{"emptied", "", HeadCheckpoint{h2, size2}, checkpointDiffers},
		{"records after an empty checkpoint at genesis", two, HeadCheckpoint{ChainGenesis, 0}, checkpointBehind},
		{"records after an empty checkpoint at another head", two, HeadCheckpoint{other, 0}, checkpointBehind},
		{"ends at the checkpoint", two, HeadCheckpoint{h2, size2}, checkpointMatches},
		{"goes on past the checkpoint", two, HeadCheckpoint{h1, size1}, checkpointBehind},
		{"last record edited", line1 + "\n" + `{"n":3}` + "\n", HeadCheckpoint{h2, size2}, checkpointDiffers},
		{"last record cut", line1 + "\n", HeadCheckpoint{h2, size2}, checkpointDiffers},
		{"another file, longer", two + two, HeadCheckpoint{other, size2}, checkpointDiffers},
		{"the checkpoint's size in the middle of a line", two, HeadCheckpoint{h1, size1 + 2}, checkpointDiffers},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "d.jsonl")
			if err := os.WriteFile(path, []byte(tc.file), 0o600); err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			got, err := compareCheckpoint(f, int64(len(tc.file)), tc.ck)
			if err != nil || got != tc.want {
				t.Errorf("verdict %d (%v), want %d", got, err, tc.want)
			}
		})
	}
}

// copyAsKilled copies the log file at path and its head checkpoint, those
// that exist, into a new directory: the files as a process killed at this
// moment leaves them, for a log to be opened on while the one that wrote
// them still runs. It returns the copy's path.
func copyAsKilled(t *testing.T, path string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), filepath.Base(path))
	for _, suffix := range []string{"", HeadCheckpointSuffix} {
		b, err := os.ReadFile(path + suffix)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst+suffix, b, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// TestDecisionLogIdleRotationThenKillIsNotTakenForACut: a file rotated
// away while the log is idle is noticed within a checkpoint period without
// a record to write: the checkpoint is left as for a file rotated away
// (none beside a path with no file, genesis beside the empty file of
// logrotate's create), so that a process killed then does not leave one
// describing the rotated file, and the next start does not warn that
// records were removed (review: the checkpoint timer was armed only by an
// event).
func TestDecisionLogIdleRotationThenKillIsNotTakenForACut(t *testing.T) {
	for _, create := range []bool{false, true} {
		t.Run(map[bool]string{false: "nocreate", true: "create"}[create], func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "d.jsonl")
			l, _ := openChained(t, path, DecisionLogConfig{reopenEvery: time.Hour, checkpointEvery: 5 * time.Millisecond})
			defer closeLog(t, l)
			for range 3 {
				l.Log(&DecisionEvent{Path: "before"})
			}
			waitHandled(t, l, 3)
			head := LineHash([]byte(strings.TrimSuffix(readLines(t, path)[2], "\n")))
			waitCheckpoint(t, path, func(ck HeadCheckpoint, ok bool) bool { return ok && ck.Head == head && ck.Size > 0 })
			if err := os.Rename(path, path+".1"); err != nil {
				t.Fatal(err)
			}
			if create {
				if err := os.WriteFile(path, nil, 0o640); err != nil {
					t.Fatal(err)
				}
			}
			// Idle: no record is logged from here on.
			waitCheckpoint(t, path, func(ck HeadCheckpoint, ok bool) bool {
				return ok == create && (!ok || ck == HeadCheckpoint{Head: ChainGenesis, Size: 0})
			})
			l2, next := openChained(t, copyAsKilled(t, path), DecisionLogConfig{})
			closeLog(t, l2)
			if strings.Contains(next.String(), "WARN") {
				t.Errorf("the next log, opened on the files as a kill leaves them, warned:\n%s", next)
			}
		})
	}
}

// waitCheckpoint waits up to 10 s for the head checkpoint beside path
// (ck, with there false for none) to satisfy ok.
func waitCheckpoint(t *testing.T, path string, ok func(ck HeadCheckpoint, there bool) bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		ck, there, err := ReadHeadCheckpoint(path + HeadCheckpointSuffix)
		if err == nil && ok(ck, there) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10 s the checkpoint is %+v (%v %v)", ck, there, err)
		}
	}
}

// TestDecisionLogIdleLogCheckpointsATruncation: a file emptied by a
// copytruncate while the log is idle gets a checkpoint of its new size
// within a period, so that a process killed then does not leave one that
// says the file was longer (which the next start takes for records
// removed).
func TestDecisionLogIdleLogCheckpointsATruncation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.jsonl")
	l, _ := openChained(t, path, DecisionLogConfig{checkpointEvery: 5 * time.Millisecond})
	defer closeLog(t, l)
	l.Log(&DecisionEvent{Path: "before"})
	waitHandled(t, l, 1)
	waitCheckpoint(t, path, func(ck HeadCheckpoint, ok bool) bool { return ok && ck.Size > 0 })
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	waitCheckpoint(t, path, func(ck HeadCheckpoint, ok bool) bool { return ok && ck.Size == 0 })
	l2, next := openChained(t, copyAsKilled(t, path), DecisionLogConfig{})
	closeLog(t, l2)
	if strings.Contains(next.String(), "WARN") {
		t.Errorf("the next log, opened on the files as a kill leaves them, warned:\n%s", next)
	}
}

// TestDecisionLogRotatedWhileCheckpointing: a file renamed away between
// the log's look at its path and the rename of its new checkpoint (the
// checkpoint then describes the rotated file) is looked at again once the
// checkpoint is written: the checkpoint is left as for a file rotated away
// (none beside a path with no file), not as one the next log takes for a
// cut.
func TestDecisionLogRotatedWhileCheckpointing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.jsonl")
	l, _ := openChained(t, path, DecisionLogConfig{reopenEvery: time.Hour})
	l.Log(&DecisionEvent{Path: "before"})
	waitHandled(t, l, 1)
	var once sync.Once
	writeHeadCheckpointFn = func(p string, c HeadCheckpoint) error {
		once.Do(func() {
			if err := os.Rename(path, path+".1"); err != nil {
				t.Error(err)
			}
		})
		return writeHeadCheckpoint(p, c)
	}
	defer func() { writeHeadCheckpointFn = writeHeadCheckpoint }()
	closeLog(t, l)
	if _, err := os.Stat(path + HeadCheckpointSuffix); !errors.Is(err, fs.ErrNotExist) {
		ck, _, _ := ReadHeadCheckpoint(path + HeadCheckpointSuffix)
		t.Errorf("a checkpoint %+v (%v) is left beside a path with no file", ck, err)
	}
	l2, next := openChained(t, path, DecisionLogConfig{})
	closeLog(t, l2)
	if strings.Contains(next.String(), "WARN") {
		t.Errorf("the next log warned:\n%s", next)
	}
}

// TestVerifyChainAgainstACheckpoint: VerifyChain with a head checkpoint
// finds its head at its size, as a log opening the file does (a line
// torn when the checkpoint was written and ended since included), counts
// the records after it apart from the problems, and reports a log that
// ends before the checkpoint's size, or holds another line there.
func TestVerifyChainAgainstACheckpoint(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.jsonl")
	writeChained(t, path, 0, 4)
	lines := readLines(t, path)
	hash := func(i int) string { return LineHash([]byte(strings.TrimSuffix(lines[i], "\n"))) }
	upTo := func(n int) int64 { return int64(len(strings.Join(lines[:n], ""))) }
	all := strings.Join(lines, "")
	for _, tc := range []struct {
		name            string
		data            string
		ck              HeadCheckpoint
		problems        int
		line, past      int
		problemContains string
	}{
		{"at the end", all, HeadCheckpoint{hash(3), upTo(4)}, 0, 4, 0, ""},
		{"two records past it", all, HeadCheckpoint{hash(1), upTo(2)}, 0, 2, 2, ""},
		{"of the file empty", all, HeadCheckpoint{LineHash([]byte("anything")), 0}, 0, 0, 4, ""},
		{"empty, of the file empty", "", HeadCheckpoint{ChainGenesis, 0}, 0, 0, 0, ""},
		{"cut before it", strings.Join(lines[:2], ""), HeadCheckpoint{hash(2), upTo(3)}, 1, 0, 0, "before its head checkpoint's size"},
		{"another line at its size", all, HeadCheckpoint{hash(0), upTo(2)}, 1, 0, 0, "hashes to"},
		{"its size inside a line", all, HeadCheckpoint{hash(1), upTo(2) + 3}, 1, 0, 0, "falls inside this line"},
		{"its size past a torn last line's end", strings.TrimSuffix(all, "\n"), HeadCheckpoint{hash(3), upTo(4)}, 1, 0, 0, "before its head checkpoint's size"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ck := tc.ck
			rep, err := VerifyChain(strings.NewReader(tc.data), VerifyChainOptions{Checkpoint: &ck})
			if err != nil {
				t.Fatal(err)
			}
			problems := len(rep.Problems)
			if tc.name == "its size past a torn last line's end" {
				problems-- // the torn last line's own
			}
			if problems != tc.problems || rep.CheckpointLine != tc.line || rep.PastCheckpoint != tc.past {
				t.Errorf("%+v: want %d problem(s), checkpoint line %d, %d past it", rep, tc.problems, tc.line, tc.past)
			}
			found := tc.problemContains == ""
			for _, p := range rep.Problems {
				found = found || strings.Contains(p.Reason, tc.problemContains)
			}
			if !found {
				t.Errorf("problems %+v: want one saying %q", rep.Problems, tc.problemContains)
			}
		})
	}

	// A line torn when the checkpoint was written (its head is the
	// fragment's), then ended by the next record: the checkpoint's size
	// is the fragment's end, before the newline the log wrote later.
	fragment := `{"path":"torn`
	torn := lines[0] + fragment
	next := `{"prev_hash":"` + LineHash([]byte(fragment)) + `"}`
	ck := HeadCheckpoint{LineHash([]byte(fragment)), int64(len(torn))}
	rep, err := VerifyChain(strings.NewReader(torn+"\n"+next+"\n"), VerifyChainOptions{Checkpoint: &ck})
	if err != nil || rep.CheckpointLine != 2 || rep.PastCheckpoint != 1 {
		t.Errorf("a checkpoint at a torn line's end: %+v %v, want its line 2 and 1 record past it", rep, err)
	}
	for _, p := range rep.Problems {
		if strings.Contains(p.Reason, "checkpoint") {
			t.Errorf("a checkpoint at a torn line's end: problem %+v", p)
		}
	}
}

// TestDecisionLogCheckpointIsSyncedAfterTheLog: the log file is synced
// before its checkpoint is written, and the checkpoint before it is
// renamed into place, then its directory: after a power loss the
// checkpoint cannot describe records the disk does not hold (which the
// next start would take for records removed).
func TestDecisionLogCheckpointIsSyncedAfterTheLog(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "d.jsonl")
	var mu sync.Mutex
	var order []string
	record := func(s string) {
		mu.Lock()
		defer mu.Unlock()
		order = append(order, s)
	}
	sync0 := syncFile
	syncFile = func(f *os.File) error {
		name := f.Name()
		switch {
		case name == path:
			record("sync log")
		case name == dir:
			record("sync directory")
		case strings.HasSuffix(name, ".tmp"):
			if _, err := os.Stat(path + HeadCheckpointSuffix); err == nil {
				record("checkpoint in place before its sync") // the first one: none was there
			}
			record("sync checkpoint")
		default:
			record("sync " + name)
		}
		return sync0(f)
	}
	defer func() { syncFile = sync0 }()
	// One checkpoint, at close: a periodic one (the idle ticker checkpoints
	// a log that has none yet) would come first on a stalled machine.
	l, _ := openChained(t, path, DecisionLogConfig{checkpointEvery: time.Hour})
	l.Log(&DecisionEvent{Path: "p"})
	closeLog(t, l)
	wantCheckpoint(t, path, l.ChainHead())
	mu.Lock()
	defer mu.Unlock()
	if got, want := strings.Join(order, ", "), "sync log, sync checkpoint, sync directory"; got != want {
		t.Errorf("synced: %s; want %s", got, want)
	}
}
