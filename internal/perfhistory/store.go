// Package perfhistory keeps benchmark results over time and judges changes:
// a result store (local directory or S3-compatible bucket), the comparison of
// a new result with a baseline by the Mann-Whitney U test (as benchstat does),
// 30-day trends, and Markdown reports for pull requests.
//
// It reads and writes Go benchmark format only; it does not run benchmarks or
// talk to the service.
package perfhistory

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/perf/benchfmt"
)

// RecordMeta identifies a stored result.
type RecordMeta struct {
	Time   time.Time `json:"time"`
	Commit string    `json:"commit"`
	// Name is the object or file name, <time>_<commit>.txt.
	Name string `json:"name"`
}

// Record is one stored benchmark result file.
type Record struct {
	RecordMeta
	Data []byte // Go benchmark format
}

// Store keeps records. Names are the index: listing a store is listing its
// names, so no separate index can disagree with the records.
type Store interface {
	Put(ctx context.Context, rec Record) error
	List(ctx context.Context) ([]RecordMeta, error)
	Get(ctx context.Context, meta RecordMeta) (Record, error)
}

// nameTimeLayout is RFC 3339 in UTC with '-' for ':' in the clock: a colon
// is not allowed in file names on Windows nor in GitHub Actions artifact
// paths, and the CI uploads the history directory as an artifact. The
// layout still sorts lexically in time order.
const nameTimeLayout = "2006-01-02T15-04-05Z"

// nameTimeLayoutNano is the layout names are written in: to the nanosecond,
// so that two records of one commit made within a second get two names (an
// S3 put replaces an object of the same name), with a fixed-width fraction
// so that names still sort lexically. nameTimeLayout reads it too, as did
// every earlier version (time.Parse accepts a fraction after the seconds).
const nameTimeLayoutNano = "2006-01-02T15-04-05.000000000Z"

// NewRecord builds a record for a result file, checking that it holds at
// least one benchmark result (an empty or garbled file would become a
// baseline that hides every regression).
func NewRecord(t time.Time, commit string, data []byte) (Record, error) {
	set, err := ParseBenchmarks(data)
	if err != nil {
		return Record{}, err
	}
	if len(set.Keys) == 0 {
		return Record{}, errors.New("no benchmark results in input")
	}
	commit = sanitizeCommit(commit)
	t = t.UTC()
	return Record{
		RecordMeta: RecordMeta{Time: t, Commit: commit, Name: RecordName(t, commit)},
		Data:       data,
	}, nil
}

// RecordName is the file or object name of a record.
func RecordName(t time.Time, commit string) string {
	return t.UTC().Format(nameTimeLayoutNano) + "_" + sanitizeCommit(commit) + ".txt"
}

// ParseRecordName reads a record name back; it also accepts a plain RFC 3339
// time (with colons) written by other tools.
func ParseRecordName(name string) (RecordMeta, error) {
	base := strings.TrimSuffix(name, ".txt")
	if base == name {
		return RecordMeta{}, fmt.Errorf("record name %q: want <time>_<commit>.txt", name)
	}
	ts, commit, ok := strings.Cut(base, "_")
	if !ok || commit == "" {
		return RecordMeta{}, fmt.Errorf("record name %q: want <time>_<commit>.txt", name)
	}
	t, err := time.Parse(nameTimeLayout, ts)
	if err != nil {
		if t, err = time.Parse(time.RFC3339, ts); err != nil {
			return RecordMeta{}, fmt.Errorf("record name %q: bad time %q", name, ts)
		}
	}
	return RecordMeta{Time: t.UTC(), Commit: commit, Name: name}, nil
}

func sanitizeCommit(c string) string {
	c = strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-':
			return r
		}
		return '-'
	}, strings.TrimSpace(c))
	if c == "" {
		return "unknown"
	}
	return c
}

func sortMetas(ms []RecordMeta) {
	slices.SortFunc(ms, func(a, b RecordMeta) int {
		if c := a.Time.Compare(b.Time); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
}

// FSStore keeps records as files in a directory.
type FSStore struct {
	Dir string
}

var _ Store = (*FSStore)(nil)

// syncFile and syncDir flush a file's data and a directory's entries to
// stable storage, and linkFile names a file without replacing another;
// variables so that tests can see the order of the steps and do without
// hard links.
var (
	linkFile = os.Link
	syncFile = (*os.File).Sync
	syncDir  = func(dir string) error {
		d, err := os.Open(dir)
		if err != nil {
			return err
		}
		defer d.Close()
		return d.Sync()
	}
)

// Put writes the record atomically (temporary file, then its name), so a
// concurrent List never sees half a file, and never replaces a record: a
// name already taken (records of one commit at the same time) is tried a
// nanosecond later, so both are kept and still list in the order put. The
// data is synced before it is named: otherwise a crash can leave the name
// on a zero-length file, a baseline that compares nothing. The directory is
// synced after, best effort (not every file system can), so the name
// itself survives a crash.
func (s *FSStore) Put(_ context.Context, rec Record) error {
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(s.Dir, ".put-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(rec.Data); err != nil {
		tmp.Close()
		return err
	}
	if err := syncFile(tmp); err != nil {
		tmp.Close()
		return fmt.Errorf("sync %s: %w", rec.Name, err)
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := publish(tmp.Name(), s.Dir, rec.Name); err != nil {
		return err
	}
	_ = syncDir(s.Dir)
	return nil
}

// publish gives the file tmp the record name in dir, or the name of the
// same commit one nanosecond later while the name is taken. A hard link
// fails on a taken name where a rename would replace it; without hard
// links (FAT, some network file systems) the name is claimed with O_EXCL
// and the file renamed over the claim, and a crash in between leaves an
// empty record, which LoadRecord skips as damaged.
func publish(tmp, dir, name string) error {
	meta, nameErr := ParseRecordName(name)
	for {
		dst := filepath.Join(dir, name)
		err := linkFile(tmp, dst)
		if err != nil && !errors.Is(err, fs.ErrExist) {
			var f *os.File
			if f, err = os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600); err == nil {
				f.Close()
				if err = os.Rename(tmp, dst); err != nil {
					os.Remove(dst)
				}
			}
		}
		if !errors.Is(err, fs.ErrExist) || nameErr != nil {
			return err
		}
		meta.Time = meta.Time.Add(time.Nanosecond)
		name = RecordName(meta.Time, meta.Commit)
	}
}

// ErrStoreNotFound means a directory store does not exist: a mistyped
// --store or a cache that was not restored, which must not read as a
// history that is merely empty.
var ErrStoreNotFound = errors.New("history store not found")

// List returns the records oldest first; files that are not records are
// ignored. A missing directory is ErrStoreNotFound, not an empty store.
func (s *FSStore) List(_ context.Context) ([]RecordMeta, error) {
	ents, err := os.ReadDir(s.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: directory %s does not exist", ErrStoreNotFound, s.Dir)
	}
	if err != nil {
		return nil, err
	}
	var out []RecordMeta
	for _, e := range ents {
		if e.IsDir() {
			continue
		}
		if m, err := ParseRecordName(e.Name()); err == nil {
			out = append(out, m)
		}
	}
	sortMetas(out)
	return out, nil
}

// Get reads one record; one larger than maxRecordBytes is ErrBadRecord.
func (s *FSStore) Get(_ context.Context, meta RecordMeta) (Record, error) {
	if meta.Name == "" || meta.Name != filepath.Base(meta.Name) {
		return Record{}, fmt.Errorf("bad record name %q", meta.Name)
	}
	f, err := os.Open(filepath.Join(s.Dir, meta.Name))
	if err != nil {
		return Record{}, err
	}
	defer f.Close()
	b, err := readRecord(f, meta.Name)
	if err != nil {
		return Record{}, err
	}
	return Record{RecordMeta: meta, Data: b}, nil
}

// maxRecordBytes bounds what Get reads: records are a few kilobytes, and a
// file or an object far larger is not one (a variable for tests).
var maxRecordBytes int64 = 64 << 20

// readRecord reads a record from r: one larger than maxRecordBytes is
// ErrBadRecord rather than read in part (cut short, it would parse as a
// shorter result, or fail on its last line far from the cause).
func readRecord(r io.Reader, name string) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxRecordBytes+1))
	if err == nil && int64(len(b)) > maxRecordBytes {
		return nil, fmt.Errorf("%s: %w: larger than %d MiB", name, ErrBadRecord, maxRecordBytes>>20)
	}
	return b, err
}

// OpenStore opens "s3://bucket/prefix" (bucket may be empty to take
// S3_BUCKET) as an S3Store configured from the environment, and anything else
// as a directory.
func OpenStore(ctx context.Context, spec string) (Store, error) {
	if rest, ok := strings.CutPrefix(spec, "s3://"); ok {
		bucket, prefix, _ := strings.Cut(rest, "/")
		cfg := S3ConfigFromEnv()
		if bucket == "" {
			bucket = cfg.Bucket
		}
		if bucket == "" {
			return nil, errors.New("s3 store: no bucket in the URL and S3_BUCKET is not set")
		}
		return NewS3Store(ctx, cfg, bucket, prefix)
	}
	if spec == "" {
		return nil, errors.New("no store given")
	}
	return &FSStore{Dir: spec}, nil
}

// ErrBadRecord means a stored record is damaged: empty (a crash during a
// write), not Go benchmark format, or too large to be one.
var ErrBadRecord = errors.New("damaged record")

// LoadRecord fetches and parses a record. A record without any benchmark
// result is ErrBadRecord, as is one that does not parse: either would make a
// baseline that compares nothing.
func LoadRecord(ctx context.Context, s Store, meta RecordMeta) (*Set, error) {
	rec, err := s.Get(ctx, meta)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", meta.Name, err)
	}
	set, err := ParseBenchmarks(rec.Data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %w", meta.Name, ErrBadRecord, err)
	}
	if len(set.Keys) == 0 {
		return nil, fmt.Errorf("%s: %w: no benchmark results (%d bytes)", meta.Name, ErrBadRecord, len(rec.Data))
	}
	return set, nil
}

// SkippedRecord is a damaged record passed over, and why.
type SkippedRecord struct {
	Name   string `json:"name"`
	Reason string `json:"reason"`
}

// loadOrSkip loads a record and, when it is damaged, appends it to skipped rather
// than failing; other errors (the store cannot be read) are returned.
func loadOrSkip(ctx context.Context, s Store, m RecordMeta, skipped *[]SkippedRecord) (*Set, error) {
	set, err := LoadRecord(ctx, s, m)
	if errors.Is(err, ErrBadRecord) {
		*skipped = append(*skipped, SkippedRecord{Name: m.Name, Reason: err.Error()})
		return nil, nil
	}
	return set, err
}

// Key identifies a metric: a benchmark's name and a (tidied) unit. The name
// leaves out the "-N" GOMAXPROCS suffix go test appends (and omits at
// GOMAXPROCS=1), so that a runner with another core count, or results of
// go test -bench mixed with history, still compare; Set.Procs keeps the
// GOMAXPROCS. A file that ran one benchmark at several GOMAXPROCS
// (go test -cpu 1,2,4) keeps the suffix on each, "-1" included, since those
// are different configurations, not repetitions. Likewise a name that occurs
// in several packages ("pkg:" lines, go test -bench ./...) is prefixed with
// its package, "<pkg>.<name>", and only then, so that names stay as history
// recorded them wherever they do not collide.
type Key struct {
	Name string `json:"name"`
	Unit string `json:"unit"`
}

// Set is the parsed content of a benchmark file: every sample of every
// metric, keyed by benchmark and unit, in first-seen order.
type Set struct {
	Keys   []Key
	Values map[Key][]float64
	Units  benchfmt.UnitMetadataMap
	// Procs is the GOMAXPROCS each metric ran at, from the "-N" suffix of
	// its benchmark name (1 when there is none, as go test writes it).
	Procs map[Key]int
}

// splitProcs splits the "-N" GOMAXPROCS suffix off a benchmark name the way
// benchfmt (and so benchstat) reads it: 1 when there is none.
func splitProcs(n benchfmt.Name) (string, int) {
	if _, parts := n.Parts(); len(parts) > 0 {
		last := parts[len(parts)-1]
		if last[0] == '-' {
			if p, err := strconv.Atoi(string(last[1:])); err == nil && p > 0 {
				return string(n[:len(n)-len(last)]), p
			}
		}
	}
	return string(n), 1
}

// ParseBenchmarks reads Go benchmark format. Units are tidied the way
// benchstat tidies them (ns/op becomes sec/op), so files written by
// different tools compare. A NaN or infinite value is an error: it is no
// measurement, and the Mann-Whitney test of benchmath runs out of memory on
// a sample holding NaN.
func ParseBenchmarks(data []byte) (*Set, error) {
	type sample struct {
		pkg, base string
		procs     int
		unit      string
		value     float64
	}
	var samples []sample
	pkgsOf := map[string][]string{} // distinct packages of each name
	r := benchfmt.NewReader(bytes.NewReader(data), "input")
	var syntaxErrs []string
	for r.Scan() {
		switch rec := r.Result().(type) {
		case *benchfmt.Result:
			base, procs := splitProcs(rec.Name)
			pkg := rec.GetConfig("pkg")
			if !slices.Contains(pkgsOf[base], pkg) {
				pkgsOf[base] = append(pkgsOf[base], pkg)
			}
			for _, v := range rec.Values {
				if math.IsNaN(v.Value) || math.IsInf(v.Value, 0) {
					unit := v.OrigUnit
					if unit == "" {
						unit = v.Unit
					}
					return nil, fmt.Errorf("benchmark %s: %v %s is not a measurement", rec.Name, v.Value, unit)
				}
				samples = append(samples, sample{pkg, base, procs, v.Unit, v.Value})
			}
		case *benchfmt.SyntaxError:
			syntaxErrs = append(syntaxErrs, rec.Error())
		}
	}
	if err := r.Err(); err != nil {
		return nil, err
	}
	// A name is qualified by its package before the GOMAXPROCS are counted:
	// X of package a at -cpu 2 and X of b at -cpu 4 are two benchmarks, not
	// one at two GOMAXPROCS.
	procsOf := map[string][]int{} // distinct GOMAXPROCS of each qualified name
	for i, smp := range samples {
		if smp.pkg != "" && len(pkgsOf[smp.base]) > 1 {
			samples[i].base = smp.pkg + "." + smp.base
		}
		if b := samples[i].base; !slices.Contains(procsOf[b], smp.procs) {
			procsOf[b] = append(procsOf[b], smp.procs)
		}
	}
	s := &Set{Values: map[Key][]float64{}, Procs: map[Key]int{}}
	for _, smp := range samples {
		name := smp.base
		if len(procsOf[smp.base]) > 1 {
			name += "-" + strconv.Itoa(smp.procs)
		}
		k := Key{Name: name, Unit: smp.unit}
		if _, ok := s.Values[k]; !ok {
			s.Keys = append(s.Keys, k)
			s.Procs[k] = smp.procs
		}
		s.Values[k] = append(s.Values[k], smp.value)
	}
	if len(s.Keys) == 0 && len(syntaxErrs) > 0 {
		return nil, fmt.Errorf("not Go benchmark format: %s", syntaxErrs[0])
	}
	s.Units = r.Units()
	return s, nil
}
