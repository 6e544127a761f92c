package remote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"

	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/compile"
	"github.com/open-policy-agent/opa/v1/loader"
)

// BuildOptions say how Build writes a bundle.
type BuildOptions struct {
	// Revision overrides the manifest's revision when set.
	Revision string
	// SigningKey signs the bundle when set: a PEM private key (or HMAC
	// secret), or a file holding one, as `opa build --signing-key` takes.
	SigningKey string
	// SigningAlg is the JWT algorithm (default RS256).
	SigningAlg string
	// KeyID is put in the signature's kid header when set; verifiers then
	// look that key up instead of their configured keyid.
	KeyID string
	// Ignore leaves out files and directories whose names match any of these
	// shell patterns (as `opa build --ignore`), e.g. "*_test.rego".
	Ignore []string
}

// Build writes dir as a .tar.gz bundle to w with OPA's compiler, exactly as
// `opa build -b dir [--signing-key ...]` does: modules are checked and
// formatted, the directory's .manifest is kept, and a signed bundle carries
// OPA's .signatures.json, so OPA's verification (ours included) accepts it.
func Build(ctx context.Context, dir string, w io.Writer, o BuildOptions) error {
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("bundle directory: %w", err)
	}
	if !st.IsDir() {
		return fmt.Errorf("bundle directory: %s is not a directory", dir)
	}
	// Read through an fs.FS rooted at dir so the archive's paths are relative
	// to the bundle root (/acgs/main.rego), not to wherever it was built.
	c := compile.New().WithFS(os.DirFS(dir)).WithPaths(".").WithAsBundle(true).WithOutput(w)
	if o.Revision != "" {
		c = c.WithRevision(o.Revision)
	}
	if len(o.Ignore) > 0 {
		for _, p := range o.Ignore {
			if _, err := path.Match(p, ""); err != nil {
				return fmt.Errorf("--ignore %q: %w", p, err)
			}
		}
		// The filter `opa build --ignore` uses: the base name matched at depth >= 1.
		filters := make([]loader.Filter, len(o.Ignore))
		for i, p := range o.Ignore {
			filters[i] = loader.GlobExcludeName(p, 1)
		}
		c = c.WithFilter(func(abspath string, info fs.FileInfo, depth int) bool {
			for _, f := range filters {
				if f(abspath, info, depth) {
					return true
				}
			}
			return false
		})
	}
	if o.SigningKey != "" {
		c = c.WithBundleSigningConfig(bundle.NewSigningConfig(o.SigningKey, o.SigningAlg, "")).
			WithBundleVerificationKeyID(o.KeyID)
	} else if o.SigningAlg != "" || o.KeyID != "" {
		return errors.New("--signing-alg and --signing-key-id need --signing-key")
	}
	if err := c.Build(ctx); err != nil {
		return fmt.Errorf("building bundle from %s: %w", dir, err)
	}
	return nil
}

// BuildFile builds dir into the file out atomically (written beside it,
// then renamed), so a bundle server never serves a half-written archive.
func BuildFile(ctx context.Context, dir, out string, o BuildOptions) error {
	var buf bytes.Buffer
	if err := Build(ctx, dir, &buf, o); err != nil {
		return err
	}
	return WriteFileAtomic(out, buf.Bytes())
}

// WriteFileAtomic writes data to path through a temporary file in the same
// directory and a rename.
func WriteFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
