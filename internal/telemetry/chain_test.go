package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// writeChained logs n events to a chained file log at path and closes it.
func writeChained(t *testing.T, path string, from, n int, mask ...string) {
	t.Helper()
	l, err := NewDecisionLog(DecisionLogConfig{Sink: "file:" + path, Chain: true, Mask: mask, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	for i := from; i < from+n; i++ {
		l.Log(&DecisionEvent{
			Path:  "acgs/main/decision",
			Input: map[string]any{"type": "tool_call", "i": i, "tool_call": map[string]any{"arguments": map[string]any{"password": "hunter2"}}},
			Result: map[string]any{
				"allow": i%2 == 0, "outcome": "allow",
			},
			CacheTier: "none",
		})
	}
	if err := l.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(b), "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	return lines
}

func verify(t *testing.T, data string, o VerifyChainOptions) ChainReport {
	t.Helper()
	rep, err := VerifyChain(strings.NewReader(data), o)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func TestChainIntactLogVerifies(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.jsonl")
	writeChained(t, path, 0, 20, "/tool_call/arguments/password")
	lines := readLines(t, path)
	if len(lines) != 20 {
		t.Fatalf("%d lines, want 20", len(lines))
	}
	var first map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil {
		t.Fatal(err)
	}
	if first["prev_hash"] != ChainGenesis {
		t.Fatalf("first prev_hash %v, want genesis", first["prev_hash"])
	}
	if strings.Contains(strings.Join(lines, ""), "hunter2") {
		t.Fatal("masking must still apply to a chained log")
	}
	rep := verify(t, strings.Join(lines, ""), VerifyChainOptions{})
	if !rep.OK() || rep.Records != 20 {
		t.Fatalf("intact log: %+v", rep)
	}
	if rep.Head != LineHash([]byte(strings.TrimSuffix(lines[19], "\n"))) {
		t.Fatalf("head %s is not the last line's hash", rep.Head)
	}
	// the head, given back, passes
	if rep2 := verify(t, strings.Join(lines, ""), VerifyChainOptions{Head: rep.Head}); !rep2.OK() {
		t.Fatalf("with its own head: %+v", rep2)
	}
}

func TestChainContinuesAcrossReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.jsonl")
	writeChained(t, path, 0, 5)
	writeChained(t, path, 5, 5)
	b, _ := os.ReadFile(path)
	if rep := verify(t, string(b), VerifyChainOptions{}); !rep.OK() || rep.Records != 10 {
		t.Fatalf("reopened log: %+v", rep)
	}
}

func TestChainDetectsRemovedRecord(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.jsonl")
	writeChained(t, path, 0, 10)
	lines := readLines(t, path)
	cut := append(append([]string{}, lines[:4]...), lines[5:]...) // line 5 removed
	rep := verify(t, strings.Join(cut, ""), VerifyChainOptions{})
	if len(rep.Problems) != 1 || rep.Problems[0].Line != 5 || !strings.Contains(rep.Problems[0].Reason, "removed") {
		t.Fatalf("removed record: %+v", rep)
	}
	// removing the first record is found too
	rep = verify(t, strings.Join(lines[1:], ""), VerifyChainOptions{})
	if len(rep.Problems) != 1 || rep.Problems[0].Line != 1 {
		t.Fatalf("removed first record: %+v", rep)
	}
	// ... unless the caller says where the file starts
	h0 := LineHash([]byte(strings.TrimSuffix(lines[0], "\n")))
	if rep := verify(t, strings.Join(lines[1:], ""), VerifyChainOptions{From: h0}); !rep.OK() {
		t.Fatalf("with --from: %+v", rep)
	}
	// removing the last record needs the recorded head
	full := verify(t, strings.Join(lines, ""), VerifyChainOptions{})
	rep = verify(t, strings.Join(lines[:9], ""), VerifyChainOptions{Head: full.Head})
	if rep.OK() {
		t.Fatal("a cut at the end must be found against the recorded head")
	}
}

func TestChainDetectsEditedRecord(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.jsonl")
	writeChained(t, path, 0, 10)
	lines := readLines(t, path)
	edited := append([]string{}, lines...)
	if !strings.Contains(edited[3], `"allow":false`) {
		t.Fatalf("line 4 is not a deny: %s", edited[3])
	}
	edited[3] = strings.Replace(edited[3], `"allow":false`, `"allow":true`, 1)
	rep := verify(t, strings.Join(edited, ""), VerifyChainOptions{})
	if len(rep.Problems) != 1 || rep.Problems[0].Line != 5 || !strings.Contains(rep.Problems[0].Reason, "edited") {
		t.Fatalf("edited record: %+v", rep)
	}
	// an edit that keeps the bytes valid JSON but drops the link
	var m map[string]any
	_ = json.Unmarshal([]byte(lines[6]), &m)
	delete(m, "prev_hash")
	nb, _ := json.Marshal(m)
	edited = append([]string{}, lines...)
	edited[6] = string(nb) + "\n"
	rep = verify(t, strings.Join(edited, ""), VerifyChainOptions{})
	if len(rep.Problems) != 2 || rep.Problems[0].Line != 7 || rep.Problems[1].Line != 8 {
		t.Fatalf("record without prev_hash: %+v", rep)
	}
	// garbage and a torn last line
	edited = append([]string{}, lines...)
	edited[2] = "not json\n"
	rep = verify(t, strings.Join(edited, "")+`{"prev_hash":"x"`, VerifyChainOptions{})
	if rep.OK() || rep.Problems[0].Line != 3 {
		t.Fatalf("garbage: %+v", rep)
	}
}

func TestChainWithWriterAndEmptyInput(t *testing.T) {
	var buf bytes.Buffer
	l, err := NewDecisionLog(DecisionLogConfig{Writer: &buf, Chain: true})
	if err != nil {
		t.Fatal(err)
	}
	l.Log(&DecisionEvent{Path: "p"})
	l.Log(&DecisionEvent{Path: "q"})
	_ = l.Close(context.Background())
	if rep := verify(t, buf.String(), VerifyChainOptions{}); !rep.OK() || rep.Records != 2 {
		t.Fatalf("writer sink: %+v", rep)
	}
	if rep := verify(t, "", VerifyChainOptions{}); !rep.OK() || rep.Records != 0 {
		t.Fatalf("empty: %+v", rep)
	}
	// without Chain nothing changes in the events
	buf.Reset()
	l, _ = NewDecisionLog(DecisionLogConfig{Writer: &buf})
	l.Log(&DecisionEvent{Path: "p"})
	_ = l.Close(context.Background())
	if strings.Contains(buf.String(), "prev_hash") {
		t.Fatal("prev_hash written without Chain")
	}
}

func TestLastLineHashTornAndLong(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "a")
	long := strings.Repeat("x", 200<<10)
	if err := os.WriteFile(p, []byte("first\n"+long+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h, torn, err := lastLineAt(t, p)
	if err != nil || h != LineHash([]byte(long)) || torn {
		t.Fatalf("long last line: %s %v %v", h, torn, err)
	}
	if err := os.WriteFile(p, []byte("first\ntorn"), 0o600); err != nil {
		t.Fatal(err)
	}
	if h, torn, _ := lastLineAt(t, p); h != LineHash([]byte("torn")) || !torn {
		t.Fatal("torn last line")
	}
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if h, torn, err := lastLineAt(t, p); h != "" || torn || err != nil {
		t.Fatalf("empty file: %s %v %v", h, torn, err)
	}
}

// lastLineAt is lastLineOf of the file at path.
func lastLineAt(t *testing.T, path string) (string, bool, error) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return lastLineOf(f)
}

// A log reopened after a crash mid-write (its last line torn) goes on from
// a new line: the fragment is the one problem verify reports, and the
// records written after it are intact and linked to it.
func TestChainContinuesAfterATornLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.jsonl")
	writeChained(t, path, 0, 2)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(`{"decision_id":"torn","prev_`); err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
	writeChained(t, path, 2, 2)
	lines := readLines(t, path)
	if len(lines) != 5 || lines[2] != `{"decision_id":"torn","prev_`+"\n" {
		t.Fatalf("lines after the reopen: %q", lines)
	}
	b, _ := os.ReadFile(path)
	rep := verify(t, string(b), VerifyChainOptions{})
	if len(rep.Problems) != 1 || rep.Problems[0].Line != 3 {
		t.Fatalf("want one problem, the torn line 3: %+v", rep)
	}
}

// A chained log closed before its first event reports the genesis hash as
// its head, and verify must agree: an empty file (or an empty rotated one,
// with From) ends where its chain starts, so checking it against the
// recorded head passes.
func TestChainEmptyLogHead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.jsonl")
	l, err := NewDecisionLog(DecisionLogConfig{Sink: "file:" + path, Chain: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	head := l.ChainHead()
	if head != ChainGenesis {
		t.Fatalf("ChainHead of an empty log = %q, want the genesis hash", head)
	}
	b, err := os.ReadFile(path)
	if err != nil || len(b) != 0 {
		t.Fatalf("file %q (%v), want it empty", b, err)
	}
	rep := verify(t, string(b), VerifyChainOptions{Head: head})
	if !rep.OK() || rep.Records != 0 || rep.Head != ChainGenesis {
		t.Fatalf("empty log against its own head: %+v", rep)
	}
	from := LineHash([]byte("the last line of the previous file"))
	if rep := verify(t, "", VerifyChainOptions{From: from, Head: from}); !rep.OK() || rep.Head != from {
		t.Fatalf("empty rotated file: %+v", rep)
	}
	if rep := verify(t, "", VerifyChainOptions{Head: from}); rep.OK() {
		t.Fatalf("an empty file must not pass against the head of a log that had records: %+v", rep)
	}
}

// TestLastLineOfAFileThatShrank: a file cut while its tail is read (a
// copytruncate at a reopen) is not hashed with zeros in place of what was
// cut: the read is reported short, and lastLineOf reads again.
func TestLastLineOfAFileThatShrank(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.jsonl")
	if err := os.WriteFile(path, []byte("{\"a\":1}\n{\"b\":2}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, _, err := lastLineWithin(f, 100); !errors.Is(err, errShrank) {
		t.Errorf("a size past the file's end: %v, want errShrank", err)
	}
	hash, torn, err := lastLineOf(f)
	if err != nil || torn || hash != LineHash([]byte(`{"b":2}`)) {
		t.Errorf("lastLineOf: %s %v %v", hash, torn, err)
	}
}

// TestIsChainHash: the form of a head, as verify prints it and --head and
// --from take it.
func TestIsChainHash(t *testing.T) {
	for _, tc := range []struct {
		s    string
		want bool
	}{
		{ChainGenesis, true},
		{LineHash([]byte("x")), true},
		{"", false},
		{"garbage", false},
		{strings.TrimPrefix(LineHash([]byte("x")), "sha256:"), false},   // no prefix
		{strings.ToUpper(LineHash([]byte("x"))), false},                 // SHA256:, upper-case hex
		{"sha256:" + strings.ToUpper(LineHash([]byte("x"))[7:]), false}, // upper-case hex
		{LineHash([]byte("x"))[:70], false},                             // short
		{LineHash([]byte("x")) + "0", false},                            // long
		{"sha256:" + strings.Repeat("g", 64), false},                    // not hex
		{"sha1:" + strings.Repeat("0", 64), false},                      // another algorithm
		{" " + ChainGenesis, false},                                     // space
		{ChainGenesis + "\n", false},                                    // newline
	} {
		if got := IsChainHash(tc.s); got != tc.want {
			t.Errorf("IsChainHash(%q) = %v, want %v", tc.s, got, tc.want)
		}
	}
}

// repeatReader reads n bytes of 'x' without holding them.
type repeatReader struct{ n int64 }

func (r *repeatReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, io.EOF
	}
	k := min(int64(len(p)), r.n)
	for i := range p[:k] {
		p[i] = 'x'
	}
	r.n -= k
	return int(k), nil
}

// TestVerifyChainLongLine: a line longer than MaxLineBytes is not held
// (review: a file with no newline was read whole, and could run verify
// out of memory): it is hashed as it is read, so that the link of the
// record after it is checked, and reported as unchecked.
func TestVerifyChainLongLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.jsonl")
	l, err := NewDecisionLog(DecisionLogConfig{Sink: "file:" + path, Chain: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	l.Log(&DecisionEvent{Path: "before"})
	l.Log(&DecisionEvent{Path: "long", Input: map[string]any{"blob": strings.Repeat("y", 4096)}})
	l.Log(&DecisionEvent{Path: "after"})
	closeLog(t, l)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	rep := verify(t, string(data), VerifyChainOptions{MaxLineBytes: 1024})
	if rep.Records != 3 || rep.Unchecked != 1 || len(rep.Problems) != 1 || rep.Problems[0].Line != 2 || !strings.Contains(rep.Problems[0].Reason, "longer than 1024 bytes") || rep.Head != l.ChainHead() {
		t.Errorf("%+v: want 3 records, line 2 alone unchecked, and the log's head %s", rep, l.ChainHead())
	}
	if rep := verify(t, string(data), VerifyChainOptions{}); !rep.OK() || rep.Unchecked != 0 {
		t.Errorf("with the default bound: %+v", rep)
	}
	// The long line edited: the link of the record after it breaks.
	lines := strings.SplitAfter(string(data), "\n")
	edited := lines[0] + strings.Replace(lines[1], "yyyy", "yyyz", 1) + lines[2]
	if rep := verify(t, edited, VerifyChainOptions{MaxLineBytes: 1024}); len(rep.Problems) != 2 || rep.Problems[1].Line != 3 {
		t.Errorf("the long line edited: %+v, want line 2 unchecked and line 3's link broken", rep)
	}

	// Empty lines are not long ones: records replaced by blank lines are
	// tampering (not JSON), not a log that could not be checked.
	for _, blank := range []string{"\n", "\n\n", lines[0] + "\n" + lines[2]} {
		rep := verify(t, blank, VerifyChainOptions{MaxLineBytes: 1024})
		if rep.Unchecked != 0 || len(rep.Problems) == 0 || !strings.Contains(rep.Problems[0].Reason, "not a JSON record") && !strings.Contains(rep.Problems[len(rep.Problems)-1].Reason, "not a JSON record") {
			t.Errorf("%q: %+v, want a blank line reported as not a JSON record", blank, rep)
		}
	}

	// A file of 64 MiB with no newline, read with a 1 MiB bound.
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	rep, err = VerifyChain(&repeatReader{n: 64 << 20}, VerifyChainOptions{MaxLineBytes: 1 << 20})
	runtime.ReadMemStats(&after)
	if err != nil || rep.Records != 1 || rep.Unchecked != 1 || len(rep.Problems) != 2 {
		t.Errorf("64 MiB without a newline: %+v %v, want one line, unchecked and torn", rep, err)
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > 8<<20 {
		t.Errorf("verifying a 64 MiB line with a 1 MiB bound allocated %d MiB", got>>20)
	}
}

// TestReadHandWrittenCheckpoint: a checkpoint file an operator writes from
// a warning's checkpoint_head and checkpoint_size (the docs say how) is
// read whatever its line ends and blank lines; anything else is refused.
func TestReadHandWrittenCheckpoint(t *testing.T) {
	head := LineHash([]byte("x"))
	for _, c := range []struct {
		name, text string
		ok         bool
	}{
		{"as the log writes it", head + "\n42\n", true},
		{"CRLF", head + "\r\n42\r\n", true},
		{"blank lines and spaces", "\n" + head + "  \n 42\n\n", true},
		{"no final newline", head + "\n42", true},
		{"size missing", head + "\n", false},
		{"a third field", head + "\n42\n7\n", false},
		{"not a hash", "sha256:xyz\n42\n", false},
		{"negative size", head + "\n-1\n", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "d.jsonl.head")
			if err := os.WriteFile(p, []byte(c.text), 0o600); err != nil {
				t.Fatal(err)
			}
			ck, ok, err := ReadHeadCheckpoint(p)
			if c.ok && (!ok || err != nil || ck != (HeadCheckpoint{Head: head, Size: 42})) {
				t.Fatalf("%+v %v %v, want the checkpoint", ck, ok, err)
			}
			if !c.ok && (ok || err == nil) {
				t.Fatalf("%+v %v %v, want it refused", ck, ok, err)
			}
		})
	}
}

// TestVerifyChainRemovalBeforeLongLine: a record removed right before a
// line longer than MaxLineBytes is found: the long line's link is read
// from its end, where the log writes prev_hash. It was not checked, and
// the link to the long line from the record after it still held, so the
// removal went unnoticed (review).
func TestVerifyChainRemovalBeforeLongLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.jsonl")
	l, err := NewDecisionLog(DecisionLogConfig{Sink: "file:" + path, Chain: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	l.Log(&DecisionEvent{Path: "first"})
	l.Log(&DecisionEvent{Path: "removed"})
	l.Log(&DecisionEvent{Path: "long", Input: map[string]any{"blob": strings.Repeat("y", 4096), "nested": map[string]any{"prev_hash": ChainGenesis}}})
	l.Log(&DecisionEvent{Path: "after"})
	closeLog(t, l)
	lines := readLines(t, path)
	intact := verify(t, strings.Join(lines, ""), VerifyChainOptions{MaxLineBytes: 1024})
	if intact.Unchecked != 1 || len(intact.Problems) != 1 || intact.Problems[0].Line != 3 {
		t.Fatalf("intact log: %+v, want line 3 alone unchecked", intact)
	}
	cut := lines[0] + lines[2] + lines[3]
	rep := verify(t, cut, VerifyChainOptions{MaxLineBytes: 1024})
	removed := false
	for _, p := range rep.Problems {
		removed = removed || p.Line == 2 && strings.Contains(p.Reason, "removed")
	}
	if !removed {
		t.Fatalf("record 2 removed before the long line: %+v, want line 2's link reported broken", rep)
	}
	// A long line that does not end with prev_hash says that its link
	// could not be read.
	odd := lines[0] + lines[1] + `{"x":"` + strings.Repeat("z", 2048) + `"}` + "\n"
	if rep := verify(t, odd, VerifyChainOptions{MaxLineBytes: 1024}); len(rep.Problems) != 1 || !strings.Contains(rep.Problems[0].Reason, "cannot be checked") {
		t.Fatalf("a long line without prev_hash: %+v", rep)
	}
}
