package testenv

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// childHelperEnv makes TestChildCommandHelper act as a test binary that
// starts a child and dies without its cleanups.
const childHelperEnv = "TESTENV_CHILD_COMMAND_HELPER"

// TestChildCommandHelper is not a test: run by
// TestChildCommandDiesWithTheTestBinary as a test binary of its own, it
// starts `sleep` with ChildCommand, prints its pid and exits at once, as a
// test binary does on a timeout's panic.
func TestChildCommandHelper(t *testing.T) {
	if os.Getenv(childHelperEnv) != "1" {
		t.Skip("the helper process of TestChildCommandDiesWithTheTestBinary")
	}
	cmd := ChildCommand(context.Background(), "sleep", "300")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	_, _ = os.Stdout.WriteString("pid " + strconv.Itoa(cmd.Process.Pid) + "\n")
	os.Exit(0)
}

// TestChildCommandDiesWithTheTestBinary: a process started with
// ChildCommand does not outlive a test binary that exits without its
// cleanups (it is not left orphaned, holding its port).
func TestChildCommandDiesWithTheTestBinary(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the parent-death signal is Linux's")
	}
	if _, err := exec.LookPath("sleep"); err != nil {
		t.Skip("no sleep binary")
	}
	helper := exec.Command(os.Args[0], "-test.run=^TestChildCommandHelper$", "-test.count=1")
	helper.Env = append(os.Environ(), childHelperEnv+"=1")
	out, err := helper.Output()
	if err != nil {
		t.Fatalf("helper test binary: %v\n%s", err, out)
	}
	var pid int
	for sc := bufio.NewScanner(strings.NewReader(string(out))); sc.Scan(); {
		if p, ok := strings.CutPrefix(sc.Text(), "pid "); ok {
			pid, _ = strconv.Atoi(p)
		}
	}
	if pid <= 0 {
		t.Fatalf("the helper printed no child pid:\n%s", out)
	}
	// Bounded so that the test ends, not a timing: the signal is sent when
	// the helper exits, before this runs.
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if !sleepAlive(pid) {
			return
		}
	}
	if sleepAlive(pid) {
		if p, err := os.FindProcess(pid); err == nil {
			_ = p.Kill() // ours: the helper's sleep
		}
	}
	t.Fatalf("sleep (pid %d) outlived the test binary that started it with ChildCommand", pid)
}

// sleepAlive reports whether pid is a running (not zombie) sleep process:
// an orphan killed is reaped by init or left a zombie.
func sleepAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if !strings.Contains(s[:max(i, 0)], "(sleep") || i+3 > len(s) {
		return false
	}
	return s[i+2] != 'Z'
}
