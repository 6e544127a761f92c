//go:build !unix

package cli

import "os"

// pollableStdio is the process's stdin and stdout as they are: the poller
// change of stdio_unix.go is for Unix pipes.
func pollableStdio() (in, out *os.File, restore func()) {
	return os.Stdin, os.Stdout, func() {}
}
