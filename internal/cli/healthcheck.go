package cli

import (
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/spf13/cobra"
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
	port := os.Getenv("PORT")
	if port == "" {
		port = "8004"
	}
	cmd.Flags().StringVar(&url, "url", "http://127.0.0.1:"+port+"/health/ready", "readiness URL to check")
	cmd.Flags().DurationVar(&timeout, "timeout", 3*time.Second, "give up after this long")
	return cmd
}
