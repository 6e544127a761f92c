package remote

import (
	"errors"
	"testing"
)

// FailSyncDir makes the directory sync fail for every directory fail
// reports, until the test ends (the others are synced as before).
func FailSyncDir(tb testing.TB, fail func(dir string) bool) {
	tb.Helper()
	orig := syncDir
	syncDir = func(dir string) error {
		if fail(dir) {
			return errors.New("injected directory sync failure")
		}
		return orig(dir)
	}
	tb.Cleanup(func() { syncDir = orig })
}
