package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/acgs-lite/acgs/internal/gateway"
	"github.com/acgs-lite/acgs/internal/gateway/mcptest"
	"github.com/acgs-lite/acgs/internal/telemetry"
	"github.com/acgs-lite/acgs/internal/testenv"
)

// These tests run the acgs binary: `acgs gateway` started by the SDK's
// client over stdio (as an agent host starts an MCP server) and over
// streamable HTTP, `acgs approvals` against its admin API, and `acgs audit
// verify` on the decision log it wrote.

// runACGS runs an acgs subcommand and returns its output and exit code.
func runACGS(t *testing.T, env []string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, testenv.ACGSBinary(t), args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	}
	t.Fatalf("acgs %v: %v", args, err)
	return "", -1
}

func writeConfig(t testing.TB, yaml string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "gateway.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestBinaryStdioApprovalsAndAudit(t *testing.T) {
	acgs := testenv.ACGSBinary(t)
	remote, remURL := serveMCP(t)
	dir := t.TempDir()
	logPath := filepath.Join(dir, "decisions.jsonl")
	adminAddr := freeAddr(t)
	cfg := writeConfig(t, fmt.Sprintf(`
stdio_agent: desktop-agent
admin: {listen: %q}
approvals: {timeout: 10s}
decision_log: file:%s
upstreams:
%s  - name: remote
    url: %s
`, adminAddr, logPath, stdioUpstream("local", ""), remURL))
	const token = "cli-admin-token-0123456789"
	adminEnv := []string{"ACGS_GATEWAY_ADMIN_URL=http://" + adminAddr, "ADMIN_TOKEN=" + token}

	var stderr testenv.SyncBuffer
	cmd := exec.Command(acgs, "gateway", "--config", cfg)
	cmd.Env = append(os.Environ(), "ADMIN_TOKEN="+token, "LOG_FORMAT=text")
	cmd.Stderr = &stderr
	c := mcp.NewClient(&mcp.Implementation{Name: "agent-host", Version: "1"}, nil)
	cs, err := c.Connect(testCtx(t), &mcp.CommandTransport{Command: cmd}, nil)
	if err != nil {
		t.Fatalf("starting acgs gateway over stdio: %v\n%s", err, stderr.String())
	}
	defer cs.Close()

	names := toolNames(t, cs)
	if !names["local__echo"] || !names["remote__echo"] || names["local__exec"] || names["remote__exec"] {
		t.Fatalf("tools/list: %v", names)
	}
	if res := call(t, cs, "local__echo", map[string]any{"text": "hi"}); res.IsError {
		t.Fatalf("echo: %q", text(res))
	}
	if res := call(t, cs, "remote__exec", map[string]any{"command": "id"}); !res.IsError || !strings.Contains(text(res), "prohibited") {
		t.Fatalf("exec: %q", text(res))
	}

	// held, then approved with acgs approvals
	held := func(id string) chan *mcp.CallToolResult {
		ch := make(chan *mcp.CallToolResult, 1)
		go func() {
			res, err := cs.CallTool(testCtx(t), &mcp.CallToolParams{Name: "remote__delete_record", Arguments: map[string]any{"id": id}})
			if err != nil {
				res = &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: err.Error()}}}
			}
			ch <- res
		}()
		return ch
	}
	waitListed := func() gateway.Approval {
		deadline := time.Now().Add(20 * time.Second)
		for {
			out, code := runACGS(t, adminEnv, "approvals", "list", "--json")
			if code != 0 {
				t.Fatalf("acgs approvals list: %d %s", code, out)
			}
			var l gateway.ApprovalList
			if err := json.Unmarshal([]byte(out), &l); err != nil {
				t.Fatalf("approvals list --json: %v: %s", err, out)
			}
			if len(l.Approvals) == 1 {
				return l.Approvals[0]
			}
			if time.Now().After(deadline) {
				t.Fatalf("no held call listed: %s", out)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	first := held("one")
	a := waitListed()
	if a.Agent != "desktop-agent" || a.Tool != "remote__delete_record" {
		t.Fatalf("listed: %+v", a)
	}
	if out, code := runACGS(t, adminEnv, "approvals", "list"); code != 0 || !strings.Contains(out, a.ID) || !strings.Contains(out, "desktop-agent") {
		t.Fatalf("approvals list (table): %d %s", code, out)
	}
	if out, code := runACGS(t, adminEnv, "approvals", "approve", a.ID, "--by", "tester"); code != 0 || !strings.Contains(out, "approved") {
		t.Fatalf("approvals approve: %d %s", code, out)
	}
	if res := <-first; res.IsError || text(res) != "deleted one" {
		t.Fatalf("approved call: %q", text(res))
	}
	if out, code := runACGS(t, []string{"ACGS_GATEWAY_ADMIN_URL=http://" + adminAddr, "ADMIN_TOKEN=wrong"}, "approvals", "list"); code == 0 || !strings.Contains(out, "401") {
		t.Fatalf("a wrong admin token: %d %s", code, out)
	}

	// refused with a note
	second := held("two")
	b := waitListed()
	if out, code := runACGS(t, adminEnv, "approvals", "deny", b.ID, "--note", "not today"); code != 0 {
		t.Fatalf("approvals deny: %d %s", code, out)
	}
	if res := <-second; !res.IsError || !strings.Contains(text(res), "not today") {
		t.Fatalf("refused call: %q", text(res))
	}
	// and one left to time out
	if res := <-held("three"); !res.IsError || !strings.Contains(text(res), "no approval within 10s") {
		t.Fatalf("timed-out call: %q", text(res))
	}
	if remote.Calls("delete_record") != 1 {
		t.Fatalf("upstream delete_record calls: %d, want 1", remote.Calls("delete_record"))
	}

	// the agent goes away: the gateway exits and closes its log
	if err := cs.Close(); err != nil {
		t.Logf("close: %v", err)
	}
	if !strings.Contains(stderr.String(), "head=sha256:") {
		t.Fatalf("the gateway did not log the chain head at exit:\n%s", stderr.String())
	}

	out, code := runACGS(t, nil, "audit", "verify", logPath)
	if code != 0 || !strings.Contains(out, "intact") {
		t.Fatalf("audit verify of the intact log: %d %s", code, out)
	}
	data, _ := os.ReadFile(logPath)
	lines := strings.SplitAfter(strings.TrimSuffix(string(data), "\n"), "\n")
	if len(lines) < 8 { // 4 list-free decisions + 3 held + 3 verdicts (tools/list is not logged)
		t.Fatalf("%d records in the log", len(lines))
	}
	// a record removed from the middle
	cut := filepath.Join(dir, "cut.jsonl")
	_ = os.WriteFile(cut, []byte(strings.Join(append(append([]string{}, lines[:3]...), lines[4:]...), "")), 0o600)
	if out, code := runACGS(t, nil, "audit", "verify", cut); code != 1 || !strings.Contains(out, "cut.jsonl:4:") || !strings.Contains(out, "BROKEN") {
		t.Fatalf("audit verify of a log with a removed record: %d %s", code, out)
	}
	// a record edited in the middle: the denial of exec turned into an allow
	edited := filepath.Join(dir, "edited.jsonl")
	var idx = -1
	for i, l := range lines {
		if strings.Contains(l, `"outcome":"deny"`) {
			idx = i
			break
		}
	}
	if idx < 0 || idx == len(lines)-1 {
		t.Fatalf("no deny record to edit in %d lines", len(lines))
	}
	changed := append([]string{}, lines...)
	changed[idx] = strings.Replace(strings.Replace(changed[idx], `"outcome":"deny"`, `"outcome":"allow"`, 1), `"allow":false`, `"allow":true`, 1)
	_ = os.WriteFile(edited, []byte(strings.Join(changed, "")), 0o600)
	out, code = runACGS(t, nil, "audit", "verify", "--json", edited)
	if code != 1 || !strings.Contains(out, fmt.Sprintf(`"line": %d`, idx+2)) {
		t.Fatalf("audit verify of an edited log: %d %s", code, out)
	}
}

func TestBinaryStreamableHTTP(t *testing.T) {
	acgs := testenv.ACGSBinary(t)
	_, remURL := serveMCP(t)
	addr, adminAddr := freeAddr(t), freeAddr(t)
	cfg := writeConfig(t, fmt.Sprintf(`
listen: %q
admin: {listen: %q}
agents:
  - {id: ci-agent, token_env: CI_AGENT_TOKEN}
upstreams:
  - name: remote
    url: %s
`, addr, adminAddr, remURL))
	cmd := exec.Command(acgs, "gateway", "--config", cfg)
	cmd.Env = append(os.Environ(), "CI_AGENT_TOKEN=ci-token", "DECISION_LOG=off", "MEMORY_LIMIT_RATIO=0", "GOMEMLIMIT=")
	var logged testenv.SyncBuffer
	cmd.Stderr = &logged
	stop := startProcess(t, cmd, "http://"+adminAddr+gateway.HealthPath)
	defer func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	}()
	// The memory limit is sized as in acgs serve (here: turned off).
	if w := `"msg":"memory limit","source":"off"`; !strings.Contains(logged.String(), w) {
		t.Errorf("no %s in the gateway's log:\n%s", w, logged.String())
	}
	cs := connectHTTP(t, "http://"+addr+"/mcp", "ci-token")
	res := call(t, cs, "remote__add", map[string]any{"a": 1, "b": 2})
	if res.IsError || text(res) != `{"sum":3}` {
		t.Fatalf("add: %q", text(res))
	}
	resp, err := http.Get("http://" + adminAddr + gateway.MetricsPath)
	if err != nil {
		t.Fatal(err)
	}
	var body bytes.Buffer
	_, _ = body.ReadFrom(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`acgs_gateway_tool_calls_total{outcome="allow",tool="add",upstream="remote"} 1`, "acgs_gateway_overhead_seconds_bucket", `acgs_gateway_upstream_up{upstream="remote"} 1`, "acgs_decisions_total"} {
		if !strings.Contains(body.String(), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// TestBinaryStdioHostExitsDuringCall: the host of a stdio agent exits
// (its ends of the gateway's stdin, stdout and stderr close) while a call
// is being forwarded. The gateway's next write (the answer, a log line)
// fails with EPIPE instead of ending the process with SIGPIPE, so the
// gateway stops as when its stdin ends: exit status 0, and the decision
// log's queue flushed (the call's decision is in the log).
func TestBinaryStdioHostExitsDuringCall(t *testing.T) {
	for _, c := range []struct {
		name       string
		closeStdin bool // the host closes stdin too, or only its ends of stdout and stderr
	}{
		{"all three pipes", true},
		{"stdout and stderr", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			remote, remURL := serveMCP(t)
			logPath := filepath.Join(t.TempDir(), "decisions.jsonl")
			cfg := writeConfig(t, fmt.Sprintf("stdio_agent: desktop-agent\ndecision_log: file:%s\nupstreams:\n  - name: remote\n    url: %s\n", logPath, remURL))
			cmd, stdin, stdout, stderr := startStdioGatewayInACall(t, cfg, remote, 1500)
			_ = stdout.Close()
			_ = stderr.Close()
			if c.closeStdin {
				_ = stdin.Close()
			}
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			select {
			case err := <-exited:
				if err != nil {
					t.Fatalf("acgs gateway: %v (%s), want exit status 0", err, cmd.ProcessState)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("acgs gateway did not exit within 20s of its host leaving")
			}
			log, err := os.ReadFile(logPath)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(log), "remote__slow") {
				t.Errorf("the call's decision is not in the decision log:\n%s", log)
			}
		})
	}
}

// TestBinaryStdioRefusesALogOnStdout: a stdio gateway's stdout is its
// agent's MCP stream, and a decision log written there under another name
// would put records between the agent's answers: refused at start.
func TestBinaryStdioRefusesALogOnStdout(t *testing.T) {
	_, remURL := serveMCP(t)
	for _, sink := range []string{"file:/dev/stdout", "file:/dev/fd/1", "file:/proc/self/fd/1"} {
		t.Run(sink, func(t *testing.T) {
			cfg := writeConfig(t, fmt.Sprintf("stdio_agent: desktop-agent\ndecision_log: %q\nupstreams:\n  - name: remote\n    url: %s\n", sink, remURL))
			cmd := exec.Command(testenv.ACGSBinary(t), "gateway", "--config", cfg)
			var stdout, stderr bytes.Buffer
			cmd.Stdin, cmd.Stdout, cmd.Stderr = strings.NewReader(""), &stdout, &stderr
			if err := cmd.Run(); err == nil {
				t.Fatalf("started with its decision log on stdout; stdout:\n%s", stdout.String())
			}
			if !strings.Contains(stderr.String(), "writes to stdout, the MCP stream") {
				t.Errorf("stderr does not say why:\n%s", stderr.String())
			}
			if stdout.Len() > 0 {
				t.Errorf("wrote to the agent's stream:\n%s", stdout.String())
			}
		})
	}
}

// TestBinaryStdioSocketAgentLeaves: an agent on a socket (Node's spawn)
// that closes it with part of the gateway's answer unread makes the
// gateway's next read fail with ECONNRESET, not EOF: the gateway stops as
// when its stdin ends, with exit status 0.
func TestBinaryStdioSocketAgentLeaves(t *testing.T) {
	_, remURL := serveMCP(t)
	cfg := writeConfig(t, fmt.Sprintf("stdio_agent: desktop-agent\nupstreams:\n  - name: remote\n    url: %s\n", remURL))
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	agent, child := os.NewFile(uintptr(fds[0]), "agent"), os.NewFile(uintptr(fds[1]), "gateway")
	defer agent.Close()
	cmd := exec.Command(testenv.ACGSBinary(t), "gateway", "--config", cfg)
	var stderr testenv.SyncBuffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = child, child, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	_ = child.Close()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	if _, err := io.WriteString(agent, `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"host","version":"1"}}}`+"\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(agent, make([]byte, 10)); err != nil { // a part of the answer
		t.Fatal(err)
	}
	_ = agent.Close()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("acgs gateway: %v, want exit status 0\n%s", err, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("acgs gateway did not exit within 20s of its agent leaving")
	}
}

// TestBinaryStdioRestartWhileTheOldOneFinishes: an MCP host restarts its
// stdio gateway as soon as the old one's stdin closes, while the old one
// still finishes a call and closes its decision log. The new one waits for
// the old one's hold on the hash-chained log (a bounded wait) instead of
// failing to start, and the chain runs on across the two.
func TestBinaryStdioRestartWhileTheOldOneFinishes(t *testing.T) {
	remote, remURL := serveMCP(t)
	logPath := filepath.Join(t.TempDir(), "decisions.jsonl")
	cfg := writeConfig(t, fmt.Sprintf("stdio_agent: desktop-agent\ndecision_log: file:%s\nupstreams:\n  - name: remote\n    url: %s\n", logPath, remURL))
	// The old gateway's call must outlast the new one's start, which took
	// over 1.5 s under -race on a loaded machine (CI bfed6f6: its log was
	// free by then and nothing waited).
	old, stdin, _, stderr := startStdioGatewayInACall(t, cfg, remote, 6000)
	go func() { _, _ = io.Copy(io.Discard, stderr) }()
	_ = stdin.Close() // the host restarts its server
	oldExited := make(chan error, 1)
	go func() { oldExited <- old.Wait() }()

	var nextErr testenv.SyncBuffer
	next, nextIn, nextOut, _ := gatewayOnPipes(t, cfg, &nextErr)
	answers := bufio.NewReader(nextOut)
	for _, msg := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"host","version":"1"}}}`,
		`{"jsonrpc":"2.0","method":"notifications/initialized"}`,
		`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"remote__add","arguments":{"a":1,"b":2}}}`,
	} {
		if _, err := io.WriteString(nextIn, msg+"\n"); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(msg, `"id"`) {
			if line, err := answers.ReadString('\n'); err != nil || !strings.Contains(line, `"result"`) {
				t.Fatalf("the new gateway's answer: %q %v\n%s", line, err, nextErr.String())
			}
		}
	}
	_ = nextIn.Close()
	if err := next.Wait(); err != nil {
		t.Fatalf("the new gateway: %v\n%s", err, nextErr.String())
	}
	if !strings.Contains(nextErr.String(), "waiting for the other writer") {
		t.Errorf("the new gateway did not wait for the old one's log:\n%s", nextErr.String())
	}
	if err := <-oldExited; err != nil {
		t.Fatalf("the old gateway: %v", err)
	}
	b, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := telemetry.VerifyChain(bytes.NewReader(b), telemetry.VerifyChainOptions{})
	if err != nil || !rep.OK() || !strings.Contains(string(b), "remote__slow") || !strings.Contains(string(b), "remote__add") {
		t.Errorf("one chain with both gateways' decisions: %+v %v\n%s", rep, err, b)
	}
}

// startStdioGatewayInACall starts `acgs gateway --config cfg` (a stdio
// agent's gateway in front of remote) on pipes, initializes its session,
// makes a call of ms milliseconds to remote's slow tool and returns once
// the call has reached the upstream: the process and the agent's ends of its stdin,
// stdout and stderr. The tool ignores cancellation: an agent that leaves
// cancels its calls upstream, and the gateway's stop waits for the
// upstream's end of the call all the same.
func startStdioGatewayInACall(t *testing.T, cfg string, remote *mcptest.Server, ms int) (*exec.Cmd, io.WriteCloser, io.ReadCloser, io.ReadCloser) {
	t.Helper()
	cmd, stdin, stdout, stderr := gatewayOnPipes(t, cfg, nil)
	send := func(msg string) {
		if _, err := io.WriteString(stdin, msg+"\n"); err != nil {
			t.Fatal(err)
		}
	}
	send(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"host","version":"1"}}}`)
	if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || !strings.Contains(line, `"id":1`) {
		t.Fatalf("initialize: %q %v", line, err)
	}
	send(`{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	send(fmt.Sprintf(`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"remote__slow","arguments":{"ms":%d,"ignore_cancel":true}}}`, ms))
	for deadline := time.Now().Add(10 * time.Second); remote.Calls("slow") == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the call did not reach the upstream in 10s")
		}
	}
	return cmd, stdin, stdout, stderr
}

// gatewayOnPipes starts `acgs gateway --config cfg` with pipes to its stdin
// and stdout; its stderr goes to stderr, or to a pipe it returns when
// stderr is nil. The process is killed when the test ends.
func gatewayOnPipes(t *testing.T, cfg string, stderr io.Writer) (*exec.Cmd, io.WriteCloser, io.ReadCloser, io.ReadCloser) {
	t.Helper()
	cmd := exec.Command(testenv.ACGSBinary(t), "gateway", "--config", cfg)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var errPipe io.ReadCloser
	if stderr != nil {
		cmd.Stderr = stderr
	} else if errPipe, err = cmd.StderrPipe(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	return cmd, stdin, stdout, errPipe
}
