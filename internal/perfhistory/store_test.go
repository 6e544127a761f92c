package perfhistory

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
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
			open: func(t *testing.T) Store { return &FSStore{Dir: filepath.Join(t.TempDir(), "history")} },
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
					if !ms[0].Time.Equal(t0) || ms[0].Name != "2026-11-20T08-30-00Z_aaa.txt" {
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
				{"same time and commit overwrites", func(t *testing.T) {
					rec, _ := NewRecord(t0, "aaa", data(4))
					if err := s.Put(ctx, rec); err != nil {
						t.Fatal(err)
					}
					ms, _ := s.List(ctx)
					if len(ms) != 3 {
						t.Fatalf("%d records, want 3", len(ms))
					}
					got, err := s.Get(ctx, ms[0])
					if err != nil || !bytes.Equal(got.Data, data(4)) {
						t.Fatalf("overwrite: %v %q", err, got.Data)
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
	for _, tc := range []struct {
		commit, want string
	}{
		{"0123abc", "2026-11-27T15-25-03Z_0123abc.txt"},
		{"", "2026-11-27T15-25-03Z_unknown.txt"},
		{"feature/x_y", "2026-11-27T15-25-03Z_feature-x-y.txt"},
	} {
		name := RecordName(at, tc.commit)
		if name != tc.want {
			t.Errorf("RecordName(%q) = %s, want %s", tc.commit, name, tc.want)
		}
		m, err := ParseRecordName(name)
		if err != nil || !m.Time.Equal(at) {
			t.Errorf("ParseRecordName(%s) = %+v, %v", name, m, err)
		}
	}
	if m, err := ParseRecordName("2026-11-27T15:25:03Z_abc.txt"); err != nil || m.Commit != "abc" {
		t.Errorf("plain RFC 3339 name: %+v %v", m, err)
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
