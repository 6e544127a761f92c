package cli

import (
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// pollableStdio returns the process's stdin and stdout for a stdio agent,
// each as a file the runtime's network poller waits on when it is a pipe or
// a socket, and restore, to call when the agent is gone.
//
// An agent that starts `acgs gateway` as its child hands it pipes (Go's
// os/exec) or sockets (Node's child_process) in blocking mode, and
// os.Stdin and os.Stdout keep them so: a read that waits for the agent's
// next message then holds a thread and, with GOMAXPROCS=1 (a gateway on
// its own CPU), the only P, until the runtime's monitor takes it back, and
// every call waited on that. With the poller the gateway answered
// 0.68-0.75 of the direct path's calls instead of 0.53-0.59 on its own
// CPU, added p50 191-282 us instead of 301-406
// (BenchmarkOverheadOwnCPU/stdio, docs/performance.md).
//
// O_NONBLOCK belongs to the open file description, which the agent's
// wrapper shell or a restarted gateway may share, and a gateway that is
// killed restores nothing. So a pipe is opened again through
// /proc/self/fd, a description of its own that is non-blocking from the
// start, and fds 0 and 1 are left as they were. A socket cannot be opened
// so (nor a pipe of another user's): its description is set non-blocking
// and restore sets it back. A terminal or a regular file is left as it is
// (a terminal's mode is shared with the shell, a regular file cannot be
// polled), as is a file already non-blocking at start, which the runtime
// polls already. Each file made here is checked to be in the poller (a
// second registration of one fd fails silently): one that is not is undone
// and the original file used. Nothing else reads stdin or writes stdout in
// stdio mode (it would corrupt the agent's stream).
func pollableStdio() (in, out *os.File, restore func()) {
	// Both read before either changes: stdin and stdout may be one socket
	// (socat, inetd), whose flag setting stdin's would set for stdout too,
	// after the runtime made os.Stdout for a blocking fd.
	nbIn, errIn := isNonblock(unix.Stdin)
	nbOut, errOut := isNonblock(unix.Stdout)
	in, restoreIn := pollable(os.Stdin, unix.Stdin, unix.O_RDONLY, nbIn || errIn != nil)
	out, restoreOut := pollable(os.Stdout, unix.Stdout, unix.O_WRONLY, nbOut || errOut != nil)
	return in, out, func() { restoreIn(); restoreOut() }
}

// pollable is pollableStdio for one of fds 0 and 1, f being the os file on
// it (whose Fd method is not called: on a polled file it sets blocking
// mode); leave is true for a file non-blocking at start, or whose mode is
// unknown. A pipe that cannot be opened again (it belongs to another user:
// /proc checks the pipe's own mode, 0600) is treated as a socket.
func pollable(f *os.File, fd, access int, leave bool) (*os.File, func()) {
	nothing := func() {}
	var st unix.Stat_t
	if leave || unix.Fstat(fd, &st) != nil {
		return f, nothing
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFIFO:
		if nfd, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", fd), access|unix.O_NONBLOCK|unix.O_CLOEXEC, 0); err == nil {
			p := os.NewFile(uintptr(nfd), f.Name())
			if !polled(p) {
				_ = p.Close()
				return f, nothing
			}
			pollableFiles = append(pollableFiles, p)
			return p, nothing
		}
		fallthrough
	case unix.S_IFSOCK:
		if err := unix.SetNonblock(fd, true); err != nil {
			return f, nothing
		}
		// Kept before it is checked: even unused, its finalizer would
		// close fd 0 or 1 under os.Stdin or os.Stdout.
		p := os.NewFile(uintptr(fd), f.Name())
		pollableFiles = append(pollableFiles, p)
		if !polled(p) {
			_ = unix.SetNonblock(fd, false)
			return f, nothing
		}
		return p, func() { _ = unix.SetNonblock(fd, false) }
	}
	return f, nothing
}

// isNonblock reports whether fd's description is in non-blocking mode.
func isNonblock(fd int) (bool, error) {
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	return fl&unix.O_NONBLOCK != 0, err
}

// polled reports whether f is in the runtime's poller: only then does it
// take deadlines.
func polled(f *os.File) bool { return f.SetDeadline(time.Time{}) == nil }

// pollableFiles holds what pollableStdio made, never to be finalized: a
// socket's file is on fd 0 or 1 itself, which its finalizer would close.
var pollableFiles []*os.File
