package gateway_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// wantOverloadError checks the answer (res, err) of a request (method)
// whose check the engine shed for overload: the gateway's JSON-RPC error
// (code -32603, "The gateway is overloaded and did not <what>; retry after
// 1 s: ...", data outcome overloaded and retry_after_seconds 1), not a
// result (a list missing what the check was about) nor another error (a
// refusal as not allowed).
func wantOverloadError(t *testing.T, method, what string, res any, err error) {
	t.Helper()
	var je *jsonrpc.Error
	if !errors.As(err, &je) {
		b, _ := json.Marshal(res)
		t.Errorf("%s with the only evaluation slot taken: error %v, result %s; want the gateway's overload error", method, err, b)
		return
	}
	if want := "The gateway is overloaded and did not " + what + "; retry after 1 s: "; je.Code != jsonrpc.CodeInternalError || !strings.HasPrefix(je.Message, want) {
		t.Errorf("%s error %d %q: want code %d, %q...", method, je.Code, je.Message, jsonrpc.CodeInternalError, want)
	}
	var data map[string]any
	if err := json.Unmarshal(je.Data, &data); err != nil || data["outcome"] != "overloaded" || data["retry_after_seconds"] != float64(1) {
		t.Errorf("%s error data %s (%v): want outcome overloaded, retry_after_seconds 1", method, je.Data, err)
	}
}

// TestToolsListShedForOverloadIsAnErrorNotAShorterList: a tools/list
// whose check of a tool (data.acgs.tool_call.hidden) the engine sheds for
// overload is refused with a JSON-RPC error saying that the gateway is
// overloaded and to retry after 1 s, counted as a shed decision; it is not
// answered with a list missing that tool, which an agent would take for a
// tool that does not exist. The first shed check ends the list (one shed
// decision). Once the slot is free the list is complete, but for the tool
// the constitution prohibits. Before, every tool of "remote" was left out
// of the list and the agent was told nothing.
func TestToolsListShedForOverloadIsAnErrorNotAShorterList(t *testing.T) {
	e, hold := overloadEnv(t, time.Nanosecond)
	gw := e.agent(t, "token-1")
	release := hold()

	// No tools/list before this one: no check is answered by the cache.
	res, err := gw.ListTools(testCtx(t), nil)
	wantOverloadError(t, "tools/list", "list the tools", res, err)
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"acgs_decisions_shed_total", map[string]string{"reason": "queue_timeout"}, 1},
		{"acgs_decisions_shed_total", nil, 1},
		{"acgs_decisions_total", map[string]string{"path": "acgs/tool_call/hidden", "outcome": "overloaded"}, 1},
		{"acgs_decisions_total", map[string]string{"outcome": "error"}, 0},
		{"acgs_gateway_tool_calls_total", nil, 0},
	} {
		if got := e.metric(t, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}

	release()
	names := toolNames(t, gw)
	for _, up := range []string{"remote", "shadowed"} {
		for _, tool := range []string{"echo", "noop", "add", "read_file", "fetch", "delete_record", "slow", "stats"} {
			if !names[up+"__"+tool] {
				t.Errorf("%s__%s missing from tools/list once the slot is free: %v", up, tool, names)
			}
		}
	}
	if names["remote__exec"] || !names["shadowed__exec"] {
		t.Errorf("remote__exec listed %v (prohibited: hidden), shadowed__exec listed %v (shadow mode shows it)", names["remote__exec"], names["shadowed__exec"])
	}
}

// TestToolsListCancelledWhileACheckWaitsIsNotShed: an agent that gives up
// its tools/list while a check waits for the only slot refused nothing and
// was refused nothing: the check is counted as cancelled, not shed, as a
// cancelled tools/call is. Before, it was counted nowhere.
func TestToolsListCancelledWhileACheckWaitsIsNotShed(t *testing.T) {
	gw, release := cancelWhileChecking(t, "tools/list", func(ctx context.Context, gw *mcp.ClientSession) error {
		_, err := gw.ListTools(ctx, nil)
		return err
	})
	release()
	if names := toolNames(t, gw); !names["remote__echo"] || names["remote__exec"] {
		t.Errorf("tools/list once the slot is free: %v", names)
	}
}

// series is one figure of the gateway's registry a test wants.
type series struct {
	name   string
	labels map[string]string
	want   float64
}

// cancelWhileChecking makes request (named method) in an agent's session
// of an overloadEnv whose only evaluation slot is held, cancels it while
// its check waits for the slot, and checks that it answered an error and
// that the check was counted as cancelled, not shed (and more). It returns
// the session and the slot's release.
func cancelWhileChecking(t *testing.T, method string, request func(context.Context, *mcp.ClientSession) error, more ...series) (*mcp.ClientSession, func()) {
	t.Helper()
	e, hold := overloadEnv(t, 10*time.Second) // the longest wait allowed
	gw := e.agent(t, "token-1")
	release := hold()
	ctx, cancel := context.WithCancel(testCtx(t))
	done := make(chan error, 1)
	go func() { done <- request(ctx, gw) }()
	waitFor(t, time.Minute, "a check of "+method+" waiting for the slot", func() bool { return e.svc.Admit.Stats().Waiting == 1 })
	cancel()
	if err := <-done; err == nil {
		t.Fatalf("a cancelled %s answered", method)
	}
	waitFor(t, time.Minute, "the cancelled check counted", func() bool {
		return e.metric(t, "acgs_decisions_canceled_total", nil) == 1
	})
	for _, c := range append([]series{
		{"acgs_decisions_total", map[string]string{"path": "acgs/tool_call/hidden", "outcome": "canceled"}, 1},
		{"acgs_decisions_shed_total", nil, 0},
	}, more...) {
		if got := e.metric(t, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	return gw, release
}

// TestToolsListCountsEveryCheck: every check of a tools/list (one per tool
// not in shadow mode) is a decision counted in acgs_decisions_total (path
// acgs/tool_call/hidden) as the service counts one, a check answered from
// the decision cache too: outcome allow for a tool hidden (the check's
// result true: remote__exec, prohibited), deny for one shown; else the
// shed ratio (acgs_decisions_shed_total over acgs_decisions_total) would
// count the shed checks and not the others. Before, only checks shed or
// cancelled were counted.
func TestToolsListCountsEveryCheck(t *testing.T) {
	e, _ := overloadEnv(t, 10*time.Second) // no slot held
	gw := e.agent(t, "token-1")
	for round := 1; round <= 2; round++ { // the second from the cache
		names := toolNames(t, gw)
		var tools float64 // remote's, each checked (shadowed's are not)
		for n := range names {
			if strings.HasPrefix(n, "shadowed__") {
				tools++
			}
		}
		if tools < 2 || !names["shadowed__exec"] || names["remote__exec"] {
			t.Fatalf("tools/list %d: %v", round, names)
		}
		for _, c := range []struct {
			outcome string
			want    float64
		}{
			{"", tools * float64(round)},
			{"allow", float64(round)},
			{"deny", (tools - 1) * float64(round)},
		} {
			labels := map[string]string{"path": "acgs/tool_call/hidden"}
			if c.outcome != "" {
				labels["outcome"] = c.outcome
			}
			if got := e.metric(t, "acgs_decisions_total", labels); got != c.want {
				t.Errorf("after tools/list %d: acgs_decisions_total%v = %v, want %v", round, labels, got, c.want)
			}
		}
	}
	if got := e.metric(t, "acgs_decisions_shed_total", nil); got != 0 {
		t.Errorf("acgs_decisions_shed_total = %v, want 0", got)
	}
}
