package cli

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/acgs-lite/acgs/internal/config"
	"github.com/acgs-lite/acgs/internal/gateway"
	"github.com/acgs-lite/acgs/internal/memlimit"
	"github.com/acgs-lite/acgs/internal/service"
	"github.com/acgs-lite/acgs/internal/telemetry"
)

func init() { register(newGatewayCmd) }

func newGatewayCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "gateway --config FILE",
		Short: "Run the MCP gateway: the constitution decides every tool call an agent makes to its MCP servers",
		Long: `Run the MCP governance gateway: an MCP server to the agent (stdio, or
streamable HTTP with listen:) and an MCP client to the upstream MCP servers of
the configuration file (child processes over stdio, remote servers over
streamable HTTP). tools/list merges the upstreams' tools as <upstream>__<tool>
and hides the ones the constitution prohibits outright; every tools/call is a
decision of the tool_call type (docs/tool-calls.md): allowed calls are
forwarded unchanged, denied ones answer a tool error with the reasons and the
decision id, and calls that need approval wait for
'acgs approvals approve|deny' (or the timeout, which denies).

The configuration file is YAML or JSON (docs/gateway.md). The engine's
settings are those of 'acgs serve' (flags and environment: bundle, cache,
REDIS_URL, EVAL_TIMEOUT, DECISION_LOG, ADMIN_TOKEN, ...). The decision log is
hash-chained: 'acgs audit verify FILE' checks it. SIGHUP reloads the bundle.`,
		Args: cobra.NoArgs,
	}
	var file string
	cmd.Flags().StringVar(&file, "config", os.Getenv("ACGS_GATEWAY_CONFIG"), "gateway configuration file, YAML or JSON (env ACGS_GATEWAY_CONFIG)")
	loader := config.NewLoader(cmd.Flags(), nil)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if file == "" {
			return fmt.Errorf("--config FILE is required (see docs/gateway.md)")
		}
		gcfg, err := gateway.LoadConfig(file)
		if err != nil {
			return err
		}
		cfg, err := loader.Config()
		if err != nil {
			return err
		}
		// Before the bundle loads and Redis connects: a configuration
		// refused anyway is refused at once.
		if err := gateway.CheckDecisionTimeout(gcfg, cfg.Policy.EvalTimeout); err != nil {
			return err
		}
		return runGateway(cmd.Context(), cmd, gcfg, cfg)
	}
	return cmd
}

func runGateway(ctx context.Context, cmd *cobra.Command, gcfg gateway.Config, cfg config.Config) error {
	// The gateway writes its own, hash-chained decision log; the engine's
	// wiring is that of acgs serve without the HTTP API.
	sink := gcfg.DecisionLog
	if sink == "" {
		sink = cfg.Log.DecisionLog
	}
	if gcfg.Listen == "" && telemetry.WritesToStdout(sink) {
		return fmt.Errorf("decision log sink %s writes to stdout, the MCP stream of a stdio agent; use file:/path with a file that is not stdout", sink)
	}
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gateway.DefaultGCPercent)
	}
	// GOMEMLIMIT from the container's limit, as in acgs serve: with
	// GOGC at 400 the heap may grow to five times the live heap, and the
	// limit keeps that inside the container. (The headroom pacing of
	// acgs serve, GC_MIN_HEADROOM_MB, is not used: GOGC is fixed.)
	mem, limit := memlimit.Apply(cfg.Memory.LimitRatio, os.LookupEnv)
	if gcfg.Listen == "" {
		// A stdio agent's host that exits closes the gateway's stdout and
		// stderr. Unless SIGPIPE is caught, Go ends the process on the
		// next write to either (a log line, an answer), before the
		// shutdown flushes the decision log's queue and closes the
		// upstreams. Caught, such a write fails with EPIPE and the
		// gateway stops as when its stdin ends. (Caught, not ignored: an
		// ignored signal would be inherited by stdio upstreams.) Caught
		// until the process exits: an error it prints on the way out goes
		// to the same closed stderr.
		signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	}
	mask := append(append([]string{}, cfg.Log.DecisionLogMask...), gcfg.DecisionLogMask...)
	cfg.Log.DecisionLog = "off"
	if gcfg.RedisURL == "" {
		gcfg.RedisURL = cfg.Cache.RedisURL
	}
	svc, err := service.New(ctx, cfg, service.Options{LogOutput: cmd.ErrOrStderr()})
	if err != nil {
		return err
	}
	defer svc.Close()
	logMemoryLimit(svc, mem, limit)
	dlog, err := telemetry.NewDecisionLog(telemetry.DecisionLogConfig{
		Sink: sink, Mask: mask, QueueSize: cfg.Log.DecisionLogSize, Logger: svc.Log, Chain: true, Context: ctx,
	})
	if err != nil {
		return err
	}
	svc.Metrics.RegisterDecisionLog(dlog)
	defer dlog.CloseAndReport(svc.Log, sink, 5*time.Second)
	tokens := cfg.AdminTok
	if gcfg.Admin.TokenEnv != "ADMIN_TOKEN" {
		tokens = nil
		for _, t := range strings.Split(os.Getenv(gcfg.Admin.TokenEnv), ",") {
			if t = strings.TrimSpace(t); t != "" {
				tokens = append(tokens, t)
			}
		}
	}
	g, err := gateway.New(gcfg, gateway.Deps{
		Engine:             svc.Engine,
		ConstitutionalHash: cfg.Policy.ConstitutionalHash,
		DecisionLog:        dlog,
		Metrics:            svc.Metrics,
		Registerer:         svc.Metrics.Registry(),
		Logger:             svc.Log,
		AdminTokens:        tokens,
		EvalTimeout:        cfg.Policy.EvalTimeout,
	})
	if err != nil {
		return err
	}
	// Remote bundles (CONFIG_FILE) and SIGHUP reloads, as in acgs serve;
	// until a remote bundle arrives every call is denied (fail closed).
	pctx, stopPolicy := context.WithCancel(ctx)
	defer stopPolicy()
	if err := svc.StartPolicy(pctx); err != nil {
		return err
	}
	stdin, stdout := cmd.InOrStdin(), cmd.OutOrStdout()
	if gcfg.Listen == "" && stdin == os.Stdin && stdout == os.Stdout {
		in, out, restore := pollableStdio()
		defer restore()
		stdin, stdout = in, out
	}
	return g.Run(ctx, gateway.RunOptions{
		Stdin:   stdin,
		Stdout:  stdout,
		Metrics: svc.Metrics.Handler(),
		Ready: func(agent, admin string) {
			svc.Log.Info("gateway ready", "agent_addr", agent, "admin_addr", admin)
		},
	})
}
