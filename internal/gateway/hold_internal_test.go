package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	dto "github.com/prometheus/client_model/go"

	"github.com/acgs-lite/acgs/internal/config"
	"github.com/acgs-lite/acgs/internal/gateway/mcptest"
	"github.com/acgs-lite/acgs/internal/service"
	"github.com/acgs-lite/acgs/internal/telemetry"
)

// pausingHandler logs nothing, and stops the goroutine that logs msg until
// release is closed, after saying so on reached: a test can act while a
// call is at that point.
type pausingHandler struct {
	msg     string
	reached chan struct{}
	release chan struct{}
}

func (h *pausingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *pausingHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *pausingHandler) WithGroup(string) slog.Handler            { return h }
func (h *pausingHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.reached <- struct{}{}
		<-h.release
	}
	return nil
}

// internalEnv is a gateway built in process for the tests that need its
// insides: the embedded constitution, upstream "remote" (mcptest over
// streamable HTTP) and a decision log in a file.
type internalEnv struct {
	g       *Gateway
	remote  *mcptest.Server
	dlog    *telemetry.DecisionLog
	logPath string
}

func newInternalEnv(t *testing.T, logger *slog.Logger) *internalEnv {
	t.Helper()
	e := &internalEnv{remote: mcptest.New()}
	url, stop, err := e.remote.ServeHTTP()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	cfg := config.Default()
	cfg.Log.Level = "error"
	svc, err := service.New(context.Background(), cfg, service.Options{LogOutput: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	e.logPath = filepath.Join(t.TempDir(), "decisions.jsonl")
	if e.dlog, err = telemetry.NewDecisionLog(telemetry.DecisionLogConfig{Sink: "file:" + e.logPath, Chain: true}); err != nil {
		t.Fatal(err)
	}
	gcfg, err := ParseConfig([]byte("approvals: {timeout: 30s}\nupstreams: [{name: remote, url: '" + url + "'}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	e.g, err = New(gcfg, Deps{Engine: svc.Engine, ConstitutionalHash: config.DefaultConstitutionalHash, DecisionLog: e.dlog, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.g.Close)
	if err := e.g.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return e
}

// records closes the decision log and returns its records.
func (e *internalEnv) records(t *testing.T) []map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = e.dlog.Close(ctx)
	b, err := os.ReadFile(e.logPath)
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for _, line := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

// TestApprovalThatRacesTheAgentsCancellation: an approval that arrives as
// the agent gives up (both before the held call's goroutine runs again)
// is logged as approved with a note saying the agent had gone, and the
// call is not forwarded: before, it was forwarded with the ended request's
// context, failed at once, and counted as an upstream failure, while the
// log said only "approved".
func TestApprovalThatRacesTheAgentsCancellation(t *testing.T) {
	h := &pausingHandler{msg: "gateway: call held for approval", reached: make(chan struct{}), release: make(chan struct{})}
	e := newInternalEnv(t, slog.New(h))
	ctx, cancel := context.WithCancel(context.Background())
	type answer struct {
		res *mcp.CallToolResult
		err error
	}
	done := make(chan answer, 1)
	go func() {
		res, err := e.g.callTool(ctx, &mcp.CallToolRequest{Params: &mcp.CallToolParamsRaw{Name: "remote__delete_record", Arguments: json.RawMessage(`{"id":"r-1"}`)}})
		done <- answer{res, err}
	}()
	select {
	case <-h.reached: // held, and paused before it waits for a verdict
	case a := <-done:
		t.Fatalf("not held: %+v %v", a.res, a.err)
	case <-time.After(30 * time.Second):
		t.Fatal("not held in 30s")
	}
	held := e.g.approvals.list()
	if len(held) != 1 {
		t.Fatalf("held: %+v", held)
	}
	if _, err := e.g.approvals.resolve(held[0].ID, resolution{verdict: Approved, by: "alice"}); err != nil {
		t.Fatal(err)
	}
	cancel()
	close(h.release)
	a := <-done
	if a.err != nil || a.res == nil || !a.res.IsError || !strings.Contains(text(a.res), "agent had gone") {
		t.Fatalf("answer: %+v %v", a.res, a.err)
	}
	if n := e.remote.Calls("delete_record"); n != 0 {
		t.Errorf("the upstream got the call %d times", n)
	}
	var failed dto.Metric
	if err := e.g.m.upstream.WithLabelValues("remote", "delete_record", resultFailed).Write(&failed); err != nil || failed.GetCounter().GetValue() != 0 {
		t.Errorf("counted as %v upstream failures (%v)", failed.GetCounter().GetValue(), err)
	}
	var logged bool
	for _, r := range e.records(t) {
		res, _ := r["result"].(map[string]any)
		if r["path"] == "acgs/gateway/approval" {
			note, _ := res["note"].(string)
			logged = res["verdict"] == "approved" && res["by"] == "alice" && strings.Contains(note, "the agent had gone")
			if !logged {
				t.Errorf("approval record: %v", res)
			}
		}
	}
	if !logged {
		t.Error("no approval record")
	}
}

func text(res *mcp.CallToolResult) string {
	var parts []string
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			parts = append(parts, tc.Text)
		}
	}
	return strings.Join(parts, "\n")
}

// TestRateThresholdsThatFailToLoadAreNotKept: thresholds read with a
// context that ended (the caller's) are not kept for the bundle: the next
// call reads them and rounds its count.
func TestRateThresholdsThatFailToLoadAreNotKept(t *testing.T) {
	e := newInternalEnv(t, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	if got := e.g.roundCalls(ended, 5); got != "5" {
		t.Errorf("with thresholds unread, 5 calls are sent as %s, want the exact count", got)
	}
	if th := e.g.thresholds.Load(); th != nil {
		t.Fatalf("a failed read was kept for the bundle: %+v", th)
	}
	got := e.g.roundCalls(context.Background(), 5)
	th := e.g.thresholds.Load()
	if th == nil || len(th.values) == 0 {
		t.Fatalf("thresholds after a good read: %+v (the constitution has some)", th)
	}
	if th.values[0] > 5 && got != "0" {
		t.Errorf("5 calls are sent as %s, want 0 (below the lowest threshold, %v)", got, th.values[0])
	}
}
