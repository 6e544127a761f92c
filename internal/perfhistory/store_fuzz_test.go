package perfhistory

import (
	"bytes"
	"context"
	"errors"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// memStore is a Store over a map, for the fuzzers: no files, no syncs.
type memStore map[string][]byte

func (m memStore) Put(_ context.Context, rec Record) error { m[rec.Name] = rec.Data; return nil }
func (m memStore) List(context.Context) ([]RecordMeta, error) {
	var out []RecordMeta
	for name := range m {
		if meta, err := ParseRecordName(name); err == nil {
			out = append(out, meta)
		}
	}
	sortMetas(out)
	return out, nil
}

func (m memStore) Get(_ context.Context, meta RecordMeta) (Record, error) {
	b, ok := m[meta.Name]
	if !ok {
		return Record{}, os.ErrNotExist
	}
	b, err := readRecord(bytes.NewReader(b), meta.Name)
	return Record{RecordMeta: meta, Data: b}, err
}

// checkSet checks what a parsed Set promises: every key once, in Keys, with
// at least one finite sample and a GOMAXPROCS of at least 1, and a name
// keeping its "-N" suffix exactly when that is its GOMAXPROCS and another
// key of the same base ran at another one.
func checkSet(t *testing.T, s *Set) {
	t.Helper()
	if len(s.Values) != len(s.Keys) || len(s.Procs) != len(s.Keys) {
		t.Fatalf("%d keys, %d values, %d procs", len(s.Keys), len(s.Values), len(s.Procs))
	}
	seen := map[Key]bool{}
	for _, k := range s.Keys {
		if seen[k] {
			t.Fatalf("key %v twice", k)
		}
		seen[k] = true
		vs := s.Values[k]
		if len(vs) == 0 {
			t.Fatalf("key %v without samples", k)
		}
		for _, v := range vs {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				t.Fatalf("key %v: sample %v", k, v)
			}
		}
		if s.Procs[k] < 1 {
			t.Fatalf("key %v: procs %d", k, s.Procs[k])
		}
		if k.Unit == "" {
			t.Fatalf("key %v without a unit", k)
		}
	}
}

// FuzzParseBenchmarks: ParseBenchmarks (acgs regress reads go test -bench
// output and stored records with it) returns an error or a consistent Set
// for any bytes; a file read twice over (the same lines again, the package
// cleared between, as it is at the start) gives the same keys in the same
// order with every sample list doubled; and a
// record's way through a store agrees with parsing: NewRecord accepts
// exactly the data LoadRecord later loads, LoadRecord fails only with
// ErrBadRecord, and it loads the Set ParseBenchmarks gives.
func FuzzParseBenchmarks(f *testing.F) {
	f.Add([]byte("goos: linux\ngoarch: amd64\npkg: github.com/acgs-lite/acgs/internal/cache\ncpu: AMD EPYC\n" +
		"BenchmarkL1Hit-2   \t 1953284\t       601.2 ns/op\t       0 B/op\t       0 allocs/op\n" +
		"BenchmarkL1Hit-2   \t 1987310\t       616.0 ns/op\t       0 B/op\t       0 allocs/op\n" +
		"PASS\nok  \tgithub.com/acgs-lite/acgs/internal/cache\t3.512s\n"))
	f.Add([]byte("BenchmarkX-2 1 5 ns/op\npkg: a\nBenchmarkX-2 1 100 ns/op\npkg: b\nBenchmarkX-2 1 9000 ns/op\n"))
	f.Add(benchText(1, 5, 2e6, 4000, 0.05))
	f.Add([]byte("BenchmarkHTTP/scenario=safe_action/c=10\t1000\t2000000 ns/op\t5000.00 req/s\n"))
	f.Add([]byte("BenchmarkA 1 5 ns/op\nBenchmarkA-4 1 6 ns/op\nBenchmarkA-1 1 7 ns/op\n"))
	f.Add([]byte("BenchmarkA-0 1 5 ns/op\nBenchmarkB--4 1 5 ns/op\nBenchmarkC-x 1 5 ns/op\nBenchmarkD/sub-8 2 3 MB/s\n"))
	f.Add([]byte("Unit score/op better=higher\nBenchmarkA 1 3 score/op\n"))
	f.Add([]byte("Unit ns/op assume=exact\nUnit ns/op assume=nothing\nBenchmarkA 1 3 ns/op\n"))
	f.Add([]byte("BenchmarkA 1 5 ns/op\nBenchmarkA 1 NaN ns/op\n"))
	f.Add([]byte("BenchmarkA 1 5 ns/op +Inf req/s\n"))
	f.Add([]byte("BenchmarkA 1 1e400 ns/op\n"))
	f.Add([]byte("junk\n"))
	f.Add([]byte("BenchmarkA x 5 ns/op\n"))
	f.Add([]byte("BenchmarkA 1 5\n"))
	f.Add([]byte(""))
	f.Add([]byte("goos: linux\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseBenchmarks(data)
		if err == nil {
			checkSet(t, s)
			twice := append(append(append([]byte{}, data...), "\npkg:\n"...), data...)
			s2, err2 := ParseBenchmarks(twice)
			if err2 != nil {
				t.Fatalf("the data parses, twice over it does not: %v", err2)
			}
			checkSet(t, s2)
			if !slices.Equal(s.Keys, s2.Keys) {
				t.Fatalf("keys %v, twice over %v", s.Keys, s2.Keys)
			}
			for _, k := range s.Keys {
				if want := append(slices.Clone(s.Values[k]), s.Values[k]...); !slices.Equal(s2.Values[k], want) || s2.Procs[k] != s.Procs[k] {
					t.Fatalf("%v: %v (procs %d), twice over %v (procs %d)", k, s.Values[k], s.Procs[k], s2.Values[k], s2.Procs[k])
				}
			}
		}

		ctx := context.Background()
		t0 := time.Date(2026, 11, 20, 8, 30, 0, 0, time.UTC)
		rec, nerr := NewRecord(t0, "abc123", data)
		if (nerr == nil) != (err == nil && len(s.Keys) > 0) {
			t.Fatalf("NewRecord: %v; ParseBenchmarks: %v", nerr, err)
		}
		st := memStore{}
		meta := RecordMeta{Time: t0, Commit: "abc123", Name: RecordName(t0, "abc123")}
		if nerr == nil {
			if rec.RecordMeta != meta || !bytes.Equal(rec.Data, data) {
				t.Fatalf("record %+v", rec.RecordMeta)
			}
		}
		_ = st.Put(ctx, Record{RecordMeta: meta, Data: data})
		ms, _ := st.List(ctx)
		if len(ms) != 1 || ms[0] != meta {
			t.Fatalf("list %+v, want %+v", ms, meta)
		}
		loaded, lerr := LoadRecord(ctx, st, ms[0])
		if (lerr == nil) != (nerr == nil) {
			t.Fatalf("LoadRecord: %v; NewRecord: %v", lerr, nerr)
		}
		if lerr != nil {
			if !errors.Is(lerr, ErrBadRecord) {
				t.Fatalf("a damaged record is not ErrBadRecord: %v", lerr)
			}
			return
		}
		if !slices.Equal(loaded.Keys, s.Keys) {
			t.Fatalf("loaded keys %v, parsed %v", loaded.Keys, s.Keys)
		}
		for _, k := range s.Keys {
			if !slices.Equal(loaded.Values[k], s.Values[k]) {
				t.Fatalf("%v: loaded %v, parsed %v", k, loaded.Values[k], s.Values[k])
			}
		}
	})
}

// FuzzParseRecordName: ParseRecordName (file names in a history directory,
// object keys in a bucket) accepts only <time>_<commit>.txt with a time and
// a commit, returns UTC and the name unchanged, and a name RecordName
// writes for what it read (a time in years 0-9999) reads back to the same
// time and the commit as RecordName sanitizes it. RecordName's own names
// always read back.
func FuzzParseRecordName(f *testing.F) {
	for _, s := range []struct {
		name string
		sec  int64
		c    string
	}{
		{"2026-11-20T08-30-00Z_abc123.txt", 1795163400, "abc123"},
		{"2026-11-20T08:30:00Z_abc123.txt", 0, "0123456789abcdef0123456789abcdef01234567"},
		{"2026-11-20T08:30:00.123456789+05:30_v1.2-rc.txt", -1, "v1.2 rc/1"},
		{"2026-11-20T08-30-00Z_.txt", 253402300799, ""},
		{"2026-11-20T08-30-00Z.txt", 42, "_"},
		{"2026-11-20T08-30-00Z_abc_def.txt", 42, "a_b"},
		{"2026-11-20T8-30-00Z_abc.txt", 42, " héllo "},
		{"README.md", 42, "x"},
		{".put-123", 42, "x"},
		{"_abc.txt", 42, "x"},
	} {
		f.Add(s.name, s.sec, s.c)
	}
	f.Fuzz(func(t *testing.T, name string, sec int64, commit string) {
		m, err := ParseRecordName(name)
		if err == nil {
			if !strings.HasSuffix(name, ".txt") || m.Commit == "" || m.Name != name || m.Time.Location() != time.UTC {
				t.Fatalf("%q: %+v", name, m)
			}
			if y := m.Time.Year(); y >= 0 && y <= 9999 {
				back, err := ParseRecordName(RecordName(m.Time, m.Commit))
				if err != nil || !back.Time.Equal(m.Time) || back.Commit != sanitizeCommit(m.Commit) {
					t.Fatalf("%q: RecordName %q reads back as %+v, %v", name, RecordName(m.Time, m.Commit), back, err)
				}
			}
		} else if !strings.Contains(err.Error(), strconv.Quote(name)) {
			t.Fatalf("%q: the error does not name the record: %v", name, err)
		}

		// 0000-01-01 .. 9999-12-31: the four-digit years of the layout
		tm := time.Unix(-62167219200+int64(uint64(sec)%(253402300800+62167219200)), 0).UTC()
		rn := RecordName(tm, commit)
		back, err := ParseRecordName(rn)
		if err != nil || !back.Time.Equal(tm) || back.Commit != sanitizeCommit(commit) || back.Name != rn {
			t.Fatalf("RecordName(%v, %q) = %q reads back as %+v, %v", tm, commit, rn, back, err)
		}
	})
}
