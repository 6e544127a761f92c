package gateway_test

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/acgs-lite/acgs/internal/config"
)

// procChild makes TestProcChildServer serve MCP: the gateway starts this
// test binary with it (in the upstream's env) as a stdio upstream.
const procChild = "ACGS_TEST_PROC_CHILD"

// TestProcChildServer is not a test of its own: run by the gateway as a
// stdio upstream (procChild set, -test.run naming it), it serves pid (its
// process id) and echo (the length of its text). With procChild
// "stubborn" it ignores SIGTERM and does not exit when its stdin ends, as
// a hung server: only SIGKILL ends it.
func TestProcChildServer(t *testing.T) {
	mode := os.Getenv(procChild)
	if mode == "" {
		t.Skip("the stdio upstream of the child process tests")
	}
	if mode == "stubborn" {
		signal.Ignore(syscall.SIGTERM)
	}
	s := mcp.NewServer(&mcp.Implementation{Name: "proc-child", Version: "1"}, nil)
	mcp.AddTool(s, &mcp.Tool{Name: "pid"}, func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: strconv.Itoa(os.Getpid())}}}, nil, nil
	})
	type echoIn struct {
		Text string `json:"text"`
	}
	mcp.AddTool(s, &mcp.Tool{Name: "echo"}, func(_ context.Context, _ *mcp.CallToolRequest, in echoIn) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: strconv.Itoa(len(in.Text))}}}, nil, nil
	})
	_ = s.Run(context.Background(), &mcp.StdioTransport{})
	if mode == "stubborn" {
		time.Sleep(time.Hour)
	}
	os.Exit(0)
}

// procChildUpstream is the YAML of a stdio upstream running
// TestProcChildServer in mode (procChild's value), with extra lines.
func procChildUpstream(name, mode, extra string) string {
	exe, _ := os.Executable()
	return fmt.Sprintf("  - name: %s\n    command: [%q, \"-test.run=^TestProcChildServer$\"]\n    env: {%s: %q}\n%s", name, exe, procChild, mode, extra)
}

// childPid asks upstream name's child for its process id.
func childPid(t *testing.T, cs *mcp.ClientSession, name string) int {
	t.Helper()
	res := call(t, cs, name+"__pid", map[string]any{})
	pid, err := strconv.Atoi(text(res))
	if res.IsError || err != nil {
		t.Fatalf("%s__pid: %q", name, text(res))
	}
	return pid
}

// TestStdioUpstreamThatStopsReading: a stdio upstream whose child stops
// reading its stdin (here SIGSTOPped) with a request larger than the
// pipe's buffer in flight. The SDK writes to the pipe without regard to
// the request's context, holding its write lock: the call ran past
// call_timeout, every later request to the upstream waited behind it, and
// the gateway's shutdown waited for it too. The call is answered within
// call_timeout (and a little), the child is killed, and the upstream is
// started again.
func TestStdioUpstreamThatStopsReading(t *testing.T) {
	const callTimeout = 2 * time.Second
	e := startEnv(t, envOptions{upstreams: procChildUpstream("child", "1", "") + "  - name: remote\n    url: REMOTE\n",
		// the policy reads the large argument: time enough for that
		extraYAML: fmt.Sprintf("call_timeout: %s\ndecision_timeout: 30s\n", callTimeout),
		mutate:    func(c *config.Config) { c.Policy.EvalTimeout = 10 * time.Second }})
	a := e.agent(t, "token-1")
	pid := childPid(t, a, "child")
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGCONT) }) // before the gateway stops (cleanups run last first)

	big := strings.Repeat("a", 256<<10) // more than a pipe holds (64 KiB)
	// The large call, then a small one (it waited behind the first). The
	// child stays stopped, so a call the gateway does not end itself never
	// ends: the context is a bound for that hang, not a measure of how
	// long the answer took (timing the calls against a healthy call's
	// sampled time failed on a loaded machine). What shows the call was
	// ended at call_timeout is its answer saying so.
	for i, args := range []map[string]any{{"text": big}, {"text": "small"}} {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		start := time.Now()
		res, err := a.CallTool(ctx, &mcp.CallToolParams{Name: "child__echo", Arguments: args})
		took := time.Since(start)
		cancel()
		if err != nil {
			t.Fatalf("call %d: %v after %s (the gateway did not end it)", i, err, took)
		}
		t.Logf("call %d: %s: %.200s", i, took, text(res))
		if i == 0 && !strings.Contains(text(res), `upstream "child" did not answer within 2s`) {
			t.Errorf("call %d: %q, want the upstream's call_timeout", i, text(res))
		}
	}
	// The hung child was killed, and the upstream is back with a new one.
	waitFor(t, 15*time.Second, "a new child", func() bool {
		res, err := a.CallTool(testCtx(t), &mcp.CallToolParams{Name: "child__pid", Arguments: map[string]any{}})
		return err == nil && !res.IsError && text(res) != strconv.Itoa(pid)
	})
	if res := call(t, a, "child__echo", map[string]any{"text": big}); res.IsError || text(res) != strconv.Itoa(len(big)) {
		t.Errorf("a large call to the new child: %q", text(res))
	}
	if err := syscall.Kill(pid, 0); err == nil && !zombie(pid) {
		t.Errorf("the child that stopped reading (pid %d) still runs", pid)
	}
}

// TestBusyStdioUpstreamIsNotKilled: a child that reads nothing for a while
// (busy with another call, here SIGSTOPped for 1.5 s) while a large request
// whose agent gave up waits to be written is left alone: it takes the
// request up again within its call_timeout. A first version killed it a
// second after the request's start, with every call in flight on it.
func TestBusyStdioUpstreamIsNotKilled(t *testing.T) {
	e := startEnv(t, envOptions{upstreams: procChildUpstream("child", "1", "") + "  - name: remote\n    url: REMOTE\n",
		extraYAML: "call_timeout: 8s\ndecision_timeout: 30s\n"})
	a := e.agent(t, "token-1")
	pid := childPid(t, a, "child")
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := make(chan struct{})
	go func() {
		defer close(resumed)
		time.Sleep(1500 * time.Millisecond)
		_ = syscall.Kill(pid, syscall.SIGCONT)
	}()
	t.Cleanup(func() { <-resumed })
	big := strings.Repeat("a", 256<<10) // more than a pipe holds (64 KiB)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	_, _ = a.CallTool(ctx, &mcp.CallToolParams{Name: "child__echo", Arguments: map[string]any{"text": big}})
	cancel()
	<-resumed
	// The child reads again: the same process answers.
	waitFor(t, 15*time.Second, "the child to answer again", func() bool {
		res, err := a.CallTool(testCtx(t), &mcp.CallToolParams{Name: "child__pid", Arguments: map[string]any{}})
		return err == nil && !res.IsError
	})
	if got := childPid(t, a, "child"); got != pid {
		t.Fatalf("the busy child (pid %d) was replaced by pid %d", pid, got)
	}
}

// parentPid is the parent process id of process pid (0: unknown).
func parentPid(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(fields[1])
	return ppid
}

// zombie reports whether process pid has exited and is waiting to be
// reaped.
func zombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true // gone
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] == 'Z'
}

// TestStdioUpstreamStopEndsItsProcessGroup: a stdio upstream started
// through a wrapper (npx, a shell), whose server is the wrapper's child.
// Stopping the upstream closes its stdin, then signals SIGTERM and SIGKILL
// if it does not exit; those went to the wrapper alone, and a server that
// did not exit with its stdin (here one that ignores SIGTERM as well) was
// left running without a parent. The child runs in a process group of its
// own, and the signals go to the group: the server ends with the wrapper.
func TestStdioUpstreamStopEndsItsProcessGroup(t *testing.T) {
	exe, _ := os.Executable()
	// the shell does not exec the server: it waits for it, then exits
	wrapped := fmt.Sprintf("  - name: wrapped\n    command: [sh, -c, '\"$EXE\" -test.run=^TestProcChildServer$; exit 0']\n    env: {%s: stubborn, EXE: %q}\n", procChild, exe)
	e := startEnv(t, envOptions{upstreams: wrapped + "  - name: remote\n    url: REMOTE\n"})
	pid := childPid(t, e.agent(t, "token-1"), "wrapped")
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) }) // if the test fails
	if ppid := parentPid(pid); ppid == os.Getpid() || ppid <= 1 {
		t.Fatalf("the server's parent is %d, not the wrapper", ppid)
	}
	e.stop()
	waitFor(t, 10*time.Second, "the wrapped server ended", func() bool { return syscall.Kill(pid, 0) != nil || zombie(pid) })
}
