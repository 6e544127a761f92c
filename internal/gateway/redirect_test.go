package gateway_test

import (
	"fmt"
	"net"
	"net/http"
	"sync"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/acgs-lite/acgs/internal/gateway/mcptest"
)

// authRecorder serves mcptest's server over streamable HTTP on loopback
// at /mcp, redirects (307) every request for /old to where(its own
// address), and records the Authorization header of each request to /mcp.
type authRecorder struct {
	addr string
	mu   sync.Mutex
	seen []string
}

func newAuthRecorder(t *testing.T, where func(own string) string) *authRecorder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &authRecorder{addr: ln.Addr().String()}
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return mcptest.New().MCP }, nil)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path == "/old" {
			http.Redirect(w, req, where(r.addr), http.StatusTemporaryRedirect)
			return
		}
		r.mu.Lock()
		r.seen = append(r.seen, req.Header.Get("Authorization"))
		r.mu.Unlock()
		h.ServeHTTP(w, req)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return r
}

func (r *authRecorder) authorizations() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.seen...)
}

// TestUpstreamHeadersStayWithTheirOrigin: an HTTP upstream's configured
// headers (its bearer token) go to the configured URL's origin only. The
// gateway added them to every request its client sent, so an upstream, or
// whoever could answer for it, that redirected the gateway to another host
// was sent the token; net/http's own stripping of Authorization on such a
// redirect did not help, the headers being added below it. A redirect
// within the origin still carries them.
func TestUpstreamHeadersStayWithTheirOrigin(t *testing.T) {
	t.Setenv("ACGS_TEST_UPSTREAM_TOKEN", "upstream-secret-xyz")
	const want = "Bearer upstream-secret-xyz"
	for _, tc := range []struct {
		name        string
		otherOrigin bool
	}{
		{"redirect to another origin", true},
		{"redirect within the origin", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// the target redirects /old to its own /mcp; the redirector,
			// on another port (another origin), to the target's
			target := newAuthRecorder(t, func(own string) string { return "http://" + own + "/mcp" })
			redirector := target
			if tc.otherOrigin {
				redirector = newAuthRecorder(t, func(string) string { return "http://" + target.addr + "/mcp" })
			}
			ups := fmt.Sprintf("  - name: remote\n    url: REMOTE\n  - name: redir\n    url: http://%s/old\n    headers: {Authorization: \"Bearer ${ACGS_TEST_UPSTREAM_TOKEN}\"}\n", redirector.addr)
			e := startEnv(t, envOptions{upstreams: ups})
			if res := call(t, e.agent(t, "token-1"), "redir__echo", map[string]any{"text": "x"}); res.IsError {
				t.Fatalf("redir__echo: %q", text(res))
			}
			seen := target.authorizations()
			if len(seen) == 0 {
				t.Fatal("the redirect's target saw no request")
			}
			for _, a := range seen {
				if tc.otherOrigin && a != "" {
					t.Fatalf("another origin was sent the upstream's Authorization header: %q", a)
				}
				if !tc.otherOrigin && a != want {
					t.Fatalf("a redirect within the origin got Authorization %q, want %q", a, want)
				}
			}
		})
	}
}
