//go:build unix

package testenv

import (
	"os"
	"path/filepath"
	"syscall"
)

// lockName is the lock file in a build directory, held by its test binary.
const lockName = ".lock"

// lockDir marks dir as this process's for as long as it runs, by a lock file
// it keeps locked (flock). The file is locked before it is moved into place,
// so that removeIfOrphaned never finds it free while its owner lives.
func lockDir(dir string) (*os.File, error) {
	f, err := os.CreateTemp(dir, lockName+"-*")
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, err
	}
	if err := os.Rename(f.Name(), filepath.Join(dir, lockName)); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// removeIfOrphaned removes dir when its lock file is there and free: the
// process that made it is gone.
func removeIfOrphaned(dir string) {
	f, err := os.Open(filepath.Join(dir, lockName))
	if err != nil {
		return
	}
	defer f.Close()
	if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
		_ = os.RemoveAll(dir)
	}
}
