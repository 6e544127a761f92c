package cli

import (
	"github.com/spf13/cobra"

	"github.com/acgs-lite/acgs/internal/config"
	"github.com/acgs-lite/acgs/internal/service"
)

func init() { register(newServeCmd) }

func newServeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the policy decision service (port 8004, embedded constitution, L1 cache)",
		Long: `Run the policy decision service.

Every setting can be given as a flag or as the environment variable named in
its description; a flag wins. With nothing set, the service listens on :8004,
evaluates the embedded constitution and caches decisions in process only.
SIGHUP reloads the policy bundle; SIGTERM/SIGINT drain in-flight requests.`,
		Args: cobra.NoArgs,
	}
	loader := config.NewLoader(cmd.Flags(), nil)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg, err := loader.Config()
		if err != nil {
			return err
		}
		svc, err := service.New(cmd.Context(), cfg, service.Options{LogOutput: cmd.ErrOrStderr()})
		if err != nil {
			return err
		}
		return svc.Run(cmd.Context())
	}
	return cmd
}
