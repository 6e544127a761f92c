//go:build unix

package telemetry

import (
	"errors"
	"os"
	"syscall"
)

// removed reports whether f's file has no name left (it was unlinked, not
// renamed): what is written to it is lost when it is closed.
func removed(f *os.File) bool {
	st, err := f.Stat()
	if err != nil {
		return false
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	return ok && sys.Nlink == 0
}

// errLocked is lockFile's refusal: another open of the file holds its lock.
var errLocked = errors.New("another decision log writes this file and one of the two is hash-chained (its lock is held): give each writer its own file")

// lockFile takes f's advisory lock (flock, without waiting) for as long as f
// is open: exclusive for a hash-chained log, shared for a plain one. So two
// logs on one path are refused when either is chained (acgs serve and acgs
// gateway given the same DECISION_LOG, two gateways on a shared volume):
// records of the other writer between its records would break the chain at
// each one. Plain logs may share a file: each appends whole lines.
func lockFile(f *os.File, exclusive bool) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	how := syscall.LOCK_SH
	if exclusive {
		how = syscall.LOCK_EX
	}
	var lerr error
	if err := rc.Control(func(fd uintptr) {
		lerr = syscall.Flock(int(fd), how|syscall.LOCK_NB)
	}); err != nil {
		return err
	}
	if errors.Is(lerr, syscall.EWOULDBLOCK) {
		return errLocked
	}
	return lerr
}
