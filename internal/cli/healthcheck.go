package cli

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/acgs-lite/acgs/internal/config"
)

func init() { register(newHealthcheckCmd) }

// newHealthcheckCmd is for container HEALTHCHECKs, where there is no curl:
// exit 0 when the instance is ready, 1 otherwise.
func newHealthcheckCmd() *cobra.Command {
	var url string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "healthcheck",
		Short: "Exit 0 if a running instance is ready, 1 otherwise (for container health checks)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			client := &http.Client{Timeout: timeout}
			resp, err := client.Get(url)
			if err != nil {
				return &ExitError{Code: 1, Err: fmt.Errorf("unhealthy: %w", err)}
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return &ExitError{Code: 1, Err: fmt.Errorf("unhealthy: %s answered %s", url, resp.Status)}
			}
			fmt.Fprintln(cmd.OutOrStdout(), "healthy")
			return nil
		},
	}
	cmd.Flags().StringVar(&url, "url", readinessURL(os.Getenv("HOST"), os.Getenv("PORT")), "readiness URL to check (default from HOST and PORT, as acgs serve reads them)")
	cmd.Flags().DurationVar(&timeout, "timeout", 3*time.Second, "give up after this long")
	return cmd
}

// readinessURL is the readiness endpoint of the instance that `acgs serve`
// starts with the same HOST and PORT: HOST itself (an IPv6 address in
// brackets, with or without them in HOST), or loopback when it listens on
// every interface (127.0.0.1 for empty HOST or 0.0.0.0, ::1 for ::). PORT
// is trimmed as serve trims it; empty, it is serve's default, 8004.
func readinessURL(host, port string) string {
	host, port = strings.TrimSpace(host), strings.TrimSpace(port)
	if port == "" {
		port = "8004"
	}
	host = config.Unbracket(host)
	if host == "" {
		host = "127.0.0.1"
	} else if a, err := netip.ParseAddr(host); err == nil && a.IsUnspecified() {
		if a.Is4() {
			host = "127.0.0.1"
		} else {
			host = "::1"
		}
	}
	// A zone (fe80::1%eth0) is escaped in a URL's host (RFC 6874).
	return "http://" + net.JoinHostPort(strings.ReplaceAll(host, "%", "%25"), port) + "/health/ready"
}
