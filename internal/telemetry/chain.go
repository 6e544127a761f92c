package telemetry

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// The decision log's hash chain (DecisionLogConfig.Chain): every line
// carries prev_hash, the SHA-256 of the previous line's bytes (without its
// newline), and the first line of a chain carries ChainGenesis. Removing a
// line breaks the link of the line after it, editing a line breaks the link
// of the line after it too, and inserting one breaks its own. What a chain
// alone cannot show is a cut at the end (the last lines removed, or the
// last line edited): compare the head VerifyChain reports with one recorded
// elsewhere (the log's close line, or its head checkpoint, below) to see
// that.

// ChainGenesis is the prev_hash of the first record of a chain.
const ChainGenesis = "sha256:0000000000000000000000000000000000000000000000000000000000000000"

// LineHash is the chain hash of one log line (without its newline).
func LineHash(line []byte) string {
	sum := sha256.Sum256(line)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// lastLineOf is the chain hash of the last line of the open file f: where a
// chained log appended to it continues. "" for an empty file (the chain
// starts at ChainGenesis). torn says the file does not end with a newline
// (a crash mid-write): the fragment is still the last line, which the next
// record links to and verify reports, and the appender must end it with a
// newline first. Only the file's tail is read; a file that shrinks while it
// is read (a copytruncate) is read again from its new size.
func lastLineOf(f *os.File) (hash string, torn bool, err error) {
	for range 3 {
		st, err := f.Stat()
		if err != nil {
			return "", false, err
		}
		hash, torn, err = lastLineWithin(f, st.Size())
		if !errors.Is(err, errShrank) {
			return hash, torn, err
		}
	}
	return "", false, fmt.Errorf("%s: %w", f.Name(), errShrank)
}

var errShrank = errors.New("the file shrank while its last line was read")

// lastLineWithin is the last line of f's first size bytes: its hash, and
// whether it lacks its newline.
func lastLineWithin(f *os.File, size int64) (hash string, torn bool, err error) {
	if size == 0 {
		return "", false, nil
	}
	// Read backwards in growing windows until a whole last line is held.
	for window := int64(64 << 10); ; window *= 4 {
		off := max(size-window, 0)
		buf := make([]byte, size-off)
		if n, err := f.ReadAt(buf, off); n < len(buf) {
			if err == nil || errors.Is(err, io.EOF) {
				err = errShrank // zeros in place of what was cut must not be hashed
			}
			return "", false, err
		}
		torn := buf[len(buf)-1] != '\n'
		body := bytes.TrimSuffix(buf, []byte{'\n'})
		if i := bytes.LastIndexByte(body, '\n'); i >= 0 {
			return LineHash(body[i+1:]), torn, nil
		}
		if off == 0 {
			return LineHash(body), torn, nil
		}
	}
}

// ChainProblem is one broken link.
type ChainProblem struct {
	Line   int    `json:"line"` // 1-based line of the record whose link is broken; 0 for the end of a file with none
	Reason string `json:"reason"`
}

// ChainReport is what VerifyChain found.
type ChainReport struct {
	Records  int            `json:"records"`
	Head     string         `json:"head"` // hash of the last line: what a later record would link to (From, or ChainGenesis, with no records)
	Problems []ChainProblem `json:"problems,omitempty"`
	// With a checkpoint (VerifyChainOptions.Checkpoint) that the log
	// holds: the line at its size (0 for a checkpoint of size 0), and the
	// records after it, which it does not cover (not a problem: written
	// after the last checkpoint by a log killed before it could close, or
	// still being written).
	CheckpointLine int `json:"checkpoint_line,omitempty"`
	PastCheckpoint int `json:"past_checkpoint,omitempty"`
	// Unchecked counts the lines longer than MaxLineBytes, each also a
	// problem: hashed as they were read, so the links to and past them
	// are checked, but not held, so not read as records (their own link
	// and their JSON are not checked).
	Unchecked int `json:"unchecked,omitempty"`
}

// OK reports whether every link held.
func (r ChainReport) OK() bool { return len(r.Problems) == 0 }

// VerifyChainOptions adjust VerifyChain.
type VerifyChainOptions struct {
	// From is the prev_hash the first record must carry: ChainGenesis when
	// empty; the head of the previous file for a log that was rotated.
	From string
	// Head, when set, is the hash the last line must have (a head recorded
	// elsewhere): it finds the last lines removed or the last one edited.
	Head string
	// Checkpoint, when set, is the log's head checkpoint
	// (ReadHeadCheckpoint), compared as a log opening the file compares
	// it: the line that ends at its size must hash to its head (a
	// checkpoint of size 0 is held by any file), or the log's end was cut
	// or edited, or it is another file; records after that line are
	// reported in PastCheckpoint, not as problems.
	Checkpoint *HeadCheckpoint
	// MaxLineBytes bounds the bytes of a line VerifyChain holds
	// (DefaultMaxLineBytes when 0): a longer line is hashed as it is read
	// and reported (ChainReport.Unchecked), so that a file with no newline
	// in gigabytes does not run verify out of memory.
	MaxLineBytes int
}

// DefaultMaxLineBytes is VerifyChainOptions.MaxLineBytes when 0: 64 MiB,
// far above a record of the largest input accepted by default
// (MAX_REQUEST_BYTES, 1 MiB, whose JSON escapes may make it a few times
// larger in the log).
const DefaultMaxLineBytes = 64 << 20

// VerifyChain reads a chained decision log and reports every broken link:
// a record removed (the next one links to a line that is not there), a
// record edited (the next one links to the line as it was), a record
// inserted, a line that is not a JSON object, or a record without
// prev_hash. It fails only when r cannot be read.
func VerifyChain(r io.Reader, o VerifyChainOptions) (ChainReport, error) {
	want := o.From
	if want == "" {
		want = ChainGenesis
	}
	var rep ChainReport
	lr := lineReader{br: bufio.NewReaderSize(r, 64<<10), max: o.MaxLineBytes}
	if lr.max <= 0 {
		lr.max = DefaultMaxLineBytes
	}
	line := 0
	var size int64 // bytes read
	ck := checkpointCheck{c: o.Checkpoint}
	for {
		b, sum, n, torn, err := lr.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return rep, err
		}
		line++
		start := size
		size += n
		if !torn {
			size++
		}
		ck.line(&rep, line, start, n, sum, torn)
		rep.Records++
		var rec struct {
			PrevHash *string `json:"prev_hash"`
		}
		switch {
		case n > int64(lr.max): // next hashed it as it read it (b is nil, as for an empty line)
			// Its link is read from its end, where the log writes
			// prev_hash (the event's last member): unchecked, a record
			// removed before it would go unnoticed (review).
			rep.Unchecked++
			prev, found := tailPrevHash(lr.tail)
			switch {
			case !found:
				rep.Problems = append(rep.Problems, ChainProblem{line, fmt.Sprintf("longer than %d bytes (%d) and not ending with prev_hash as the log writes it: not read as a record, its link cannot be checked (the link to it from the next record is); verify it with a larger --max-line-bytes if the log holds records this large", lr.max, n)})
			case prev != want:
				rep.Problems = append(rep.Problems, ChainProblem{line, brokenLink(line, prev, o.From)})
				fallthrough
			default:
				rep.Problems = append(rep.Problems, ChainProblem{line, fmt.Sprintf("longer than %d bytes (%d): not read as a record, so its JSON is not checked (its link, read from its end, and the link to it from the next record are); verify it with a larger --max-line-bytes if the log holds records this large", lr.max, n)})
			}
		case json.Unmarshal(b, &rec) != nil:
			rep.Problems = append(rep.Problems, ChainProblem{line, "not a JSON record (edited, or torn by a crash or a failed write)"})
		case rec.PrevHash == nil:
			rep.Problems = append(rep.Problems, ChainProblem{line, "no prev_hash: not written by a chained log, or inserted"})
		case *rec.PrevHash != want:
			rep.Problems = append(rep.Problems, ChainProblem{line, brokenLink(line, *rec.PrevHash, o.From)})
		}
		if torn {
			rep.Problems = append(rep.Problems, ChainProblem{line, "the last line has no newline (torn by a crash, or cut)"})
		}
		want = sum
	}
	// With no records the head is where the chain starts (From, or
	// ChainGenesis): what a chained log closed without events reports as
	// its ChainHead, and what its first record will link to.
	rep.Head = want
	if o.Head != "" && rep.Head != o.Head {
		rep.Problems = append(rep.Problems, ChainProblem{line, fmt.Sprintf("the log ends at %s, not at the expected head %s: records removed from the end, or the last one edited", rep.Head, o.Head)})
	}
	ck.end(&rep, line, size)
	return rep, nil
}

// lineReader reads a log's lines for VerifyChain, holding at most max
// bytes of one.
type lineReader struct {
	br  *bufio.Reader
	max int
	buf []byte
	// tail holds the last tailBytes bytes of a line longer than max (its
	// prev_hash member, for tailPrevHash); nil after a line within max.
	tail []byte
}

// tailBytes is what lineReader keeps of the end of a line it does not
// hold: more than `,"prev_hash":"sha256:<64 hex>"}`.
const tailBytes = 128

// tailPrevHash reads the prev_hash a record ends with, as the log writes
// it (the event's last member, so the line ends with
// `,"prev_hash":"sha256:<64 hex>"}`): found is false when tail does not
// end so. A nested object's member would end the line with another brace,
// and a string's quotes are escaped, so this is the record's own member
// (the last one, as json.Unmarshal reads a repeated key).
func tailPrevHash(tail []byte) (prev string, found bool) {
	const key = `"prev_hash":"`
	n := len(key) + len("sha256:") + 2*sha256.Size + len(`"}`)
	if len(tail) < n+1 || !bytes.HasSuffix(tail, []byte(`"}`)) {
		return "", false
	}
	m := tail[len(tail)-n:]
	if c := tail[len(tail)-n-1]; (c != ',' && c != '{') || !bytes.HasPrefix(m, []byte(key)) {
		return "", false
	}
	prev = string(m[len(key) : len(m)-2])
	return prev, IsChainHash(prev)
}

// next returns the next line without its newline: b (valid until the next
// call), or nil for a line longer than max, which is hashed as it is read
// instead of held; its hash (LineHash); n, its length; and torn, that no
// newline ends it. io.EOF when no line is left.
func (r *lineReader) next() (b []byte, sum string, n int64, torn bool, err error) {
	r.buf = r.buf[:0]
	r.tail = r.tail[:0]
	var h hash.Hash
	for {
		frag, err := r.br.ReadSlice('\n')
		ended := len(frag) > 0 && frag[len(frag)-1] == '\n'
		frag = bytes.TrimSuffix(frag, []byte{'\n'})
		n += int64(len(frag))
		if h == nil && n > int64(r.max) {
			h = sha256.New()
			_, _ = h.Write(r.buf)
			r.keepTail(r.buf)
			r.buf = r.buf[:0]
		}
		if h != nil {
			_, _ = h.Write(frag)
			r.keepTail(frag)
		} else {
			r.buf = append(r.buf, frag...)
		}
		switch {
		case ended:
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && n == 0:
			return nil, "", 0, false, io.EOF
		case errors.Is(err, io.EOF):
			torn = true
		default:
			return nil, "", 0, false, err
		}
		if h != nil {
			return nil, "sha256:" + hex.EncodeToString(h.Sum(nil)), n, torn, nil
		}
		return r.buf, LineHash(r.buf), n, torn, nil
	}
}

// keepTail appends frag to the tail of a long line, keeping its last
// tailBytes bytes.
func (r *lineReader) keepTail(frag []byte) {
	if len(frag) >= tailBytes {
		r.tail = append(r.tail[:0], frag[len(frag)-tailBytes:]...)
		return
	}
	r.tail = append(r.tail, frag...)
	if over := len(r.tail) - tailBytes; over > 0 {
		r.tail = r.tail[:copy(r.tail, r.tail[over:])]
	}
}

// checkpointCheck is VerifyChain's comparison of the log with a head
// checkpoint (c, nil for none), as compareCheckpoint makes it at start:
// the line ending at c.Size, without its newline or with it (a line torn
// when the checkpoint was written, ended since), must hash to c.Head.
type checkpointCheck struct {
	c    *HeadCheckpoint
	done bool // the checkpoint's line was found, or its size passed
	held bool // the log holds the checkpoint
}

// line looks at line n, which starts at byte start and holds length
// bytes hashing to sum (without its newline, which ends it unless torn).
func (k *checkpointCheck) line(rep *ChainReport, n int, start, length int64, sum string, torn bool) {
	if k.c == nil || k.done {
		return
	}
	if k.c.Size == 0 {
		// The last log left the file empty: every record is past it.
		k.done, k.held = true, true
		return
	}
	end := start + length
	lineEnd := end
	if !torn {
		lineEnd++
	}
	switch {
	case k.c.Size > lineEnd:
		return // further on
	case k.c.Size != end && k.c.Size != lineEnd:
		rep.Problems = append(rep.Problems, ChainProblem{n, fmt.Sprintf("the head checkpoint's size %d falls inside this line, not at the end of one: the records up to it were edited, or the file is not the one checkpointed", k.c.Size)})
	case sum != k.c.Head:
		rep.Problems = append(rep.Problems, ChainProblem{n, fmt.Sprintf("the line at the head checkpoint's size %d hashes to %s, not to its head %s: it was edited, or records up to it were replaced, or the file is not the one checkpointed", k.c.Size, sum, k.c.Head)})
	default:
		k.held = true
		rep.CheckpointLine = n
	}
	k.done = true
}

// end completes the comparison once the log's n lines, size bytes, are
// read.
func (k *checkpointCheck) end(rep *ChainReport, n int, size int64) {
	switch {
	case k.c == nil:
	case !k.done && k.c.Size > 0:
		rep.Problems = append(rep.Problems, ChainProblem{n, fmt.Sprintf("the log ends at byte %d, before its head checkpoint's size %d: records were removed from the end, or the file is not the one checkpointed", size, k.c.Size)})
	case k.held:
		rep.PastCheckpoint = rep.Records - rep.CheckpointLine
	}
}

func brokenLink(line int, got, from string) string {
	if line == 1 {
		if from == "" {
			return fmt.Sprintf("the first record does not start a chain (prev_hash %s): records before it were removed, or the file continues a rotated one (give its head as --from)", got)
		}
		return fmt.Sprintf("the first record does not continue the given head (prev_hash %s)", got)
	}
	if got == ChainGenesis {
		return "the record starts a new chain: the log was restarted without continuing it, or the records before it were replaced"
	}
	return fmt.Sprintf("prev_hash %s does not match line %d: the record before it was edited, or records between them were removed or inserted", got, line-1)
}

// IsChainHash reports whether s has the form of a chain hash:
// "sha256:" and 64 lowercase hex digits, as LineHash writes it (ChainGenesis
// included).
func IsChainHash(s string) bool {
	hexPart, ok := strings.CutPrefix(s, "sha256:")
	if !ok || len(hexPart) != 2*sha256.Size {
		return false
	}
	for _, c := range []byte(hexPart) {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// The head checkpoint: a chained log writing a regular file keeps the
// chain's head beside it, in the file's path plus HeadCheckpointSuffix,
// replaced whole (a temporary file synced and renamed over it, after the
// log file is synced) at most every second while records are written, when
// the log, idle, finds its file rotated or truncated, and when the log
// closes. It holds two lines,
// the head and the size of the log file at that head:
//
//	sha256:5c1e...
//	1048576
//
// A log opening the file compares its end with the checkpoint, so that
// records removed or edited at the end while no log had the file open (a
// cut the chain alone cannot show) are warned about; the size tells a file
// that merely goes on past the checkpoint (its last run was killed before
// it closed the log) from one whose end changed. The checkpoint sits in the
// log's directory and carries no key: someone who can write there can
// rewrite it with the log. It is a head kept where a stdio host that has
// exited (and closed the stderr the close line went to) cannot lose it, not
// a head kept out of an attacker's reach.

// HeadCheckpointSuffix is added to a chained log file's path to name its
// head checkpoint.
const HeadCheckpointSuffix = ".head"

// HeadCheckpoint is what a head checkpoint holds.
type HeadCheckpoint struct {
	Head string // the chain's head: the hash of the log file's last line, or where its chain starts
	Size int64  // the log file's size at that head
}

// writeHeadCheckpoint replaces the checkpoint at path with c: written to a
// temporary file in the same directory, synced, then renamed over it, so
// that a reader sees the old checkpoint or the new one, never a part of
// one, even after a power loss; the directory is synced after the rename.
// The log's own data must be synced before (DecisionLog.checkpoint): a
// checkpoint that reached the disk before the records it describes would,
// after a power loss, describe a file longer than the one left, which the
// next start takes for records removed. A checkpoint older than the log is
// harmless (told apart by its size), so the directory's sync, which some
// file systems refuse, is not required to succeed.
func writeHeadCheckpoint(path string, c HeadCheckpoint) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(tmp, "%s\n%d\n", c.Head, c.Size)
	if err == nil {
		err = tmp.Chmod(0o640) // as the log: readable by its group (a log shipper)
	}
	if err == nil {
		err = syncFile(tmp)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
		return err
	}
	if d, err := os.Open(dir); err == nil {
		_ = syncFile(d) // the rename's durability: without it, the old checkpoint, which is safe
		_ = d.Close()
	}
	return nil
}

// syncFile is f.Sync, where a file system that cannot sync (EINVAL,
// ENOTSUP) is not an error: nothing better can be done there. Tests see
// which files are synced, in order.
var syncFile = func(f *os.File) error {
	err := f.Sync()
	if errors.Is(err, syscall.EINVAL) || errors.Is(err, errors.ErrUnsupported) {
		return nil
	}
	return err
}

// ReadHeadCheckpoint reads the checkpoint at path; ok is false when there
// is none.
func ReadHeadCheckpoint(path string) (c HeadCheckpoint, ok bool, err error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return c, false, nil
	}
	if err != nil {
		return c, false, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 256))
	if err != nil {
		return c, false, err
	}
	// Fields, not lines: an operator writes one by hand from a warning's
	// checkpoint_head and checkpoint_size (docs), perhaps with CRLF or a
	// blank line after.
	f2 := strings.Fields(string(b))
	if len(f2) != 2 {
		return c, false, fmt.Errorf("%s: not a head checkpoint (want a chain hash and a size, a line each)", path)
	}
	head := f2[0]
	n, err := strconv.ParseInt(f2[1], 10, 64)
	if !IsChainHash(head) || err != nil || n < 0 {
		return c, false, fmt.Errorf("%s: not a head checkpoint (want a chain hash and a size, a line each)", path)
	}
	return HeadCheckpoint{Head: head, Size: n}, true, nil
}

// checkpointVerdict is how a log file's end compares with its checkpoint.
type checkpointVerdict int

const (
	checkpointMatches checkpointVerdict = iota // the file ends at the checkpoint's head and size
	checkpointBehind                           // the file goes on past the checkpoint, whose head is its line at the checkpoint's size
	checkpointDiffers                          // the file does not hold the checkpoint's head at its size: its end was cut or edited, or it is another file
)

// compareCheckpoint compares c with the open log file f, of size size. A
// checkpoint of size 0 says the last log left the file empty, at whatever
// head its chain had (the head of the copy, for a file emptied by a
// copytruncate while the log was idle; genesis for a new file put at the
// path by a rotation's create, where the next log may go on from the
// rotated file's head, carried): an empty file matches it, and a longer
// one goes on past it, whatever its first record links to (a log that
// started there and was killed before its first checkpoint).
func compareCheckpoint(f *os.File, size int64, c HeadCheckpoint) (checkpointVerdict, error) {
	switch {
	case c.Size == 0 && size == 0:
		return checkpointMatches, nil
	case c.Size == 0:
		return checkpointBehind, nil
	case size < c.Size:
		return checkpointDiffers, nil
	}
	at, _, err := lastLineWithin(f, c.Size)
	if err != nil {
		return checkpointDiffers, err
	}
	switch {
	case at != c.Head:
		return checkpointDiffers, nil
	case size == c.Size:
		return checkpointMatches, nil
	}
	return checkpointBehind, nil
}
