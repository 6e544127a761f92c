//go:build unix

package telemetry

import (
	"errors"
	"os"
	"syscall"
)

// openNonblock opens a sink that is not a regular file without waiting:
// a FIFO with no reader is then ENXIO (noReader) instead of an open that
// blocks until one comes.
const openNonblock = syscall.O_NONBLOCK

// noReader reports whether err is the refusal of a non-blocking open of a
// FIFO that no process reads (or of a socket, which cannot be opened).
func noReader(err error) bool { return errors.Is(err, syscall.ENXIO) }

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
