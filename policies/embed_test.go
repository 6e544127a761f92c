package policies_test

import (
	"io/fs"
	"strings"
	"testing"

	"github.com/acgs-lite/acgs/policies"
)

// Served is FS without the Rego tests: every other file is there, byte for
// byte, and a test file can be neither listed nor opened.
func TestServedLeavesOutTheTests(t *testing.T) {
	var tests, others int
	err := fs.WalkDir(policies.FS, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		want, _ := fs.ReadFile(policies.FS, p)
		got, err := fs.ReadFile(policies.Served, p)
		if strings.HasSuffix(p, "_test.rego") {
			tests++
			if err == nil {
				t.Errorf("%s: served", p)
			}
			return nil
		}
		others++
		if err != nil || string(got) != string(want) {
			t.Errorf("%s: %v, or not the embedded bytes", p, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if tests == 0 || others == 0 {
		t.Fatalf("%d test files and %d others embedded: the walk saw nothing", tests, others)
	}
	served := 0
	err = fs.WalkDir(policies.Served, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if strings.HasSuffix(p, "_test.rego") {
			t.Errorf("%s: listed", p)
		}
		served++
		return nil
	})
	if err != nil || served != others {
		t.Fatalf("walk of Served: %d files (%v), want %d", served, err, others)
	}
}
