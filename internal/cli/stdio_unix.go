//go:build unix

package cli

import (
	"os"

	"golang.org/x/sys/unix"
)

// pollableStdio returns the process's stdin and stdout for a stdio agent,
// each as a file the runtime's network poller waits on when it is a pipe or
// a socket, and restore, which puts them back in blocking mode.
//
// An agent that starts `acgs gateway` as its child hands it the ends of two
// pipes in blocking mode, and os.Stdin and os.Stdout keep them so: a read
// that waits for the agent's next message then holds a thread and, with
// GOMAXPROCS=1 (a gateway on its own CPU), the only P, until the runtime's
// monitor takes it back, and every call waited on that. With the poller
// the gateway answered 0.68-0.75 of the direct path's calls instead of
// 0.53-0.59 on its own CPU, added p50 191-282 us instead of 301-406
// (BenchmarkOverheadOwnCPU/stdio, docs/performance.md).
//
// A terminal or a regular file is left as it is: a terminal's mode is
// shared with the shell, and a regular file cannot be polled. The files
// made here stay referenced for the process's life (pollableFiles: their
// finalizers would close fds 0 and 1), and os.Stdin and os.Stdout are left
// as they are, on the same fds: nothing else reads stdin or writes stdout
// in stdio mode (it would corrupt the agent's stream).
func pollableStdio() (in, out *os.File, restore func()) {
	var made []int
	poll := func(f *os.File) *os.File {
		fd := int(f.Fd())
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return f
		}
		if m := st.Mode & unix.S_IFMT; m != unix.S_IFIFO && m != unix.S_IFSOCK {
			return f
		}
		if err := unix.SetNonblock(fd, true); err != nil {
			return f
		}
		made = append(made, fd)
		p := os.NewFile(uintptr(fd), f.Name())
		pollableFiles = append(pollableFiles, p)
		return p
	}
	in, out = poll(os.Stdin), poll(os.Stdout)
	return in, out, func() {
		// The pipes' other holders (a shell pipeline writing to the same
		// stdout) expect blocking mode back.
		for _, fd := range made {
			_ = unix.SetNonblock(fd, false)
		}
	}
}

// pollableFiles holds what pollableStdio made, never to be finalized.
var pollableFiles []*os.File
