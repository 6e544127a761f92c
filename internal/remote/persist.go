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
// At start OPA's own files are loaded and handed to the engine first, as
// OPA would serve them: the engine as configured now may accept what it
// refused before (an instance restarted with the constitutional hash of
// the bundle its server published). Only when the engine refuses them are
// the accepted copies (read and verified as OPA reads its own files)
// handed over instead; OPA's files are left as they are. A copy is put in
// OPA's place only where OPA has no file.

// persistence is where the bundles with persist: true are kept.
type persistence struct {
	dir   string   // OPA's persistence directory
	names []string // the bundles with persist: true
}

// persistableName reports whether bundle name can be joined into the
// persistence directory's paths: one or more clean, relative path
// segments ("acgs", "team/authz"), nothing that leaves the directory or
// names it ("..", "a/../b", "/abs", ".", "").
func persistableName(name string) bool {
	return name != "." && filepath.IsLocal(name) && filepath.Clean(name) == name
}

// opaPath is where OPA's plugin persists bundle name.
func (p *persistence) opaPath(name string) string {
	return filepath.Join(p.dir, "bundles", name, "bundle.tar.gz")
}

// acceptedPath is where the copy of bundle name the engine last accepted is kept.
func (p *persistence) acceptedPath(name string) string {
	return filepath.Join(p.dir, "acgs-accepted", name, "bundle.tar.gz")
}

// restoreMissing puts the last accepted copy of every persisted bundle
// OPA has no file of in OPA's place, and returns the bundles it restored.
// Where OPA has a file it is left as it is: see accepted.
func (p *persistence) restoreMissing() ([]string, error) {
	var restored []string
	var errs []error
	for _, name := range p.names {
		if _, err := os.Stat(p.opaPath(name)); !errors.Is(err, fs.ErrNotExist) {
			continue
		}
		accepted, err := os.ReadFile(p.acceptedPath(name))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err == nil {
			err = writeCopy(p.opaPath(name), bytes.NewReader(accepted))
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("restoring the last accepted bundle %q: %w", name, err))
			continue
		}
		restored = append(restored, name)
	}
	return restored, errors.Join(errs...)
}

// accepted reads the bundle set to hand the engine when it refused what
// OPA loaded at start: for each of the configured bundles, its last
// accepted copy, else OPA's file, read and verified as OPA's plugin reads
// its persisted files (the bundle's signing configuration), activated into
// a store of its own and read back as fromStore does. It returns a nil
// bundle when there is no other set to try: a bundle is not persisted or
// has no file, or no accepted copy differs from OPA's file.
func (p *persistence) accepted(ctx context.Context, all []string, sources map[string]*bundleplugin.Source,
	popts ast.ParserOptions) (*bundle.Bundle, []string, error) {
	raws := map[string][]byte{}
	differs := false
	for _, name := range all {
		src, ok := sources[name]
		if !ok || !src.Persist {
			return nil, nil, nil
		}
		opa, opaErr := os.ReadFile(p.opaPath(name))
		acc, err := os.ReadFile(p.acceptedPath(name))
		switch {
		case err == nil:
			differs = differs || opaErr != nil || !bytes.Equal(acc, opa)
			raws[name] = acc
		case !errors.Is(err, fs.ErrNotExist):
			return nil, nil, err
		case opaErr == nil:
			raws[name] = opa
		default:
			return nil, nil, nil
		}
	}
	if !differs {
		return nil, nil, nil
	}
	bundles := map[string]*bundle.Bundle{}
	for name, raw := range raws {
		r := bundle.NewCustomReader(bundle.NewTarballLoaderWithBaseURL(bytes.NewReader(raw), "")).
			WithRegoVersion(popts.RegoVersion)
		if sig := sources[name].Signing; sig != nil {
			r = r.WithBundleVerificationConfig(sig)
		}
		b, err := r.Read()
		if err != nil {
			return nil, nil, fmt.Errorf("reading the last accepted bundle %q: %w", name, err)
		}
		bundles[name] = &b
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
		return nil, nil, fmt.Errorf("activating the last accepted bundles: %w", err)
	}
	return fromStore(ctx, store, popts)
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
			path := p.acceptedPath(name)
			removeStale(filepath.Dir(path)) // only this process writes there
			if err := writeCopy(path, f); err != nil {
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

// tmpPattern names writeCopy's temporary files.
const tmpPattern = ".bundle.tar.gz.*.tmp"

// removeStale removes the temporary files of writeCopy left in dir by a
// process that ended before it renamed them.
func removeStale(dir string) {
	stale, _ := filepath.Glob(filepath.Join(dir, tmpPattern))
	for _, f := range stale {
		_ = os.Remove(f)
	}
}

// writeCopy writes src to path through a synced temporary file renamed
// into place (mode 0600, as OPA persists bundles), and syncs the
// directory so that the rename outlives a crash.
func writeCopy(path string, src io.Reader) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, tmpPattern)
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
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
