// Package policies embeds the built-in constitution: an ordinary OPA bundle
// (Rego, data.json, .manifest and Rego tests) that `acgs serve` activates when
// no other bundle is configured. The stock opa CLI ignores this file.
package policies

import (
	"embed"
	"io/fs"
	"slices"
	"strings"
)

// FS is the constitution bundle with its Rego tests (`acgs policy test`
// runs them). Its root is the bundle root.
//
//go:embed .manifest acgs
var FS embed.FS

// Served is the constitution as a service activates it: FS without its Rego
// tests. Served, they would be documents like any other (data.acgs.*_test):
// a query of data or data.acgs would run every test (about 0.5 s, past
// EVAL_TIMEOUT) and GET /v1/policies would list them.
var Served fs.FS = withoutTests{FS}

// withoutTests hides the *_test.rego files of an FS.
type withoutTests struct{ fs.ReadDirFS }

func isTest(name string) bool { return strings.HasSuffix(name, "_test.rego") }

func (f withoutTests) Open(name string) (fs.File, error) {
	if isTest(name) {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	return f.ReadDirFS.Open(name)
}

func (f withoutTests) ReadDir(name string) ([]fs.DirEntry, error) {
	entries, err := f.ReadDirFS.ReadDir(name)
	return slices.DeleteFunc(entries, func(e fs.DirEntry) bool { return isTest(e.Name()) }), err
}
