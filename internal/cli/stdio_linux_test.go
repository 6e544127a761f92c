package cli

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/acgs-lite/acgs/internal/testenv"
)

// stdioChildEnv makes the test binary a child that reports what
// pollableStdio did with its stdin and stdout (TestPollableStdio): "1";
// "nonblocking-first", which sets its stdin non-blocking and runs itself
// again, as a gateway restarted by a wrapper after one that left the flag
// set; or "nonblocking-then-cleared", which does the same and then clears
// the flag (another holder of the description did), so that the runtime
// polls os.Stdin already and cannot poll another file on fd 0.
const stdioChildEnv = "ACGS_TEST_POLLABLE_STDIO_CHILD"

func init() {
	switch mode := os.Getenv(stdioChildEnv); mode {
	case "":
		return
	case "cleared":
		if err := unix.SetNonblock(0, false); err != nil {
			panic(err)
		}
	case "nonblocking-first", "nonblocking-then-cleared":
		if err := unix.SetNonblock(0, true); err != nil {
			panic(err)
		}
		exe, _ := os.Executable()
		next := "1"
		if mode == "nonblocking-then-cleared" {
			next = "cleared"
		}
		env := []string{stdioChildEnv + "=" + next}
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, stdioChildEnv+"=") {
				env = append(env, kv)
			}
		}
		panic(syscall.Exec(exe, os.Args, env))
	}
	mode := func(fd int) string {
		if nb, err := isNonblock(fd); err != nil {
			return "error"
		} else if nb {
			return "nonblocking"
		}
		return "blocking"
	}
	// A new fd must not reach the gateway's stdio upstreams: they would
	// hold the agent's pipes open past the gateway.
	cloexec := func(f *os.File) string {
		sc, err := f.SyscallConn()
		if err != nil {
			return "error"
		}
		got := "error"
		_ = sc.Control(func(fd uintptr) {
			switch fl, err := unix.FcntlInt(fd, unix.F_GETFD, 0); {
			case fd <= 1:
				got = "-"
			case err == nil && fl&unix.FD_CLOEXEC != 0:
				got = "cloexec"
			case err == nil:
				got = "inherited"
			}
		})
		return got
	}
	in, out, restore := pollableStdio()
	// A file made on fd 0 or 1 and dropped would close it when collected.
	runtime.GC()
	time.Sleep(10 * time.Millisecond) // finalizers run on their own goroutine
	runtime.GC()
	during := fmt.Sprintf("fds %s %s; polled %t %t; new %t %t (%s %s)", mode(0), mode(1), polled(in), polled(out), in != os.Stdin, out != os.Stdout, cloexec(in), cloexec(out))
	// The parent writes after a while: the read waits for it.
	got, err := io.ReadAll(in)
	restore()
	fmt.Fprintf(out, "during: %s; read %q %v; after: fds %s %s\n", during, got, err, mode(0), mode(1))
	os.Exit(0)
}

// socketStdin gives the child one end of a socket pair as stdin, as Node
// does, and writes to the other after a delay, then closes it.
func socketStdin(t *testing.T, cmd *exec.Cmd) func() {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	child := os.NewFile(uintptr(fds[0]), "child-end")
	cmd.Stdin = child
	return func() {
		_ = child.Close()
		go func() {
			time.Sleep(200 * time.Millisecond)
			_, _ = unix.Write(fds[1], []byte("from a socket"))
			_ = unix.Close(fds[1])
		}()
	}
}

// slowReader gives its data after a delay, then EOF.
type slowReader struct {
	data string
	done bool
}

func (r *slowReader) Read(p []byte) (int, error) {
	if r.done {
		return 0, io.EOF
	}
	time.Sleep(200 * time.Millisecond)
	r.done = true
	return copy(p, r.data), nil
}

// TestPollableStdio: stdin and stdout that are pipes are read and written
// through new descriptions in the poller, fds 0 and 1 untouched; a socket
// is set non-blocking for the run and blocking again after; a regular file
// is left alone; a stdin already non-blocking at start (the runtime polls
// it already) is used as it is. Each read waits for the parent's data.
func TestPollableStdio(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	regular := filepath.Join(t.TempDir(), "in")
	if err := os.WriteFile(regular, []byte("from a file"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		child string
		stdin func(t *testing.T, cmd *exec.Cmd) (started func())
		want  string
	}{
		{
			// exec hands the child blocking pipes, as an agent in Go does.
			name: "pipes", child: "1",
			stdin: func(_ *testing.T, cmd *exec.Cmd) func() {
				cmd.Stdin = &slowReader{data: "from a pipe"}
				return func() {}
			},
			want: `during: fds blocking blocking; polled true true; new true true (cloexec cloexec); read "from a pipe" <nil>; after: fds blocking blocking`,
		},
		{
			name: "regular file stdin", child: "1",
			stdin: func(t *testing.T, cmd *exec.Cmd) func() {
				f, err := os.Open(regular)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = f.Close() })
				cmd.Stdin = f
				return func() {}
			},
			want: `during: fds blocking blocking; polled false true; new false true (- cloexec); read "from a file" <nil>; after: fds blocking blocking`,
		},
		{
			// Node hands its child sockets.
			name: "socket stdin", child: "1",
			stdin: socketStdin,
			want:  `during: fds nonblocking blocking; polled true true; new true true (- cloexec); read "from a socket" <nil>; after: fds blocking blocking`,
		},
		{
			// socat and inetd give their child one socket as stdin and
			// stdout: setting stdin's flag sets stdout's.
			name: "one socket as stdin and stdout", child: "1",
			stdin: func(t *testing.T, cmd *exec.Cmd) func() {
				fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
				if err != nil {
					t.Fatal(err)
				}
				child := os.NewFile(uintptr(fds[0]), "child-end")
				parent := os.NewFile(uintptr(fds[1]), "parent-end")
				cmd.Stdin, cmd.Stdout = child, child
				return func() {
					_ = child.Close()
					go func() {
						time.Sleep(200 * time.Millisecond)
						_, _ = parent.Write([]byte("from a socket"))
						_ = unix.Shutdown(fds[1], unix.SHUT_WR)
						got, _ := io.ReadAll(parent)
						fmt.Fprint(cmd.Stderr, "\nstdout: ", string(got))
						_ = parent.Close()
					}()
				}
			},
			want: `during: fds nonblocking nonblocking; polled true true; new true true (- -); read "from a socket" <nil>; after: fds blocking blocking`,
		},
		{
			// The socket's file on fd 0 is not polled (the runtime polls
			// os.Stdin already): it is kept all the same, so that its
			// finalizer never closes fd 0.
			name: "socket stdin polled already", child: "nonblocking-then-cleared",
			stdin: socketStdin,
			want:  `during: fds blocking blocking; polled true true; new false true (- cloexec); read "from a socket" <nil>; after: fds blocking blocking`,
		},
		{
			name: "stdin non-blocking at start", child: "nonblocking-first",
			stdin: func(_ *testing.T, cmd *exec.Cmd) func() {
				cmd.Stdin = &slowReader{data: "from a pipe"}
				return func() {}
			},
			want: `during: fds nonblocking blocking; polled true true; new false true (- cloexec); read "from a pipe" <nil>; after: fds nonblocking blocking`,
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			cmd := exec.Command(exe, "-test.run", "^$")
			cmd.Env = append(os.Environ(), stdioChildEnv+"="+c.child)
			var stdout strings.Builder
			stderr := &testenv.SyncBuffer{}
			cmd.Stdout, cmd.Stderr = &stdout, stderr
			started := c.stdin(t, cmd)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			started()
			if err := cmd.Wait(); err != nil {
				t.Fatalf("%v: %s %s", err, stdout.String(), stderr.String())
			}
			got := stdout.String()
			if cmd.Stdout != &stdout { // the child wrote to the socket
				deadline := time.Now().Add(10 * time.Second)
				for !strings.Contains(stderr.String(), "\nstdout: ") && time.Now().Before(deadline) {
					time.Sleep(10 * time.Millisecond)
				}
				_, got, _ = strings.Cut(stderr.String(), "\nstdout: ")
			}
			if got = strings.TrimSpace(got); got != c.want {
				t.Errorf("got  %s\nwant %s", got, c.want)
			}
		})
	}
}
