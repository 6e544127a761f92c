package cli

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// healthcheckRun runs `acgs healthcheck args...` and returns its output and
// error.
func healthcheckRun(t *testing.T, args ...string) (string, error) {
	t.Helper()
	out, _, err := perfRun(t, append([]string{"healthcheck"}, args...)...)
	return out, err
}

// The URL checked by default is that of the instance `acgs serve` starts
// with the same HOST and PORT: loopback when it listens on every interface,
// HOST itself otherwise, an IPv6 address in brackets.
func TestHealthcheckURLFromHostAndPort(t *testing.T) {
	for _, tc := range []struct{ host, port, want string }{
		{"", "", "http://127.0.0.1:8004/health/ready"},
		{"", "9000", "http://127.0.0.1:9000/health/ready"},
		{"", " 9000\n", "http://127.0.0.1:9000/health/ready"},
		{"0.0.0.0", "8080", "http://127.0.0.1:8080/health/ready"},
		{"::", "8080", "http://[::1]:8080/health/ready"},
		{"[::]", "8080", "http://[::1]:8080/health/ready"},
		{"::1", "8080", "http://[::1]:8080/health/ready"},
		{"[::1]", "8080", "http://[::1]:8080/health/ready"},
		{"127.0.0.2", "", "http://127.0.0.2:8004/health/ready"},
		{"10.1.2.3", "8004", "http://10.1.2.3:8004/health/ready"},
		{"2001:db8::7", "8004", "http://[2001:db8::7]:8004/health/ready"},
		{"fe80::1%eth0", "8004", "http://[fe80::1%25eth0]:8004/health/ready"},
		{"localhost", "8004", "http://localhost:8004/health/ready"},
		{" acgs.internal ", "8004", "http://acgs.internal:8004/health/ready"},
	} {
		t.Run(tc.host+"_"+tc.port, func(t *testing.T) {
			t.Setenv("HOST", tc.host)
			t.Setenv("PORT", tc.port)
			f := newHealthcheckCmd().Flags().Lookup("url")
			if f == nil {
				t.Fatal("no --url flag")
			}
			if f.DefValue != tc.want {
				t.Errorf("HOST=%q PORT=%q: checks %s, want %s", tc.host, tc.port, f.DefValue, tc.want)
			}
		})
	}
}

// A healthcheck in the container of an instance serving on HOST=::1 reaches
// it; --url still wins over HOST and PORT.
func TestHealthcheckReachesHost(t *testing.T) {
	ready := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/health/ready" {
			http.NotFound(w, r)
		}
	})
	t.Run("ipv6", func(t *testing.T) {
		ln, err := net.Listen("tcp", "[::1]:0")
		if err != nil {
			t.Skipf("no IPv6 loopback: %v", err)
		}
		srv := httptest.NewUnstartedServer(ready)
		srv.Listener = ln
		srv.Start()
		defer srv.Close()
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		t.Setenv("HOST", "::1")
		t.Setenv("PORT", port+"\n")
		if out, err := healthcheckRun(t, "--timeout", "5s"); err != nil || !strings.Contains(out, "healthy") {
			t.Errorf("HOST=::1: %v %s", err, out)
		}
	})
	t.Run("url wins", func(t *testing.T) {
		srv := httptest.NewServer(ready)
		defer srv.Close()
		t.Setenv("HOST", "192.0.2.1") // TEST-NET-1: nothing answers there
		t.Setenv("PORT", "1")
		if out, err := healthcheckRun(t, "--timeout", "5s", "--url", srv.URL+"/health/ready"); err != nil || !strings.Contains(out, "healthy") {
			t.Errorf("--url: %v %s", err, out)
		}
	})
}
