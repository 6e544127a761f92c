package remote_test

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/acgs-lite/acgs/internal/remote"
)

func get(t *testing.T, url string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// TestFileServer checks what OPA's downloader relies on: ETags and 304,
// long polling held until the deadline or answered at a change, and no
// way out of the directory.
func TestFileServer(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "b.tar.gz"), []byte("v1"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	outside := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(outside, []byte("secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	url := bundleServer(t, dir)
	first, body := get(t, url+"/b.tar.gz", nil)
	etag := first.Header.Get("ETag")
	if first.StatusCode != http.StatusOK || body != "v1" || etag == "" {
		t.Fatalf("first GET: %d %q etag %q", first.StatusCode, body, etag)
	}
	if ct := first.Header.Get("Content-Type"); ct != remote.LongPollContentType {
		t.Errorf("Content-Type %q, want %q (announces long polling)", ct, remote.LongPollContentType)
	}

	for _, tc := range []struct {
		name     string
		path     string
		hdr      map[string]string
		code     int
		minDelay time.Duration
		maxDelay time.Duration
	}{
		{"current etag", "/b.tar.gz", map[string]string{"If-None-Match": etag}, http.StatusNotModified, 0, time.Second},
		{"etag among superseded ones", "/b.tar.gz", map[string]string{"If-None-Match": `"old", ` + etag}, http.StatusNotModified, 0, time.Second},
		{"stale etag", "/b.tar.gz", map[string]string{"If-None-Match": `"old"`}, http.StatusOK, 0, time.Second},
		{"long poll, no change", "/b.tar.gz", map[string]string{"If-None-Match": etag, "Prefer": "modes=snapshot,delta;wait=1"}, http.StatusNotModified, 800 * time.Millisecond, 3 * time.Second},
		{"long poll, stale etag answers at once", "/b.tar.gz", map[string]string{"If-None-Match": `"old"`, "Prefer": "wait=30"}, http.StatusOK, 0, time.Second},
		{"missing file", "/nope.tar.gz", nil, http.StatusNotFound, 0, time.Second},
		{"directory", "/sub", nil, http.StatusNotFound, 0, time.Second},
		{"directory slash", "/sub/", nil, http.StatusNotFound, 0, time.Second},
		{"dot-dot", "/../" + filepath.Base(filepath.Dir(outside)) + "/secret", nil, http.StatusNotFound, 0, time.Second},
		{"symlink out of the directory", "/link", nil, http.StatusNotFound, 0, time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			resp, _ := get(t, url+tc.path, tc.hdr)
			took := time.Since(start)
			if resp.StatusCode != tc.code {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.code)
			}
			if took < tc.minDelay || took > tc.maxDelay {
				t.Fatalf("answered after %s, want between %s and %s", took, tc.minDelay, tc.maxDelay)
			}
		})
	}

	t.Run("long poll answered at a change", func(t *testing.T) {
		go func() {
			time.Sleep(300 * time.Millisecond)
			_ = remote.WriteFileAtomic(filepath.Join(dir, "b.tar.gz"), []byte("v2"))
		}()
		start := time.Now()
		resp, body := get(t, url+"/b.tar.gz", map[string]string{"If-None-Match": etag, "Prefer": "wait=20"})
		if resp.StatusCode != http.StatusOK || body != "v2" {
			t.Fatalf("got %d %q, want 200 v2", resp.StatusCode, body)
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Fatalf("change delivered after %s", took)
		}
		if resp.Header.Get("ETag") == etag {
			t.Fatal("ETag unchanged after the content changed")
		}
	})
}
