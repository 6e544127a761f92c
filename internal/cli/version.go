package cli

import (
	"fmt"
	"runtime"

	"github.com/open-policy-agent/opa/v1/version"
	"github.com/spf13/cobra"

	acgsversion "github.com/acgs-lite/acgs/internal/version"
)

func init() { register(newVersionCmd) }

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version of acgs and of the embedded OPA",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "acgs %s\n", acgsversion.Version)
			fmt.Fprintf(out, "commit: %s\n", acgsversion.Commit())
			fmt.Fprintf(out, "opa: %s\n", version.Version)
			fmt.Fprintf(out, "go: %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return nil
		},
	}
}
