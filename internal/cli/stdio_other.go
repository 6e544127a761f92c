//go:build !linux

package cli

import "os"

// pollableStdio is the process's stdin and stdout as they are: the poller
// change of stdio_linux.go was made, and measured, on Linux (and on Darwin
// the runtime keeps FIFOs out of kqueue, golang/go#24164).
func pollableStdio() (in, out *os.File, restore func()) {
	return os.Stdin, os.Stdout, func() {}
}
