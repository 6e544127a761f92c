package gateway_test

import (
	"cmp"
	"strings"
	"testing"
	"time"

	"github.com/acgs-lite/acgs/internal/gateway"
)

// TestConfigMaxPendingPerAgent: approvals.max_pending_per_agent defaults to
// 100 (0 is the default), never above a lower max_pending given alone, and
// is refused when negative or above max_pending.
func TestConfigMaxPendingPerAgent(t *testing.T) {
	const ups = "upstreams: [{name: a, command: [x]}]\nlisten: 127.0.0.1:0\nagents: [{id: a1, token: tok-aaaaaaaaaaaaaaaa}, {id: a2, token: tok-bbbbbbbbbbbbbbbb}]\n"
	const upsStdio = "upstreams: [{name: a, command: [x]}]\n"
	const upsAnonymous = "upstreams: [{name: a, command: [x]}]\nlisten: 127.0.0.1:0\nanonymous_agent: anyone\n"
	for _, c := range []struct {
		approvals         string // the approvals mapping, "" for none
		base              string // the rest of the configuration ("": two agents with tokens)
		max, perAgent     int    // when valid
		wantErr, unwanted string // when not: a text the error has, one it must not have
	}{
		{approvals: "", max: 1000, perAgent: 100},
		// one identity only: a bound per agent would only lower max_pending
		{approvals: "", base: upsStdio, max: 1000, perAgent: 1000},
		{approvals: "", base: upsAnonymous, max: 1000, perAgent: 1000},
		{approvals: "{max_pending_per_agent: 10}", base: upsAnonymous, max: 1000, perAgent: 10},
		{approvals: "{max_pending_per_agent: 0}", max: 1000, perAgent: 100},
		{approvals: "{max_pending_per_agent: 7}", max: 1000, perAgent: 7},
		{approvals: "{max_pending: 50}", max: 50, perAgent: 50},
		{approvals: "{max_pending: 500}", max: 500, perAgent: 100},
		{approvals: "{max_pending: 20, max_pending_per_agent: 20}", max: 20, perAgent: 20},
		{approvals: "{max_pending_per_agent: -1}", wantErr: "approvals.max_pending_per_agent: must not be negative"},
		{approvals: "{max_pending: 10, max_pending_per_agent: 11}", wantErr: "approvals.max_pending_per_agent (11) must not exceed approvals.max_pending (10)"},
		{approvals: "{max_pending_per_agent: 1001}", wantErr: "approvals.max_pending_per_agent (1001) must not exceed approvals.max_pending (1000)"},
		// a negative max_pending is its own error, not also the per-agent one's
		{approvals: "{max_pending: -1}", wantErr: "approvals.max_pending: must not be negative", unwanted: "max_pending_per_agent"},
		{approvals: "{max_pending: -1, max_pending_per_agent: 5}", wantErr: "approvals.max_pending: must not be negative", unwanted: "max_pending_per_agent"},
	} {
		yml := ups
		if c.base != "" {
			yml = c.base
		}
		if c.approvals != "" {
			yml += "approvals: " + c.approvals + "\n"
		}
		cfg, err := gateway.ParseConfig([]byte(yml))
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) || (c.unwanted != "" && strings.Contains(err.Error(), c.unwanted)) {
				t.Errorf("approvals %s: %v, want an error containing %q (and not %q)", c.approvals, err, c.wantErr, c.unwanted)
			}
			continue
		}
		if err != nil {
			t.Errorf("approvals %s: %v", c.approvals, err)
			continue
		}
		if cfg.Approvals.MaxPending != c.max || cfg.Approvals.MaxPendingPerAgent != c.perAgent {
			t.Errorf("approvals %s: max_pending %d, max_pending_per_agent %d; want %d, %d",
				c.approvals, cfg.Approvals.MaxPending, cfg.Approvals.MaxPendingPerAgent, c.max, c.perAgent)
		}
	}
}

// TestConfigDecisionLogMask: the gateway's mask pointers are checked when
// its configuration is read, by the decision log's own rules, not first
// when the log opens.
func TestConfigDecisionLogMask(t *testing.T) {
	const base = "upstreams: [{name: a, command: [x]}]\n"
	for _, c := range []struct{ mask, wantErr string }{
		{"[/tool_call/arguments/content]", ""},
		{"[/input/tool_call/arguments/content]", ""},
		{"[tool_call]", "decision_log_mask"},
		{"[/result/reasons]", "masking the result is not supported"},
		{"[/a~2b]", "bad escape"},
	} {
		_, err := gateway.ParseConfig([]byte(base + "decision_log_mask: " + c.mask + "\n"))
		switch {
		case c.wantErr == "" && err != nil:
			t.Errorf("mask %s: %v", c.mask, err)
		case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
			t.Errorf("mask %s: %v, want an error containing %q", c.mask, err, c.wantErr)
		}
	}
}

// TestConfigInheritEnv: inherit_env takes variable names, or beginnings of
// names with *, for a child process only, and never names (or matches)
// the admin's or an agent's token variable: an upstream holding the admin
// token could approve its own held calls.
func TestConfigInheritEnv(t *testing.T) {
	t.Setenv("ACGS_TEST_AGENT_TOKEN", "tok-agent-from-env")
	for _, c := range []struct{ yml, want string }{
		{"upstreams: [{name: a, command: [x], inherit_env: [ADMIN_TOKEN]}]\n", `inherit_env "ADMIN_TOKEN" passes ADMIN_TOKEN`},
		{"upstreams: [{name: a, command: [x], inherit_env: [ADMIN*]}]\n", `inherit_env "ADMIN*" passes ADMIN_TOKEN`},
		{"admin: {token_env: GW_ADMIN}\nupstreams: [{name: a, command: [x], inherit_env: [GW_*]}]\n", `passes GW_ADMIN`},
		{"listen: 127.0.0.1:0\nagents: [{id: a1, token_env: ACGS_TEST_AGENT_TOKEN}]\nupstreams: [{name: a, command: [x], inherit_env: [ACGS_TEST_AGENT_TOKEN]}]\n", `passes ACGS_TEST_AGENT_TOKEN`},
		{"upstreams: [{name: a, command: [x], inherit_env: [\"A-B\"]}]\n", `must be a variable name`},
		{"upstreams: [{name: a, url: \"http://127.0.0.1:1/mcp\", inherit_env: [HOME]}]\n", `inherit_env is for a child process`},
	} {
		if _, err := gateway.ParseConfig([]byte(c.yml)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error containing %q", c.yml, err, c.want)
		}
	}
	if _, err := gateway.ParseConfig([]byte("upstreams: [{name: a, command: [x], inherit_env: [HTTPS_PROXY, LC_*]}]\n")); err != nil {
		t.Errorf("a valid inherit_env: %v", err)
	}
}

// TestConfigHeaderTokenVariables: a header's ${VAR} never names the admin's
// or an agent's token variable, as inherit_env does not: an upstream sent
// the admin token could approve its own held calls, one sent an agent's
// token could act as it. It was accepted.
func TestConfigHeaderTokenVariables(t *testing.T) {
	t.Setenv("ACGS_TEST_AGENT_TOKEN", "tok-agent-from-env")
	const url = "url: \"http://127.0.0.1:1/mcp\""
	for _, c := range []struct{ yml, want string }{
		{"upstreams: [{name: a, " + url + ", headers: {Authorization: \"Bearer ${ADMIN_TOKEN}\"}}]\n", `header Authorization passes ADMIN_TOKEN`},
		{"admin: {token_env: GW_ADMIN}\nupstreams: [{name: a, " + url + ", headers: {X-Key: \"${HOME}-${GW_ADMIN}\"}}]\n", `header X-Key passes GW_ADMIN`},
		{"listen: 127.0.0.1:0\nagents: [{id: a1, token_env: ACGS_TEST_AGENT_TOKEN}]\nupstreams: [{name: a, " + url + ", headers: {Authorization: \"Bearer ${ACGS_TEST_AGENT_TOKEN}\"}}]\n", `passes ACGS_TEST_AGENT_TOKEN`},
		{"upstreams: [{name: a, " + url + ", headers: {Authorization: \"Bearer ${SEARCH_TOKEN}\"}}]\n", ""},
		// the admin variable of another configuration is not a token here
		{"admin: {token_env: GW_ADMIN}\nupstreams: [{name: a, " + url + ", headers: {Authorization: \"Bearer ${ADMIN_TOKEN}\"}}]\n", ""},
		// only ${VAR} is expanded
		{"upstreams: [{name: a, " + url + ", headers: {X-Note: \"$ADMIN_TOKEN\"}}]\n", ""},
	} {
		_, err := gateway.ParseConfig([]byte(c.yml))
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.yml, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: %v, want an error containing %q", c.yml, err, c.want)
		}
	}
}

// TestConfigSessions: sessions.max defaults to 1000 and
// sessions.max_per_agent to 100 (max where HTTP clients carry one identity,
// or when it is lower), refused when negative or above max;
// sessions.unused_timeout defaults to 5m, at most the idle timeout.
func TestConfigSessions(t *testing.T) {
	const twoAgents = "upstreams: [{name: a, command: [x]}]\nlisten: 127.0.0.1:0\nagents: [{id: a1, token: tok-aaaaaaaaaaaaaaaa}, {id: a2, token: tok-bbbbbbbbbbbbbbbb}]\n"
	const anonymous = "upstreams: [{name: a, command: [x]}]\nlisten: 127.0.0.1:0\nanonymous_agent: anyone\n"
	for _, c := range []struct {
		base, sessions string
		max, perAgent  int
		unused         time.Duration // 0: the default, 5m
		wantErr        string
	}{
		{base: twoAgents, max: 1000, perAgent: 100},
		{base: anonymous, max: 1000, perAgent: 1000},
		{base: twoAgents, sessions: "{max: 50}", max: 50, perAgent: 50},
		{base: twoAgents, sessions: "{max: 500, max_per_agent: 20}", max: 500, perAgent: 20},
		{base: twoAgents, sessions: "{max: -1}", wantErr: "sessions.max: must not be negative"},
		{base: twoAgents, sessions: "{max_per_agent: -1}", wantErr: "sessions.max_per_agent: must not be negative"},
		{base: twoAgents, sessions: "{max: 10, max_per_agent: 11}", wantErr: "sessions.max_per_agent (11) must not exceed sessions.max (10)"},
		{base: twoAgents, sessions: "{unused_timeout: 5s}", max: 1000, perAgent: 100, unused: 5 * time.Second},
		{base: twoAgents, sessions: "{unused_timeout: -1s}", wantErr: "sessions.unused_timeout (-1s): must be positive"},
		{base: twoAgents, sessions: "{unused_timeout: 31m}", wantErr: "at most the sessions' idle timeout (30m0s)"},
	} {
		yml := c.base
		if c.sessions != "" {
			yml += "sessions: " + c.sessions + "\n"
		}
		cfg, err := gateway.ParseConfig([]byte(yml))
		switch {
		case c.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("sessions %s: %v, want an error containing %q", c.sessions, err, c.wantErr)
			}
		case err != nil:
			t.Errorf("sessions %s: %v", c.sessions, err)
		case cfg.Sessions.Max != c.max || cfg.Sessions.MaxPerAgent != c.perAgent:
			t.Errorf("sessions %s: max %d, max_per_agent %d; want %d, %d", c.sessions, cfg.Sessions.Max, cfg.Sessions.MaxPerAgent, c.max, c.perAgent)
		case cfg.Sessions.UnusedTimeout != cmp.Or(c.unused, gateway.DefaultUnusedTimeout):
			t.Errorf("sessions %s: unused_timeout %s", c.sessions, cfg.Sessions.UnusedTimeout)
		}
	}
}

// TestConfigDecisionTimeoutAboveEvalTimeout: a decision_timeout no engine's
// EVAL_TIMEOUT (at least 1ms) can be below is refused at load, and New
// refuses one not greater than its engine's EVAL_TIMEOUT, naming both: the
// decision of a slow policy would be cut short by decision_timeout while
// it evaluates, which the engine answers as overloaded, so the call was
// refused "retry after 1 s" and counted as shed on an idle gateway, when
// the evaluation should have timed out as a failed decision. Both were
// accepted (any decision_timeout ≥ 0).
func TestConfigDecisionTimeoutAboveEvalTimeout(t *testing.T) {
	const ups = "upstreams: [{name: a, command: [x]}]\n"
	for _, c := range []struct {
		dt      string
		wantErr string
	}{
		{"1ns", "decision_timeout: 1ns is not greater than EVAL_TIMEOUT can be (at least 1ms)"},
		{"1ms", "decision_timeout: 1ms is not greater than EVAL_TIMEOUT can be (at least 1ms)"},
		{"2ms", ""},
		{"1s", ""},
	} {
		cfg, err := gateway.ParseConfig([]byte(ups + "decision_timeout: " + c.dt + "\n"))
		switch {
		case c.wantErr == "" && err != nil:
			t.Errorf("decision_timeout %s: %v", c.dt, err)
		case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
			t.Errorf("decision_timeout %s: error %v, want %q", c.dt, err, c.wantErr)
		case c.wantErr == "" && cfg.DecisionTimeout.String() != c.dt:
			t.Errorf("decision_timeout %s read as %s", c.dt, cfg.DecisionTimeout)
		}
	}

	e := startEnv(t, envOptions{})
	for _, c := range []struct {
		dt, eval time.Duration
		ok       bool
	}{
		{3 * time.Millisecond, 10 * time.Second, false},
		{time.Second, time.Second, false},
		{time.Second, 100 * time.Millisecond, true},
		{3 * time.Millisecond, 0, true}, // EVAL_TIMEOUT not given: not checked
	} {
		cfg, err := gateway.ParseConfig([]byte(ups + "decision_timeout: " + c.dt.String() + "\n"))
		if err != nil {
			t.Fatal(err)
		}
		g, err := gateway.New(cfg, gateway.Deps{Engine: e.svc.Engine, EvalTimeout: c.eval})
		if g != nil {
			g.Close()
		}
		if c.ok != (err == nil) {
			t.Errorf("decision_timeout %s, EVAL_TIMEOUT %s: error %v, want ok %v", c.dt, c.eval, err, c.ok)
		}
		if err != nil && (!strings.Contains(err.Error(), "decision_timeout "+c.dt.String()) || !strings.Contains(err.Error(), "EVAL_TIMEOUT "+c.eval.String())) {
			t.Errorf("the error must name both values: %v", err)
		}
	}
}

// TestConfigStandaloneStream: standalone_stream (the GET stream a
// JSON-response HTTP upstream sends progress on) is off by default and
// refused on a stdio upstream, which has no such stream.
func TestConfigStandaloneStream(t *testing.T) {
	for _, c := range []struct {
		name, yml string
		wantErr   string
		want      bool
	}{
		{"default off", "upstreams: [{name: a, url: 'http://127.0.0.1:1/mcp'}]\n", "", false},
		{"on for HTTP", "upstreams: [{name: a, url: 'http://127.0.0.1:1/mcp', standalone_stream: true}]\n", "", true},
		{"refused for stdio", "upstreams: [{name: a, command: [x], standalone_stream: true}]\n", "standalone_stream is for an HTTP upstream (url)", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := gateway.ParseConfig([]byte(c.yml))
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("error %v, want %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.Upstreams[0].StandaloneStream; got != c.want {
				t.Errorf("standalone_stream %v, want %v", got, c.want)
			}
		})
	}
}
