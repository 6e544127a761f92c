package gateway_test

import (
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestUpstreamErrorsDoNotQuoteItsURL: an upstream's URL may hold secrets
// in its path or query (an API key), and the errors of its HTTP client
// quote it (Post "https://...?api_key=...": dial tcp ...). What an agent
// is told of an upstream that failed names the upstream and the kind of
// failure, never the URL: the gateway's log has the full error.
func TestUpstreamErrorsDoNotQuoteItsURL(t *testing.T) {
	bad := refusedAddr(t)
	e := startEnv(t, envOptions{upstreams: "  - name: remote\n    url: REMOTE\n  - name: bad\n    url: http://" + bad + "/mcp/PATHSECRET123?api_key=QUERYSECRET456\n"})
	a := e.agent(t, "token-1")
	for _, tc := range []struct {
		name string
		do   func() (string, error) // the agent's tool error text, or its request's error
	}{
		{"tools/call", func() (string, error) {
			res, err := a.CallTool(testCtx(t), &mcp.CallToolParams{Name: "bad__echo", Arguments: map[string]any{"text": "x"}})
			if err != nil {
				return "", err
			}
			return text(res), nil
		}},
		{"tools/call needing approval", func() (string, error) {
			_, err := a.CallTool(testCtx(t), &mcp.CallToolParams{Name: "bad__delete_record", Arguments: map[string]any{"id": "1"}})
			return "", err
		}},
		{"prompts/get", func() (string, error) {
			_, err := a.GetPrompt(testCtx(t), &mcp.GetPromptParams{Name: "bad__review", Arguments: map[string]string{"topic": "x"}})
			return "", err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.do()
			if err != nil {
				got = err.Error()
			}
			if strings.Contains(got, "SECRET") || strings.Contains(got, "/mcp") {
				t.Errorf("the agent is told the upstream's URL: %q", got)
			}
			if !strings.Contains(got, `upstream "bad"`) || !strings.Contains(got, "connection refused") {
				t.Errorf("the agent is told %q, want the upstream's name and the connection refused", got)
			}
		})
	}
	if !strings.Contains(e.logs.String(), "QUERYSECRET456") {
		t.Errorf("the gateway's log does not have the full error:\n%s", e.logs.String())
	}
}
