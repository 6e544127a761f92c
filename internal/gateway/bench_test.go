package gateway_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime/debug"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	dto "github.com/prometheus/client_model/go"

	"github.com/acgs-lite/acgs/internal/config"
	"github.com/acgs-lite/acgs/internal/gateway"
	"github.com/acgs-lite/acgs/internal/gateway/mcptest"
)

// The gateway's overhead (performance.md: added p50 ≤ 0.2 ms for a cached
// decision, throughput ≥ 0.8 × direct): a trivial tool (mcptest's noop)
// called through the gateway and called directly on the same upstream, in
// the same run, interleaved block by block so that a noisy machine slows
// both alike.
//
//	go test ./internal/gateway -run '^$' -bench Overhead -benchtime 4000x
//
// reports, per transport (http: agent and upstream over streamable HTTP on
// loopback; stdio: agent over pipes, upstream a child process over stdio):
// direct-p50-us, gateway-p50-us, added-p50-us (sequential calls), and
// direct-calls/s, gateway-calls/s, throughput-ratio (8 concurrent callers),
// direct-cpu-us/call and gateway-cpu-us/call (this process's CPU a call in
// the throughput blocks: on a shared machine a steadier figure than calls/s),
// and gateway-own-mean-us (acgs_gateway_overhead_seconds: the gateway's own
// code, without the SDK's protocol work). The decision log is off, as by
// default; the agent, the gateway and (for http) the upstream share this
// process and the machine's CPUs.

// benchBundle is the constitution with agent-1's rate limit raised out of
// reach (an operator's tuning in data.json): the benchmark makes thousands
// of calls a minute, and every one must be an allowed, cached decision.
func benchBundle(tb testing.TB) string {
	tb.Helper()
	return perAgentLimits(tb, map[string]any{"agent-1": 1e9})
}

type caller func(ctx context.Context) error

func noop(cs *mcp.ClientSession) caller {
	return func(ctx context.Context) error {
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "noop", Arguments: map[string]any{}})
		if err == nil && res.IsError {
			err = fmt.Errorf("noop: %s", text(res))
		}
		return err
	}
}

func prefixed(cs *mcp.ClientSession, name string) caller {
	return func(ctx context.Context) error {
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: map[string]any{}})
		if err == nil && res.IsError {
			err = fmt.Errorf("%s: %s", name, text(res))
		}
		return err
	}
}

func BenchmarkOverhead(b *testing.B) {
	// As in the acgs gateway process (unless GOGC is set): see
	// gateway.DefaultGCPercent.
	if os.Getenv("GOGC") == "" {
		defer debug.SetGCPercent(debug.SetGCPercent(gateway.DefaultGCPercent))
	}
	bundle := benchBundle(b)
	mutate := func(c *config.Config) { c.Policy.BundlePath = bundle; c.Log.Level = "error" }

	b.Run("http", func(b *testing.B) {
		e := startEnv(b, envOptions{mutate: mutate, noLog: true, upstreams: "  - name: remote\n    url: REMOTE\n"})
		direct := connectHTTP(b, e.remURL, "")
		gw := e.agent(b, "token-1")
		measure(b, noop(direct), prefixed(gw, "remote__noop"), ownTime(b, e, "remote"))
	})
	b.Run("stdio", func(b *testing.B) {
		e := startEnv(b, envOptions{mutate: mutate, noLog: true, stdio: true, upstreams: stdioUpstream("local", "")})
		measure(b, noop(directStdio(b)), prefixed(e.stdio, "local__noop"), ownTime(b, e, "local"))
	})
}

// directStdio starts mcptest's stdio server as a child of this process and
// connects the SDK's client to it: the direct path of the stdio benchmarks.
func directStdio(b *testing.B) *mcp.ClientSession {
	b.Helper()
	exe, _ := os.Executable()
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), mcptest.EnvServer+"=stdio")
	direct, err := mcp.NewClient(&mcp.Implementation{Name: "bench-direct", Version: "1"}, nil).Connect(testCtx(b), &mcp.CommandTransport{Command: cmd}, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = direct.Close() })
	return direct
}

// measure runs b.N calls through each path: sequential latency in
// alternating blocks, then concurrent throughput in alternating blocks.
func measure(b *testing.B, direct, gw caller, own func() float64) {
	ctx := context.Background()
	for range 200 { // warm both paths (connections, the decision cache)
		if err := direct(ctx); err != nil {
			b.Fatal(err)
		}
		if err := gw(ctx); err != nil {
			b.Fatal(err)
		}
	}
	const block = 100
	dl := make([]time.Duration, 0, b.N)
	gl := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for done := 0; done < b.N; done += block {
		n := min(block, b.N-done)
		for _, p := range []struct {
			f   caller
			out *[]time.Duration
		}{{direct, &dl}, {gw, &gl}} {
			for range n {
				t0 := time.Now()
				if err := p.f(ctx); err != nil {
					b.Fatal(err)
				}
				*p.out = append(*p.out, time.Since(t0))
			}
		}
	}
	// throughput, 8 concurrent callers, alternating blocks
	const workers = 8
	var dTime, gTime, dCPU, gCPU time.Duration
	var dCalls, gCalls int
	for done := 0; done < b.N; done += block * workers {
		n := min(block*workers, b.N-done)
		for _, p := range []struct {
			f     caller
			took  *time.Duration
			cpu   *time.Duration
			calls *int
		}{{direct, &dTime, &dCPU, &dCalls}, {gw, &gTime, &gCPU, &gCalls}} {
			t0, c0 := time.Now(), processCPU()
			var wg sync.WaitGroup
			per := (n + workers - 1) / workers
			for range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range per {
						if err := p.f(ctx); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			*p.took += time.Since(t0)
			*p.cpu += processCPU() - c0
			*p.calls += per * workers
		}
	}
	b.StopTimer()
	dp, gp := p50(dl), p50(gl)
	b.ReportMetric(float64(dp.Nanoseconds())/1e3, "direct-p50-us")
	b.ReportMetric(float64(gp.Nanoseconds())/1e3, "gateway-p50-us")
	b.ReportMetric(float64((gp-dp).Nanoseconds())/1e3, "added-p50-us")
	dr := float64(dCalls) / dTime.Seconds()
	gr := float64(gCalls) / gTime.Seconds()
	b.ReportMetric(dr, "direct-calls/s")
	b.ReportMetric(gr, "gateway-calls/s")
	b.ReportMetric(gr/dr, "throughput-ratio")
	// This process's CPU a call in the throughput blocks, which other
	// work on the machine moves far less than it moves calls/s: the
	// agent's (and an upstream's served in this process) on the direct
	// path, and with the gateway's too when it runs here
	// (BenchmarkOverhead): the difference is what the gateway costs a call.
	b.ReportMetric(float64(dCPU.Nanoseconds())/1e3/float64(dCalls), "direct-cpu-us/call")
	b.ReportMetric(float64(gCPU.Nanoseconds())/1e3/float64(gCalls), "gateway-cpu-us/call")
	b.ReportMetric(own(), "gateway-own-mean-us")
	b.ReportMetric(0, "ns/op") // the figures above are the result
}

// ownTime is the mean of acgs_gateway_overhead_seconds: the time a call
// spends in the gateway's own code (identity, counters, the decision,
// logging, metrics), without the SDK's two protocol hops.
func ownTime(b *testing.B, e *env, upstream string) func() float64 {
	return func() float64 {
		fams, err := e.svc.Metrics.Registry().Gather()
		if err != nil {
			b.Fatal(err)
		}
		return ownMean(fams, upstream)
	}
}

// ownMean is the mean of upstream's acgs_gateway_overhead_seconds in µs.
func ownMean(fams []*dto.MetricFamily, upstream string) float64 {
	for _, f := range fams {
		if f.GetName() != "acgs_gateway_overhead_seconds" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "upstream" && l.GetValue() == upstream && m.GetHistogram().GetSampleCount() > 0 {
					h := m.GetHistogram()
					return h.GetSampleSum() / float64(h.GetSampleCount()) * 1e6
				}
			}
		}
	}
	return 0
}

func p50(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}
