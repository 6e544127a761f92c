package testenv

import (
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/acgs-lite/acgs/policies"
)

// ConstitutionFiles returns the embedded constitution as it is served (its
// Rego tests left out), slash path → content, with the parsed .manifest
// passed through edit first when edit is not nil (tests change its
// revision, hash or roots).
func ConstitutionFiles(tb testing.TB, edit func(manifest map[string]any)) map[string][]byte {
	tb.Helper()
	files := map[string][]byte{}
	err := fs.WalkDir(policies.Served, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(policies.Served, p)
		files[p] = b
		return err
	})
	if err != nil {
		tb.Fatal(err)
	}
	if edit != nil {
		var m map[string]any
		if err := json.Unmarshal(files[".manifest"], &m); err != nil {
			tb.Fatal(err)
		}
		edit(m)
		if files[".manifest"], err = json.Marshal(m); err != nil {
			tb.Fatal(err)
		}
	}
	return files
}

// WriteConstitution writes ConstitutionFiles(tb, edit) under dir, plus extra
// files (slash path → content), and returns dir.
func WriteConstitution(tb testing.TB, dir string, edit func(manifest map[string]any), extra map[string]string) string {
	tb.Helper()
	files := ConstitutionFiles(tb, edit)
	for p, content := range extra {
		files[p] = []byte(content)
	}
	for p, b := range files {
		dst := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	return dir
}
