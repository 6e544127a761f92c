package perfhistory

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"github.com/minio/minio-go/v7"
)

// startS3 serves a real S3-protocol server (gofakes3, in memory) on loopback
// and returns its URL; the store reaches it through the real minio client.
func startS3(t *testing.T) string {
	t.Helper()
	faker := gofakes3.New(s3mem.New(), gofakes3.WithTimeSkewLimit(0))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &httptest.Server{Listener: l, Config: &http.Server{Handler: faker.Server()}}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.URL
}

func testS3Config(endpoint string) S3Config {
	return S3Config{Endpoint: endpoint, Region: "us-east-1", AccessKey: "test", SecretKey: "testsecret", CreateBucket: true}
}

// storeCase is one Store implementation under the shared test, with a way to
// drop a foreign (non-record) object next to the records.
type storeCase struct {
	name    string
	open    func(t *testing.T) Store
	putJunk func(t *testing.T, s Store, name string)
}

func storeCases() []storeCase {
	return []storeCase{
		{
			name: "filesystem",
			// An existing empty directory: a missing one is ErrStoreNotFound
			// (TestNoHistoryIsNamed).
			open: func(t *testing.T) Store {
				dir := filepath.Join(t.TempDir(), "history")
				if err := os.Mkdir(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				return &FSStore{Dir: dir}
			},
			putJunk: func(t *testing.T, s Store, name string) {
				dir := s.(*FSStore).Dir
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, name), []byte("x"), 0o644); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name: "s3",
			open: func(t *testing.T) Store {
				s, err := NewS3Store(context.Background(), testS3Config(startS3(t)), "perf", "history/main")
				if err != nil {
					t.Fatal(err)
				}
				return s
			},
			putJunk: func(t *testing.T, s Store, name string) {
				st := s.(*S3Store)
				_, err := st.client.PutObject(context.Background(), st.bucket, st.prefix+name, bytes.NewReader([]byte("x")), 1, minio.PutObjectOptions{})
				if err != nil {
					t.Fatal(err)
				}
			},
		},
	}
}

func TestStores(t *testing.T) {
	ctx := context.Background()
	t0 := time.Date(2026, 11, 20, 8, 30, 0, 0, time.UTC)
	data := func(ns int) []byte {
		return []byte("goos: linux\nBenchmarkHTTP/scenario=safe_action/c=10\t100\t" + strings.Repeat("1", ns) + " ns/op\n")
	}
	for _, sc := range storeCases() {
		t.Run(sc.name, func(t *testing.T) {
			s := sc.open(t)
			for _, step := range []struct {
				name string
				run  func(t *testing.T)
			}{
				{"empty store lists nothing", func(t *testing.T) {
					ms, err := s.List(ctx)
					if err != nil || len(ms) != 0 {
						t.Fatalf("List = %v, %v", ms, err)
					}
				}},
				{"put out of order, list oldest first", func(t *testing.T) {
					for _, r := range []struct {
						at     time.Time
						commit string
						n      int
					}{{t0.Add(48 * time.Hour), "ccc", 3}, {t0, "aaa", 1}, {t0.Add(24 * time.Hour), "bbb", 2}} {
						rec, err := NewRecord(r.at, r.commit, data(r.n))
						if err != nil {
							t.Fatal(err)
						}
						if err := s.Put(ctx, rec); err != nil {
							t.Fatal(err)
						}
					}
					sc.putJunk(t, s, "README.md")
					ms, err := s.List(ctx)
					if err != nil {
						t.Fatal(err)
					}
					var got []string
					for _, m := range ms {
						got = append(got, m.Commit)
					}
					if strings.Join(got, ",") != "aaa,bbb,ccc" {
						t.Fatalf("List order %v, want aaa,bbb,ccc (junk ignored)", got)
					}
					if !ms[0].Time.Equal(t0) || ms[0].Name != "2026-11-20T08-30-00.000000000Z_aaa.txt" {
						t.Fatalf("first record %+v", ms[0])
					}
				}},
				{"get returns the bytes put", func(t *testing.T) {
					ms, err := s.List(ctx)
					if err != nil {
						t.Fatal(err)
					}
					for i, m := range ms {
						rec, err := s.Get(ctx, m)
						if err != nil {
							t.Fatal(err)
						}
						if !bytes.Equal(rec.Data, data(i+1)) {
							t.Fatalf("%s: got %q", m.Name, rec.Data)
						}
						set, err := LoadRecord(ctx, s, m)
						if err != nil || len(set.Keys) != 1 {
							t.Fatalf("LoadRecord %s: %v %+v", m.Name, err, set)
						}
					}
				}},
				{"records of one commit within a second are all kept", func(t *testing.T) {
					for _, r := range []struct {
						at time.Duration
						n  int
					}{{600 * time.Millisecond, 5}, {100 * time.Millisecond, 4}} {
						rec, _ := NewRecord(t0.Add(r.at), "aaa", data(r.n))
						if err := s.Put(ctx, rec); err != nil {
							t.Fatal(err)
						}
					}
					ms, _ := s.List(ctx)
					var got []string
					for _, m := range ms {
						rec, err := s.Get(ctx, m)
						if err != nil {
							t.Fatal(err)
						}
						got = append(got, fmt.Sprintf("%s:%d", m.Commit, len(rec.Data)-len(data(0))))
					}
					if want := "aaa:1,aaa:4,aaa:5,bbb:2,ccc:3"; strings.Join(got, ",") != want {
						t.Fatalf("records %v, want %s", got, want)
					}
				}},
				{"missing record is an error", func(t *testing.T) {
					if _, err := s.Get(ctx, RecordMeta{Name: RecordName(t0.Add(time.Hour), "zzz")}); err == nil {
						t.Fatal("no error for a missing record")
					}
					if _, err := s.Get(ctx, RecordMeta{Name: "../etc/passwd"}); err == nil {
						t.Fatal("no error for a path outside the store")
					}
				}},
			} {
				t.Run(step.name, step.run)
			}
		})
	}
}

func TestOpenStoreS3FromEnv(t *testing.T) {
	url := startS3(t)
	t.Setenv("S3_ENDPOINT", url)
	t.Setenv("S3_INSECURE", "true")
	t.Setenv("S3_CREATE_BUCKET", "true")
	t.Setenv("AWS_REGION", "us-east-1")
	t.Setenv("AWS_ACCESS_KEY_ID", "test")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "testsecret")
	t.Setenv("S3_BUCKET", "from-env")
	ctx := context.Background()
	for _, spec := range []string{"s3://explicit/ci/history", "s3:///prefix-only"} {
		s, err := OpenStore(ctx, spec)
		if err != nil {
			t.Fatalf("%s: %v", spec, err)
		}
		rec, err := NewRecord(time.Now(), "abc", []byte("BenchmarkX 1 5 ns/op\n"))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Put(ctx, rec); err != nil {
			t.Fatal(err)
		}
		ms, err := s.List(ctx)
		if err != nil || len(ms) != 1 {
			t.Fatalf("%s: List = %v, %v", spec, ms, err)
		}
	}
	t.Setenv("S3_CREATE_BUCKET", "false")
	if _, err := OpenStore(ctx, "s3://no-such-bucket"); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("missing bucket: %v", err)
	}
}

func TestRecordNames(t *testing.T) {
	at := time.Date(2026, 11, 27, 16, 25, 3, 0, time.FixedZone("CET", 3600))
	var names []string
	for _, tc := range []struct {
		at           time.Time
		commit, want string
	}{
		{at, "0123abc", "2026-11-27T15-25-03.000000000Z_0123abc.txt"},
		{at, "", "2026-11-27T15-25-03.000000000Z_unknown.txt"},
		{at, "feature/x_y", "2026-11-27T15-25-03.000000000Z_feature-x-y.txt"},
		{at.Add(1500 * time.Microsecond), "abc", "2026-11-27T15-25-03.001500000Z_abc.txt"},
		{at.Add(999999999), "abc", "2026-11-27T15-25-03.999999999Z_abc.txt"},
		{at.Add(time.Second), "abc", "2026-11-27T15-25-04.000000000Z_abc.txt"},
	} {
		name := RecordName(tc.at, tc.commit)
		if name != tc.want {
			t.Errorf("RecordName(%q) = %s, want %s", tc.commit, name, tc.want)
		}
		m, err := ParseRecordName(name)
		if err != nil || !m.Time.Equal(tc.at) {
			t.Errorf("ParseRecordName(%s) = %+v, %v", name, m, err)
		}
		names = append(names, name)
	}
	if !slices.IsSorted(names[3:]) {
		t.Errorf("names of later times do not sort later: %v", names[3:])
	}
	// names written before the nanoseconds, and by other tools
	for _, name := range []string{"2026-11-27T15-25-03Z_abc.txt", "2026-11-27T15:25:03Z_abc.txt"} {
		if m, err := ParseRecordName(name); err != nil || m.Commit != "abc" || !m.Time.Equal(at) {
			t.Errorf("%s: %+v %v", name, m, err)
		}
	}
	for _, bad := range []string{"README.md", "x_abc.txt", "2026-11-27T15-25-03Z.txt", "2026-11-27T15-25-03Z_.txt"} {
		if _, err := ParseRecordName(bad); err == nil {
			t.Errorf("ParseRecordName(%q) accepted", bad)
		}
	}
	if _, err := NewRecord(at, "c", []byte("no benchmarks here\n")); err == nil {
		t.Error("NewRecord accepted a file without results")
	}
}

// Put must sync the data before the rename (else a crash can leave the
// record's name on a zero-length file) and the directory after it, best
// effort.
func TestFSStorePutSyncs(t *testing.T) {
	errSync := errors.New("sync failed")
	for _, tc := range []struct {
		name            string
		fileErr, dirErr error
		wantErr         bool
		wantRecord      bool
		wantSyncs       string
	}{
		{"data synced before the rename, directory after", nil, nil, false, true, "file,dir"},
		{"a failed data sync fails the put and leaves no record", errSync, nil, true, false, "file"},
		{"a failed directory sync is best effort", nil, errSync, false, true, "file,dir"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &FSStore{Dir: filepath.Join(t.TempDir(), "history")}
			rec, err := NewRecord(time.Date(2026, 11, 20, 8, 0, 0, 0, time.UTC), "abc", []byte("BenchmarkA 1 5 ns/op\n"))
			if err != nil {
				t.Fatal(err)
			}
			final := filepath.Join(s.Dir, rec.Name)
			var syncs []string
			oldFile, oldDir := syncFile, syncDir
			t.Cleanup(func() { syncFile, syncDir = oldFile, oldDir })
			syncFile = func(f *os.File) error {
				syncs = append(syncs, "file")
				if _, err := os.Stat(final); err == nil {
					t.Error("data synced after the rename")
				}
				if fi, err := f.Stat(); err != nil || fi.Size() != int64(len(rec.Data)) {
					t.Errorf("data synced before it was all written: %v %v", fi, err)
				}
				if tc.fileErr != nil {
					return tc.fileErr
				}
				return f.Sync()
			}
			syncDir = func(dir string) error {
				syncs = append(syncs, "dir")
				if _, err := os.Stat(final); err != nil || dir != s.Dir {
					t.Errorf("directory %s synced before the rename: %v", dir, err)
				}
				if tc.dirErr != nil {
					return tc.dirErr
				}
				return oldDir(dir)
			}
			err = s.Put(context.Background(), rec)
			if (err != nil) != tc.wantErr {
				t.Fatalf("Put: %v, want error %v", err, tc.wantErr)
			}
			if got := strings.Join(syncs, ","); got != tc.wantSyncs {
				t.Errorf("syncs %s, want %s", got, tc.wantSyncs)
			}
			ms, _ := s.List(context.Background())
			if (len(ms) == 1) != tc.wantRecord {
				t.Errorf("records %v, want one: %v", ms, tc.wantRecord)
			}
			ents, _ := os.ReadDir(s.Dir)
			for _, e := range ents {
				if strings.HasPrefix(e.Name(), ".put-") {
					t.Errorf("temporary file %s left behind", e.Name())
				}
			}
		})
	}
}

// TestFSStorePutNeverReplaces: a record put under a name already taken (two
// `regress record` of one commit at one time) is kept beside the first,
// listed after it, with or without hard links; a taken name that is no
// record name is an error rather than a replaced file.
func TestFSStorePutNeverReplaces(t *testing.T) {
	ctx := context.Background()
	at := time.Date(2026, 11, 20, 8, 0, 0, 0, time.UTC)
	noLinks := func(_, _ string) error { return &os.LinkError{Op: "link", Err: errors.ErrUnsupported} }
	for _, tc := range []struct {
		name string
		link func(oldname, newname string) error
	}{
		{"hard links", os.Link},
		{"no hard links", noLinks},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old := linkFile
			t.Cleanup(func() { linkFile = old })
			linkFile = tc.link
			s := &FSStore{Dir: filepath.Join(t.TempDir(), "history")}
			for i := range 3 {
				rec, err := NewRecord(at, "abc", []byte(fmt.Sprintf("BenchmarkA 1 %d ns/op\n", i+1)))
				if err != nil {
					t.Fatal(err)
				}
				if err := s.Put(ctx, rec); err != nil {
					t.Fatalf("put %d: %v", i, err)
				}
			}
			ms, err := s.List(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, m := range ms {
				rec, err := s.Get(ctx, m)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, m.Name+" "+strings.TrimSpace(string(rec.Data)))
			}
			want := []string{
				"2026-11-20T08-00-00.000000000Z_abc.txt BenchmarkA 1 1 ns/op",
				"2026-11-20T08-00-00.000000001Z_abc.txt BenchmarkA 1 2 ns/op",
				"2026-11-20T08-00-00.000000002Z_abc.txt BenchmarkA 1 3 ns/op",
			}
			if !slices.Equal(got, want) {
				t.Fatalf("records\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}

			if err := os.WriteFile(filepath.Join(s.Dir, "notes.txt"), []byte("mine"), 0o644); err != nil {
				t.Fatal(err)
			}
			err = s.Put(ctx, Record{RecordMeta: RecordMeta{Name: "notes.txt"}, Data: []byte("BenchmarkA 1 1 ns/op\n")})
			if !errors.Is(err, fs.ErrExist) {
				t.Errorf("put over a file that is no record: %v, want ErrExist", err)
			}
			if b, _ := os.ReadFile(filepath.Join(s.Dir, "notes.txt")); string(b) != "mine" {
				t.Errorf("notes.txt replaced by %q", b)
			}
			ents, _ := os.ReadDir(s.Dir)
			if len(ents) != 4 {
				t.Errorf("%d files, want the 3 records and notes.txt: %v", len(ents), ents)
			}
		})
	}
}

// failingStore fails every Get, as an unreachable bucket does.
type failingStore struct{ Store }

func (failingStore) Get(context.Context, RecordMeta) (Record, error) {
	return Record{}, errors.New("connection refused")
}

// A damaged record must never become the baseline: LoadRecord refuses it
// and LoadBaseline passes over it to the next record that fits, naming it.
func TestLoadBaselineSkipsDamaged(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	good := "goos: linux\nBenchmarkA 1 5 ns/op\n"
	type rec struct {
		ago    time.Duration
		commit string
		data   string
	}
	for _, tc := range []struct {
		name        string
		recs        []rec
		commit      string
		failGet     bool
		want        string // commit of the baseline; "" for an error
		wantSkipped []string
		noBaseline  bool // the error is ErrNoBaseline
	}{
		{"newest empty (crash during a write)", []rec{{48, "aaa", good}, {1, "bbb", ""}}, "", false, "aaa", []string{"bbb"}, false},
		{"newest headers only", []rec{{48, "aaa", good}, {1, "bbb", "goos: linux\ngoarch: amd64\n"}}, "", false, "aaa", []string{"bbb"}, false},
		{"newest not benchmark format", []rec{{48, "aaa", good}, {1, "bbb", "<html>502 Bad Gateway</html>\n"}}, "", false, "aaa", []string{"bbb"}, false},
		{"two damaged in a row", []rec{{72, "aaa", good}, {48, "bbb", ""}, {1, "ccc", "junk\n"}}, "", false, "aaa", []string{"ccc", "bbb"}, false},
		{"by commit: the older record of that commit", []rec{{72, "aaa", good}, {48, "aaa", ""}, {1, "ccc", good}}, "aaa", false, "aaa", []string{"aaa"}, false},
		{"all damaged is an error, not a missing baseline", []rec{{48, "aaa", ""}, {1, "bbb", "junk\n"}}, "", false, "", []string{"bbb", "aaa"}, false},
		{"no record of the commit is still no baseline", []rec{{1, "aaa", good}}, "zzz", false, "", nil, true},
		{"an unreadable store is an error, not a skip", []rec{{48, "aaa", good}, {1, "bbb", good}}, "", true, "", nil, false},
		{"sound newest record", []rec{{48, "aaa", good}, {1, "bbb", good}}, "", false, "bbb", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := &FSStore{Dir: t.TempDir()}
			for _, r := range tc.recs {
				name := RecordName(now.Add(-r.ago*time.Hour), r.commit)
				if err := os.WriteFile(filepath.Join(fs.Dir, name), []byte(r.data), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			var s Store = fs
			if tc.failGet {
				s = failingStore{fs}
			}
			metas, err := s.List(ctx)
			if err != nil {
				t.Fatal(err)
			}
			base, set, skipped, err := LoadBaseline(ctx, s, metas, tc.commit, 0, now, "")
			var skippedCommits []string
			for _, sk := range skipped {
				m, _ := ParseRecordName(sk.Name)
				skippedCommits = append(skippedCommits, m.Commit)
				if !strings.Contains(sk.Reason, sk.Name) {
					t.Errorf("reason %q does not name %s", sk.Reason, sk.Name)
				}
			}
			if fmt.Sprint(skippedCommits) != fmt.Sprint(tc.wantSkipped) {
				t.Errorf("skipped %v, want %v", skippedCommits, tc.wantSkipped)
			}
			if tc.want == "" {
				if err == nil {
					t.Fatalf("baseline %s, want an error", base.Name)
				}
				if errors.Is(err, ErrNoBaseline) != tc.noBaseline {
					t.Fatalf("error %v: ErrNoBaseline %v, want %v", err, errors.Is(err, ErrNoBaseline), tc.noBaseline)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if base.Commit != tc.want || set == nil || len(set.Keys) == 0 {
				t.Fatalf("baseline %s (%v), want commit %s", base.Name, set, tc.want)
			}
			for _, m := range metas {
				_, err := LoadRecord(ctx, s, m)
				if damaged := slices.Contains(tc.wantSkipped, m.Commit) && m.Name != base.Name; damaged != errors.Is(err, ErrBadRecord) {
					t.Errorf("LoadRecord(%s) = %v, want ErrBadRecord: %v", m.Name, err, damaged)
				}
			}
		})
	}
}

// Trends pass over damaged records instead of failing or counting them.
func TestLoadSinceSkipsDamaged(t *testing.T) {
	fs := &FSStore{Dir: t.TempDir()}
	now := time.Now().UTC()
	for i, data := range []string{"BenchmarkA 1 5 ns/op\n", "", "BenchmarkA 1 6 ns/op\n", "junk\n"} {
		name := RecordName(now.Add(-time.Duration(4-i)*time.Hour), fmt.Sprint("c", i))
		if err := os.WriteFile(filepath.Join(fs.Dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ms, sets, skipped, err := LoadSince(context.Background(), fs, now.Add(-24*time.Hour))
	if err != nil || len(ms) != 2 || len(sets) != 2 || len(skipped) != 2 || ms[1].Commit != "c2" {
		t.Fatalf("LoadSince = %v %v skipped %v, %v; want c0, c2 loaded and c1, c3 skipped", ms, sets, skipped, err)
	}
}

// An S3 object larger than a record can be is refused, not cut short into a
// shorter result.
func TestS3GetRefusesOversized(t *testing.T) {
	ctx := context.Background()
	s, err := NewS3Store(ctx, testS3Config(startS3(t)), "perf", "history")
	if err != nil {
		t.Fatal(err)
	}
	line := []byte("BenchmarkA 1 5 ns/op\n")
	for _, tc := range []struct {
		name    string
		size    int
		wantErr bool
	}{
		{"small record", len(line), false},
		{"one byte over 64 MiB", 64<<20 + 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.size > 1<<20 && testing.Short() {
				t.Skip("uploads 64 MiB")
			}
			data := bytes.Repeat(line, tc.size/len(line)+1)[:tc.size]
			name := RecordName(time.Date(2026, 11, 20, 8, 0, 0, 0, time.UTC), "s"+fmt.Sprint(tc.size))
			if _, err := s.client.PutObject(ctx, s.bucket, s.prefix+name, bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{}); err != nil {
				t.Fatal(err)
			}
			rec, err := s.Get(ctx, RecordMeta{Name: name})
			if tc.wantErr {
				if err == nil || !strings.Contains(err.Error(), "larger than 64 MiB") {
					t.Fatalf("Get: %d bytes, err %v; want a size error", len(rec.Data), err)
				}
				return
			}
			if err != nil || !bytes.Equal(rec.Data, data) {
				t.Fatalf("Get: %d bytes, %v", len(rec.Data), err)
			}
		})
	}
}

// A NaN or infinite value is no measurement: ParseBenchmarks refuses it (the
// Mann-Whitney test of benchmath runs out of memory on a NaN sample), so
// record refuses the file and a stored record holding one is skipped as
// damaged.
func TestParseBenchmarksRefusesNonFinite(t *testing.T) {
	for _, tc := range []struct {
		name, data string
		wantErr    string // "" for no error
	}{
		{"finite", "BenchmarkA 1 5 ns/op 10 req/s\n", ""},
		{"NaN time", "BenchmarkA 1 5 ns/op\nBenchmarkA 1 NaN ns/op\n", "benchmark A: NaN ns/op is not a measurement"},
		{"infinite rate", "BenchmarkA 1 5 ns/op +Inf req/s\n", "benchmark A: +Inf req/s is not a measurement"},
		{"negative infinity", "BenchmarkB-4 1 -Inf B/op\n", "benchmark B-4: -Inf B/op is not a measurement"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			set, err := ParseBenchmarks([]byte(tc.data))
			if tc.wantErr == "" {
				if err != nil || len(set.Keys) == 0 {
					t.Fatalf("ParseBenchmarks: %+v, %v", set, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("ParseBenchmarks: %+v, %v; want error %q", set, err, tc.wantErr)
			}
			if _, err := NewRecord(time.Now(), "c", []byte(tc.data)); err == nil {
				t.Error("NewRecord accepted it")
			}
		})
	}
}

// TestGetRefusesOversizeRecords: a record larger than the bound is damaged
// (ErrBadRecord), not read whole into memory or in part, in either store.
func TestGetRefusesOversizeRecords(t *testing.T) {
	ctx := context.Background()
	at := time.Date(2026, 11, 20, 8, 30, 0, 0, time.UTC)
	for _, sc := range storeCases() {
		t.Run(sc.name, func(t *testing.T) {
			s := sc.open(t)
			rec, err := NewRecord(at, "aaa", []byte("BenchmarkX\t100\t1000 ns/op\n"+strings.Repeat("# padding\n", 20)))
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Put(ctx, rec); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Get(ctx, rec.RecordMeta); err != nil {
				t.Fatalf("under the bound: %v", err)
			}
			defer func(n int64) { maxRecordBytes = n }(maxRecordBytes)
			maxRecordBytes = int64(len(rec.Data)) - 1
			if _, err := s.Get(ctx, rec.RecordMeta); !errors.Is(err, ErrBadRecord) {
				t.Fatalf("over the bound: %v, want ErrBadRecord", err)
			}
		})
	}
}

// TestParseBenchmarksPackages: one benchmark name in two packages
// (go test -bench ./...) is two benchmarks, as benchstat keeps them; a name
// in one package only keeps the bare name history was recorded with.
func TestParseBenchmarksPackages(t *testing.T) {
	type metric struct {
		name  string
		procs int
		ns    []float64 // sec/op in ns
	}
	for _, tc := range []struct {
		name, data string
		want       []metric // in order
	}{
		{
			name: "same name in two packages",
			data: "pkg: a\nBenchmarkX-2 1 100 ns/op\nBenchmarkX-2 1 101 ns/op\n" +
				"pkg: b\nBenchmarkX-2 1 9000 ns/op\nBenchmarkX-2 1 9001 ns/op\n",
			want: []metric{{"a.X", 2, []float64{100, 101}}, {"b.X", 2, []float64{9000, 9001}}},
		},
		{
			name: "one package: bare names, as recorded before",
			data: "goos: linux\npkg: a\nBenchmarkX-2 1 100 ns/op\nBenchmarkY-2 1 5 ns/op\n",
			want: []metric{{"X", 2, []float64{100}}, {"Y", 2, []float64{5}}},
		},
		{
			name: "no pkg line",
			data: "BenchmarkX 1 100 ns/op\n",
			want: []metric{{"X", 1, []float64{100}}},
		},
		{
			name: "two packages, only the shared name qualified",
			data: "pkg: a\nBenchmarkX 1 1 ns/op\nBenchmarkY 1 2 ns/op\npkg: b\nBenchmarkX 1 3 ns/op\n",
			want: []metric{{"a.X", 1, []float64{1}}, {"Y", 1, []float64{2}}, {"b.X", 1, []float64{3}}},
		},
		{
			name: "packages at different GOMAXPROCS are not one benchmark at two",
			data: "pkg: a\nBenchmarkX-2 1 1 ns/op\npkg: b\nBenchmarkX-4 1 2 ns/op\n",
			want: []metric{{"a.X", 2, []float64{1}}, {"b.X", 4, []float64{2}}},
		},
		{
			name: "-cpu 1,2 in one package of two",
			data: "pkg: a\nBenchmarkX 1 1 ns/op\nBenchmarkX-2 1 2 ns/op\npkg: b\nBenchmarkX-2 1 3 ns/op\n",
			want: []metric{{"a.X-1", 1, []float64{1}}, {"a.X-2", 2, []float64{2}}, {"b.X", 2, []float64{3}}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			set, err := ParseBenchmarks([]byte(tc.data))
			if err != nil {
				t.Fatal(err)
			}
			var got []metric
			for _, k := range set.Keys {
				if k.Unit != "sec/op" {
					t.Fatalf("key %v", k)
				}
				var ns []float64
				for _, v := range set.Values[k] {
					ns = append(ns, math.Round(v*1e9))
				}
				got = append(got, metric{k.Name, set.Procs[k], ns})
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("got  %v\nwant %v", got, tc.want)
			}
		})
	}
}

// A store that does not exist, or holds nothing another commit could be
// compared with, must be told apart from a selection that matched nothing:
// the caller passes the first only for a first run, never the second.
func TestNoHistoryIsNamed(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 11, 20, 8, 30, 0, 0, time.UTC)
	good := "BenchmarkDecide\t100\t1000 ns/op\n"
	for _, tc := range []struct {
		name         string
		missing      bool     // the directory does not exist
		commits      []string // records, one hour apart
		commit, own  string
		days         int
		notFound     bool // List fails with ErrStoreNotFound
		emptyHistory bool // LoadBaseline fails with ErrEmptyHistory
	}{
		{name: "missing directory", missing: true, notFound: true, emptyHistory: true},
		{name: "empty directory", emptyHistory: true},
		{name: "only records of its own commit", commits: []string{"aaa"}, own: "aaa", emptyHistory: true},
		{name: "unknown baseline commit", commits: []string{"aaa"}, commit: "zzz"},
		{name: "nothing old enough", commits: []string{"aaa"}, days: 30},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "history")
			if !tc.missing {
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			for i, c := range tc.commits {
				if err := os.WriteFile(filepath.Join(dir, RecordName(now.Add(-time.Duration(i+1)*time.Hour), c)), []byte(good), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			s := &FSStore{Dir: dir}
			metas, err := s.List(ctx)
			if errors.Is(err, ErrStoreNotFound) != tc.notFound {
				t.Fatalf("List: %v, want ErrStoreNotFound %v", err, tc.notFound)
			}
			if err != nil && !strings.Contains(err.Error(), dir) {
				t.Errorf("%v does not name %s", err, dir)
			}
			_, _, _, err = LoadBaseline(ctx, s, metas, tc.commit, tc.days, now, tc.own)
			if !errors.Is(err, ErrNoBaseline) || errors.Is(err, ErrEmptyHistory) != tc.emptyHistory {
				t.Fatalf("LoadBaseline: %v, want ErrNoBaseline with ErrEmptyHistory %v", err, tc.emptyHistory)
			}
		})
	}
}
