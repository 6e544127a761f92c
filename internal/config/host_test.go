package config_test

import (
	"net"
	"strings"
	"testing"

	"github.com/acgs-lite/acgs/internal/config"
)

// HOST may be an IPv6 address, with or without brackets: the listen address
// joins it to PORT in brackets ("::1:8004" is refused by net.Listen as too
// many colons). Whatever is not an IP address or a host name is refused by
// Validate with the setting's name.
func TestHostIPv6AndValidation(t *testing.T) {
	for _, tc := range []struct {
		host, addr string
		want       []string // nil: valid
	}{
		{"", ":8004", nil},
		{"0.0.0.0", "0.0.0.0:8004", nil},
		{"127.0.0.1", "127.0.0.1:8004", nil},
		{"::1", "[::1]:8004", nil},
		{"::", "[::]:8004", nil},
		{"[::1]", "[::1]:8004", nil},
		{"[::]", "[::]:8004", nil},
		{"fe80::1%eth0", "[fe80::1%eth0]:8004", nil},
		{"localhost", "localhost:8004", nil},
		{"acgs.example.com.", "acgs.example.com.:8004", nil},
		{"acgs_policy-1", "acgs_policy-1:8004", nil},
		{"0.0.0.0:8004", "", []string{"HOST", `"0.0.0.0:8004"`, "PORT"}},
		{"[::1]:8004", "", []string{"HOST", "PORT"}},
		{"[localhost]", "", []string{"HOST", "IPv6"}},
		{"[127.0.0.1]", "", []string{"HOST", "IPv6"}},
		{"[::1", "", []string{"HOST", "IP address", "host name"}},
		{"not a host", "", []string{"HOST", "host name"}},
		{"-acgs", "", []string{"HOST", "host name"}},
		{"a..b", "", []string{"HOST", "host name"}},
		{"http://localhost", "", []string{"HOST", "host name"}},
	} {
		t.Run(tc.host, func(t *testing.T) {
			c, err := load(t, map[string]string{"HOST": tc.host})
			if err != nil {
				t.Fatal(err)
			}
			err = c.Validate()
			if tc.want == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if got := c.Addr(); got != tc.addr {
					t.Errorf("Addr() = %q, want %q", got, tc.addr)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// The listen address of an IPv6 HOST is one net.Listen accepts.
func TestHostIPv6Listens(t *testing.T) {
	probe, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	probe.Close()
	for _, host := range []string{"::1", "[::1]", "::"} {
		c := config.Default()
		c.Server.Host, c.Server.Port = host, 0
		ln, err := net.Listen("tcp", c.Addr())
		if err != nil {
			t.Errorf("HOST=%s: %v", host, err)
			continue
		}
		ln.Close()
	}
}
