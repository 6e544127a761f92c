//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package telemetry

import (
	"errors"
	"os"
	"syscall"
)

// lockFile takes f's advisory lock (flock, without waiting) for as long as f
// is open: exclusive for a hash-chained log, shared for a plain one. So two
// logs on one path are refused when either is chained (acgs serve and acgs
// gateway given the same DECISION_LOG, two gateways on a shared volume):
// records of the other writer between its records would break the chain at
// each one. Plain logs may share a file: each appends whole lines. It
// returns errLocked when another open of the file holds the lock, and
// another error when the file system takes no locks (NFS without its lock
// manager: ENOLCK; some FUSE file systems).
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
