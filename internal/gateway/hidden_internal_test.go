package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/acgs-lite/acgs/internal/admission"
	"github.com/acgs-lite/acgs/internal/apierror"
	"github.com/acgs-lite/acgs/internal/engine"
	"github.com/acgs-lite/acgs/internal/telemetry"
	"github.com/acgs-lite/acgs/internal/telemetry/telemetrytest"
)

// answeringDecider answers every decision with d and err: the answers of
// data.acgs.tool_call.hidden the embedded constitution never gives (a
// result that is no boolean) and the failures an engine gives only under
// load or a slow policy (shed, cancelled while waiting, EVAL_TIMEOUT), to
// be had on demand.
type answeringDecider struct {
	d   engine.Decision
	err error
}

func (a answeringDecider) Decide(context.Context, string, any) (engine.Decision, error) {
	return a.d, a.err
}

func (answeringDecider) Info() (engine.Info, bool) { return engine.Info{}, false }

// hiddenCheckGateway is a gateway (not started: the check asks no
// upstream) deciding through a, with upstream "remote", its metrics and
// what it logs.
func hiddenCheckGateway(t *testing.T, a answeringDecider) (*Gateway, *telemetry.Metrics, *bytes.Buffer) {
	t.Helper()
	cfg, err := ParseConfig([]byte("upstreams: [{name: remote, url: 'http://127.0.0.1:1/mcp'}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	m := telemetry.NewMetrics(telemetry.BuildInfo{})
	logs := &bytes.Buffer{}
	g, err := New(cfg, Deps{Engine: a, Metrics: m, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	return g, m, logs
}

// TestHiddenCheckFailsClosed: every answer of the hidden check
// (decideHidden: tools/list's check of a tool, and hiddenFeature's of an
// upstream's resources or prompts, the only check before the upstream is
// asked) that is not a boolean of the policy hides the tool, resources or
// prompts, and is counted as acgs_decisions_total{path="acgs/tool_call/
// hidden"} outcome error or undefined, never as shed; a check the engine
// shed or whose request was cancelled decides nothing (the request is
// refused as overloaded, or answered its context error). Before, a defined
// result that was no boolean (a string, an object) showed them and was
// counted as outcome defined.
func TestHiddenCheckFailsClosed(t *testing.T) {
	evalErr := apierror.Wrap(apierror.EvaluationError, errors.New("builtin error"), "policy evaluation failed")
	timeout := apierror.Wrap(apierror.EvaluationError, fmt.Errorf("%w: %w", engine.ErrEvalTimeout, context.DeadlineExceeded), "policy evaluation exceeded EVAL_TIMEOUT (1s)")
	shed := apierror.Wrap(apierror.Overloaded, admission.ErrQueueFull, "service overloaded: admission queue full; retry later")
	canceled := apierror.Wrap(apierror.Overloaded, admission.ErrCanceled, "request cancelled while waiting for an evaluation slot")
	defined := func(r any) engine.Decision { return engine.Decision{Defined: true, Result: r, Source: engine.SourceL1} }

	for _, c := range []struct {
		name     string
		answer   answeringDecider
		cancel   bool               // the agent went away: the request's context is cancelled
		hide     bool               // decided: hidden
		notMade  bool               // not decided: the request is refused (overloaded) or answers its context error (canceled)
		outcome  string             // acgs_decisions_total's outcome
		counted  map[string]float64 // other series that count the check (name{label=value} as "name/value")
		wantLog  string
		overload bool // the request's answer is the overload error
	}{
		{name: "true", answer: answeringDecider{d: defined(true)}, hide: true, outcome: "allow"},
		{name: "false", answer: answeringDecider{d: defined(false)}, hide: false, outcome: "deny"},
		{name: "string", answer: answeringDecider{d: defined("true")}, hide: true, outcome: "error", wantLog: "gave no boolean"},
		{name: "object", answer: answeringDecider{d: defined(map[string]any{"hidden": false})}, hide: true, outcome: "error", wantLog: "gave no boolean"},
		{name: "number", answer: answeringDecider{d: defined(0)}, hide: true, outcome: "error", wantLog: "gave no boolean"},
		// an object with an allow field, which the service's labels would
		// call allow: not a boolean, so hidden and an error here
		{name: "object with allow", answer: answeringDecider{d: defined(map[string]any{"allow": true})}, hide: true, outcome: "error", wantLog: "gave no boolean"},
		{name: "undefined", answer: answeringDecider{d: engine.Decision{Source: engine.SourceFull}}, hide: true, outcome: "undefined", wantLog: "cannot tell"},
		{name: "evaluation error", answer: answeringDecider{err: evalErr}, hide: true, outcome: "error", wantLog: "cannot tell",
			counted: map[string]float64{"acgs_evaluation_failures_total/error": 1}},
		{name: "EVAL_TIMEOUT", answer: answeringDecider{err: timeout}, hide: true, outcome: "error", wantLog: "cannot tell",
			counted: map[string]float64{"acgs_evaluation_failures_total/timeout": 1}},
		{name: "overloaded", answer: answeringDecider{err: shed}, notMade: true, outcome: "overloaded", overload: true,
			counted: map[string]float64{"acgs_decisions_shed_total/queue_full": 1}},
		{name: "canceled", answer: answeringDecider{err: canceled}, cancel: true, notMade: true, outcome: "canceled",
			counted: map[string]float64{"acgs_decisions_canceled_total/": 1}},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if c.cancel {
				cancel()
			}
			check := func(t *testing.T, what string, hide bool, err error, m *telemetry.Metrics, logs *bytes.Buffer) {
				t.Helper()
				switch {
				case c.notMade && err == nil:
					t.Errorf("%s: decided (hide %v), want not decided", what, hide)
				case !c.notMade && err != nil:
					t.Errorf("%s: not decided (%v), want hide %v", what, err, c.hide)
				case !c.notMade && hide != c.hide:
					t.Errorf("%s: hide %v, want %v", what, hide, c.hide)
				}
				for _, o := range []string{"allow", "deny", "undefined", "error", "defined", "overloaded", "canceled"} {
					want := 0.0
					if o == c.outcome {
						want = 1
					}
					if got := telemetrytest.Sum(t, m.Registry(), "acgs_decisions_total", map[string]string{"path": "acgs/tool_call/hidden", "outcome": o}); got != want {
						t.Errorf("%s: acgs_decisions_total outcome %s = %v, want %v", what, o, got, want)
					}
				}
				for _, name := range []string{"acgs_evaluation_failures_total/error", "acgs_evaluation_failures_total/timeout", "acgs_decisions_shed_total/queue_full", "acgs_decisions_canceled_total/"} {
					metric, label, _ := strings.Cut(name, "/")
					var want map[string]string
					if label != "" {
						want = map[string]string{"reason": label}
					}
					if got := telemetrytest.Sum(t, m.Registry(), metric, want); got != c.counted[name] {
						t.Errorf("%s: %s = %v, want %v", what, name, got, c.counted[name])
					}
				}
				if c.wantLog != "" && !strings.Contains(logs.String(), c.wantLog) {
					t.Errorf("%s: logged %q, want a line with %q", what, logs.String(), c.wantLog)
				}
			}

			g, m, logs := hiddenCheckGateway(t, c.answer)
			hide, notMade := g.decideHidden(ctx, "remote__read_file", "remote", "read_file", "agent-1")
			check(t, "tools/list's check", hide, notMade, m, logs)

			g, m, logs = hiddenCheckGateway(t, c.answer)
			hidden, err := g.hiddenFeature(ctx, g.ups["remote"], resourcesTool, "agent-1", "read the resource")
			check(t, "resources/read's check", hidden, err, m, logs)
			var je *jsonrpc.Error
			if isOverload := errors.As(err, &je) && strings.HasPrefix(je.Message, "The gateway is overloaded and did not read the resource"); isOverload != c.overload {
				t.Errorf("resources/read's answer %v: the overload error %v, want %v", err, isOverload, c.overload)
			}
			if c.cancel && !errors.Is(err, context.Canceled) {
				t.Errorf("resources/read's answer %v: want its context's error", err)
			}
		})
	}
}
