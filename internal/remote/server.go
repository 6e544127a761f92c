package remote

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/acgs-lite/acgs/internal/engine"
)

// LongPollContentType is the content type by which a bundle server tells
// OPA's downloader that it supports long polling.
const LongPollContentType = "application/vnd.openpolicyagent.bundles"

// FileServer serves the files of a directory to OPA's bundle downloader:
// a strong ETag (SHA-256 of the content) on every file so that polling gets
// 304 Not Modified until the file changes, and long polling: a request with
// "Prefer: wait=N" whose If-None-Match names the current ETag is held until
// the file changes (answered 200 at once) or N seconds pass (304). Files are
// read whole per request, so publishing by rename (WriteFileAtomic) is seen
// atomically. Directory listings and paths outside Dir are refused.
type FileServer struct {
	Dir string
	// MaxWait caps the wait a client may ask for (default 60s).
	MaxWait time.Duration
	// Check is how often a held request looks at its file (default 100ms).
	Check time.Duration
	Log   *slog.Logger

	once sync.Once
	root *os.Root
	err  error
}

func (s *FileServer) open() (*os.Root, error) {
	s.once.Do(func() {
		s.root, s.err = os.OpenRoot(s.Dir)
		if s.MaxWait <= 0 {
			s.MaxWait = 60 * time.Second
		}
		if s.Check <= 0 {
			s.Check = 100 * time.Millisecond
		}
		if s.Log == nil {
			s.Log = slog.Default()
		}
	})
	return s.root, s.err
}

// Close releases the directory.
func (s *FileServer) Close() error {
	if s.root != nil {
		return s.root.Close()
	}
	return nil
}

type fileVersion struct {
	data    []byte
	etag    string
	modTime time.Time
}

func (s *FileServer) read(root *os.Root, name string) (fileVersion, error) {
	f, err := root.Open(name)
	if err != nil {
		return fileVersion{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fileVersion{}, err
	}
	if !st.Mode().IsRegular() {
		return fileVersion{}, fs.ErrNotExist
	}
	data, err := io.ReadAll(io.LimitReader(f, engine.MaxBundleBytes+1))
	if err != nil {
		return fileVersion{}, err
	}
	if len(data) > engine.MaxBundleBytes {
		return fileVersion{}, errors.New("file too large")
	}
	sum := sha256.Sum256(data)
	return fileVersion{data: data, etag: `"` + hex.EncodeToString(sum[:16]) + `"`, modTime: st.ModTime()}, nil
}

// ServeHTTP serves one file.
func (s *FileServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	root, err := s.open()
	if err != nil {
		http.Error(w, "bundle directory unavailable", http.StatusInternalServerError)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	name := strings.TrimPrefix(path.Clean("/"+r.URL.Path), "/")
	if name == "" || strings.HasSuffix(r.URL.Path, "/") {
		http.NotFound(w, r)
		return
	}
	v, err := s.read(root, name)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	if wait := preferWait(r.Header.Get("Prefer"), s.MaxWait); wait > 0 && matches(r.Header.Get("If-None-Match"), v.etag) {
		// Answer a little before the client's own deadline so that its 304 arrives.
		v = s.hold(r, root, name, v, wait-wait/10)
	}
	w.Header().Set("ETag", v.etag)
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("Content-Type", LongPollContentType)
	s.Log.Debug("bundle request", "path", name, "etag", v.etag, "if_none_match", r.Header.Get("If-None-Match"))
	http.ServeContent(w, r, name, v.modTime, bytes.NewReader(v.data))
}

// hold waits (at most wait, and no longer than the client stays) for the
// file to change, returning its newest version.
func (s *FileServer) hold(r *http.Request, root *os.Root, name string, cur fileVersion, wait time.Duration) fileVersion {
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	tick := time.NewTicker(s.Check)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return cur
		case <-deadline.C:
			return cur
		case <-tick.C:
			if v, err := s.read(root, name); err == nil && v.etag != cur.etag {
				return v
			}
		}
	}
}

// preferWait returns the wait=N of a Prefer header (OPA sends
// "modes=snapshot,delta;wait=N"), at most max, 0 when absent.
func preferWait(h string, max time.Duration) time.Duration {
	for _, part := range strings.FieldsFunc(h, func(r rune) bool { return r == ';' || r == ',' }) {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || !strings.EqualFold(k, "wait") {
			continue
		}
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n <= 0 {
			return 0
		}
		return min(time.Duration(n)*time.Second, max)
	}
	return 0
}

// matches reports whether an If-None-Match list names etag.
func matches(ifNoneMatch, etag string) bool {
	for _, t := range strings.Split(ifNoneMatch, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == etag || t == "*" {
			return true
		}
	}
	return false
}
