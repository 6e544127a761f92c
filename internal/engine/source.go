package engine

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/open-policy-agent/opa/v1/bundle"
)

// MaxBundleBytes bounds every file read from a bundle archive, so that a
// hostile .tar.gz cannot exhaust memory.
const MaxBundleBytes = 64 << 20

// BundleSource produces a bundle to activate. Load is called at start and on every
// reload (SIGHUP, POST /v1/admin/reload).
type BundleSource interface {
	Load(ctx context.Context) (*bundle.Bundle, error)
	String() string
}

// FSSource reads a bundle from a file system, such as the embedded constitution.
type FSSource struct {
	FS   fs.FS
	Name string
}

// Load reads the bundle.
func (s FSSource) Load(context.Context) (*bundle.Bundle, error) {
	loader, err := bundle.NewFSLoader(s.FS)
	if err != nil {
		return nil, err
	}
	b, err := bundle.NewCustomReader(loader).WithProcessAnnotations(true).WithSizeLimitBytes(MaxBundleBytes).Read()
	if err != nil {
		return nil, fmt.Errorf("reading bundle %s: %w", s.Name, err)
	}
	return &b, nil
}

func (s FSSource) String() string { return s.Name }

// PathSource reads a bundle directory or a .tar.gz archive from disk.
type PathSource struct {
	Path string
	// Verify checks a signed bundle's .signatures.json with its keys, as
	// `opa run --verification-key` does; a bundle without signatures is
	// then refused. Nil: a signed bundle is refused (OPA's reader has no
	// key for it) unless SkipVerify reads it without checking.
	Verify     *bundle.VerificationConfig
	SkipVerify bool
}

// VerificationKey is the verification configuration of one key: key is
// PEM (a public key, or an HMAC secret) or the name of a file holding it;
// id is the key's id where a signature names none.
func VerificationKey(key, id, alg string) (*bundle.VerificationConfig, error) {
	if st, err := os.Stat(key); err == nil && st.Mode().IsRegular() {
		b, err := os.ReadFile(key)
		if err != nil {
			return nil, fmt.Errorf("verification key: %w", err)
		}
		key = string(b)
	} else if !strings.HasPrefix(alg, "HS") && !strings.Contains(key, "-----BEGIN") {
		// Only an HMAC secret is given inline as it is: anything else
		// that is neither PEM nor a file is a mistyped path, which would
		// otherwise surface as every signature failing to verify.
		// Not quoted: it may be a secret given with the wrong algorithm.
		return nil, fmt.Errorf("verification key: the value (%d characters) is neither a PEM key nor a readable file (%s keys are PEM; an HMAC secret needs an HS algorithm)", len(key), alg)
	}
	return bundle.NewVerificationConfig(map[string]*bundle.KeyConfig{id: {Key: key, Algorithm: alg}}, id, "", nil), nil
}

// reader is OPA's bundle reader over l with the source's verification.
func (s PathSource) reader(l bundle.DirectoryLoader) *bundle.Reader {
	r := bundle.NewCustomReader(l).WithProcessAnnotations(true).WithSizeLimitBytes(MaxBundleBytes)
	if s.Verify != nil {
		r = r.WithBundleVerificationConfig(s.Verify)
	}
	return r.WithSkipBundleVerification(s.SkipVerify)
}

// Load reads the bundle at Path; a regular file is read as a tarball. A
// symlinked Path (a "current" link swapped at deploy) is resolved once per
// load, so a swap during a load cannot mix two bundles, and the directory
// walk, which does not follow a symlinked root, sees the real directory.
// A Kubernetes ConfigMap or Secret volume is read through its ..data link
// (kubeletDataDir).
func (s PathSource) Load(context.Context) (*bundle.Bundle, error) {
	path, err := filepath.EvalSymlinks(s.Path)
	if err != nil {
		return nil, fmt.Errorf("policy bundle %s: %w", s.Path, err)
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("policy bundle %s: %w", s.Path, err)
	}
	if st.IsDir() {
		if path, err = kubeletDataDir(path); err != nil {
			return nil, fmt.Errorf("policy bundle %s: %w", s.Path, err)
		}
	}
	if st.IsDir() {
		b, err := s.reader(bundle.NewDirectoryLoader(path)).Read()
		if err != nil {
			return nil, fmt.Errorf("reading bundle directory %s: %w", s.Path, err)
		}
		return &b, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("policy bundle %s: %w", s.Path, err)
	}
	defer f.Close()
	return readTarball(f, filepath.Base(s.Path), MaxBundleBytes, s.reader)
}

func (s PathSource) String() string { return s.Path }

// kubeletDataDir is the directory to read for a bundle directory dir. The
// kubelet writes a ConfigMap or Secret volume as a hidden directory per
// version (..2026_01_02_03_04_05.123456789) holding the files, a ..data
// link to the current one, and at the top one link per key into ..data.
// The directory walk skips the links and reads the hidden directory as
// data under its own name, which no manifest root allows: the bundle was
// refused. The real directory behind ..data holds the files at their
// paths, and resolving the link once per load reads one version whole
// while the kubelet swaps it. A directory without a ..data link is read
// as it is.
func kubeletDataDir(dir string) (string, error) {
	link := filepath.Join(dir, "..data")
	st, err := os.Lstat(link)
	if err != nil || st.Mode()&fs.ModeSymlink == 0 {
		return dir, nil //nolint:nilerr // no ..data link: not a kubelet volume
	}
	real, err := filepath.EvalSymlinks(link)
	if err != nil {
		return "", err
	}
	return real, nil
}

// ReadTarball reads a bundle from .tar.gz bytes with OPA's reader, which
// rejects path traversal. MaxBundleBytes bounds the archive, every member
// (declared and actual size) and the whole archive decompressed, so that a
// hostile .tar.gz can exhaust neither memory nor the process.
func ReadTarball(r io.Reader, name string) (*bundle.Bundle, error) {
	return readTarball(r, name, MaxBundleBytes, nil)
}

// readTarball is ReadTarball with the limit, and with newReader building
// OPA's reader over the archive's loader (nil: an unverifying one).
func readTarball(r io.Reader, name string, limit int64, newReader func(bundle.DirectoryLoader) *bundle.Reader) (*bundle.Bundle, error) {
	data, err := ReadArchive(r, name, limit)
	if err != nil {
		return nil, err
	}
	// The loader needs the limit itself: otherwise it preallocates whatever
	// size a member's header declares before the reader's check runs.
	loader := bundle.NewTarballLoaderWithBaseURL(bytes.NewReader(data), "").WithSizeLimitBytes(limit)
	var rd *bundle.Reader
	if newReader != nil {
		rd = newReader(loader)
	} else {
		rd = bundle.NewCustomReader(loader).WithProcessAnnotations(true).WithSizeLimitBytes(limit)
	}
	b, err := rd.Read()
	if err != nil {
		return nil, fmt.Errorf("reading bundle %s: %w", name, err)
	}
	for _, m := range b.Modules {
		if strings.Contains(m.Path, "..") {
			return nil, fmt.Errorf("bundle %s: module path %q escapes the bundle", name, m.Path)
		}
	}
	return &b, nil
}

// ReadArchive reads .tar.gz bytes from r, at most limit of them, and
// checks them with CheckTarball.
func ReadArchive(r io.Reader, name string, limit int64) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("reading bundle %s: %w", name, err)
	}
	if err := CheckTarball(data, name, limit); err != nil {
		return nil, err
	}
	return data, nil
}

// CheckTarball refuses .tar.gz bytes that are larger than limit (in this
// service MaxBundleBytes) or decompress to more, before OPA's reader sees
// them: that reader bounds each member but not their sum (a gzip bomb
// spread over many members). Remote bundle downloads pass through it as
// local archives do.
func CheckTarball(data []byte, name string, limit int64) error {
	if int64(len(data)) > limit {
		return fmt.Errorf("bundle %s is larger than %d bytes", name, limit)
	}
	br := bytes.NewReader(data)
	zr, err := gzip.NewReader(br)
	if err != nil {
		return fmt.Errorf("reading bundle %s: not a gzip archive: %w", name, err)
	}
	// Member by member, as OPA's reader decompresses them all. Bytes after
	// the last member that are not another member are left alone, as OPA
	// leaves them (its tar reader stops at the end of the archive).
	// The next member's header ends the loop when it is io.EOF, or
	// trailing bytes that are not a member.
	var n int64
	for more := true; more; more = zr.Reset(br) == nil {
		zr.Multistream(false)
		m, err := io.Copy(io.Discard, io.LimitReader(zr, limit+1-n))
		if err != nil {
			return fmt.Errorf("reading bundle %s: %w", name, err)
		}
		if n += m; n > limit {
			return fmt.Errorf("bundle %s decompresses to more than %d bytes", name, limit)
		}
	}
	return nil
}
