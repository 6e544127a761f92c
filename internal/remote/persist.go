package remote

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Bundles with "persist: true" survive a restart during a bundle server
// outage. OPA's plugin writes a downloaded bundle to
// <persistence_directory>/bundles/<name>/bundle.tar.gz once it has taken
// it into its store, before this package's listener hands it to the
// engine: a bundle the engine then refuses (another constitutional hash)
// replaced the last accepted one on disk, and an instance restarted during
// an outage loaded the refused bundle, refused it again and served
// nothing. OPA's own file is the only place its downloaded archive (with
// its signatures) is kept, so rather than persisting bundles itself this
// package keeps a copy of each bundle's file once the engine has accepted
// it, under <persistence_directory>/acgs-accepted/, and puts that copy
// back in OPA's place before the plugin starts: what is loaded at start is
// the last bundle set the engine accepted, verified by OPA and hash-checked
// by the engine as any bundle is.

// persistence is where the bundles with persist: true are kept.
type persistence struct {
	dir   string   // OPA's persistence directory
	names []string // the bundles with persist: true
}

// persistableName says why bundle name cannot be one directory of the
// persistence directory (OPA's and the accepted copy's paths join it
// unchecked), nil when it can: a name with a path separator, "..", "."
// or empty would name another directory than its own (one outside the
// persistence directory, or another bundle's).
func persistableName(name string) error {
	switch {
	case name == "":
		return errors.New("its name is empty")
	case name == "." || name == "..":
		return fmt.Errorf("its name %q is a directory reference", name)
	case strings.ContainsAny(name, `/\`):
		return errors.New("its name has a path separator (/ or \\)")
	}
	return nil
}

// opaPath is where OPA's plugin persists bundle name.
func (p *persistence) opaPath(name string) string {
	return filepath.Join(p.dir, "bundles", name, "bundle.tar.gz")
}

// acceptedPath is where the copy of bundle name the engine last accepted is kept.
func (p *persistence) acceptedPath(name string) string {
	return filepath.Join(p.dir, "acgs-accepted", name, "bundle.tar.gz")
}

// restore puts the last accepted copy of every persisted bundle in OPA's
// place, where it differs, and returns the bundles it restored. A bundle
// with no accepted copy (persisted by an earlier version) is left as OPA
// persisted it.
func (p *persistence) restore() ([]string, error) {
	var restored []string
	var errs []error
	for _, name := range p.names {
		accepted, err := os.ReadFile(p.acceptedPath(name))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		dst := p.opaPath(name)
		if cur, err := os.ReadFile(dst); err == nil && bytes.Equal(cur, accepted) {
			continue
		}
		if err := writeCopy(dst, bytes.NewReader(accepted)); err != nil {
			errs = append(errs, fmt.Errorf("restoring the last accepted bundle %q: %w", name, err))
			continue
		}
		restored = append(restored, name)
	}
	return restored, errors.Join(errs...)
}

// open opens OPA's persisted file of every persisted bundle that has one.
// activateStored opens them before it reads the plugin's store, so that a
// file the plugin replaces meanwhile (a polled download during a reload) is
// not taken for part of what the engine accepted; the open file keeps the
// content it had.
func (p *persistence) open() map[string]*os.File {
	files := map[string]*os.File{}
	for _, name := range p.names {
		if f, err := os.Open(p.opaPath(name)); err == nil {
			files[name] = f
		}
	}
	return files
}

// keep copies the files open returned of the bundles named (those the
// engine accepted) to their accepted copies.
func (p *persistence) keep(files map[string]*os.File, names []string) error {
	var errs []error
	for _, name := range names {
		if f, ok := files[name]; ok {
			if err := writeCopy(p.acceptedPath(name), f); err != nil {
				errs = append(errs, fmt.Errorf("keeping a copy of accepted bundle %q: %w", name, err))
			}
		}
	}
	return errors.Join(errs...)
}

func closeAll(files map[string]*os.File) {
	for _, f := range files {
		_ = f.Close()
	}
}

// writeCopy writes src to path through a synced temporary file renamed
// into place (mode 0600, as OPA persists bundles), then syncs the
// directory: the rename, like every directory it created, is an entry of
// a directory, lost in a power loss until that directory is synced (the
// previous copy, or none, would be found after it).
func writeCopy(path string, src io.Reader) error {
	dir := filepath.Dir(path)
	if err := mkdirSynced(dir); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".bundle.tar.gz.*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, src); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	return syncDir(dir)
}

// mkdirSynced is os.MkdirAll(dir, 0o755) that syncs the parent of every
// directory it creates.
func mkdirSynced(dir string) error {
	if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
		return nil
	}
	parent := filepath.Dir(dir)
	if parent != dir {
		if err := mkdirSynced(parent); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil
		}
		return err
	}
	return syncDir(parent)
}
