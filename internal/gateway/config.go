package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/acgs-lite/acgs/internal/telemetry"
)

// Config is the gateway's configuration file (YAML, or JSON, which is YAML):
// its upstreams, how agents reach it and who they are, approvals, shadow
// mode and the audit log. The engine's own settings (bundle, cache, Redis,
// EVAL_TIMEOUT, ...) are those of `acgs serve`, from the environment and
// flags.
type Config struct {
	// Upstreams are the MCP servers behind the gateway.
	Upstreams []Upstream `yaml:"upstreams"`

	// Listen, when set, serves agents over streamable HTTP at this
	// address (host:port) and Path; when empty, the gateway serves one
	// agent over its own stdin/stdout.
	Listen string `yaml:"listen"`
	// Path of the MCP endpoint on Listen (default /mcp).
	Path string `yaml:"path"`
	// Agents are the identities of HTTP clients, by bearer token.
	Agents []Agent `yaml:"agents"`
	// AnonymousAgent, when set, is the identity of HTTP clients that send
	// no token; when empty such clients get 401.
	AnonymousAgent string `yaml:"anonymous_agent"`
	// StdioAgent is the identity of the stdio client (default "stdio").
	StdioAgent string `yaml:"stdio_agent"`

	// Admin serves approvals, metrics and health.
	Admin Admin `yaml:"admin"`
	// Approvals: how long a call needing approval is held.
	Approvals Approvals `yaml:"approvals"`
	// Sessions bound the HTTP agents' sessions.
	Sessions Sessions `yaml:"sessions"`

	// DecisionTimeout bounds one decision, including waiting for an
	// evaluation slot (default defaultDecisionTimeout). It must be greater
	// than the engine's EVAL_TIMEOUT, for the reason CheckDecisionTimeout
	// gives; Validate checks it only against the least EVAL_TIMEOUT
	// accepted (minEvalTimeout), New and acgs gateway against the engine's.
	DecisionTimeout time.Duration `yaml:"decision_timeout"`
	// CallTimeout bounds one upstream call unless the upstream sets its
	// own (default 60s).
	CallTimeout time.Duration `yaml:"call_timeout"`
	// ConnectTimeout bounds starting and initialising one upstream
	// (default 30s: npx may download the server first).
	ConnectTimeout time.Duration `yaml:"connect_timeout"`

	// DecisionLog is where tool-call decisions go: off, stdout (not with
	// a stdio agent, whose stdout is the MCP stream) or file:/path. Empty:
	// DECISION_LOG. The log is hash-chained (`acgs audit verify`).
	DecisionLog string `yaml:"decision_log"`
	// DecisionLogMask: JSON pointers into the input erased from the log,
	// added to DECISION_LOG_MASK (e.g. /tool_call/arguments/content, or
	// /input/tool_call/arguments/content as OPA writes it).
	DecisionLogMask []string `yaml:"decision_log_mask"`

	// RedisURL, when set, keeps the per-agent call counters in Redis so
	// that gateway replicas share them (default: REDIS_URL; "off": in
	// process even when REDIS_URL is set).
	RedisURL string `yaml:"redis_url"`
	// CounterKeyPrefix prefixes the Redis counter keys (default acgs:gw:).
	CounterKeyPrefix string `yaml:"counter_key_prefix"`
}

// Upstream is one MCP server behind the gateway: a child process over stdio
// (Command) or a remote server over streamable HTTP (URL).
type Upstream struct {
	// Name prefixes its tools (<name>__<tool>); letters, digits, - and _,
	// no "__".
	Name    string   `yaml:"name"`
	Command []string `yaml:"command"`
	// Env is set in a child process's environment. The child inherits
	// only a few of the gateway's variables (PATH, HOME, the locale, ...:
	// inheritedEnv in upstream.go), never its secrets, and those named in
	// InheritEnv.
	Env map[string]string `yaml:"env"`
	// InheritEnv names more of the gateway's variables a child process
	// gets (NAME, or PREFIX* for every name it begins), e.g. HTTPS_PROXY
	// or npm_config_*. Never the admin or an agent's token_env.
	InheritEnv []string          `yaml:"inherit_env"`
	Dir        string            `yaml:"dir"`
	URL        string            `yaml:"url"`
	Headers    map[string]string `yaml:"headers"` // sent with every HTTP request; values may be ${ENV}, never the admin's or an agent's token_env
	// StandaloneStream: the client of an HTTP upstream opens the
	// session's standalone SSE stream (a GET it keeps open), which an
	// upstream answering in JSON-response mode needs to pass a call's
	// progress on. Off by default: the client opens no GET, as before.
	StandaloneStream bool `yaml:"standalone_stream"`

	// Shadow: decide and log every call of this upstream, but forward it
	// whatever the outcome (counted as would-deny or would-hold).
	Shadow bool `yaml:"shadow"`
	// ShadowTools: the same for these tools only (the upstream's names).
	ShadowTools []string `yaml:"shadow_tools"`

	CallTimeout time.Duration `yaml:"call_timeout"`
}

// Agent is an HTTP client identity.
type Agent struct {
	ID       string `yaml:"id"`
	Token    string `yaml:"token"`     // literal bearer token
	TokenEnv string `yaml:"token_env"` // or the variable holding it
}

// Admin is the admin listener: approvals, /metrics, /health.
type Admin struct {
	// Listen, e.g. 127.0.0.1:8096; empty: no admin listener (approvals
	// can then only time out).
	Listen string `yaml:"listen"`
	// TokenEnv names the variable with the bearer token(s), comma
	// separated (default ADMIN_TOKEN).
	TokenEnv string `yaml:"token_env"`
}

// Approvals configure held calls.
type Approvals struct {
	// Timeout: a held call not approved within it is denied (default 2m).
	Timeout time.Duration `yaml:"timeout"`
	// MaxPending bounds the calls held at once (default 1000); beyond it
	// a call needing approval is denied.
	MaxPending int `yaml:"max_pending"`
	// MaxPendingPerAgent bounds the calls of one agent held at once
	// (default 100, or MaxPending when that is lower or when calls carry
	// one identity only; at most MaxPending), so that one agent cannot
	// take every slot: beyond it that agent's calls needing approval are
	// denied, others' still held. HTTP clients without a token are one
	// agent (anonymous_agent) and share one such bound.
	MaxPendingPerAgent int `yaml:"max_pending_per_agent"`
}

// DefaultUnusedTimeout is sessions.unused_timeout's default.
const DefaultUnusedTimeout = 5 * time.Minute

// Sessions bound the HTTP agents' MCP sessions held at once: each keeps
// its state and goroutines until the agent ends it (DELETE) or it has been
// idle for 30 minutes (SessionIdleTimeout), or UnusedTimeout when it has
// made no request since its initialize. An initialize past a bound is
// refused.
type Sessions struct {
	// Max bounds the sessions of all HTTP agents together (default 1000).
	Max int `yaml:"max"`
	// MaxPerAgent bounds one agent's (default 100, or Max when that is
	// lower or when HTTP clients carry one identity only; at most Max).
	// HTTP clients without a token are one agent (anonymous_agent).
	MaxPerAgent int `yaml:"max_per_agent"`
	// UnusedTimeout ends a session that has made no request (a method
	// call other than initialize: notifications do not count) this long
	// after its initialize (default 5m; at most SessionIdleTimeout).
	// Bare initializes would otherwise hold places of the bounds above
	// for the full idle timeout, locking other clients of the agent, or
	// every agent, out. Not shorter by default: the Go SDK's client does
	// not initialize again when its session is gone, so one that connects
	// at start and makes its first call later (a model thinking, a human
	// typing) would be dead (review).
	UnusedTimeout time.Duration `yaml:"unused_timeout"`
}

// SessionIdleTimeout ends an HTTP agent's session that has made no request
// for this long.
const SessionIdleTimeout = 30 * time.Minute

// defaultPerAgent is the default of a bound per agent
// (approvals.max_pending_per_agent, sessions.max_per_agent).
const defaultPerAgent = 100

// perAgentDefault is the default of a bound per agent under the bound of
// all agents together, all: defaultPerAgent, or all when that is lower
// (approvals.max_pending: 50 given alone stays valid) or when every call
// has one identity (stdio, or HTTP with one agent or only anonymous
// clients), where a bound per agent would only lower all. A negative all
// is refused by Validate, not carried over.
func (c *Config) perAgentDefault(all int) int {
	if all > 0 && (all < defaultPerAgent || c.identities() <= 1) {
		return all
	}
	return defaultPerAgent
}

// Separator joins an upstream's name and its tool's name.
const Separator = "__"

var upstreamName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]*$`)

// envName is an inherit_env entry: a variable name, or a beginning of
// names followed by * (* alone: every name).
var envName = regexp.MustCompile(`^([A-Za-z_][A-Za-z0-9_]*\*?|\*)$`)

// LoadConfig reads and validates a configuration file.
func LoadConfig(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("gateway configuration: %w", err)
	}
	c, err := ParseConfig(b)
	if err != nil {
		return Config{}, fmt.Errorf("gateway configuration %s: %w", path, err)
	}
	return c, nil
}

// ParseConfig decodes a configuration (unknown keys are errors), fills the
// defaults and validates it.
func ParseConfig(b []byte) (Config, error) {
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); errors.Is(err, io.EOF) {
		return Config{}, errors.New("the configuration is empty")
	} else if err != nil {
		return Config{}, err
	}
	// A second document (after ---) would be ignored without a word.
	for {
		var more yaml.Node
		err := dec.Decode(&more)
		if errors.Is(err, io.EOF) {
			break
		}
		empty := len(more.Content) == 0 || (len(more.Content) == 1 && more.Content[0].Tag == "!!null" && more.Content[0].Value == "")
		if err != nil || !empty {
			return Config{}, errors.New("the configuration holds more than one YAML document (---); give one")
		}
	}
	c.defaults()
	return c, c.Validate()
}

// minEvalTimeout is the least EVAL_TIMEOUT internal/config accepts: a
// decision_timeout not above it is not above any engine's.
const minEvalTimeout = time.Millisecond

// defaultDecisionTimeout is decision_timeout when the configuration does
// not set it.
const defaultDecisionTimeout = time.Second

func (c *Config) defaults() {
	if c.Path == "" {
		c.Path = "/mcp"
	}
	if c.StdioAgent == "" {
		c.StdioAgent = "stdio"
	}
	if c.Admin.TokenEnv == "" {
		c.Admin.TokenEnv = "ADMIN_TOKEN"
	}
	if c.Approvals.Timeout == 0 {
		c.Approvals.Timeout = 2 * time.Minute
	}
	if c.Approvals.MaxPending == 0 {
		c.Approvals.MaxPending = 1000
	}
	if c.Approvals.MaxPendingPerAgent == 0 {
		c.Approvals.MaxPendingPerAgent = c.perAgentDefault(c.Approvals.MaxPending)
	}
	if c.Sessions.Max == 0 {
		c.Sessions.Max = 1000
	}
	if c.Sessions.MaxPerAgent == 0 {
		c.Sessions.MaxPerAgent = c.perAgentDefault(c.Sessions.Max)
	}
	if c.Sessions.UnusedTimeout == 0 {
		c.Sessions.UnusedTimeout = DefaultUnusedTimeout
	}
	if c.DecisionTimeout == 0 {
		c.DecisionTimeout = defaultDecisionTimeout
	}
	if c.CallTimeout == 0 {
		c.CallTimeout = 60 * time.Second
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = 30 * time.Second
	}
	if c.CounterKeyPrefix == "" {
		c.CounterKeyPrefix = "acgs:gw:"
	}
	for i := range c.Upstreams {
		if c.Upstreams[i].CallTimeout == 0 {
			c.Upstreams[i].CallTimeout = c.CallTimeout
		}
	}
}

// Validate reports every problem, each naming its setting.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if len(c.Upstreams) == 0 {
		bad("upstreams: at least one is needed")
	}
	seen := map[string]bool{}
	for i, u := range c.Upstreams {
		where := fmt.Sprintf("upstreams[%d] (%s)", i, u.Name)
		switch {
		case !upstreamName.MatchString(u.Name):
			bad("%s: name must be letters, digits, - and _ (starting with a letter or digit)", where)
		case strings.Contains(u.Name, Separator):
			bad("%s: name must not contain %q, which separates it from the tool's name", where, Separator)
		case strings.HasSuffix(u.Name, "_"):
			// "files_" + "__" + "echo" would be read back as upstream
			// "files" and tool "_echo".
			bad("%s: name must not end with _, which would run into the %q before the tool's name", where, Separator)
		case seen[u.Name]:
			bad("%s: name used twice", where)
		}
		seen[u.Name] = true
		switch {
		case len(u.Command) > 0 && u.URL != "":
			bad("%s: give command or url, not both", where)
		case len(u.Command) == 0 && u.URL == "":
			bad("%s: give command (a stdio server) or url (a streamable HTTP server)", where)
		case u.URL != "":
			if p, err := url.Parse(u.URL); err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
				bad("%s: url %q must be http:// or https:// with a host", where, u.URL)
			}
		}
		if u.CallTimeout < 0 {
			bad("%s: call_timeout must not be negative", where)
		}
		if len(u.InheritEnv) > 0 && len(u.Command) == 0 {
			bad("%s: inherit_env is for a child process (command)", where)
		}
		if u.StandaloneStream && len(u.Command) > 0 {
			bad("%s: standalone_stream is for an HTTP upstream (url)", where)
		}
		// A header's ${VAR} is the same: the upstream is sent its value.
		for _, h := range slices.Sorted(maps.Keys(u.Headers)) {
			for _, m := range envRef.FindAllStringSubmatch(u.Headers[h], -1) {
				for _, secret := range c.tokenEnvs() {
					if secret != "" && envMatch([]string{secret}, m[1]) {
						bad("%s: header %s passes %s, a bearer token of the gateway, to the upstream", where, h, secret)
					}
				}
			}
		}
		for _, n := range u.InheritEnv {
			if !envName.MatchString(n) {
				bad("%s: inherit_env %q must be a variable name, or a beginning of names followed by *", where, n)
				continue
			}
			// An upstream holding the admin token could approve its own
			// held calls; one holding an agent's token could act as it.
			for _, secret := range c.tokenEnvs() {
				if secret != "" && envMatch([]string{n}, secret) {
					bad("%s: inherit_env %q passes %s, a bearer token of the gateway, to the upstream", where, n, secret)
				}
			}
		}
	}
	ids := map[string]bool{}
	byToken := map[string]string{} // token -> the agent it names first
	for i, a := range c.Agents {
		if a.ID == "" {
			bad("agents[%d]: id is required", i)
		}
		if (a.Token == "") == (a.TokenEnv == "") {
			bad("agents[%d] (%s): give token or token_env", i, a.ID)
		}
		if a.TokenEnv != "" && os.Getenv(a.TokenEnv) == "" {
			bad("agents[%d] (%s): token_env %s is not set", i, a.ID, a.TokenEnv)
		}
		if ids[a.ID] {
			bad("agents[%d]: id %q used twice", i, a.ID)
		}
		ids[a.ID] = true
		tok := a.token()
		if other, ok := byToken[tok]; ok && tok != "" {
			// tokens() keeps one agent per token: a client would act as
			// the other agent
			bad("agents[%d] (%s): the same token as agent %s; each agent needs its own", i, a.ID, other)
		} else if tok != "" {
			byToken[tok] = a.ID
		}
	}
	if c.AnonymousAgent != "" && ids[c.AnonymousAgent] {
		bad("anonymous_agent: %q is also an agent with a token; clients without a token would act as it", c.AnonymousAgent)
	}
	if c.Listen != "" && len(c.Agents) == 0 && c.AnonymousAgent == "" {
		bad("listen: HTTP agents need an identity: give agents (bearer tokens) or anonymous_agent")
	}
	if c.Listen == "" && len(c.Agents) > 0 {
		bad("agents: bearer tokens need listen (streamable HTTP); a stdio agent is stdio_agent")
	}
	for _, m := range c.DecisionLogMask {
		if err := telemetry.CheckMaskPointer(m); err != nil {
			bad("decision_log_mask: %v", err)
		}
	}
	if c.Listen == "" && c.DecisionLog == "stdout" {
		bad("decision_log: stdout is the MCP stream of a stdio agent; use file:/path")
	}
	if c.Approvals.Timeout < 0 || c.DecisionTimeout < 0 || c.CallTimeout < 0 || c.ConnectTimeout < 0 {
		bad("approvals.timeout, decision_timeout, call_timeout, connect_timeout: must not be negative")
	}
	if c.DecisionTimeout > 0 && c.DecisionTimeout <= minEvalTimeout {
		bad("decision_timeout: %s is not greater than EVAL_TIMEOUT can be (at least %s): the decision's evaluation would outlive it and be refused as overload instead of timing out; set it above the engine's EVAL_TIMEOUT", c.DecisionTimeout, minEvalTimeout)
	}
	if c.Approvals.MaxPending < 0 {
		bad("approvals.max_pending: must not be negative")
	}
	if c.Approvals.MaxPendingPerAgent < 0 {
		bad("approvals.max_pending_per_agent: must not be negative")
	} else if c.Approvals.MaxPending >= 0 && c.Approvals.MaxPendingPerAgent > c.Approvals.MaxPending {
		bad("approvals.max_pending_per_agent (%d) must not exceed approvals.max_pending (%d), the bound for all agents together",
			c.Approvals.MaxPendingPerAgent, c.Approvals.MaxPending)
	}
	if c.Sessions.Max < 0 {
		bad("sessions.max: must not be negative")
	}
	if c.Sessions.MaxPerAgent < 0 {
		bad("sessions.max_per_agent: must not be negative")
	} else if c.Sessions.Max >= 0 && c.Sessions.MaxPerAgent > c.Sessions.Max {
		bad("sessions.max_per_agent (%d) must not exceed sessions.max (%d), the bound for all agents together",
			c.Sessions.MaxPerAgent, c.Sessions.Max)
	}
	if c.Sessions.UnusedTimeout < 0 || c.Sessions.UnusedTimeout > SessionIdleTimeout {
		bad("sessions.unused_timeout (%s): must be positive and at most the sessions' idle timeout (%s)", c.Sessions.UnusedTimeout, SessionIdleTimeout)
	}
	if c.Path[0] != '/' {
		bad("path %q must start with /", c.Path)
	}
	return errors.Join(errs...)
}

// Upstream returns the upstream named name.
func (c *Config) Upstream(name string) (Upstream, bool) {
	for _, u := range c.Upstreams {
		if u.Name == name {
			return u, true
		}
	}
	return Upstream{}, false
}

// shadowed reports whether calls of tool (the upstream's name) are in
// shadow mode.
func (u *Upstream) shadowed(tool string) bool {
	if u.Shadow {
		return true
	}
	for _, t := range u.ShadowTools {
		if t == tool {
			return true
		}
	}
	return false
}

// tokenEnvs names the variables holding the gateway's bearer tokens: the
// admin's and the agents'.
func (c *Config) tokenEnvs() []string {
	out := []string{c.Admin.TokenEnv}
	for _, a := range c.Agents {
		if a.TokenEnv != "" {
			out = append(out, a.TokenEnv)
		}
	}
	return out
}

// identities counts the agent identities calls can carry: one over stdio;
// over HTTP the agents with tokens and the anonymous one (all clients
// without a token share it).
func (c *Config) identities() int {
	if c.Listen == "" {
		return 1
	}
	n := len(c.Agents)
	if c.AnonymousAgent != "" {
		n++
	}
	return n
}

// tokens maps each bearer token to its agent.
func (c *Config) tokens() map[string]string {
	m := make(map[string]string, len(c.Agents))
	for _, a := range c.Agents {
		m[a.token()] = a.ID
	}
	return m
}

// token is the agent's bearer token: Token, or the value of TokenEnv.
func (a Agent) token() string {
	if a.TokenEnv != "" {
		return os.Getenv(a.TokenEnv)
	}
	return a.Token
}

// envRef is ${VAR} in a header value.
var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// expandHeader replaces ${VAR} in a header value with the environment's.
// Only the braced form: os.Expand would also take a bare $VAR, and a
// literal $ in a value (abc$def) would lose what follows it.
func expandHeader(v string) string {
	return envRef.ReplaceAllStringFunc(v, func(m string) string { return os.Getenv(m[2 : len(m)-1]) })
}
