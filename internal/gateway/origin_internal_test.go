package gateway

import "testing"

// TestOrigin: the origin that an upstream's configured headers go to
// (headerTransport) compares scheme, host and port, with default ports and
// case made alike.
func TestOrigin(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		same bool
	}{
		{"https://mcp.example.com/mcp", "https://mcp.example.com/other?x=1", true},
		{"https://MCP.example.com/mcp", "HTTPS://mcp.example.com:443/mcp", true},
		{"http://127.0.0.1/mcp", "http://127.0.0.1:80/mcp", true},
		{"http://[::1]:8080/mcp", "http://[::1]:8080/", true},
		{"https://mcp.example.com/mcp", "http://mcp.example.com/mcp", false},
		{"https://mcp.example.com/mcp", "https://evil.example.net/mcp", false},
		{"https://mcp.example.com/mcp", "https://sub.mcp.example.com/mcp", false},
		{"http://127.0.0.1:8080/mcp", "http://127.0.0.1:8081/mcp", false},
		{"http://127.0.0.1:8080/mcp", "http://127.0.0.1/mcp", false},
	} {
		if got := origin(tc.a) == origin(tc.b); got != tc.same {
			t.Errorf("origin(%q) = %q, origin(%q) = %q: same %v, want %v", tc.a, origin(tc.a), tc.b, origin(tc.b), got, tc.same)
		}
	}
	if origin("/relative") != "" || origin("://bad") != "" {
		t.Error("a URL without a host has an origin")
	}
}
