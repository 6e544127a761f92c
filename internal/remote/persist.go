package remote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/text/cases"
	"golang.org/x/text/unicode/norm"

	bundleplugin "github.com/open-policy-agent/opa/v1/plugins/bundle"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
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
// it, under <persistence_directory>/acgs-accepted/.
//
// At start, before the plugin loads anything, OPA's own files are read as
// the plugin reads them (signatures verified), activated into a store of
// their own and handed to the engine (opaSet): the engine as configured
// now may accept what it refused before (an instance restarted with the
// constitutional hash of the bundle its server published, during an
// outage). Only if it refuses them, or they cannot be read (a file cut
// short: OPA does not sync it), are the accepted copies put in OPA's
// place (restore), so that the plugin's store, from which every later
// activation is read, holds what the engine takes. When OPA's start cannot
// make the whole set (a bundle not persisted, or with no file) nothing can
// be handed to the engine: the accepted copies are put in OPA's place
// where they differ, as before, and are hash-checked once the set is
// complete.

// persistence is where the bundles with persist: true are kept.
type persistence struct {
	dir   string   // OPA's persistence directory
	names []string // the bundles with persist: true
}

// persistableName says why bundle name cannot be persisted under its own
// directory of the persistence directory (OPA's file and the accepted
// copy's join it unchecked: <dir>/bundles/<name>/bundle.tar.gz and
// <dir>/acgs-accepted/<name>/bundle.tar.gz), nil when it can. A name may
// nest ("team/authz" is kept beside "team", in a directory of its own
// inside team's), but not name another directory than its own: empty, an
// absolute path, an element empty (a//b, a trailing /), "." or ".." (one
// outside the persistence directory, or another bundle's), nor
// "bundle.tar.gz" in any case (team/bundle.tar.gz: team's file).
func persistableName(name string) error {
	return persistableNameOn(runtime.GOOS, name)
}

// persistableNameOn is persistableName as on operating system goos. On
// Windows both / and \ separate path elements, and OPA's plugin escapes
// its other reserved characters (< > : " | ? *) with a \ in the name it
// persists under, a path this package does not rebuild: they are
// refused. So are what Windows' path API does not take as it is: control
// characters, an element of dots and spaces only (it drops an element's
// trailing dots and spaces, so ".. " is ".."), one that is bundle.tar.gz
// once they are dropped, and a device name (CON, NUL, COM1, in any case,
// with any extension: nul.txt opens the device, not a file). Elsewhere
// all of these are characters of a name like any other: they are rules
// of that API, which a process on another system writing to a volume
// from Windows (NTFS, an SMB share) does not go through.
func persistableNameOn(goos, name string) error {
	windows := goos == "windows"
	isSep := func(c rune) bool { return c == '/' }
	if windows {
		if i := strings.IndexAny(name, `<>:"|?*`); i >= 0 {
			return fmt.Errorf("its name %q holds %q, which OPA escapes on Windows", name, name[i])
		}
		if i := strings.IndexFunc(name, func(c rune) bool { return c < 0x20 }); i >= 0 {
			return fmt.Errorf("its name %q holds the control character %q, which Windows does not allow in a file name", name, name[i])
		}
		isSep = func(c rune) bool { return c == '/' || c == '\\' }
	}
	if name == "" {
		return errors.New("its name is empty")
	}
	if isSep(rune(name[0])) {
		return fmt.Errorf("its name %q is an absolute path", name)
	}
	start := 0
	for i, c := range name + "/" {
		if !isSep(c) {
			continue
		}
		elem := name[start:i]
		opened := elem // the element Windows opens
		if windows {
			opened = strings.TrimRight(elem, ". ")
		}
		switch {
		case elem == "" || elem == "." || elem == ".." || opened == "":
			return fmt.Errorf("its name %q has a path element %q", name, elem)
		case strings.EqualFold(opened, "bundle.tar.gz"): // in any case: see distinctPersistedNames
			return fmt.Errorf("its name %q has a path element %q (another bundle's persisted file)", name, elem)
		case windows && windowsDevice(opened):
			return fmt.Errorf("its name %q has a path element %q, which names a device on Windows", name, elem)
		}
		start = i + 1
	}
	return nil
}

// windowsDevices are the names Windows reserves for devices, in any case
// and with any extension (learn.microsoft.com: Naming Files, Paths, and
// Namespaces), with the console's CONIN$ and CONOUT$.
var windowsDevices = []string{"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$",
	"COM0", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7", "COM8", "COM9", "COM\u00b9", "COM\u00b2", "COM\u00b3",
	"LPT0", "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9", "LPT\u00b9", "LPT\u00b2", "LPT\u00b3"}

// windowsDevice reports whether path element elem (its trailing dots and
// spaces dropped) names a device on Windows: its base, before the first
// dot and without trailing spaces, is a reserved name.
func windowsDevice(elem string) bool {
	base, _, _ := strings.Cut(elem, ".")
	base = strings.TrimRight(base, " ")
	for _, d := range windowsDevices {
		if strings.EqualFold(base, d) {
			return true
		}
	}
	return false
}

// distinctPersistedNames says which two of the persisted bundles' names
// would share their files on operating system goos, nil when none do:
// those with one persistedKey. Each bundle's file and accepted copy would
// overwrite the other's, and a restart would load one bundle's copy as
// the other.
func distinctPersistedNames(goos string, names []string) error {
	seen := make(map[string]string, len(names))
	for _, name := range names {
		k := persistedKey(goos, name)
		if other, ok := seen[k]; ok {
			return fmt.Errorf("bundles %q and %q have persist: true, but their names differ only by case, Unicode normalisation "+
				"or (on Windows) separators and trailing dots or spaces: on a case- or normalisation-insensitive file system "+
				"(macOS, Windows) they would be persisted to the same files", other, name)
		}
		seen[k] = name
	}
	return nil
}

// persistedKey is bundle name folded as the file systems it may be
// persisted on fold names, on operating system goos: normalised (macOS's
// APFS and HFS+ take NFC "\u00e9" and NFD "e\u0301" for one name), then
// case-folded (macOS's and Windows' by default, a casefold mount). These
// are the file systems' rules, and a state directory can be one mounted
// from another system (a macOS host's directory in a Linux container,
// say): they apply on every system. On Windows only, by the rules of its
// path API (persistableNameOn), \ is / and each element's trailing dots
// and spaces are dropped ("authz." is "authz").
func persistedKey(goos, name string) string {
	k := norm.NFC.String(cases.Fold().String(norm.NFC.String(name)))
	if goos != "windows" {
		return k
	}
	elems := strings.Split(strings.ReplaceAll(k, `\`, "/"), "/")
	for i, e := range elems {
		elems[i] = strings.TrimRight(e, ". ")
	}
	return strings.Join(elems, "/")
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
// persisted it. A copy renamed into OPA's place is restored even if its
// directory could not be synced then (the plugin loads it): unsynced says
// so, err is for the bundles not restored.
func (p *persistence) restore() (restored []string, unsynced, err error) {
	var errs copyErrors
	for _, name := range p.names {
		accepted, err := os.ReadFile(p.acceptedPath(name))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			errs.failed = append(errs.failed, err)
			continue
		}
		dst := p.opaPath(name)
		if cur, err := os.ReadFile(dst); err == nil && bytes.Equal(cur, accepted) {
			continue
		}
		if errs.add(writeCopy(p.dir, dst, bytes.NewReader(accepted)), "restoring the last accepted bundle %q", name) {
			restored = append(restored, name)
		}
	}
	unsynced, err = errs.join()
	return restored, unsynced, err
}

// errIncomplete is opaSet's answer when OPA's persisted files cannot make
// the whole bundle set: nothing can be handed to the engine.
var errIncomplete = errors.New("not every bundle has a persisted file")

// opaSet reads OPA's persisted file of every bundle in all, as OPA's
// plugin reads them at start (each with its signing configuration, in the
// runtime's Rego version), activates them together into a store of their
// own and reads the set back as fromStore does (what activateStored would
// hand the engine once the plugin has loaded them). It returns readers of
// the files' contents too, to keep as accepted copies. errIncomplete: a
// bundle is not persisted or has no file; a *setRefusal: the set read
// back is refused; any other error: a file could not be read, verified or
// activated.
func (p *persistence) opaSet(ctx context.Context, all []string, sources map[string]*bundleplugin.Source,
	popts ast.ParserOptions) (*bundle.Bundle, []string, map[string]io.Reader, error) {
	raws := map[string]io.Reader{}
	bundles := map[string]*bundle.Bundle{}
	for _, name := range all {
		src, ok := sources[name]
		if !ok || !src.Persist {
			return nil, nil, nil, errIncomplete
		}
		raw, err := os.ReadFile(p.opaPath(name))
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil, nil, errIncomplete
		}
		if err != nil {
			return nil, nil, nil, err
		}
		r := bundle.NewCustomReader(bundle.NewTarballLoaderWithBaseURL(bytes.NewReader(raw), "")).
			WithRegoVersion(popts.RegoVersion)
		if src.Signing != nil {
			r = r.WithBundleVerificationConfig(src.Signing)
		}
		b, err := r.Read()
		if err != nil {
			return nil, nil, nil, fmt.Errorf("reading persisted bundle %q: %w", name, err)
		}
		raws[name], bundles[name] = bytes.NewReader(raw), &b
	}
	store := inmem.New()
	params := storage.WriteParams
	params.Context = storage.NewContext()
	err := storage.Txn(ctx, store, params, func(txn storage.Transaction) error {
		return bundle.Activate(&bundle.ActivateOpts{
			Ctx: ctx, Store: store, Txn: txn, TxnCtx: params.Context,
			Compiler: ast.NewCompiler().WithPathConflictsCheck(storage.NonEmpty(ctx, store, txn)),
			Metrics:  metrics.New(), Bundles: bundles, ParserOptions: popts,
		})
	})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("activating the persisted bundles: %w", err)
	}
	b, names, err := fromStore(ctx, store, popts)
	if err != nil {
		return nil, nil, nil, &setRefusal{err: err}
	}
	return b, names, raws, nil
}

// setRefusal is opaSet's error when the bundles were read and activated
// but do not make one policy (they declare different constitutional
// hashes, say): what activateStored refuses, and records as a refusal,
// once the plugin has loaded them.
type setRefusal struct{ err error }

func (e *setRefusal) Error() string { return e.err.Error() }
func (e *setRefusal) Unwrap() error { return e.err }

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

// keep copies srcs (the files open returned, or the contents opaSet
// read) of the bundles named (those the engine accepted) to their
// accepted copies. Each source is read to its end: a second keep of the
// same srcs would write empty copies. unsynced: copies kept whose directory could not be
// synced; err: copies not kept.
func (p *persistence) keep(srcs map[string]io.Reader, names []string) (unsynced, err error) {
	var errs copyErrors
	for _, name := range names {
		if src, ok := srcs[name]; ok {
			errs.add(writeCopy(p.dir, p.acceptedPath(name), src), "keeping a copy of accepted bundle %q", name)
		}
	}
	return errs.join()
}

// copyErrors collects writeCopy's errors, those of copies in place but
// with their directory unsynced apart from those of copies not written.
type copyErrors struct{ unsynced, failed []error }

// add records writeCopy's error err about bundle name (what: the copy,
// a format for name) and reports whether the copy is in place.
func (c *copyErrors) add(err error, what, name string) (inPlace bool) {
	if err == nil {
		return true
	}
	err = fmt.Errorf(what+": %w", name, err)
	var u *unsyncedError
	if errors.As(err, &u) {
		c.unsynced = append(c.unsynced, err)
		return true
	}
	c.failed = append(c.failed, err)
	return false
}

func (c *copyErrors) join() (unsynced, failed error) {
	return errors.Join(c.unsynced...), errors.Join(c.failed...)
}

// unsyncedError is writeCopy's error when the copy was renamed into place
// but its directory, or one above it, could not be synced: the copy is there (what is read
// from the path now), though a power loss may undo the rename.
type unsyncedError struct{ err error }

func (e *unsyncedError) Error() string {
	return "the copy is in place, but its directory could not be synced (a power loss may undo it): " + e.err.Error()
}

func (e *unsyncedError) Unwrap() error { return e.err }

func closeAll(files map[string]*os.File) {
	for _, f := range files {
		_ = f.Close()
	}
}

// writeCopy writes src to path, inside directory root (the persistence
// directory), through a synced temporary file renamed into place (mode
// 0600, as OPA persists bundles), then syncs the directories from path's
// up to root (syncUp). If only those syncs fail the copy is in place: the
// error is an *unsyncedError.
func writeCopy(root, path string, src io.Reader) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
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
	if err := syncUp(root, dir); err != nil {
		return &unsyncedError{err: err}
	}
	return nil
}

// syncUp syncs dir and every directory above it up to root, root
// included. The rename is an entry of dir, and each directory created
// for it an entry of its parent, lost in a power loss until that
// directory is synced (the previous copy, or none, would be found after
// it). All are synced at every write, not only when created: a directory
// whose parent's sync failed once is there for every later write, which
// must sync that parent again rather than take it for durable (the
// failure was logged once, then lost). root is OPA's: its plugin creates
// it before any copy is written.
func syncUp(root, dir string) error {
	root = filepath.Clean(root)
	var errs []error
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		if err := syncDir(d); err != nil {
			errs = append(errs, err)
		}
		if d == root || filepath.Dir(d) == d {
			return errors.Join(errs...)
		}
	}
}
