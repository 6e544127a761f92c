package gateway_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
)

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
	var je *jsonrpc.Error
	if !errors.As(err, &je) {
		var listed []string
		if res != nil {
			for _, tl := range res.Tools {
				listed = append(listed, tl.Name)
			}
		}
		t.Fatalf("tools/list with the only evaluation slot taken: error %v, tools %q; want the gateway's overload error, not a list missing the tools whose check was shed", err, listed)
	}
	if je.Code != jsonrpc.CodeInternalError || !strings.Contains(je.Message, "overloaded") || !strings.Contains(je.Message, "retry after 1 s") {
		t.Errorf("tools/list error %d %q: want code %d saying the gateway is overloaded and to retry after 1 s", je.Code, je.Message, jsonrpc.CodeInternalError)
	}
	var data map[string]any
	if err := json.Unmarshal(je.Data, &data); err != nil || data["outcome"] != "overloaded" || data["retry_after_seconds"] != float64(1) {
		t.Errorf("tools/list error data %s (%v): want outcome overloaded, retry_after_seconds 1", je.Data, err)
	}
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
	e, hold := overloadEnv(t, 10*time.Second) // the longest wait allowed
	gw := e.agent(t, "token-1")
	release := hold()
	ctx, cancel := context.WithCancel(testCtx(t))
	done := make(chan error, 1)
	go func() {
		_, err := gw.ListTools(ctx, nil)
		done <- err
	}()
	waitFor(t, time.Minute, "a check of tools/list waiting for the slot", func() bool { return e.svc.Admit.Stats().Waiting == 1 })
	cancel()
	if err := <-done; err == nil {
		t.Fatal("a cancelled tools/list answered")
	}
	waitFor(t, time.Minute, "the cancelled check counted", func() bool {
		return e.metric(t, "acgs_decisions_canceled_total", nil) == 1
	})
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"acgs_decisions_total", map[string]string{"path": "acgs/tool_call/hidden", "outcome": "canceled"}, 1},
		{"acgs_decisions_shed_total", nil, 0},
	} {
		if got := e.metric(t, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	release()
	if names := toolNames(t, gw); !names["remote__echo"] || names["remote__exec"] {
		t.Errorf("tools/list once the slot is free: %v", names)
	}
}
