package remote

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/util"
)

// fromStore rebuilds one bundle from what OPA's bundle plugin activated into
// the manager's store: the stored modules (parsed with their recorded Rego
// version), a deep copy of the data under every bundle's roots, and a
// manifest. The plugin downloads lazily (data stays raw until written to the
// store), so the store, not the downloaded bundle, is where the activated
// content can be read whole; and it is exactly what `opa run` would serve.
//
// One bundle keeps its manifest. Several are merged: revisions joined as
// name@revision, roots united, and every one must declare the same
// metadata.constitutional_hash (the engine then checks it is the right one).
func fromStore(ctx context.Context, store storage.Store, popts ast.ParserOptions) (*bundle.Bundle, []string, error) {
	var (
		out   = &bundle.Bundle{Data: map[string]any{}}
		names []string
	)
	err := storage.Txn(ctx, store, storage.TransactionParams{}, func(txn storage.Transaction) error {
		var err error
		names, err = bundle.ReadBundleNamesFromStore(ctx, store, txn)
		if err != nil {
			return fmt.Errorf("reading activated bundle names: %w", err)
		}
		if len(names) == 0 {
			return fmt.Errorf("no bundle is activated in the plugin's store")
		}
		sort.Strings(names)
		manifests := make([]bundle.Manifest, len(names))
		for i, name := range names {
			v, err := store.Read(ctx, txn, bundle.ManifestStoragePath(name))
			if err != nil {
				return fmt.Errorf("reading the manifest of bundle %q: %w", name, err)
			}
			if err := decodeJSON(v, &manifests[i]); err != nil {
				return fmt.Errorf("decoding the manifest of bundle %q: %w", name, err)
			}
		}
		out.Manifest, err = mergeManifests(names, manifests)
		if err != nil {
			return err
		}
		if err := readData(ctx, store, txn, *out.Manifest.Roots, out.Data); err != nil {
			return err
		}
		out.Modules, err = readModules(ctx, store, txn, popts)
		return err
	})
	return out, names, err
}

// storedNames lists the bundles activated in store.
func storedNames(ctx context.Context, store storage.Store) ([]string, error) {
	var names []string
	err := storage.Txn(ctx, store, storage.TransactionParams{}, func(txn storage.Transaction) error {
		var err error
		names, err = bundle.ReadBundleNamesFromStore(ctx, store, txn)
		if storage.IsNotFound(err) {
			return nil
		}
		return err
	})
	return names, err
}

func mergeManifests(names []string, ms []bundle.Manifest) (bundle.Manifest, error) {
	if len(ms) == 1 {
		m := ms[0].Copy()
		m.Init()
		return m, nil
	}
	var (
		revs  []string
		roots []string
		hash  string
	)
	for i, m := range ms {
		h, _ := m.Metadata["constitutional_hash"].(string)
		if h == "" {
			return bundle.Manifest{}, fmt.Errorf("bundle %q: manifest declares no metadata.constitutional_hash (every bundle must)", names[i])
		}
		if hash != "" && h != hash {
			return bundle.Manifest{}, fmt.Errorf("bundle %q declares constitutional hash %s but bundle %q declares %s", names[i], h, names[0], hash)
		}
		hash = h
		revs = append(revs, names[i]+"@"+m.Revision)
		if m.Roots != nil {
			roots = append(roots, *m.Roots...)
		}
	}
	out := bundle.Manifest{Revision: strings.Join(revs, ","), Roots: &roots, Metadata: map[string]any{"constitutional_hash": hash}}
	return out, nil
}

// readData copies the data under roots into dst. The copy matters: the
// store's values are its own and change at the next activation, while the
// engine's snapshot must never change under readers.
func readData(ctx context.Context, store storage.Store, txn storage.Transaction, roots []string, dst map[string]any) error {
	for _, root := range roots {
		root = strings.Trim(root, "/")
		var path storage.Path
		if root != "" {
			path = storage.Path(strings.Split(root, "/"))
		}
		v, err := store.Read(ctx, txn, path)
		if storage.IsNotFound(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("reading data at root %q: %w", root, err)
		}
		var val any
		if err := decodeJSON(v, &val); err != nil {
			return fmt.Errorf("copying data at root %q: %w", root, err)
		}
		if root == "" {
			obj, ok := val.(map[string]any)
			if !ok {
				return fmt.Errorf("data at the empty root is not an object")
			}
			delete(obj, "system") // the store's own bookkeeping, not the bundle's data
			for k, x := range obj {
				dst[k] = x
			}
			continue
		}
		if err := insert(dst, path, val); err != nil {
			return fmt.Errorf("data at root %q: %w", root, err)
		}
	}
	return nil
}

func insert(dst map[string]any, path storage.Path, val any) error {
	node := dst
	for _, seg := range path[:len(path)-1] {
		next, ok := node[seg].(map[string]any)
		if !ok {
			if _, exists := node[seg]; exists {
				return fmt.Errorf("%q is not an object", seg)
			}
			next = map[string]any{}
			node[seg] = next
		}
		node = next
	}
	node[path[len(path)-1]] = val
	return nil
}

// readModules returns every stored policy, parsed with the Rego version OPA
// recorded for it (or the runtime's when it recorded none).
func readModules(ctx context.Context, store storage.Store, txn storage.Transaction, popts ast.ParserOptions) ([]bundle.ModuleFile, error) {
	ids, err := store.ListPolicies(ctx, txn)
	if err != nil {
		return nil, fmt.Errorf("listing activated policies: %w", err)
	}
	sort.Strings(ids)
	mods := make([]bundle.ModuleFile, 0, len(ids))
	for _, id := range ids {
		raw, err := store.GetPolicy(ctx, txn, id)
		if err != nil {
			return nil, fmt.Errorf("reading policy %s: %w", id, err)
		}
		opts := popts
		opts.ProcessAnnotation = true // entry points and their plan seeds are annotations
		v, err := store.Read(ctx, txn, storage.Path{"system", "modules", strings.Trim(id, "/"), "rego_version"})
		if err == nil {
			var n int
			if err := decodeJSON(v, &n); err != nil {
				return nil, fmt.Errorf("rego version of policy %s: %w", id, err)
			}
			if opts.RegoVersion, err = ast.RegoVersionFromIntStrict(n); err != nil {
				return nil, fmt.Errorf("rego version of policy %s: %w", id, err)
			}
		}
		m, err := ast.ParseModuleWithOpts(id, string(raw), opts)
		if err != nil {
			return nil, fmt.Errorf("parsing policy %s: %w", id, err)
		}
		raw = append([]byte(nil), raw...)
		mods = append(mods, bundle.ModuleFile{URL: id, Path: id, RelativePath: id, Raw: raw, Parsed: m})
	}
	return mods, nil
}

// decodeJSON converts a stored value (Go or AST) into dst through JSON, so
// dst shares nothing with the store and numbers stay json.Number as the
// bundle reader leaves them.
func decodeJSON(v any, dst any) error {
	if av, ok := v.(ast.Value); ok {
		x, err := ast.JSON(av)
		if err != nil {
			return err
		}
		v = x
	}
	bs, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return util.UnmarshalJSON(bs, dst)
}
