package gateway_test

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/acgs-lite/acgs/internal/gateway"
	"github.com/acgs-lite/acgs/internal/gateway/mcptest"
	"github.com/acgs-lite/acgs/internal/testenv"
)

// BenchmarkOverheadOwnCPU is BenchmarkOverhead with the gateway deployed as
// it runs in production: its own process (the acgs binary) on its own CPU,
// and the agent and the upstream on another. In BenchmarkOverhead all three
// share the machine's CPUs, so every microsecond of the gateway's work (two
// MCP hops through the SDK, the same work as the agent and the upstream do
// between them) is taken from the agent and the upstream; here the direct
// path and the gateway path give the agent and the upstream the same one
// CPU, and the throughput ratio says how much a gateway that has its own
// CPU slows them. scripts/gateway-overhead.sh runs both benchmarks:
//
//	ACGS_GATEWAY_CPU=1 GOMAXPROCS=1 taskset -c 0 gateway.test -test.bench OverheadOwnCPU
//
// starts `acgs gateway` under `taskset -c $ACGS_GATEWAY_CPU` with
// GOMAXPROCS=1, and its stdio upstream on CPU 0 beside the agent (as the
// direct path's upstream is). Without ACGS_GATEWAY_CPU it is skipped.
func BenchmarkOverheadOwnCPU(b *testing.B) {
	cpu := os.Getenv("ACGS_GATEWAY_CPU")
	if cpu == "" {
		b.Skip("ACGS_GATEWAY_CPU is not set: run scripts/gateway-overhead.sh")
	}
	taskset, err := exec.LookPath("taskset")
	if err != nil {
		b.Skip("taskset (util-linux) is not installed")
	}
	acgs := testenv.ACGSBinary(b)
	bundle := benchBundle(b)
	exe, _ := os.Executable()
	env := append(os.Environ(), "POLICY_BUNDLE_PATH="+bundle, "DECISION_LOG=off", "LOG_LEVEL=error", "GOMAXPROCS=1", "BENCH_AGENT_TOKEN=token-1")
	gatewayCmd := func(cfg string) *exec.Cmd {
		cmd := exec.Command(taskset, "-c", cpu, acgs, "gateway", "--config", cfg)
		cmd.Env = env
		return cmd
	}

	b.Run("http", func(b *testing.B) {
		_, remURL := serveMCP(b)
		addr, adminAddr := freeAddr(b), freeAddr(b)
		cfg := writeConfig(b, fmt.Sprintf("listen: %q\nadmin: {listen: %q}\nagents:\n  - {id: agent-1, token_env: BENCH_AGENT_TOKEN}\nupstreams:\n  - name: remote\n    url: %s\n", addr, adminAddr, remURL))
		stopGateway := startProcess(b, gatewayCmd(cfg), "http://"+adminAddr+gateway.HealthPath)
		defer func() { _ = stopGateway() }()
		direct := connectHTTP(b, remURL, "")
		gw := connectHTTP(b, "http://"+addr+"/mcp", "token-1")
		measure(b, noop(direct), prefixed(gw, "remote__noop"), scrapedOwnTime(b, "http://"+adminAddr+gateway.MetricsPath, "remote"))
	})
	b.Run("stdio", func(b *testing.B) {
		adminAddr := freeAddr(b)
		// The upstream on CPU 0, beside the agent, as on the direct path.
		cfg := writeConfig(b, fmt.Sprintf("stdio_agent: agent-1\nadmin: {listen: %q}\nupstreams:\n  - name: local\n    command: [%q, \"-c\", \"0\", %q]\n    env: {%s: stdio}\n", adminAddr, taskset, exe, mcptest.EnvServer))
		gw, err := mcp.NewClient(&mcp.Implementation{Name: "bench-agent", Version: "1"}, nil).Connect(testCtx(b), &mcp.CommandTransport{Command: gatewayCmd(cfg)}, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer gw.Close()
		measure(b, noop(directStdio(b)), prefixed(gw, "local__noop"), scrapedOwnTime(b, "http://"+adminAddr+gateway.MetricsPath, "local"))
	})
}

// scrapedOwnTime is ownTime for a gateway in another process: the mean of
// acgs_gateway_overhead_seconds from its /metrics.
func scrapedOwnTime(b *testing.B, url, upstream string) func() float64 {
	return func() float64 {
		resp, err := http.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		defer resp.Body.Close()
		parser := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := parser.TextToMetricFamilies(resp.Body)
		if err != nil {
			b.Fatal(err)
		}
		list := make([]*dto.MetricFamily, 0, len(fams))
		for _, f := range fams {
			list = append(list, f)
		}
		return ownMean(list, upstream)
	}
}
