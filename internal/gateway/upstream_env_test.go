package gateway_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// envChild makes TestEnvChildServer serve MCP: the gateway starts this
// test binary with it (in the upstream's env) as a stdio upstream.
const envChild = "ACGS_TEST_ENV_CHILD"

// TestEnvChildServer is not a test of its own: run by the gateway as a
// stdio upstream (envChild set, -test.run naming it), it serves one tool,
// environ, answering the child's environment, one variable a line.
func TestEnvChildServer(t *testing.T) {
	if os.Getenv(envChild) != "1" {
		t.Skip("the stdio upstream of TestStdioUpstreamEnvironment")
	}
	s := mcp.NewServer(&mcp.Implementation{Name: "env-child", Version: "1"}, nil)
	mcp.AddTool(s, &mcp.Tool{Name: "environ"}, func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: strings.Join(os.Environ(), "\n")}}}, nil, nil
	})
	_ = s.Run(context.Background(), &mcp.StdioTransport{})
	os.Exit(0)
}

// envChildUpstream is the YAML of a stdio upstream running
// TestEnvChildServer, with extra lines.
func envChildUpstream(name, extra string) string {
	exe, _ := os.Executable()
	return fmt.Sprintf("  - name: %s\n    command: [%q, \"-test.run=^TestEnvChildServer$\"]\n    env: {%s: \"1\", CONFIGURED_FOR_CHILD: configured}\n%s", name, exe, envChild, extra)
}

// childEnviron calls the environ tool of upstream name through the gateway.
func childEnviron(t *testing.T, e *env, name string) map[string]string {
	t.Helper()
	res := call(t, e.agent(t, "token-1"), name+"__environ", map[string]any{})
	if res.IsError {
		t.Fatalf("%s__environ: %s", name, text(res))
	}
	vars := map[string]string{}
	for _, kv := range strings.Split(text(res), "\n") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			vars[k] = v
		}
	}
	return vars
}

// TestStdioUpstreamEnvironment: a stdio upstream does not inherit the
// gateway's environment, whose secrets (the admin token, agents' tokens,
// header ${VAR}s, the cache signing key) would let it, or an agent that
// reads its environment through a tool, approve its own held calls: it
// gets PATH, HOME and the like, and its configured env.
func TestStdioUpstreamEnvironment(t *testing.T) {
	secrets := map[string]string{
		"ADMIN_TOKEN":          "admin-token-from-the-environment",
		"RESEARCH_AGENT_TOKEN": "an-agents-token",
		"SEARCH_TOKEN":         "a-header-secret",
		"CACHE_SIGNING_KEY":    "the-signing-key",
	}
	for k, v := range secrets {
		t.Setenv(k, v)
	}
	t.Setenv("LC_ACGS_TEST", "a-locale")
	e := startEnv(t, envOptions{upstreams: envChildUpstream("child", "") + "  - name: remote\n    url: REMOTE\n"})
	vars := childEnviron(t, e, "child")
	for k := range secrets {
		if v, ok := vars[k]; ok {
			t.Errorf("the stdio upstream sees %s=%s", k, v)
		}
	}
	if vars["PATH"] != os.Getenv("PATH") {
		t.Errorf("the stdio upstream's PATH is %q, want the gateway's %q", vars["PATH"], os.Getenv("PATH"))
	}
	if vars["LC_ACGS_TEST"] != "a-locale" {
		t.Errorf("LC_* not inherited: %q", vars["LC_ACGS_TEST"])
	}
	if vars["CONFIGURED_FOR_CHILD"] != "configured" || vars[envChild] != "1" {
		t.Errorf("the upstream's env is missing: %v", vars)
	}
	if len(vars) > 16 {
		t.Errorf("the stdio upstream got %d variables, want a few: %v", len(vars), vars)
	}
}

// TestStdioUpstreamInheritEnv: inherit_env passes more of the gateway's
// variables to a stdio upstream (names, or beginnings with *); the
// configuration refuses the token variables (TestConfigInheritEnv).
func TestStdioUpstreamInheritEnv(t *testing.T) {
	t.Setenv("ACGS_TEST_PROXY", "http://proxy:3128")
	t.Setenv("npm_config_acgs_test", "npm-setting")
	t.Setenv("ACGS_TEST_NOT_PASSED", "no")
	e := startEnv(t, envOptions{upstreams: envChildUpstream("child", "    inherit_env: [ACGS_TEST_PROXY, npm_config_*]\n")})
	vars := childEnviron(t, e, "child")
	if vars["ACGS_TEST_PROXY"] != "http://proxy:3128" || vars["npm_config_acgs_test"] != "npm-setting" {
		t.Errorf("inherit_env not passed: %v", vars)
	}
	if _, ok := vars["ACGS_TEST_NOT_PASSED"]; ok {
		t.Error("a variable inherit_env does not name was passed")
	}

}
