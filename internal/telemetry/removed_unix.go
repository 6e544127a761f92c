//go:build unix

package telemetry

import (
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
