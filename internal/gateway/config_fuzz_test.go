package gateway

import (
	"net/url"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/acgs-lite/acgs/internal/telemetry"
)

// docConfig is the annotated configuration of docs/gateway.md, with a
// literal token in place of the variable.
const docConfig = `stdio_agent: desktop-agent
listen: 127.0.0.1:8095
agents:
  - {id: research-agent, token: "research-token-0123456789"}
  - {id: ci-agent, token: "literal-token-for-tests"}
anonymous_agent: ""
upstreams:
  - name: files
    command: [npx, -y, "@modelcontextprotocol/server-filesystem", /workspace]
    env: {NODE_OPTIONS: "--max-old-space-size=256"}
    dir: /workspace
  - name: search
    url: https://mcp.example.com/mcp
    headers: {Authorization: "Bearer ${SEARCH_TOKEN}"}
    call_timeout: 30s
  - name: crm
    url: http://127.0.0.1:9000/mcp
    shadow: true
  - name: mail
    command: [mail-mcp]
    shadow_tools: [send_email]
admin:
  listen: 127.0.0.1:8096
  token_env: ADMIN_TOKEN
approvals:
  timeout: 2m
  max_pending: 1000
  max_pending_per_agent: 100
decision_timeout: 1s
call_timeout: 60s
connect_timeout: 30s
decision_log: file:/var/log/acgs/gateway.jsonl
decision_log_mask: [/tool_call/arguments/content]
redis_url: redis://redis:6379
counter_key_prefix: "acgs:gw:"
`

// FuzzParseConfig: ParseConfig (the gateway's --config file) returns an
// error, never a panic, for any bytes, and a configuration it accepts
// holds what Validate promises: a path starting with /; upstreams, each
// with a name that a tool name splits back off at the first "__" (as
// tools/call does), unique, and a command or an http(s) URL with a host,
// not both; positive timeouts and bounds with 1 <= max_pending_per_agent
// <= max_pending; mask pointers the decision log takes; agents only with
// listen, each with an id of its own and one token, reachable by it; an
// anonymous agent that is none of them; an HTTP listener with an
// identity; no stdout decision log for a stdio agent. Defaults are
// applied once: applying them again changes nothing.
func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{
		docConfig,
		"upstreams:\n  - name: files\n    command: [npx, -y, \"@modelcontextprotocol/server-filesystem\", /tmp/acgs-workspace]\n",
		"upstreams: [{name: a, command: [x]}]\nlisten: 127.0.0.1:0\nagents: [{id: a1, token: tok-aaaaaaaaaaaaaaaa}, {id: a2, token: tok-bbbbbbbbbbbbbbbb}]\n",
		"upstreams: [{name: a, command: [x]}]\nlisten: 127.0.0.1:0\nanonymous_agent: anyone\napprovals: {max_pending: 50}\n",
		"upstreams: [{name: a, command: [x]}]\napprovals: {max_pending: 10, max_pending_per_agent: 11}\n",
		"upstreams: [{name: a, command: [x]}]\napprovals: {max_pending: -1}\ndecision_timeout: -1s\n",
		"upstreams: [{name: a_, command: [x]}, {name: a__b, url: ftp://x}, {name: a, url: 'http://'}, {name: a, command: [x], url: http://h}]\n",
		"upstreams: [{name: a, command: [x]}]\ndecision_log: stdout\ndecision_log_mask: [/result/x, /a~2, '']\n",
		"upstreams: [{name: a, command: [x]}]\nlisten: :1\nagents: [{id: x, token: t, token_env: PATH}, {token_env: ACGS_FUZZ_UNSET}, {id: x}]\nanonymous_agent: x\n",
		"upstreams: [{name: a, command: [x]}]\npath: mcp\n",
		"upstreams: [{name: a, command: [x]}]\nlisten: 127.0.0.1:0\nagents: [{id: reader, token: shared-token-0123456789}, {id: admin, token: shared-token-0123456789}]\n",
		"{\"upstreams\": [{\"name\": \"a\", \"url\": \"https://h/mcp\", \"call_timeout\": \"5s\"}], \"call_timeout\": 3000000000}\n",
		"upstreams: [{name: a, command: [x]}]\nunknown: 1\n",
		"upstreams: [{name: a, command: [x]}]\n---\nlisten: x\n",
		"a: &a [*a]\n",
		"",
		"- 1\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseConfig(b)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("an error without a message")
			}
			return
		}
		if c.Path == "" || c.Path[0] != '/' {
			t.Fatalf("path %q", c.Path)
		}
		if len(c.Upstreams) == 0 {
			t.Fatal("no upstreams")
		}
		names := map[string]bool{}
		for _, u := range c.Upstreams {
			if names[u.Name] {
				t.Fatalf("upstream %q twice", u.Name)
			}
			names[u.Name] = true
			for _, tool := range []string{"echo", "_echo", "a__b", ""} {
				if up, rest, _ := strings.Cut(u.Name+Separator+tool, Separator); up != u.Name || rest != tool {
					t.Fatalf("upstream %q, tool %q: the full name splits into %q, %q", u.Name, tool, up, rest)
				}
			}
			if (len(u.Command) > 0) == (u.URL != "") {
				t.Fatalf("upstream %q: command %q, url %q", u.Name, u.Command, u.URL)
			}
			if u.URL != "" {
				p, err := url.Parse(u.URL)
				if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
					t.Fatalf("upstream %q: url %q", u.Name, u.URL)
				}
			}
			if u.CallTimeout <= 0 {
				t.Fatalf("upstream %q: call_timeout %v", u.Name, u.CallTimeout)
			}
		}
		if c.Approvals.Timeout <= 0 || c.DecisionTimeout <= 0 || c.CallTimeout <= 0 || c.ConnectTimeout <= 0 {
			t.Fatalf("timeouts %v %v %v %v", c.Approvals.Timeout, c.DecisionTimeout, c.CallTimeout, c.ConnectTimeout)
		}
		if c.Approvals.MaxPending <= 0 || c.Approvals.MaxPendingPerAgent <= 0 || c.Approvals.MaxPendingPerAgent > c.Approvals.MaxPending {
			t.Fatalf("max_pending %d, per agent %d", c.Approvals.MaxPending, c.Approvals.MaxPendingPerAgent)
		}
		for _, m := range c.DecisionLogMask {
			if err := telemetry.CheckMaskPointer(m); err != nil {
				t.Fatalf("mask %q accepted: %v", m, err)
			}
		}
		if c.Listen == "" {
			if len(c.Agents) > 0 || c.DecisionLog == "stdout" {
				t.Fatalf("stdio agent with %d HTTP agents, decision log %q", len(c.Agents), c.DecisionLog)
			}
		} else if c.identities() < 1 {
			t.Fatal("HTTP listener without an identity")
		}
		tokens := c.tokens()
		ids := map[string]bool{}
		for _, a := range c.Agents {
			if a.ID == "" || ids[a.ID] || a.ID == c.AnonymousAgent || (a.Token == "") == (a.TokenEnv == "") {
				t.Fatalf("agent %+v (anonymous %q)", a, c.AnonymousAgent)
			}
			ids[a.ID] = true
			tok := a.Token
			if a.TokenEnv != "" {
				tok = os.Getenv(a.TokenEnv)
			}
			if tok == "" || tokens[tok] != a.ID {
				t.Fatalf("agent %q: its token names agent %q", a.ID, tokens[tok])
			}
		}
		again := c
		again.Upstreams = append([]Upstream(nil), c.Upstreams...)
		again.defaults()
		if !reflect.DeepEqual(again, c) {
			t.Fatalf("defaults applied twice differ:\n%+v\n%+v", c, again)
		}
		if err := again.Validate(); err != nil {
			t.Fatalf("valid once, not twice: %v", err)
		}
	})
}
