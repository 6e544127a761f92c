//go:build unix

package cli

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// stdioChildEnv makes the test binary a child that reports what
// pollableStdio did to its stdin and stdout (TestPollableStdio).
const stdioChildEnv = "ACGS_TEST_POLLABLE_STDIO_CHILD"

func init() {
	if os.Getenv(stdioChildEnv) == "" {
		return
	}
	mode := func(fd int) string {
		fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
		if err != nil {
			return "error"
		}
		if fl&unix.O_NONBLOCK != 0 {
			return "nonblocking"
		}
		return "blocking"
	}
	in, out, restore := pollableStdio()
	during := fmt.Sprintf("%s %s %t %t", mode(0), mode(1), in != os.Stdin, out != os.Stdout)
	// The pollable stdout carries a line; the pollable stdin reads to EOF.
	var buf [64]byte
	n, _ := in.Read(buf[:])
	restore()
	fmt.Fprintf(out, "during: %s read %q; after: %s %s\n", during, buf[:n], mode(0), mode(1))
	os.Exit(0)
}

// TestPollableStdio: pipes become the poller's (non-blocking, new files)
// for the run and blocking again after; a regular file is left alone.
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
		name      string
		fileStdin bool
		want      string
	}{
		// exec hands the child blocking pipes, as an agent does.
		{"pipes", false, `during: nonblocking nonblocking true true read "from a pipe"; after: blocking blocking`},
		{"regular file stdin", true, `during: blocking nonblocking false true read "from a file"; after: blocking blocking`},
	} {
		t.Run(c.name, func(t *testing.T) {
			cmd := exec.Command(exe, "-test.run", "^$")
			cmd.Env = append(os.Environ(), stdioChildEnv+"=1")
			if c.fileStdin {
				f, err := os.Open(regular)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				cmd.Stdin = f
			} else {
				cmd.Stdin = strings.NewReader("from a pipe")
			}
			got, err := cmd.Output()
			if err != nil {
				t.Fatalf("%v: %s", err, got)
			}
			if strings.TrimSpace(string(got)) != c.want {
				t.Errorf("got  %s\nwant %s", got, c.want)
			}
		})
	}
}
