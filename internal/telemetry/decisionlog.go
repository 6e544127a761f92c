package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
)

// DefaultDecisionLogQueue is the decision log's queue length when the config
// leaves it 0: ten thousand events is a few seconds of peak traffic, enough
// to ride out a slow disk without holding much memory.
const DefaultDecisionLogQueue = 10000

// The queue is bounded in bytes as well as in events: each queued event
// keeps its decoded input alive, up to MAX_REQUEST_BYTES (1 MiB by
// default), so that with the writer stuck (a full disk, a pipe nobody
// reads) 10,000 events of large inputs would hold 10 GiB. The bound is
// decisionLogEventBytes per event of the queue's length, and at least
// decisionLogQueueBytes: 64 MiB for the default queue, which ordinary events
// (an estimated 1-2 KiB each) never reach, so that the count still bounds
// them and the bytes bound the large ones (64 of 1 MiB). The sizes are
// estimates (eventSize), not measurements.
//
// Two bounds on one queue, not two mechanisms: neither does the other's
// job (events alone let large inputs hold gigabytes; bytes alone would
// need a channel sized for the smallest events), and both act alike, in
// Log: the newest event is dropped, never waited for, and counted in the
// one counter (acgs_decision_log_dropped_total). OPA's decision_logs
// offers them as alternatives (reporting.buffer_type "event",
// buffer_size_limit_events, default 10,000; or "size",
// buffer_size_limit_bytes, unbounded by default) and drops the oldest, for
// its upload buffer; this log mirrors OPA's events and its 10,000, not its
// upload buffer. The input's size is one count (ValueSize): the server's
// decoder counts it as it builds a single decision's input
// (DecisionEvent.InputSize), eventSize walks the others.
const (
	decisionLogQueueBytes = 64 << 20
	decisionLogEventBytes = 4 << 10
)

// Bounds on how much the writer batches into one Write. Stdout is usually a
// pipe (a container runtime, a log shipper) shared with the process log, and
// only writes of at most PIPE_BUF (4096 bytes on Linux) are atomic there: a
// larger batch could be split by a process-log line landing in its middle,
// corrupting both. Files and other writers get larger batches.
const (
	decisionLogBatchBytes       = 64 << 10
	decisionLogStdoutBatchBytes = 4096
)

// DecisionLogConfig configures the decision log.
type DecisionLogConfig struct {
	// Sink is "off", "stdout" or "file:/path" (appended to, created 0640).
	// The empty string means off.
	Sink string
	// Mask lists JSON pointers (RFC 6901) into the input whose values are
	// erased from logged events, e.g. /context/agent/id, or as OPA writes
	// them /input/context/agent/id. /result/... is refused: only the input
	// is masked (see parseMaskPointer).
	Mask []string
	// QueueSize bounds the events waiting for the writer
	// (DefaultDecisionLogQueue when 0). Past it, events are dropped and
	// counted, never waited for. Their estimated size is bounded too, at 4
	// KiB an event of the queue's length or 64 MiB, whichever is larger
	// (decisionLogQueueBytes): an event that would take the queue past it
	// is dropped and counted as well, unless the queue is empty.
	QueueSize int
	// Labels are put on events that carry none, as OPA does with its
	// instance id and version.
	Labels map[string]string
	// Logger receives the log's own problems (write errors); slog.Default()
	// when nil.
	Logger *slog.Logger
	// Writer, when set, receives the events instead of Sink's destination.
	// It is for tests and for embedding the log elsewhere.
	Writer io.Writer
	// Chain makes every event carry prev_hash, the hash of the previous
	// line of the log (see chain.go), so that a removed or edited record
	// is found by VerifyChain (`acgs audit verify`). A file sink that
	// already holds events continues their chain, and a regular file's
	// head is kept beside it (the head checkpoint, chain.go) and compared
	// with the file's end when the log opens it again.
	Chain bool
	// Context ends early the waits of opening a file sink (for a FIFO's
	// reader, for another writer's lock): the process's stop signal. Nil
	// is context.Background().
	Context context.Context

	batchBytes      int           // tests: overrides the Write size bound
	queueBytes      int64         // tests: overrides the queue's bound in bytes
	reopenEvery     time.Duration // tests: overrides followEvery
	startWait       time.Duration // tests: overrides startWait (negative: no wait)
	checkpointEvery time.Duration // tests: overrides checkpointEvery
}

// followEvery is how often, at most, a file sink checks that its path still
// names the file it writes (DecisionLog.follow): a stat(2) per second.
const followEvery = time.Second

// checkpointEvery is how often, at most, a chained file log replaces its
// head checkpoint while it writes (it always does when it closes). A
// checkpoint is the log file synced, then a file created, written, synced
// and renamed, and its directory synced: about 5 ms on a virtual disk
// (0.2-0.4 ms without the syncs) where an append of a record is 1-2 µs, so
// one per flush would cost a log written one event at a time thousands of
// times its writes; once a second it costs the writer goroutine half a
// percent of its time, off the request path (the queue holds what comes
// meanwhile), and leaves a process killed before it could close its log
// with a checkpoint at most a second old.
const checkpointEvery = time.Second

// BundleInfo is an entry of DecisionEvent.Bundles, as in OPA's events.
type BundleInfo struct {
	Revision string `json:"revision"`
}

// DecisionEvent is one logged decision, in OPA's decision-log event format
// plus the ACGS fields (cache tier, constitutional hash), so that tools that
// read OPA decision logs read these.
type DecisionEvent struct {
	DecisionID      string                `json:"decision_id"`
	BatchDecisionID string                `json:"batch_decision_id,omitempty"`
	Path            string                `json:"path"`
	Input           any                   `json:"input,omitempty"`
	Result          any                   `json:"result,omitempty"`
	Bundles         map[string]BundleInfo `json:"bundles,omitempty"`
	Timestamp       time.Time             `json:"timestamp"`
	Metrics         map[string]any        `json:"metrics,omitempty"`
	Labels          map[string]string     `json:"labels,omitempty"`
	RequestID       string                `json:"req_id,omitempty"`
	RequestedBy     string                `json:"requested_by,omitempty"`
	// Erased lists the masked input fields as OPA does (/input/...). The
	// log fills it; a caller may leave it empty.
	Erased             []string `json:"erased,omitempty"`
	CacheTier          string   `json:"cache_tier"`
	ConstitutionalHash string   `json:"constitutional_hash"`
	Error              string   `json:"error,omitempty"`
	// PrevHash is the hash of the previous line of the log ("sha256:<hex>",
	// ChainGenesis for the first), set by the log when Chain is on.
	PrevHash string `json:"prev_hash,omitempty"`
	// InputSize, when not 0, is at least ValueSize(Input): what a decoder
	// counted as it built the input (or a value holding it), so that Log
	// does not walk the input again on the request path for the queue's
	// bound in bytes. 0: Log walks it. A value smaller than ValueSize
	// would let the queue hold more than its bound.
	InputSize int64 `json:"-"`

	queued int64 // what Log counted of it toward the queue's bound in bytes
}

// DecisionLog writes decision events as JSON lines from one goroutine, so
// that a request pays only a channel send for its event: the masking, the
// encoding and the I/O happen off the request path. When the sink cannot keep
// up and the queue is full, events are dropped and counted rather than slowing
// requests down — a decision log must never become the service's bottleneck.
//
// A nil *DecisionLog, and one built with Sink "off", accept Log and Close and
// do nothing.
type DecisionLog struct {
	off    bool
	ch     chan *DecisionEvent
	w      io.Writer
	mask   []maskPointer
	labels map[string]string
	logger *slog.Logger
	batch  int // bytes per Write, see decisionLogBatchBytes
	chain  bool
	prev   string // with chain: hash of the last line buffered or written (writer goroutine only)
	// torn says the sink ends with a fragment of a line (a write cut
	// short, now or before the file was opened): the next write ends it
	// with a newline first. Writer goroutine only after NewDecisionLog.
	torn bool

	// A file sink: its path, the file open at it (closed by Close), and when follow looks
	// again (writer goroutine only after NewDecisionLog).
	path        string
	file        *os.File
	rotates     bool // the file is a regular file, which follow keeps at its path
	orphaned    bool // the file open was removed and none could be opened at the path
	reopenEvery time.Duration
	nextFollow  time.Time
	followWarn  time.Time // the last warning that the path cannot be opened

	// With the chain, a regular file's head checkpoint (writer goroutine
	// only after NewDecisionLog): how often it is replaced, whether the
	// last try failed (warned about once until one succeeds), and, set
	// before done is closed, its path once the close wrote it.
	checkpointEvery time.Duration
	checkpointBad   bool
	checkpointed    string
	// lastCheckpoint is the checkpoint this log last wrote (ok: one was):
	// after a rotation another log may own the checkpoint beside the new
	// file, which this one must then leave alone.
	lastCheckpoint   HeadCheckpoint
	lastCheckpointOK bool

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	closed    atomic.Bool
	abandon   atomic.Bool
	closeErr  error // set by the writer before done is closed

	dropped, written, failed atomic.Uint64

	// queueBytes bounds queuedBytes, the estimated size of the events in
	// ch (eventSize).
	queueBytes  int64
	queuedBytes atomic.Int64
}

// ParseDecisionLogSink checks a DECISION_LOG sink value ("off", "stdout",
// "file:/path"); config validation uses it so that a typo is refused at start
// rather than at the first decision.
func ParseDecisionLogSink(s string) error {
	_, _, err := parseSink(s)
	return err
}

// WritesToStdout reports whether the sink s writes to the process's stdout:
// stdout itself, or a file sink whose path is stdout under another name
// (file:/dev/stdout, /dev/fd/1, /proc/self/fd/1). A path that cannot be
// stat'ed is not there yet (a new file, which is not stdout) or is refused
// when the log opens it.
func WritesToStdout(s string) bool {
	kind, path, err := parseSink(s)
	switch {
	case err != nil || kind == "off":
		return false
	case kind == "stdout":
		return true
	}
	at, aerr := os.Stat(path)
	out, err := os.Stdout.Stat()
	return aerr == nil && err == nil && os.SameFile(at, out)
}

func parseSink(s string) (kind, path string, err error) {
	switch {
	case s == "" || s == "off":
		return "off", "", nil
	case s == "stdout":
		return "stdout", "", nil
	case strings.HasPrefix(s, "file:"):
		path = strings.TrimPrefix(s, "file:")
		if path == "" {
			return "", "", fmt.Errorf("decision log sink %q: file: needs a path", s)
		}
		return "file", path, nil
	}
	return "", "", fmt.Errorf("decision log sink %q: want off, stdout or file:/path", s)
}

// NewDecisionLog validates cfg, opens the sink and starts the writer.
func NewDecisionLog(cfg DecisionLogConfig) (*DecisionLog, error) {
	kind, path, err := parseSink(cfg.Sink)
	if err != nil {
		return nil, err
	}
	if cfg.QueueSize < 0 {
		return nil, fmt.Errorf("decision log queue size %d: must not be negative", cfg.QueueSize)
	}
	if cfg.queueBytes < 0 {
		return nil, fmt.Errorf("decision log queue bytes %d: must not be negative", cfg.queueBytes)
	}
	mask := make([]maskPointer, 0, len(cfg.Mask))
	for _, p := range cfg.Mask {
		mp, err := parseMaskPointer(p)
		if err != nil {
			return nil, err
		}
		mask = append(mask, mp)
	}
	l := &DecisionLog{
		mask:   mask,
		labels: cfg.Labels,
		logger: cfg.Logger,
		batch:  decisionLogBatchBytes,
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	if l.logger == nil {
		l.logger = slog.Default()
	}
	switch {
	case cfg.Writer != nil:
		l.w = cfg.Writer
	case kind == "off":
		l.off = true
		close(l.done)
		return l, nil
	case kind == "stdout":
		l.w = os.Stdout
		l.batch = decisionLogStdoutBatchBytes
	case kind == "file":
		wait := startWait
		if cfg.startWait != 0 {
			wait = max(cfg.startWait, 0)
		}
		ctx := cfg.Context
		if ctx == nil {
			ctx = context.Background()
		}
		_, serr := os.Lstat(path)
		existed := serr == nil
		f, last, torn, err := openFile(path, openOptions{needLast: cfg.Chain, wait: wait, ctx: ctx, logger: l.logger})
		if err != nil {
			return nil, fmt.Errorf("decision log: %w", err)
		}
		l.w, l.file, l.path, l.torn = f, f, path, torn
		var size int64
		if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
			l.rotates = true // a FIFO or a device is not rotated: its path is not followed
			size = st.Size()
		}
		l.reopenEvery = followEvery
		if cfg.reopenEvery > 0 {
			l.reopenEvery = cfg.reopenEvery
		}
		if cfg.Chain {
			l.prev = last
			l.startFileChain(existed, size, torn)
		}
	}
	l.chain = cfg.Chain
	if l.chain && l.prev == "" {
		l.prev = ChainGenesis
		if l.file == nil {
			sink := cfg.Sink
			if cfg.Writer != nil {
				sink = "a writer"
			}
			l.logger.Info("decision log: the hash chain starts at genesis (a sink that is not a file is not continued)", "prev_hash", l.prev, "sink", sink)
		}
	}
	l.checkpointEvery = checkpointEvery
	if cfg.checkpointEvery > 0 {
		l.checkpointEvery = cfg.checkpointEvery
	}
	if cfg.batchBytes > 0 {
		l.batch = cfg.batchBytes
	}
	q := cfg.QueueSize
	if q == 0 {
		q = DefaultDecisionLogQueue
	}
	l.ch = make(chan *DecisionEvent, q)
	l.queueBytes = max(decisionLogQueueBytes, int64(q)*decisionLogEventBytes)
	if cfg.queueBytes > 0 {
		l.queueBytes = cfg.queueBytes
	}
	go l.run()
	return l, nil
}

// startFileChain says where a chained file log's chain starts (l.prev,
// the file's last line, "" for genesis) and compares the file's end with
// its head checkpoint: a file emptied, cut or edited at its end while no
// log had it open is warned about, since the chain, starting afresh or
// continuing from the changed end, cannot show it afterwards. existed says
// the file was there before the log opened it; size is its size, torn that
// it ends with a fragment of a line. The log starts whatever it finds.
func (l *DecisionLog) startFileChain(existed bool, size int64, torn bool) {
	sink := "file:" + l.path
	start := l.prev
	if start == "" {
		start = ChainGenesis
	}
	ckPath := l.path + HeadCheckpointSuffix
	checkpoint := "none"
	var verdict checkpointVerdict
	var ck HeadCheckpoint
	var ok bool
	var err error
	if l.rotates {
		ck, ok, err = ReadHeadCheckpoint(ckPath)
		if ok {
			verdict, err = compareCheckpoint(l.file, size, ck)
			// The checkpoint beside the file this log took is its own
			// until it writes one (checkpointPathOnly).
			l.lastCheckpoint, l.lastCheckpointOK = ck, err == nil
		}
	} else {
		checkpoint = "none: the sink is not a regular file"
	}
	switch {
	case err != nil:
		checkpoint = "not compared: it cannot be read, or the file cannot"
		l.logger.Warn("decision log: the head checkpoint cannot be read or compared with the file's end", "checkpoint", ckPath, "error", err, "sink", sink)
	case !ok:
	case verdict == checkpointMatches:
		checkpoint = "matches"
	case verdict == checkpointBehind:
		checkpoint = fmt.Sprintf("the file goes on %d bytes past it: the last run stopped without closing the log (killed, or a crash), and records written after its last checkpoint cannot be checked against it", size-ck.Size)
	default:
		checkpoint = "differs"
		l.logger.Warn("decision log: the file does not end where its head checkpoint says the last log left it: records were removed or edited at its end while no log had it open, or the file was replaced (rotated while the process was stopped); the chain cannot show this afterwards",
			"checkpoint", ckPath, "checkpoint_head", ck.Head, "checkpoint_size", ck.Size, "file_last_line", start, "file_size", size, "sink", sink)
	}
	// An empty file whose checkpoint names a head other than genesis is one
	// the last run switched to (follow, a rotation) and wrote nothing to:
	// it logged that the file's chain goes on from that head, so the first
	// record continues it instead of starting at genesis, and `acgs audit
	// verify --from` with the logged head holds (it reported a break after
	// a restart between the switch and the next record; review).
	continued := existed && l.prev == "" && size == 0 && err == nil && ok && verdict == checkpointMatches &&
		ck.Head != "" && ck.Head != ChainGenesis
	if continued {
		l.prev = ck.Head
	}
	switch {
	case continued:
		l.logger.Info("decision log: the file is empty, as the last log left it after switching to it; the hash chain continues from the head its checkpoint names", "prev_hash", l.prev, "head_checkpoint", checkpoint, "sink", sink)
	case l.prev != "":
		l.logger.Info("decision log: the hash chain continues from the file's last line", "prev_hash", l.prev, "torn", torn, "head_checkpoint", checkpoint, "sink", sink)
	case !l.rotates:
		l.logger.Info("decision log: the hash chain starts at genesis (the sink is not a regular file, whose last line could be read)", "prev_hash", start, "sink", sink)
	case !existed:
		l.logger.Info("decision log: a new file; the hash chain starts at genesis", "prev_hash", start, "head_checkpoint", checkpoint, "sink", sink)
	case ok && verdict == checkpointMatches:
		l.logger.Info("decision log: the file is empty, as the last log left it; the hash chain starts at genesis", "prev_hash", start, "head_checkpoint", checkpoint, "sink", sink)
	default:
		l.logger.Warn("decision log: the file is empty; the hash chain starts at genesis: records it held, if any, were removed (a rotation, a truncation) while no log had it open", "prev_hash", start, "head_checkpoint", checkpoint, "sink", sink)
	}
}

// checkpoint replaces a chained file log's head checkpoint with the head
// and the file's size: after a flush, when nothing is buffered, so that
// l.prev is the file's last line. Not for a file removed from its path.
// A failure is warned about once until a checkpoint is written again (the
// log's directory not writable would otherwise warn every second); atClose
// warns each time. Writer goroutine only.
func (l *DecisionLog) checkpoint(atClose bool) {
	if !l.chain || !l.rotates || l.orphaned {
		return
	}
	path := l.path + HeadCheckpointSuffix
	st, err := l.file.Stat()
	rotated := err == nil && l.rotatedAway(st)
	if err == nil && !rotated {
		// The records on the disk before the checkpoint that describes
		// them (see writeHeadCheckpoint): on the writer goroutine, off
		// the request path, at most once a checkpoint period.
		err = syncFile(l.file)
	}
	if err == nil && !rotated {
		c := HeadCheckpoint{Head: l.prev, Size: st.Size()}
		if err = writeHeadCheckpointFn(path, c); err == nil {
			l.lastCheckpoint, l.lastCheckpointOK = c, true
			// Rotated between the look at the path and the rename of
			// the checkpoint: it describes the rotated file.
			rotated = l.rotatedAway(st)
		}
	}
	if rotated {
		// Rotated since the last write (follow switches files only
		// before a write): a checkpoint of the file open would describe
		// one no longer at the path, and the next log would take the
		// file it finds there for one cut or emptied.
		if atClose {
			l.logger.Info("decision log: the file was rotated; its head is the rotated file's last line", "sink", "file:"+l.path, "head", l.prev)
		}
		if err = l.checkpointPathOnly(path); err == nil {
			return // the checkpoint, if any, does not hold this log's head
		}
	}
	if err != nil {
		if atClose || !l.checkpointBad {
			l.logger.Warn("decision log: cannot write the head checkpoint; the file's end will not be checked against it", "checkpoint", path, "error", err, "sink", "file:"+l.path)
		}
		l.checkpointBad = true
		return
	}
	l.checkpointBad = false
	if atClose {
		l.checkpointed = path
	}
}

// rotatedAway says that the path names another file than open (st), or
// none. A path that cannot be stat'ed otherwise counts as not rotated.
func (l *DecisionLog) rotatedAway(st os.FileInfo) bool {
	at, err := os.Stat(l.path)
	if err != nil {
		return errors.Is(err, fs.ErrNotExist)
	}
	return !os.SameFile(at, st)
}

// checkpointPathOnly is the checkpoint of a log whose file was rotated
// away since its last write: an empty regular file at the path (a
// rotation's create) is where the next chain starts, as this log leaves
// it; anything else (no file, or lines this log did not write) gets no
// checkpoint of this log's, and the next log says what it finds there.
// A checkpoint this log did not write last (another log's, writing the
// new file) is left alone. The rotated file's head is in the close line.
func (l *DecisionLog) checkpointPathOnly(path string) error {
	cur, ok, err := ReadHeadCheckpoint(path)
	if err != nil || (ok && (!l.lastCheckpointOK || cur != l.lastCheckpoint)) {
		return nil //nolint:nilerr // not this log's checkpoint (or unreadable): left to whoever wrote it
	}
	if at, err := os.Stat(l.path); err == nil && at.Mode().IsRegular() && at.Size() == 0 {
		c := HeadCheckpoint{Head: ChainGenesis, Size: 0}
		if ok && cur == c {
			return nil // already (idleCheck comes back every period)
		}
		if err := writeHeadCheckpoint(path, c); err != nil {
			return err
		}
		l.lastCheckpoint, l.lastCheckpointOK = c, true
		return nil
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	l.lastCheckpointOK = false
	return nil
}

// Log queues e for writing and returns at once. The log owns e afterwards:
// the caller must not change it (the log fills the timestamp, labels and
// erased fields). e.Input and e.Result are only read, never changed, so they
// may be shared with the cache. If the queue is full, in events or in
// bytes (the estimate of e's size, eventSize, would take it past its bound,
// and it holds other events: an event larger than the whole bound is taken
// into an empty queue), or the log is closed, e is dropped and counted.
// Events logged concurrently with Close may be neither written nor counted.
func (l *DecisionLog) Log(e *DecisionEvent) {
	if l == nil || l.off || e == nil {
		return
	}
	if l.closed.Load() {
		l.dropped.Add(1)
		return
	}
	if e.Timestamp.IsZero() {
		e.Timestamp = time.Now()
	}
	e.queued = eventSize(e)
	if q := l.queuedBytes.Add(e.queued); q > l.queueBytes && q != e.queued {
		l.queuedBytes.Add(-e.queued)
		l.dropped.Add(1)
		return
	}
	select {
	case l.ch <- e:
	default:
		l.queuedBytes.Add(-e.queued)
		l.dropped.Add(1)
	}
}

// dequeued is the writer's receipt of e from the queue: e no longer counts
// toward its bound in bytes.
func (l *DecisionLog) dequeued(e *DecisionEvent) {
	l.queuedBytes.Add(-e.queued)
}

// eventOverhead is eventSize's allowance for an event's fixed fields, its
// metrics, labels and bundles.
const eventOverhead = 512

// eventSize estimates the memory e holds while it waits for the writer:
// its input and result, walked (valueSize), and eventOverhead for the rest.
// On the request path, so it only adds lengths: a walk costs a fraction of
// the decoding that made the input.
func eventSize(e *DecisionEvent) int64 {
	in := e.InputSize
	if in <= 0 {
		in = valueSize(e.Input, 0)
	}
	return eventOverhead + in + valueSize(e.Result, 0) + int64(len(e.Error))
}

// ValueSize is what the decision log counts of a decoded JSON value toward
// its queue's bound in bytes (DecisionEvent.InputSize).
func ValueSize(v any) int64 { return valueSize(v, 0) }

// What ValueSize counts of each part of a decoded JSON value, for a decoder
// that counts as it builds (DecisionEvent.InputSize): SizeScalar for a
// null, boolean, number or string, plus the bytes of a string or a
// json.Number; SizeMap for an object, plus SizeEntry, the key's bytes and
// the value's size for each entry; SizeArray for an array, plus each
// element's size.
const (
	SizeScalar = 16
	SizeMap    = 48
	SizeEntry  = 16
	SizeArray  = 24
)

// valueSize estimates the memory of a decoded JSON value (map[string]any,
// []any, strings, numbers...): the bytes of its strings and keys and a
// word or few per value, map entry and element. A value of another type (a
// struct), or nested past 256 levels (decoded JSON is bounded far below),
// counts as 64 bytes, unwalked.
func valueSize(v any, depth int) int64 {
	const word = SizeScalar // an interface value
	if depth > 256 {
		return 64
	}
	switch v := v.(type) {
	case nil, bool, float64, int, int64:
		return word
	case string:
		return word + int64(len(v))
	case json.Number:
		return word + int64(len(v))
	case json.RawMessage:
		return word + 8 + int64(len(v))
	case []byte:
		return word + 8 + int64(len(v))
	case map[string]any:
		n := int64(SizeMap)
		for k, x := range v {
			n += SizeEntry + int64(len(k)) + valueSize(x, depth+1)
		}
		return n
	case []any:
		n := int64(SizeArray)
		for _, x := range v {
			n += valueSize(x, depth+1)
		}
		return n
	case map[string]string:
		n := int64(48)
		for k, x := range v {
			n += 32 + int64(len(k)+len(x))
		}
		return n
	}
	return 64
}

// Close stops accepting events and waits, at most until ctx is done, for the
// queued ones to be written; then it closes a file sink. If ctx ends first,
// the writer drops what is still queued (counted) and Close returns ctx's
// error.
func (l *DecisionLog) Close(ctx context.Context) error {
	if l == nil || l.off {
		return nil
	}
	l.closeOnce.Do(func() {
		l.closed.Store(true)
		close(l.stop)
	})
	select {
	case <-l.done:
		return l.closeErr
	case <-ctx.Done():
		l.abandon.Store(true)
		return fmt.Errorf("decision log: %d events not yet written at close: %w", len(l.ch), ctx.Err())
	}
}

// CloseAndReport closes the log (waiting at most timeout for the queued
// events) and logs how it ended: the events written, dropped and failed
// (a warning when any were lost) and, for a chained log, the head to keep
// for checking the log's end later (acgs audit verify --head). Both acgs
// serve and acgs gateway end their logs with it.
func (l *DecisionLog) CloseAndReport(log *slog.Logger, sink string, timeout time.Duration) {
	if l == nil || l.off {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	err := l.Close(ctx)
	cancel()
	if err != nil {
		log.Warn("decision log: not every event was written", "error", err)
	}
	written, dropped, failed := l.Written(), l.Dropped(), l.Failed()
	lvl := slog.LevelInfo
	if dropped > 0 || failed > 0 {
		lvl = slog.LevelWarn
	}
	attrs := []any{"written", written, "dropped", dropped, "failed", failed, "sink", sink}
	switch head := l.ChainHead(); {
	case head != "":
		attrs = append(attrs, "head", head, "head_use", "record it to check the end of the log later: acgs audit verify --head")
		if l.checkpointed != "" {
			attrs = append(attrs, "head_checkpoint", l.checkpointed)
		}
	case l.chain:
		// The writer is still at work (a slow or blocked sink): the head
		// is not known yet, and the process may end before it is.
		why := "unknown: the writer had not finished when the close deadline passed, so the last records' links are not settled"
		if l.path != "" {
			why += "; " + l.path + HeadCheckpointSuffix + " holds the head of its last checkpoint (at most a second old, or the final one if it finishes before the process exits)"
		}
		attrs = append(attrs, "head", why)
	}
	log.Log(context.Background(), lvl, "decision log closed", attrs...)
}

// Dropped is the number of events dropped: queue full, log closed, or still
// queued when Close's deadline passed.
func (l *DecisionLog) Dropped() uint64 {
	if l == nil {
		return 0
	}
	return l.dropped.Load()
}

// Written is the number of events written to the sink.
func (l *DecisionLog) Written() uint64 {
	if l == nil {
		return 0
	}
	return l.written.Load()
}

// Failed is the number of events lost to an encoding or write error.
func (l *DecisionLog) Failed() uint64 {
	if l == nil {
		return 0
	}
	return l.failed.Load()
}

// ChainHead is the hash of the last line written by a chained log (what
// the next record would link to), once Close has returned; "" before, and
// for a log without Chain. Record it elsewhere to detect a cut at the end
// of the log (`acgs audit verify --head`).
func (l *DecisionLog) ChainHead() string {
	if l == nil || l.off || !l.chain {
		return ""
	}
	select {
	case <-l.done:
		return l.prev
	default:
		return ""
	}
}

// Queued is the number of events waiting for the writer.
func (l *DecisionLog) Queued() int {
	if l == nil {
		return 0
	}
	return len(l.ch)
}

// QueueCapacity is the queue's bound (0 when the log is off).
func (l *DecisionLog) QueueCapacity() int {
	if l == nil {
		return 0
	}
	return cap(l.ch)
}

// run is the writer goroutine. It encodes events into one buffer and writes
// the buffer when the queue runs empty or the buffer is large, so a burst
// costs few writes and a single event is not held back.
func (l *DecisionLog) run() {
	defer close(l.done)
	// keep bounds the buffers kept from one write to the next: one event
	// larger than a batch grows them to its size (twice, as a buffer
	// grows), which they would otherwise hold for the life of the log.
	keep := 4 * l.batch
	var (
		buf     bytes.Buffer
		pending uint64
		bufPrev string // with chain: what the first line in buf links to
		lastErr time.Time
	)
	report := func(msg string, err error, n uint64) {
		l.failed.Add(n)
		// One report per ten seconds: a full disk must not flood the log.
		if now := time.Now(); now.Sub(lastErr) >= 10*time.Second {
			lastErr = now
			l.logger.Warn(msg, "error", err, "events", n, "failed_total", l.failed.Load())
		}
	}
	// flush writes buf. A Write that fails part-way (a full disk) leaves
	// the sink ending in a fragment of a line (l.torn, also set for a file
	// opened so): the next flush first ends it with a newline, so that the
	// next record is not lost inside a line that is not JSON. Only
	// the lines that landed whole count as written, the rest (the fragment's
	// record included) as failed, and the chain goes on from what landed —
	// the fragment, which verify and a reopen take as the last line, or the
	// last whole line — not from records that never reached the sink.
	flush := func() {
		if buf.Len() == 0 {
			return
		}
		defer func() {
			buf.Reset()
			pending = 0
			if buf.Cap() > keep {
				buf = bytes.Buffer{}
			}
		}()
		l.follow(bufPrev) // on a switch, l.torn is the new file's
		if l.orphaned {
			report("decision log: write failed", errFileRemoved, pending)
			if l.chain {
				l.prev = bufPrev
			}
			return
		}
		if l.torn && !l.endsMidLine() {
			l.torn = false // the fragment was cut away (a copytruncate, or a truncation to free space)
		}
		if l.torn {
			if n, err := l.w.Write([]byte{'\n'}); n != 1 {
				if err == nil {
					err = io.ErrShortWrite
				}
				report("decision log: write failed", err, pending)
				if l.chain {
					l.prev = bufPrev
				}
				return
			}
			l.torn = false
		}
		b := buf.Bytes()
		n, err := l.w.Write(b)
		if err == nil && n < len(b) {
			err = io.ErrShortWrite
		}
		if err == nil {
			l.written.Add(pending)
			return
		}
		landed := b[:min(max(n, 0), len(b))]
		whole := bytes.LastIndexByte(landed, '\n') + 1 // bytes of whole lines
		lines := uint64(bytes.Count(landed[:whole], []byte{'\n'}))
		l.written.Add(lines)
		report("decision log: write failed", err, pending-lines)
		l.torn = whole < len(landed)
		if l.chain {
			switch {
			case l.torn:
				l.prev = LineHash(landed[whole:])
			case whole > 0:
				last := landed[:whole-1]
				l.prev = LineHash(last[bytes.LastIndexByte(last, '\n')+1:])
			default:
				l.prev = bufPrev
			}
		}
	}
	// Each event is encoded on its own first, so that a batch is flushed
	// before an event would push it past l.batch: a Write then holds whole
	// lines and stays within the bound unless one event alone exceeds it.
	// l.prev is the hash of the last line in buf, or of the last line that
	// landed when buf is empty.
	var one bytes.Buffer
	enc := json.NewEncoder(&one)
	enc.SetEscapeHTML(false)
	encodeOne := func(e *DecisionEvent) bool {
		if l.chain {
			e.PrevHash = l.prev
		}
		one.Reset()
		if err := enc.Encode(e); err != nil {
			report("decision log: cannot encode event", err, 1)
			return false
		}
		return true
	}
	encode := func(e *DecisionEvent) {
		l.prepare(e)
		if !encodeOne(e) {
			return
		}
		if buf.Len() > 0 && buf.Len()+one.Len() > l.batch {
			flush()
			// A failed flush moved the chain back to what landed: the
			// event links to a line that did not.
			if l.chain && e.PrevHash != l.prev && !encodeOne(e) {
				return
			}
		}
		if buf.Len() == 0 {
			bufPrev = e.PrevHash
		}
		buf.Write(one.Bytes())
		pending++
		if l.chain {
			l.prev = LineHash(bytes.TrimSuffix(one.Bytes(), []byte{'\n'}))
		}
		if one.Cap() > keep {
			one = bytes.Buffer{} // enc writes to &one, which stays
		}
		if buf.Len() >= l.batch {
			flush()
		}
	}
	// With the chain, a regular file gets a checkpoint within
	// checkpointEvery of a write (written says there was one since the
	// last), and while idle is looked at once a period (idleCheck).
	// A regular file is also looked at while idle for a rotation, once
	// a period (checkpointEvery with the chain, followEvery without), so
	// that it switches to the next file without waiting for a record.
	var tick <-chan time.Time
	if l.rotates {
		every := max(l.reopenEvery, time.Millisecond)
		if l.chain {
			every = l.checkpointEvery
		}
		t := time.NewTicker(every)
		defer t.Stop()
		tick = t.C
	}
	written := false
	for {
		select {
		case e := <-l.ch:
			l.dequeued(e)
			encode(e)
			if len(l.ch) == 0 {
				flush()
			}
			written = true
		case <-tick:
			if written {
				written = false
				flush()
				l.checkpoint(false)
				continue
			}
			l.idleFollow()
			l.idleCheck()
		case <-l.stop:
			for {
				select {
				case e := <-l.ch:
					l.dequeued(e)
					if l.abandon.Load() {
						l.dropped.Add(1)
						continue
					}
					encode(e)
				default:
					flush()
					// Before the file is closed: its lock, held until
					// then, keeps a log waiting to open it from reading
					// the checkpoint before it is written.
					l.checkpoint(true)
					if l.file != nil {
						l.closeErr = l.file.Close()
					}
					return
				}
			}
		}
	}
}

// idleFollow switches an idle file log to the next file at its path once
// its file was rotated away (follow), as a write would: without it the log
// kept the rotated file open (its space and its lock held, however long
// ago the rotation deleted or compressed it) and left the path without a
// file until the next record (review). Writer goroutine only.
func (l *DecisionLog) idleFollow() {
	if st, err := l.file.Stat(); err == nil && l.rotatedAway(st) {
		l.follow(l.prev)
	}
}

// idleCheck is a chained file log's look at its file while no record
// comes (once a checkpoint period; nothing is buffered): a file rotated
// away gets the checkpoint of one (checkpointPathOnly: none beside a path
// with no file, genesis beside an empty one), and a file whose size is not
// the last checkpoint's (emptied by a copytruncate), or that has none of
// this log's yet, is checkpointed. Without it the checkpoint would stay as
// the last write left it until the next record: a process killed
// meanwhile would leave one describing a rotated file, or a longer one,
// which the next start takes for records removed. The file is switched
// (follow) by idleFollow, just before, at most every reopenEvery. Its cost while
// nothing changes is a stat of the file and one of its path a period (and
// a read of the checkpoint while the file is rotated away). Writer
// goroutine only.
func (l *DecisionLog) idleCheck() {
	if l.orphaned {
		return
	}
	st, err := l.file.Stat()
	if err != nil {
		return
	}
	if !l.lastCheckpointOK || st.Size() != l.lastCheckpoint.Size || l.rotatedAway(st) {
		l.checkpoint(false)
	}
}

// follow keeps a file sink writing to its path when the file it has open
// was renamed or removed there, as logrotate's default (create) does:
// without it the log would go on filling the renamed file, which the next
// rotation compresses or deletes, records and all. At most every
// reopenEvery, before a write or while idle (idleFollow), the path is stat'ed; when it names another
// file or none, the file at the path is opened (created 0640) and the old
// one closed. With the chain on, the new file's first record links to
// head, the old file's last line, logged here for `acgs audit verify
// --from`. A file that already holds lines there (another writer, a file
// put back) is appended to after them, on a line of its own as at start,
// and a warning says so: its chain then breaks where ours begins, which
// verify reports; a fragment of a line that ends it is ended by the next
// write (l.torn), as at start. Only a regular file is followed, and only
// into a regular file: a FIFO or a device at the path is someone else's (a log shipper's),
// and writing to it could wait for a reader. A path that cannot be stat'ed
// for another reason, or opened, leaves the old file in use (warned at most
// every ten seconds); when that file was removed, not renamed, what is
// written to it is lost, and orphaned makes flush count it as failed.
// Writer goroutine only. A copytruncate rotation needs no switch: the file
// is opened O_APPEND (flush's torn-line check handles a fragment cut away).
func (l *DecisionLog) follow(head string) {
	if !l.rotates {
		return
	}
	now := time.Now()
	if now.Before(l.nextFollow) {
		return
	}
	l.nextFollow = now.Add(l.reopenEvery)
	at, err := os.Stat(l.path)
	switch {
	case err == nil:
		if open, err := l.file.Stat(); err != nil || os.SameFile(at, open) {
			l.orphaned = false
			return
		}
	case !errors.Is(err, fs.ErrNotExist):
		// The path cannot be checked (its directory replaced by a file,
		// or made unsearchable): stay on the file open, unless it is gone.
		l.noNewFile(now, err, "decision log: the path cannot be checked; still writing to the file open")
		return
	}
	f, held, torn, err := openFile(l.path, openOptions{needLast: l.chain, regularOnly: true, logger: l.logger})
	if err != nil {
		l.noNewFile(now, err, "decision log: the file was renamed or removed and a new one cannot be opened at its path; still writing to the old file")
		return
	}
	l.orphaned = false
	if err := l.file.Close(); err != nil {
		l.logger.Warn("decision log: closing the renamed file", "sink", "file:"+l.path, "error", err)
	}
	if held != "" {
		l.logger.Warn("decision log: the new file at the path already holds lines; records are appended after them", "sink", "file:"+l.path, "its_last_line", held)
	}
	l.w, l.file, l.torn = f, f, torn
	attrs := []any{"sink", "file:" + l.path}
	if l.chain {
		attrs = append(attrs, "prev_hash", head)
	}
	l.logger.Info("decision log: the file was renamed or removed; writing to a new file at its path", attrs...)
}

// noNewFile is follow's answer when the path cannot be checked or no new
// file can be opened there (err says why, msg says it to the operator): the
// log stays on the file it has open, and when that file was removed, what
// would be written to it is lost (orphaned: flush counts it as failed, and
// the warning says so instead of msg). Warned at most every ten seconds.
func (l *DecisionLog) noNewFile(now time.Time, err error, msg string) {
	l.orphaned = removed(l.file)
	if now.Sub(l.followWarn) < 10*time.Second {
		return
	}
	l.followWarn = now
	if l.orphaned {
		msg = "decision log: the file was removed and a new one cannot be opened at its path; records are lost (counted as failed) until one can"
	}
	l.logger.Warn(msg, "sink", "file:"+l.path, "error", err)
}

// errFileRemoved is the failure of the records follow cannot place: the
// file open was removed, and no new one can be opened at its path.
var errFileRemoved = errors.New("the log file was removed and no new one can be opened at its path")

// endsMidLine reports whether the sink ends with a fragment of a line, as a
// write that failed part-way left it. Only a file opened for reading can
// say otherwise (it was truncated since: nothing, or a whole line, ends it);
// for any other sink the fragment is taken to be there.
func (l *DecisionLog) endsMidLine() bool {
	if l.file == nil {
		return true
	}
	st, err := l.file.Stat()
	if err != nil || !st.Mode().IsRegular() {
		return true
	}
	if st.Size() == 0 {
		return false
	}
	var last [1]byte
	if _, err := l.file.ReadAt(last[:], st.Size()-1); err != nil {
		return true // write-only (or shrunk since the Stat): it cannot tell, so the fragment is ended as before
	}
	return last[0] != '\n'
}

// errLocked is lockFile's refusal: another open of the file holds its lock
// in a mode that excludes ours.
var errLocked = errors.New("another decision log writes this file and one of the two is hash-chained (its lock is held): give each writer its own file")

// lockFileFn is lockFile; tests make it refuse as a file system without
// locks does.
var lockFileFn = lockFile

// writeHeadCheckpointFn is writeHeadCheckpoint, as checkpoint calls it;
// tests rotate the file while it runs.
var writeHeadCheckpointFn = writeHeadCheckpoint

// startWait is how long a log being opened waits for a FIFO's reader or for
// the lock of a writer that is closing the file (a stdio gateway restarted
// while the one before finishes its calls and its log: a few seconds). It
// stays under 10 s, the time MCP hosts such as Codex give a server to
// answer its handshake, which a gateway does once its log is open: a
// refusal that says why beats the host's timeout that does not.
const startWait = 8 * time.Second

// openOptions say how openFile opens a sink.
type openOptions struct {
	needLast    bool            // with the chain: the last line is needed, and the lock is exclusive
	regularOnly bool            // follow's switch: only into a regular file
	wait        time.Duration   // at start: how long to wait for a FIFO's reader or another writer's lock
	ctx         context.Context // ends the wait early (nil: no wait to end)
	logger      *slog.Logger    // says that it waits, or that the file cannot be locked
}

// openFile opens path to append to (created 0640) and returns the hash of
// its last line, "" when it holds none, read through the same descriptor.
// torn says that last line was torn (a crash, or a full disk, mid-write):
// the log ends it with a newline before its first record (flush), since
// that record, appended to the fragment, would be lost in a line that is
// not JSON; it is not ended here, where a disk still full would keep the
// service from starting rather than cost the records it cannot hold. A
// file that may be written but not read is opened write-only, its last
// line unknown, unless the chain needs it (o.needLast): an error then.
//
// Only a regular file is opened for reading too. A FIFO or a pipe
// (file:/dev/stdout) opened read-write would make the log its own reader:
// opening would not wait for the reader, and once the reader left, writes
// would fill the pipe, counted as written, and then block, where a
// write-only one fails with EPIPE, counted and warned about. It is opened
// non-blocking, so that a FIFO no process reads is refused (ENXIO) once
// o.wait has passed or o.ctx ended, rather than an open that waits, deaf to
// signals, for a reader; the runtime's poller then waits for room in the
// pipe as a blocking write would. o.regularOnly refuses every file that is not
// regular.
//
// A regular file is locked while it is open (lockFile): exclusively with
// the chain, shared without. A file whose lock another log holds in a mode
// that excludes ours (either is chained) is waited for up to o.wait or
// until o.ctx ends, then refused; if it was rotated meanwhile, the file now
// at the path is opened instead. A file system that takes no locks is
// written unlocked, with a warning. A FIFO with no reader is waited for
// the same way; any other device that cannot be opened is refused at once.
func openFile(path string, o openOptions) (f *os.File, last string, torn bool, err error) {
	op := &opener{openOptions: o, path: path, deadline: time.Now().Add(o.wait)}
	return op.open()
}

// opener is one openFile: its options, its path, when its waits end, and
// whether it has said that it waits.
type opener struct {
	openOptions
	path     string
	deadline time.Time
	said     bool
}

func (op *opener) open() (f *os.File, last string, torn bool, err error) {
	// carried is the last line of a file taken and then left because it
	// was rotated meanwhile: where a starting chain goes on when the file
	// now at the path holds none (its writer exited before writing there).
	// A log that switches files (regularOnly) goes on from its own head.
	carry := op.needLast && !op.regularOnly
	carried := ""
	readable := true
	for reopens := 0; ; reopens++ {
		if st, err := os.Stat(op.path); err == nil && !st.Mode().IsRegular() {
			return op.notRegularFile(st.Mode())
		}
		f, err = os.OpenFile(op.path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o640)
		readable = err == nil
		if errors.Is(err, fs.ErrPermission) && !op.needLast {
			f, err = os.OpenFile(op.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|openNonblock, 0o640)
			if noReader(err) && !op.regularOnly {
				return op.writeOnly() // a FIFO since the Stat: wait for its reader there
			}
		}
		if err != nil {
			return nil, "", false, err
		}
		st, err := f.Stat()
		if err == nil && !st.Mode().IsRegular() { // replaced since the Stat
			_ = f.Close()
			return op.notRegularFile(st.Mode())
		}
		waited, err := op.lock(f)
		if err != nil {
			return nil, "", false, err
		}
		// The file may have been rotated by the writer that held it, while
		// this one waited for its lock or between the open and the lock:
		// that writer's chain goes on in the file now at the path, and
		// ours must too, or the two would fork. Opened again while the
		// wait lasts, or a few times without one.
		at, aerr := os.Stat(op.path)
		if moved := st != nil && (aerr != nil || !os.SameFile(at, st)); !moved || (!waited && reopens >= 3) {
			break
		}
		if carry {
			if h, _, err := lastLineOf(f); err == nil && h != "" {
				carried = h
			}
		}
		_ = f.Close()
	}
	if !readable {
		return f, "", false, nil // written, never read: its last line is not known
	}
	if last, torn, err = lastLineOf(f); err != nil {
		_ = f.Close()
		return nil, "", false, err
	}
	if last == "" && carried != "" {
		last = carried
		if op.logger != nil {
			op.logger.Info("decision log: the file at the path was rotated before this log took it and the new one is empty; the chain goes on from the rotated file's last line", "sink", "file:"+op.path, "prev_hash", carried)
		}
	}
	return f, last, torn, nil
}

// notRegularFile opens a sink that is not a regular file: refused on a
// switch (regularOnly), else written only.
func (op *opener) notRegularFile(mode fs.FileMode) (*os.File, string, bool, error) {
	if op.regularOnly {
		return nil, "", false, op.notRegular(mode)
	}
	return op.writeOnly()
}

func (op *opener) notRegular(mode fs.FileMode) error {
	return fmt.Errorf("%s is not a regular file (%s)", op.path, mode.Type())
}

// writeOnly opens the path write-only and non-blocking, waiting for a
// FIFO's reader while the wait lasts.
func (op *opener) writeOnly() (*os.File, string, bool, error) {
	var f *os.File
	var err error
	for {
		f, err = os.OpenFile(op.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|openNonblock, 0o640)
		if !noReader(err) {
			break
		}
		st, serr := os.Stat(op.path)
		switch {
		case serr == nil && st.Mode().Type() == fs.ModeSocket:
			return nil, "", false, fmt.Errorf("%s is a socket, which cannot be opened as a file (for the process's stdout, give the sink stdout): %w", op.path, err)
		case serr != nil || st.Mode().Type() != fs.ModeNamedPipe:
			return nil, "", false, err // a device with nothing behind it: nothing to wait for
		case !op.pause("a process to open the FIFO for reading"):
			return nil, "", false, op.stopped(fmt.Errorf("%s: no process has the FIFO open for reading (start its reader first): %w", op.path, err))
		}
	}
	if err != nil {
		return nil, "", false, err
	}
	st, err := f.Stat()
	switch {
	case err != nil:
		_ = f.Close()
		return nil, "", false, err
	case st.Mode().IsRegular():
		_, err = op.lock(f)
	case op.regularOnly:
		_ = f.Close()
		err = op.notRegular(st.Mode())
	}
	if err != nil {
		return nil, "", false, err
	}
	return f, "", false, nil
}

// lock takes a regular file's lock, waiting while another writer holds it;
// waited says that it did (the file may have been rotated since). f is
// closed when the lock is refused.
func (op *opener) lock(f *os.File) (waited bool, err error) {
	for {
		err := lockFileFn(f, op.needLast)
		switch {
		case err == nil:
			return waited, nil
		case !errors.Is(err, errLocked):
			if op.logger != nil {
				op.logger.Warn("decision log: the file system takes no lock on the file; another writer of it would not be detected", "sink", "file:"+op.path, "error", err)
			}
			return waited, nil
		case !op.pause("the other writer of the file to close it"):
			_ = f.Close()
			return waited, op.stopped(fmt.Errorf("%s: %w", op.path, err))
		}
		waited = true
	}
}

// pause waits a little before another try, and says once that it waits;
// false when the wait is over (its bound, or its context).
func (op *opener) pause(what string) bool {
	if !time.Now().Before(op.deadline) {
		return false // without a wait (a switch), never a sleep
	}
	if op.ctx != nil && op.ctx.Err() != nil {
		return false // stopped before the wait began
	}
	if !op.said && op.logger != nil {
		op.logger.Warn("decision log: waiting for "+what, "sink", "file:"+op.path, "up_to", op.wait.String())
	}
	op.said = true
	if op.ctx == nil {
		time.Sleep(50 * time.Millisecond)
		return true
	}
	select {
	case <-op.ctx.Done():
		return false
	case <-time.After(50 * time.Millisecond):
		return true
	}
}

// stopped adds to err that the wait ended with the context, if it did.
func (op *opener) stopped(err error) error {
	if op.ctx != nil && op.ctx.Err() != nil {
		return fmt.Errorf("%w (stopped while waiting: %w)", err, op.ctx.Err())
	}
	return err
}

// prepare fills what the log owns in an event, in the writer goroutine.
func (l *DecisionLog) prepare(e *DecisionEvent) {
	if e.DecisionID == "" {
		e.DecisionID = NewDecisionID()
	}
	e.Timestamp = e.Timestamp.UTC()
	if e.Labels == nil && l.labels != nil {
		e.Labels = l.labels
	}
	if len(l.mask) > 0 {
		var erased []string
		e.Input, erased = maskInput(e.Input, l.mask)
		e.Erased = append(e.Erased, erased...)
	}
}

// NewDecisionID returns a random (version 4) UUID for a decision. The 122
// random bits come from math/rand/v2's global source — the runtime's
// per-thread ChaCha8, seeded from the operating system — rather than from
// crypto/rand as uuid.New does, because it is on every request: no system
// call, no lock. A decision ID must be unique, not secret.
func NewDecisionID() string {
	var u uuid.UUID
	a, b := rand.Uint64(), rand.Uint64()
	for i := range 8 {
		u[i] = byte(a >> (8 * i))
		u[8+i] = byte(b >> (8 * i))
	}
	u[6] = (u[6] & 0x0f) | 0x40 // version 4
	u[8] = (u[8] & 0x3f) | 0x80 // RFC 4122 variant
	return u.String()
}

// decisionLogCollector reads the log's counters at scrape time, like the
// cache collector, so Log stays a channel send and nothing more.
type decisionLogCollector struct {
	log atomic.Pointer[DecisionLog]

	dropped, written, failed *prometheus.Desc
	queue, capacity          *prometheus.Desc
}

func newDecisionLogCollector() *decisionLogCollector {
	return &decisionLogCollector{
		dropped:  prometheus.NewDesc("acgs_decision_log_dropped_total", "Decision-log events dropped because the queue was full (in events or in bytes) or the log was closing.", nil, nil),
		written:  prometheus.NewDesc("acgs_decision_log_written_total", "Decision-log events written to the sink.", nil, nil),
		failed:   prometheus.NewDesc("acgs_decision_log_failed_total", "Decision-log events lost to an encoding or write error.", nil, nil),
		queue:    prometheus.NewDesc("acgs_decision_log_queue_entries", "Decision-log events waiting for the writer.", nil, nil),
		capacity: prometheus.NewDesc("acgs_decision_log_queue_capacity_entries", "Capacity of the decision-log queue.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *decisionLogCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.dropped
	ch <- c.written
	ch <- c.failed
	ch <- c.queue
	ch <- c.capacity
}

// Collect implements prometheus.Collector.
func (c *decisionLogCollector) Collect(ch chan<- prometheus.Metric) {
	l := c.log.Load()
	if l == nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(c.dropped, prometheus.CounterValue, float64(l.Dropped()))
	ch <- prometheus.MustNewConstMetric(c.written, prometheus.CounterValue, float64(l.Written()))
	ch <- prometheus.MustNewConstMetric(c.failed, prometheus.CounterValue, float64(l.Failed()))
	ch <- prometheus.MustNewConstMetric(c.queue, prometheus.GaugeValue, float64(l.Queued()))
	ch <- prometheus.MustNewConstMetric(c.capacity, prometheus.GaugeValue, float64(l.QueueCapacity()))
}

// RegisterDecisionLog exposes l's counters (acgs_decision_log_*). A later
// call replaces l, for a log reopened at run time; nil removes the series.
func (m *Metrics) RegisterDecisionLog(l *DecisionLog) {
	m.logOnce.Do(func() {
		m.declog = newDecisionLogCollector()
		m.reg.MustRegister(m.declog)
	})
	m.declog.log.Store(l)
}
