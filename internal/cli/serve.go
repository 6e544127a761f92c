package cli

import (
	"math"
	"os"
	"runtime/debug"

	"github.com/spf13/cobra"

	"github.com/acgs-lite/acgs/internal/config"
	"github.com/acgs-lite/acgs/internal/memlimit"
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
		// The memory limit is set before the bundle is compiled, and logged
		// once the logger exists (an invalid ratio sets nothing here and is
		// refused by service.New's validation).
		mem, limit := memlimit.Apply(cfg.Memory.LimitRatio, os.LookupEnv)
		svc, err := service.New(cmd.Context(), cfg, service.Options{LogOutput: cmd.ErrOrStderr()})
		if err != nil {
			return err
		}
		logMemoryLimit(svc, mem, limit)
		// Started after the burst of compiling the bundle, so the pacing
		// it sets is for the live heap that serves.
		gc := memlimit.StartHeadroom(os.Getenv("GOGC"), cfg.Memory.GCMinHeadroomMiB)
		defer gc.Stop()
		svc.Log.Info("gc pacing", "source", string(gc.Source), "reason", gc.Reason)
		// Compiling the bundle (twice: the serving compiler and the
		// planner's) and building its plans is a one-off burst: the heap
		// grows to about 45 MB for 18 MB that stay live. Hand the rest back
		// to the OS now rather than leaving it to the background scavenger,
		// which keeps what the GC's goal allows: idle resident memory
		// 70 → 57 MiB for the embedded constitution (issue 18).
		debug.FreeOSMemory()
		return svc.Run(cmd.Context())
	}
	return cmd
}

// logMemoryLimit says at startup what memory limit the runtime has and why.
func logMemoryLimit(svc *service.Service, d memlimit.Decision, limit int64) {
	attrs := []any{"source", string(d.Source), "reason", d.Reason}
	if limit == math.MaxInt64 {
		attrs = append(attrs, "gomemlimit", "none")
	} else {
		attrs = append(attrs, "gomemlimit_bytes", limit)
	}
	if d.CgroupLimit > 0 {
		attrs = append(attrs, "cgroup_limit_bytes", d.CgroupLimit, "ratio", d.Ratio)
	}
	svc.Log.Info("memory limit", attrs...)
}
