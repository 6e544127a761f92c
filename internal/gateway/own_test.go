package gateway

import (
	"context"
	"encoding/json"
	"io"
	"io/fs"
	"log/slog"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/acgs-lite/acgs/internal/config"
	"github.com/acgs-lite/acgs/internal/service"
	"github.com/acgs-lite/acgs/internal/testenv"
	"github.com/acgs-lite/acgs/policies"
)

// BenchmarkOwnPath is the gateway's own work for one tools/call, without
// any MCP transport: identity, the call counter, argument decoding, the
// decision (a cache hit after the first call), metrics, and the refusal of
// a tool no upstream has (so that nothing is forwarded). The decision log
// is off, as by default.
//
//	go test ./internal/gateway -run '^$' -bench OwnPath -benchmem
func BenchmarkOwnPath(b *testing.B) {
	// agent "stdio" may make any number of calls (an operator's tuning of
	// data.json): every call after the first is a cache hit.
	raw, err := fs.ReadFile(policies.FS, "acgs/config/data.json")
	if err != nil {
		b.Fatal(err)
	}
	var data map[string]any
	if err := json.Unmarshal(raw, &data); err != nil {
		b.Fatal(err)
	}
	data["tool_call"].(map[string]any)["rate_limit"].(map[string]any)["per_agent"] = map[string]any{"stdio": 1e9}
	nd, _ := json.Marshal(data)
	cfg := config.Default()
	cfg.Log.Level = "error"
	cfg.Policy.BundlePath = testenv.WriteConstitution(b, b.TempDir(), nil, map[string]string{"acgs/config/data.json": string(nd)})
	svc, err := service.New(context.Background(), cfg, service.Options{LogOutput: io.Discard})
	if err != nil {
		b.Fatal(err)
	}
	defer svc.Close()
	gcfg, err := ParseConfig([]byte("upstreams: [{name: remote, url: 'http://127.0.0.1:1/mcp'}]\n"))
	if err != nil {
		b.Fatal(err)
	}
	g, err := New(gcfg, Deps{Engine: svc.Engine, ConstitutionalHash: cfg.Policy.ConstitutionalHash, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	defer g.Close()
	req := &mcp.CallToolRequest{Params: &mcp.CallToolParamsRaw{Name: "nowhere__noop", Arguments: json.RawMessage(`{"text":"hello"}`)}}
	ctx := context.Background()
	// Warm up for a second: the engine builds the tool_call plan in the
	// background the first time it sees the type.
	for start := time.Now(); time.Since(start) < time.Second; {
		if _, err := g.callTool(ctx, req); err == nil {
			b.Fatal("a tool no upstream has was answered")
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := g.callTool(ctx, req); err == nil {
			b.Fatal("a tool no upstream has was answered")
		}
	}
}
