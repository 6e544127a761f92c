package telemetry

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
)

// The decision log's hash chain (DecisionLogConfig.Chain): every line
// carries prev_hash, the SHA-256 of the previous line's bytes (without its
// newline), and the first line of a chain carries ChainGenesis. Removing a
// line breaks the link of the line after it, editing a line breaks the link
// of the line after it too, and inserting one breaks its own. What a chain
// alone cannot show is a cut at the end (the last lines removed, or the
// last line edited): compare the head VerifyChain reports with one recorded
// elsewhere (the gateway logs it at shutdown) to see that.

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
	Line   int    `json:"line"` // 1-based line of the record whose link is broken
	Reason string `json:"reason"`
}

// ChainReport is what VerifyChain found.
type ChainReport struct {
	Records  int            `json:"records"`
	Head     string         `json:"head"` // hash of the last line: what a later record would link to (From, or ChainGenesis, with no records)
	Problems []ChainProblem `json:"problems,omitempty"`
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
}

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
	br := bufio.NewReaderSize(r, 64<<10)
	line := 0
	for {
		b, err := br.ReadBytes('\n')
		if len(b) == 0 && errors.Is(err, io.EOF) {
			break
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return rep, err
		}
		line++
		torn := !bytes.HasSuffix(b, []byte{'\n'})
		b = bytes.TrimSuffix(b, []byte{'\n'})
		rep.Records++
		var rec struct {
			PrevHash *string `json:"prev_hash"`
		}
		switch {
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
		want = LineHash(b)
		if errors.Is(err, io.EOF) {
			break
		}
	}
	// With no records the head is where the chain starts (From, or
	// ChainGenesis): what a chained log closed without events reports as
	// its ChainHead, and what its first record will link to.
	rep.Head = want
	if o.Head != "" && rep.Head != o.Head {
		rep.Problems = append(rep.Problems, ChainProblem{line, fmt.Sprintf("the log ends at %s, not at the expected head %s: records removed from the end, or the last one edited", rep.Head, o.Head)})
	}
	return rep, nil
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
