// Package gateway is the MCP governance gateway (`acgs gateway`): an MCP
// server to agents (stdio or streamable HTTP) and an MCP client to upstream
// MCP servers (child processes over stdio, remote servers over streamable
// HTTP), built on the official Go SDK. Every tools/call is a decision of the
// constitution (data.acgs.main.decision, type tool_call) through the same
// engine, cache and decision log as `acgs serve`; allowed calls are
// forwarded unchanged, denied ones never reach the upstream, and calls that
// need approval are held until a human decides or the timeout passes.
//
// It does not evaluate policy itself (every rule is in the bundle), it
// reaches the engine only through Decide and Info, and it never forwards a
// call the constitution did not allow, except in shadow mode, which an
// operator turns on per upstream or tool. A failed decision denies.
package gateway

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/acgs-lite/acgs/internal/admission"
	"github.com/acgs-lite/acgs/internal/engine"
	"github.com/acgs-lite/acgs/internal/telemetry"
	"github.com/acgs-lite/acgs/internal/telemetry/decisionmetrics"
	"github.com/acgs-lite/acgs/internal/version"
)

// Policy paths the gateway asks.
const (
	DecisionPath   = "acgs/main/decision"
	hiddenPath     = "acgs/tool_call/hidden"
	thresholdsPath = "acgs/tool_call/rate_thresholds"
)

// The outcomes of a tool_call decision.
const (
	OutcomeAllow    = "allow"
	OutcomeDeny     = "deny"
	OutcomeApproval = "approval_required"
	// OutcomeOverloaded: the engine shed the decision (admission control:
	// no evaluation slot free within the call's decision_timeout or the
	// queue's bounds). The call is not forwarded, as a denied one, but no
	// policy refused it and it failed nothing: the agent is told the
	// gateway is overloaded and that it may retry after retryAfter, as the
	// service answers 503 overloaded with Retry-After. Shadow mode
	// forwards it, as it does every call.
	OutcomeOverloaded = "overloaded"
	outcomeError      = "error" // metrics only: the decision failed (denied)
	// outcomeCanceled: the agent cancelled its call (or went away) while
	// its decision waited for an evaluation slot; the call is not
	// forwarded, in shadow mode neither (nobody waits for its answer), and
	// it is counted apart, as the service counts such requests, not as an
	// error nor as shed.
	outcomeCanceled = "canceled"
)

// retryAfter is what an agent whose call was shed is told to wait before
// it retries, in seconds: the service's Retry-After on a 503 overloaded.
const retryAfter = 1

// metaKey is the _meta key of the gateway's results: the decision id,
// outcome and reasons, for clients that read more than the text.
const metaKey = "io.acgs/decision"

// Decider is what the gateway needs of the engine (*engine.Engine).
type Decider interface {
	Decide(ctx context.Context, path string, input any) (engine.Decision, error)
	Info() (engine.Info, bool)
}

var _ Decider = (*engine.Engine)(nil)

// Deps are the components the gateway shares with the rest of the process.
type Deps struct {
	Engine             Decider
	ConstitutionalHash string
	// DecisionLog receives every tool-call decision and approval verdict
	// (nil: none are logged). Build it with Chain for `acgs audit verify`.
	DecisionLog *telemetry.DecisionLog
	// Metrics, when set, counts the gateway's decisions with the engine's
	// (acgs_decisions_total).
	Metrics *telemetry.Metrics
	// Registerer takes the acgs_gateway_* series (nil: not registered).
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	// AdminTokens authorise the admin endpoints (none: they answer 404).
	AdminTokens []string
	// Counter counts calls per agent; nil: Redis when Config.RedisURL is
	// set, else in process.
	Counter Counter
	// EvalTimeout is the engine's EVAL_TIMEOUT (0: not known, not
	// checked): New refuses a decision_timeout not above it
	// (CheckDecisionTimeout says why).
	EvalTimeout time.Duration
}

// CheckDecisionTimeout refuses a decision_timeout that is not greater than
// the engine's EVAL_TIMEOUT (evalTimeout, 0: not known, not checked). The
// engine answers a decision whose decision_timeout passes as overloaded
// (the agent told to retry, counted as shed), whether it was waiting for
// an evaluation slot or its evaluation was running: the gateway cannot tell
// them apart (interpret). EVAL_TIMEOUT runs from the evaluation's start,
// after the wait for a slot; above it, an evaluation that started within
// decision_timeout - EVAL_TIMEOUT ends at EVAL_TIMEOUT first (a failed
// decision, denied: "the decision timed out"), so a decision_timeout that
// passes means the decision waited at least decision_timeout -
// EVAL_TIMEOUT for a slot or a shared evaluation: overload, not a slow
// policy. New checks it; acgs gateway checks it before it loads the
// bundle.
func CheckDecisionTimeout(cfg Config, evalTimeout time.Duration) error {
	if evalTimeout <= 0 || cfg.DecisionTimeout > evalTimeout {
		return nil
	}
	dt := cfg.DecisionTimeout.String()
	if cfg.DecisionTimeout == defaultDecisionTimeout {
		// an operator who never set it learns that it has a value
		dt += " (the default when decision_timeout is not set)"
	}
	return fmt.Errorf("gateway: decision_timeout %s is not greater than the engine's EVAL_TIMEOUT %s: a slow evaluation would outlive its decision and be refused as overload (retry) instead of timing out as a failed decision; set decision_timeout in the gateway's configuration above EVAL_TIMEOUT, with room for the wait for an evaluation slot", dt, evalTimeout)
}

// Gateway is one running gateway.
type Gateway struct {
	cfg       Config
	d         Deps
	log       *slog.Logger
	ups       map[string]*upstream
	order     []*upstream
	server    *mcp.Server
	approvals *approvals
	m         *metrics
	counter   Counter
	tokens    map[string]string

	thresholds   atomic.Pointer[thresholds]
	stdioSession string
	// progress routes the upstreams' progress notifications to the
	// agents: the progress token forward sends an upstream (the
	// gateway's own, unique across agents) → *callProgress.
	progress sync.Map
	// posts holds the HTTP agents' POSTs being served, for their calls'
	// progress (progress.go).
	posts postStreams
	// sessions counts the HTTP agents' sessions (sessions.go)
	sessions sessionTally
	// relists are the resource lists reads of unknown URIs ask for
	// (resources.go)
	relists relists

	// stopping ends (refuseHeld) when the gateway stops: every held call,
	// and any held after it, is refused at once.
	stopping  context.Context
	refuseAll context.CancelFunc
	// lifetime bounds every request to an upstream (upstream.bound). It
	// ends (abandonCalls) at the shutdown deadline, less answerGrace, and
	// in Close, with errStopped as its cause: the requests still waiting
	// for an upstream's answer then end, and their agents get an error.
	// Closing an upstream session waits for its requests: without this a
	// call the upstream does not answer held the exit until call_timeout.
	lifetime context.Context
	abandon  context.CancelCauseFunc
	// answering counts the HTTP agents' requests being served, except
	// their event streams (GET): Run's shutdown waits for their answers.
	answering atomic.Int64
	closeOnce sync.Once
	// writeTimeout bounds each write to an HTTP agent (agentWriteTimeout).
	writeTimeout time.Duration
	// idleTimeout ends an HTTP agent's idle session (SessionIdleTimeout;
	// a test's shorter).
	idleTimeout time.Duration
}

type thresholds struct {
	scope  string    // the bundle's revision and content (engine.Info's Scope): a bundle's data can change under the same revision
	values []float64 // ascending; nil when the policy has none
	texts  []string  // the same as JSON numbers
}

var (
	labelsEnforce = map[string]string{"source": "gateway", "mode": "enforce"}
	labelsShadow  = map[string]string{"source": "gateway", "mode": "shadow"}
)

// New builds a gateway; Start connects its upstreams.
func New(cfg Config, d Deps) (*Gateway, error) {
	if d.Engine == nil {
		return nil, errors.New("gateway: no engine")
	}
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	if err := CheckDecisionTimeout(cfg, d.EvalTimeout); err != nil {
		return nil, err
	}
	// An agent holding an admin token could approve its own held calls:
	// approval would no longer be another party's. Its token is looked
	// at as the admin tokens are read (a comma-separated list), so a
	// token_env naming the admin variable is caught in a rotation too.
	for _, a := range cfg.Agents {
		holds := a.TokenEnv != "" && a.TokenEnv == cfg.Admin.TokenEnv
		for t := range strings.SplitSeq(a.token(), ",") {
			holds = holds || slices.Contains(d.AdminTokens, strings.TrimSpace(t))
		}
		if holds {
			return nil, fmt.Errorf("gateway: agent %s's bearer token is or holds an admin token (%s): an agent could approve its own held calls; give the admin endpoints tokens of their own", a.ID, cfg.Admin.TokenEnv)
		}
	}
	g := &Gateway{
		cfg:          cfg,
		d:            d,
		log:          d.Logger,
		ups:          map[string]*upstream{},
		m:            newMetrics(d.Registerer),
		tokens:       cfg.tokens(),
		stdioSession: "stdio-" + rand.Text(),
		writeTimeout: agentWriteTimeout,
		idleTimeout:  SessionIdleTimeout,
	}
	g.stopping, g.refuseAll = context.WithCancel(context.Background())
	g.lifetime, g.abandon = context.WithCancelCause(context.Background())
	g.approvals = newApprovals(cfg.Approvals.MaxPending, cfg.Approvals.MaxPendingPerAgent, func(a Approval) func() {
		gauge := g.m.pending.WithLabelValues(g.labels(a.Upstream, strings.TrimPrefix(a.Tool, a.Upstream+Separator)))
		gauge.Inc()
		return gauge.Dec
	})
	for _, uc := range cfg.Upstreams {
		name := uc.Name
		gauge := g.m.up.WithLabelValues(name)
		gauge.Set(0)
		u := newUpstream(uc, g.log, cfg.ConnectTimeout, g.lifetime, func(up bool) {
			if up {
				gauge.Set(1)
			} else {
				gauge.Set(0)
			}
		})
		u.progress = g.relayProgress
		g.ups[name] = u
		g.order = append(g.order, u)
	}
	g.counter = d.Counter
	if g.counter == nil {
		if cfg.RedisURL != "" && cfg.RedisURL != "off" {
			rc, err := newRedisCounter(cfg.RedisURL, cfg.CounterKeyPrefix, func(err error) {
				g.m.counterErrs.Inc()
				g.log.Debug("gateway: redis counter error", "error", err)
			})
			if err != nil {
				return nil, err
			}
			g.counter = rc
		} else {
			g.counter = newLocalCounter()
		}
	}
	g.server = mcp.NewServer(&mcp.Implementation{Name: "acgs-gateway", Title: "ACGS-1 Lite MCP gateway", Version: version.Version}, &mcp.ServerOptions{
		Logger:       g.log,
		Capabilities: &mcp.ServerCapabilities{Tools: &mcp.ToolCapabilities{}, Resources: &mcp.ResourceCapabilities{}, Prompts: &mcp.PromptCapabilities{}},
		// Every decision carries the agent's session. The 2026-07-28
		// protocol has no sessions over HTTP, so agents are offered the
		// session-based versions (an SDK client falls back by itself).
		SupportedProtocolVersions: sessionVersions(),
		Instructions:              "Tool calls through this gateway are decided by the ACGS constitution: a refused call returns an error naming its reasons and decision id.",
	})
	g.server.AddReceivingMiddleware(g.middleware)
	return g, nil
}

func sessionVersions() []string {
	var out []string
	for _, v := range mcp.SupportedProtocolVersions() {
		if v < "2026-07-28" {
			out = append(out, v)
		}
	}
	return out
}

// Start connects every upstream (in parallel). An upstream that cannot be
// reached is logged and reconnected in the background (upstream.retry,
// 1 s doubling to 15 s); Start fails only when none can be reached.
func (g *Gateway) Start(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make([]error, len(g.order))
	for i, u := range g.order {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = u.get(ctx)
		}()
	}
	wg.Wait()
	failed := 0
	for _, err := range errs {
		if err != nil {
			failed++
		}
	}
	if failed == len(g.order) {
		for i, err := range errs {
			errs[i] = fullError(err) // the operator's: with the URLs agents are not told
		}
		return fmt.Errorf("gateway: no upstream could be reached: %w", errors.Join(errs...))
	}
	return nil
}

// Server is the agent-facing MCP server.
func (g *Gateway) Server() *mcp.Server { return g.server }

// Close refuses the held calls (the gateway is stopping), ends the
// requests still waiting for an upstream's answer (their agents get an
// error) and then the upstream sessions (child processes exit) and the
// counters.
func (g *Gateway) Close() {
	g.refuseHeld()
	g.abandonCalls()
	g.closeOnce.Do(func() {
		var wg sync.WaitGroup
		for _, u := range g.order {
			wg.Add(1)
			go func() { defer wg.Done(); u.Close() }()
		}
		wg.Wait()
		g.counter.Close()
	})
}

// stopRefusal is the verdict on the calls held when the gateway stops: a
// refusal by the gateway, as at the approvals bounds (an approver can no
// longer decide, and an agent waiting up to approvals.timeout would hold
// the shutdown as long: an agent session's Close waits for its requests).
var stopRefusal = resolution{verdict: Refused, by: "gateway", note: errStopping.Error()}

var errStopping = errors.New("the gateway is stopping")

// refuseHeld answers every held call, and any held from now on, with
// stopRefusal. Run calls it when its context ends, before the agents'
// sessions close (which drops the answers not yet sent); Close calls it
// too.
func (g *Gateway) refuseHeld() { g.refuseAll() }

// errStopped ends the requests to upstreams still waiting for an answer
// when the gateway gives up on them (abandonCalls).
var errStopped = errors.New("the gateway stopped")

// abandonCalls ends every request to an upstream still waiting for its
// answer, and any made from now on: the agent's call ends with an
// upstream failure saying the gateway stopped. Run calls it answerGrace
// before its shutdown deadline, so that these answers reach the agents
// before the sessions close; Close calls it before it closes the upstream
// sessions (which wait for their requests).
func (g *Gateway) abandonCalls() { g.abandon(errStopped) }

// middleware answers tools/list and tools/call, and proxies resources and
// prompts (resources.go); everything else (initialize, ping, ...) is the
// SDK's.
func (g *Gateway) middleware(next mcp.MethodHandler) mcp.MethodHandler {
	return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
		if ss, ok := req.GetSession().(*mcp.ServerSession); ok {
			g.sessionUsed(ss, method)
		}
		switch r := req.(type) {
		case *mcp.ListToolsRequest:
			return g.listTools(ctx, r)
		case *mcp.CallToolRequest:
			growStack(0)
			return g.callTool(ctx, r)
		case *mcp.ListResourcesRequest:
			return g.listResources(ctx, r)
		case *mcp.ListResourceTemplatesRequest:
			return g.listResourceTemplates(ctx, r)
		case *mcp.ReadResourceRequest:
			return g.readResource(ctx, r)
		case *mcp.ListPromptsRequest:
			return g.listPrompts(ctx, r)
		case *mcp.GetPromptRequest:
			return g.getPrompt(ctx, r)
		}
		return next(ctx, method, req)
	}
}

// growStack grows the calling goroutine's stack once, near its base, to
// what relaying a call needs (called for every tools/call: whether the
// call is relayed is known only once it is decided). The SDK starts a
// goroutine for each request with a small stack, and the relay (the SDK's
// server hop, the decision, the SDK's client and net/http) deepens it past
// that: the runtime then copied the stack each time it doubled, each copy
// walking every frame on it, 8.5% of a gateway's CPU on its own CPU (pprof
// of `acgs gateway` under BenchmarkOverheadOwnCPU/http). One copy here,
// with few frames on the stack, cost 2.2%; the stack shrinks again at a
// GC once the goroutine uses less of it. The frame must stay: noinline,
// and an index the compiler cannot see through.
//
//go:noinline
func growStack(i int) byte {
	var pad [growBytes]byte
	pad[i] = 1
	return pad[(i+1)%len(pad)]
}

// growBytes is growStack's frame: the stack a relayed call reached, with
// room (8, 16 and 24 KiB measured alike within the machine's swings). A
// call held for approval keeps the grown stack (32 KiB) until a collection
// shrinks it: at most max_pending of them.
const growBytes = 16 << 10

// identity is who is calling: the agent from the bearer token (HTTP) or
// the stdio identity, and the session.
func (g *Gateway) identity(ss *mcp.ServerSession, extra *mcp.RequestExtra) (agent, session string) {
	if extra != nil && extra.Header != nil { // HTTP
		agent = g.cfg.AnonymousAgent
		if extra.TokenInfo != nil && extra.TokenInfo.UserID != "" {
			agent = extra.TokenInfo.UserID
		}
		if ss != nil {
			session = ss.ID()
		}
		return agent, session
	}
	return g.cfg.StdioAgent, g.stdioSession
}

// labels bounds metric labels to configured upstreams and listed tools.
func (g *Gateway) labels(upName, tool string) (string, string) {
	u := g.ups[upName]
	if u == nil {
		return "unknown", "other"
	}
	if !u.Known(tool) {
		return upName, "other"
	}
	return upName, tool
}

// ---------------------------------------------------------------------------
// tools/list
// ---------------------------------------------------------------------------

func (g *Gateway) listTools(ctx context.Context, req *mcp.ListToolsRequest) (*mcp.ListToolsResult, error) {
	agent, _ := g.identity(req.Session, req.Extra)
	out := []*mcp.Tool{}
	for _, u := range g.order {
		tools, err := u.Tools(ctx)
		if err != nil {
			g.log.Warn("gateway: tools/list of an upstream failed; using its last list", "upstream", u.cfg.Name, "error", err)
		}
		for _, t := range tools {
			full := u.cfg.Name + Separator + t.Name
			if !u.cfg.shadowed(t.Name) {
				hide, notMade := g.decideHidden(ctx, full, u.cfg.Name, t.Name, agent)
				if notMade != nil {
					// The rest of the checks would be shed too, and the
					// answer is an error anyway.
					return nil, g.notMadeError(ctx, "list the tools", full, notMade)
				}
				if hide {
					continue
				}
			}
			c := *t
			c.Name = full
			out = append(out, &c)
		}
	}
	return &mcp.ListToolsResult{Tools: out}, nil
}

// notMadeError is the answer to a request (tools/list, and resources and
// prompts requests: hiddenFeature) that needs the check of tool full
// (decideHidden) when the engine did not make it (notMade). what says
// what the gateway did not do ("list the tools"). A check shed for
// overload hides nothing and refuses nothing: an agent would take a tool
// (resource, prompt) missing from a list for one that does not exist, and
// a read refused as not allowed for a refusal of the policy, wrong answers
// made by capacity. The request is refused instead, as the service answers
// 503 overloaded with Retry-After and callTool a shed call: a JSON-RPC
// error saying that the gateway is overloaded and to retry after
// retryAfter (data: outcome and retry_after_seconds, as a shed call's
// _meta). A check cancelled while it waited (the agent went away) refused
// nothing: the request's context error. decideHidden has counted both.
func (g *Gateway) notMadeError(ctx context.Context, what, full string, notMade error) error {
	if admission.ReasonOf(notMade) == admission.ReasonCanceled {
		if err := ctx.Err(); err != nil {
			return err
		}
		return notMade
	}
	g.log.Warn("gateway: a check was shed for overload; the request is refused, to be retried", "request", what, "tool", full, "error", notMade)
	data, _ := json.Marshal(map[string]any{"outcome": OutcomeOverloaded, "retry_after_seconds": retryAfter})
	return &jsonrpc.Error{
		Code:    jsonrpc.CodeInternalError,
		Message: fmt.Sprintf("The gateway is overloaded and did not %s; retry after %d s: %v", what, retryAfter, notMade),
		Data:    data,
	}
}

// decideHidden asks the constitution whether a tool is refused whatever
// its arguments. A decision that failed, is undefined or is no boolean
// hides it (fail closed), logged. One the engine did not make
// (admission.ReasonOf: shed for overload, or its request cancelled while
// it waited) is no answer of the policy: notMade is the engine's error,
// for the caller to refuse its request with (notMadeError), and hide
// means nothing. Every check is counted (countHidden).
func (g *Gateway) decideHidden(ctx context.Context, full, upName, tool, agent string) (hide bool, notMade error) {
	in := map[string]any{
		"type":                "tool_call",
		"constitutional_hash": g.d.ConstitutionalHash,
		"tool_call": map[string]any{
			"name": full, "tool": tool, "upstream": upName,
			"agent": map[string]any{"id": agent},
		},
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, g.cfg.DecisionTimeout)
	defer cancel()
	d, err := g.d.Engine.Decide(ctx, hiddenPath, in)
	g.countHidden(d, err, time.Since(start))
	if admission.ReasonOf(err) != "" {
		return true, err
	}
	if err != nil || !d.Defined {
		g.log.Warn("gateway: cannot tell whether a tool is prohibited; hiding it", "tool", full, "error", err)
		return true, nil
	}
	h, ok := d.Result.(bool)
	if !ok {
		// Not an answer to "is it hidden?": fail closed, as for an
		// undefined one. For resources and prompts this check is the
		// only one before the upstream is asked.
		g.log.Warn("gateway: the hidden rule gave no boolean; hiding the tool", "tool", full, "result", fmt.Sprintf("%T", d.Result))
		return true, nil
	}
	return h, nil
}

// countHidden counts one check of decideHidden that took took as the
// service counts a decision (decisionmetrics, which internal/server's
// record uses too), so that acgs_decisions_total has every check beside
// the shed and cancelled ones and the gateway's shed ratio is the
// service's: path acgs/tool_call/hidden, outcome allow or deny for a
// boolean result (allow: true, the tool hidden), undefined, error (also in
// acgs_evaluation_failures_total when an evaluation error or
// EVAL_TIMEOUT), overloaded (source shed, and in acgs_decisions_shed_total
// by reason) or canceled (acgs_decisions_canceled_total). One difference:
// a result that is no boolean is outcome error, source error
// (decideHidden hides the tool: the check failed), not defined (nor allow
// or deny for an object with an allow field) as the service labels it.
func (g *Gateway) countHidden(d engine.Decision, err error, took time.Duration) {
	if g.d.Metrics == nil {
		return
	}
	outcome, src := decisionmetrics.Outcome(d, err), d.Source.String()
	if err != nil {
		src = decisionmetrics.CountFailure(g.d.Metrics, err)
	} else if _, ok := d.Result.(bool); d.Defined && !ok {
		outcome, src = outcomeError, decisionmetrics.SourceError
	}
	g.d.Metrics.ObserveDecision(hiddenPath, outcome, src, took)
}

// ---------------------------------------------------------------------------
// tools/call
// ---------------------------------------------------------------------------

// verdict is a decision as the gateway acts on it.
type verdict struct {
	outcome string // allow, deny, approval_required, overloaded, canceled
	reasons []string
	failed  bool // the decision itself failed (outcome deny)
	err     error
	dec     engine.Decision
}

func (g *Gateway) callTool(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	start := time.Now()
	p := req.Params
	agent, session := g.identity(req.Session, req.Extra)
	upName, tool, _ := strings.Cut(p.Name, Separator)
	u := g.ups[upName]
	upLabel, toolLabel := g.labels(upName, tool)
	id := telemetry.NewDecisionID()

	calls, ticket, _ := g.counter.Add(ctx, agent, start)
	args, argsPresent, argErr := decodeArguments(p.Arguments)
	tc := map[string]any{
		"name":     p.Name,
		"tool":     tool,
		"upstream": upName,
		"agent":    map[string]any{"id": agent, "session": session},
		"context":  map[string]any{"calls_last_minute": g.roundCalls(ctx, calls)},
	}
	if argsPresent {
		tc["arguments"] = args
	}
	input := map[string]any{"type": "tool_call", "constitutional_hash": g.d.ConstitutionalHash, "tool_call": tc}

	var v verdict
	if argErr != nil {
		v = verdict{outcome: OutcomeDeny, failed: true, err: argErr, reasons: []string{"Arguments refused: " + argErr.Error()}}
	} else {
		dctx, cancel := context.WithTimeout(ctx, g.cfg.DecisionTimeout)
		d, err := g.d.Engine.Decide(dctx, DecisionPath, input)
		cancel()
		v = interpret(d, err)
	}
	took := time.Since(start)
	shadow := u != nil && u.cfg.shadowed(tool)
	g.logDecision(id, input, v, shadow, calls, start, took)
	metricOutcome := v.outcome
	if v.failed {
		metricOutcome = outcomeError
	}
	g.m.decisions.WithLabelValues(upLabel, toolLabel, metricOutcome).Inc()
	if g.d.Metrics != nil {
		// A decision not made or failed is counted as the service counts
		// its own (decisionmetrics.CountFailure): a shed one in
		// acgs_decisions_shed_total by its reason (source shed), so that
		// the gateway's job has the service's shed ratio and alert; a
		// cancelled one in acgs_decisions_canceled_total; an EVAL_TIMEOUT
		// or an evaluation error in acgs_evaluation_failures_total, which
		// the decision-error alert points to (not an argument refusal).
		//
		// The outcome is not the service's (decisionmetrics.Outcome): it
		// is the call's, as acgs_gateway_tool_calls_total and the docs
		// have it. allow; deny for a denial and for approval_required
		// (not allowed as asked); overloaded; canceled; and error for
		// every decision denied fail-closed (v.failed, source error):
		// not only an evaluation that failed, but an argument refusal,
		// an undefined decision and one that is no well-formed
		// tool_call answer, which the service would label undefined or
		// defined (or allow/deny by an allow field).
		src := v.dec.Source.String()
		if v.err != nil {
			src = decisionmetrics.CountFailure(g.d.Metrics, v.err)
		}
		o := OutcomeDeny
		switch {
		case v.outcome == OutcomeAllow, v.outcome == OutcomeOverloaded, v.outcome == outcomeCanceled:
			o = v.outcome
		case v.failed:
			o, src = outcomeError, decisionmetrics.SourceError
		}
		g.d.Metrics.ObserveDecision(DecisionPath, o, src, took)
	}

	if v.outcome == outcomeCanceled || (v.outcome == OutcomeOverloaded && !shadow) {
		// Never decided nor forwarded, and the agent is invited to retry
		// (or gave up): the call gives back its count, or every shed
		// call would bring the agent closer to the policy's rate limit,
		// and overload would turn into rate-limit denials. Not with the
		// call's context, which may be cancelled; the counter bounds the
		// give-back as it bounds the count.
		ticket.GiveBack(context.WithoutCancel(ctx))
	}
	c := &relay{u: u, p: p, session: req.Session, extra: req.Extra, tool: tool, id: id, upLabel: upLabel, toolLabel: toolLabel, start: start, outcome: v.outcome}
	switch {
	case v.outcome == OutcomeAllow:
		return g.forward(ctx, c)
	case v.outcome == outcomeCanceled:
		return refusal(id, outcomeCanceled, "Not forwarded", v.reasons), nil
	case shadow:
		g.m.shadow.WithLabelValues(upLabel, toolLabel, metricOutcome).Inc()
		g.log.Info("gateway: shadow mode forwards a call the constitution did not allow",
			"decision_id", id, "tool", p.Name, "agent", agent, "outcome", v.outcome, "reasons", v.reasons)
		c.shadow, c.failed = true, v.failed
		return g.forward(ctx, c)
	case v.outcome == OutcomeApproval:
		// A call is held only for a tool its upstream lists: a name an
		// agent makes up (no such upstream, or a tool the upstream does
		// not list) would be shown to the approver as it is and could
		// fill the approval queue, and an upstream that runs tools it does
		// not list must not get one unapproved. It is answered as a call
		// of an unknown tool.
		if err := g.listed(ctx, u, p.Name, upName, tool); err != nil {
			return nil, err
		}
		return g.hold(ctx, c, agent, session, args, v)
	case v.outcome == OutcomeOverloaded:
		res := refusal(id, OutcomeOverloaded, fmt.Sprintf("The gateway is overloaded and did not forward the call; retry it after %d s", retryAfter), v.reasons)
		res.Meta[metaKey].(map[string]any)["retry_after_seconds"] = retryAfter
		return res, nil
	default:
		return refusal(id, OutcomeDeny, "Denied by the constitution", v.reasons), nil
	}
}

// interpret turns the engine's answer into a verdict. Anything but a
// well-formed tool_call decision denies; a decision the engine shed for
// overload (or one whose agent went away while it waited) is not a failed
// one, but it is not forwarded either (callTool). Both are told as
// internal/server tells them (admission.ReasonOf): a decision not made
// because no evaluation slot was free in time (apierror.Overloaded) is a
// capacity problem; one whose request was cancelled while it waited for a
// slot or a shared evaluation refused nothing (the server's clientGone).
//
// The engine answers Overloaded too when the call's decision_timeout
// passes while it waits for a shared evaluation of the same key, or while
// its own evaluation runs (the error wraps context.DeadlineExceeded and no
// admission sentinel in both, so the gateway cannot tell them apart). New
// requires decision_timeout above EVAL_TIMEOUT, so that the second too
// means a long wait for a slot, not a slow policy (CheckDecisionTimeout).
func interpret(d engine.Decision, err error) verdict {
	switch admission.ReasonOf(err) {
	case "":
	case admission.ReasonCanceled:
		return verdict{outcome: outcomeCanceled, err: err, reasons: []string{"the call was cancelled before it was decided: " + err.Error()}, dec: d}
	default:
		return verdict{outcome: OutcomeOverloaded, err: err, reasons: []string{err.Error()}, dec: d}
	}
	if err != nil {
		msg := "the decision failed: " + err.Error()
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, engine.ErrEvalTimeout) {
			msg = "the decision timed out: " + err.Error()
		}
		return verdict{outcome: OutcomeDeny, failed: true, err: err, reasons: []string{msg}, dec: d}
	}
	res, _ := d.Result.(map[string]any)
	outcome, _ := res["outcome"].(string)
	allow, _ := res["allow"].(bool)
	var reasons []string
	if rs, ok := res["reasons"].([]any); ok {
		for _, r := range rs {
			if s, ok := r.(string); ok {
				reasons = append(reasons, s)
			}
		}
	}
	switch {
	case !d.Defined || res == nil:
		return verdict{outcome: OutcomeDeny, failed: true, reasons: []string{"the policy gave no decision"}, dec: d}
	case outcome == OutcomeAllow && allow:
		return verdict{outcome: OutcomeAllow, dec: d}
	case outcome == OutcomeApproval && !allow:
		return verdict{outcome: OutcomeApproval, reasons: reasons, dec: d}
	case outcome == OutcomeDeny && !allow:
		return verdict{outcome: OutcomeDeny, reasons: reasons, dec: d}
	case outcome == "" && !allow:
		// a decision of another type (hash mismatch, unknown type): a deny
		return verdict{outcome: OutcomeDeny, reasons: reasons, dec: d}
	}
	return verdict{outcome: OutcomeDeny, failed: true, reasons: []string{fmt.Sprintf("the policy gave an inconsistent decision (outcome %q, allow %v)", outcome, allow)}, dec: d}
}

// unknownUpstream is the JSON-RPC error of a call whose name has no
// configured upstream.
func unknownUpstream(name string) error {
	return &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: fmt.Sprintf("unknown tool %q: no upstream is named %q (tools are named <upstream>%s<tool>)", name, strings.SplitN(name, Separator, 2)[0], Separator)}
}

// listed answers nil when upstream u lists tool, and otherwise the
// JSON-RPC error of an unknown tool (as the SDK answers a tool a server
// does not have). A tool missing from the last list is looked for in a new
// one (the upstream may have added it since; its list_changed is not
// relayed).
func (g *Gateway) listed(ctx context.Context, u *upstream, name, upName, tool string) error {
	if u == nil {
		return unknownUpstream(name)
	}
	if u.Known(tool) {
		return nil
	}
	// Lists do not wait for a connection; a call does: an upstream being
	// (re)connected is waited for, as forward would.
	_, err := u.get(ctx)
	if err == nil {
		_, err = u.Tools(ctx)
	}
	if u.Known(tool) {
		return nil
	}
	msg := fmt.Sprintf("unknown tool %q: upstream %q lists no tool named %q", name, upName, tool)
	switch {
	case !u.Up():
		msg = fmt.Sprintf("unknown tool %q: upstream %q is unavailable, and its last list had no tool named %q", name, upName, tool)
		if err != nil {
			msg = fmt.Sprintf("unknown tool %q: %v; its last list had no tool named %q", name, err, tool)
		}
	case err != nil:
		msg += fmt.Sprintf(" (in its last list: listing its tools again failed: %v)", err)
	}
	g.log.Info("gateway: a call needing approval names a tool its upstream does not list; not held", "tool", name)
	return &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: msg}
}

// relay is a call the gateway forwards, and how it came to be forwarded
// (what the agent is told when the upstream does not complete it).
type relay struct {
	u                  *upstream
	p                  *mcp.CallToolParamsRaw
	session            *mcp.ServerSession // the agent's: its progress notifications
	extra              *mcp.RequestExtra  // the agent's request's (its HTTP POST: progress.go)
	tool, id           string
	upLabel, toolLabel string
	start              time.Time
	waited             time.Duration // waiting for approval (not the gateway's overhead)
	outcome            string        // the decision's (allow, deny, approval_required, overloaded)
	shadow             bool          // forwarded by shadow mode though the outcome was not allow
	failed             bool          // the decision failed (forwarded by shadow mode)
	approval           string        // the approval id of an approved call
}

// how says how the call came to be forwarded, as the decision log has it.
func (c *relay) how() string {
	switch {
	case c.approval != "":
		return fmt.Sprintf("The call was approved (decision %s, approval %s)", c.id, c.approval)
	case c.shadow && c.outcome == OutcomeOverloaded:
		return fmt.Sprintf("The call was forwarded in shadow mode though its decision was shed for overload (decision %s; outside shadow mode it would have been refused, to be retried)", c.id)
	case c.shadow && c.failed:
		return fmt.Sprintf("The call was forwarded in shadow mode though its decision failed (decision %s; outside shadow mode it would have been denied)", c.id)
	case c.shadow && c.outcome == OutcomeApproval:
		return fmt.Sprintf("The call was forwarded in shadow mode without approval (decision %s; outside shadow mode it would have been held for approval)", c.id)
	case c.shadow:
		return fmt.Sprintf("The call was forwarded in shadow mode though the constitution denied it (decision %s; outside shadow mode it would have been denied)", c.id)
	}
	return fmt.Sprintf("The call was allowed (decision %s)", c.id)
}

// errorReply is the upstream's own JSON-RPC error answering a call (an
// unknown tool, invalid parameters), as opposed to no answer: the
// transport's failures, which the SDK also reports as JSON-RPC errors of
// its own codes (resources.go), and the gateway's timeouts are not.
func errorReply(err error) (*jsonrpc.Error, bool) {
	var je *jsonrpc.Error
	if errors.As(err, &je) && je.Code != codeRejectedByTransport && je.Code != codeServerClosing && je.Code != codeClientClosing {
		return je, true
	}
	return nil, false
}

// forward calls the upstream and returns its result unchanged, but for
// the gateway's own _meta keys (withoutGatewayMeta). When the
// upstream answers a JSON-RPC error, or no answer, the agent gets a tool
// error saying which, and how the call came to be forwarded.
func (g *Gateway) forward(ctx context.Context, c *relay) (*mcp.CallToolResult, error) {
	if c.u == nil {
		return nil, unknownUpstream(c.p.Name)
	}
	meta, endProgress := g.progressMeta(ctx, c)
	defer endProgress() // before the answer: no progress follows it
	upStart := time.Now()
	res, err := c.u.Call(ctx, c.tool, c.p.Arguments, meta)
	upTook := time.Since(upStart)
	g.m.upstreamDur.WithLabelValues(c.upLabel).Observe(upTook.Seconds())
	g.m.observeOverhead(c.upLabel, time.Since(c.start)-upTook-c.waited)
	if je, ok := errorReply(err); ok {
		g.m.upstream.WithLabelValues(c.upLabel, c.toolLabel, resultErrorReply).Inc()
		g.log.Info("gateway: upstream answered a call with an error", "decision_id", c.id, "tool", c.p.Name, "code", je.Code, "error", je.Message)
		return c.errorResult(fmt.Sprintf("upstream %q answered the call with an error: %s (JSON-RPC error %d). %s; the error is the upstream's answer, not the gateway's.",
			c.u.cfg.Name, je.Message, je.Code, c.how())), nil
	}
	if err != nil {
		g.m.upstream.WithLabelValues(c.upLabel, c.toolLabel, resultFailed).Inc()
		g.log.Warn("gateway: upstream call failed", "decision_id", c.id, "tool", c.p.Name, "error", err)
		return c.errorResult(fmt.Sprintf("%v. %s but not completed.", err, c.how())), nil
	}
	var forged bool
	if res.Meta, forged = withoutGatewayMeta(res.Meta); forged {
		g.log.Warn("gateway: an upstream's result carried the gateway's own _meta keys; dropped", "decision_id", c.id, "tool", c.p.Name)
	}
	if res.IsError {
		g.m.upstream.WithLabelValues(c.upLabel, c.toolLabel, resultToolError).Inc()
	} else {
		g.m.upstream.WithLabelValues(c.upLabel, c.toolLabel, resultOK).Inc()
	}
	return res, nil
}

// gatewayMetaPrefix begins the _meta keys that are the gateway's own
// (metaKey).
const gatewayMetaPrefix = "io.acgs/"

// withoutGatewayMeta is an upstream's _meta without the gateway's own keys
// (io.acgs/...), and whether there were any: metaKey is the gateway's word
// on a call (its decision, an approval), which an upstream must not be able
// to forge in its result. The map given is never changed (a copy is made
// when a key goes): the SDK's client may hand the same result to every
// agent reading a resource from its cache, and deleting from it while
// another agent's answer is encoded crashed the gateway (review).
func withoutGatewayMeta(m mcp.Meta) (mcp.Meta, bool) {
	dropped := false
	for k := range m {
		if strings.HasPrefix(k, gatewayMetaPrefix) {
			dropped = true
			break
		}
	}
	if !dropped {
		return m, false
	}
	out := make(mcp.Meta, len(m))
	for k, v := range m {
		if !strings.HasPrefix(k, gatewayMetaPrefix) {
			out[k] = v
		}
	}
	return out, true
}

// progressTokenKey is the _meta key of a request's progress token.
const progressTokenKey = "progressToken"

// progressMeta is the _meta of the call to the upstream: when the agent
// asked for progress (its _meta has a progressToken), a token of the
// gateway's own, routed back to the agent's (relayProgress); the upstream
// session is shared by every agent, whose tokens are unique only in their
// own session. Nothing else of the agent's _meta is forwarded. The caller
// calls end when the call ends, before its answer: the route is gone, the
// notification waiting sent, and no notification is being sent (callProgress.end).
func (g *Gateway) progressMeta(ctx context.Context, c *relay) (meta mcp.Meta, end func()) {
	tok := c.p.GetProgressToken()
	if tok == nil || c.session == nil {
		return nil, func() {}
	}
	upTok := "acgs-" + rand.Text()
	cp := newCallProgress(tok, g.progressSink(ctx, c.session, c.extra), g.m.progressDropped.Inc)
	g.progress.Store(upTok, cp)
	return mcp.Meta{progressTokenKey: upTok}, func() {
		g.progress.Delete(upTok)
		cp.end()
	}
}

// relayProgress passes an upstream's notifications/progress on to the
// agent whose call it is about, with the agent's token, through the call's
// callProgress (it does not wait for the agent); one for a call
// that has ended, or with a token the gateway did not make, is dropped. It
// is the ProgressNotificationHandler of the upstreams' clients.
func (g *Gateway) relayProgress(_ context.Context, req *mcp.ProgressNotificationClientRequest) {
	if req == nil || req.Params == nil {
		return
	}
	tok, ok := req.Params.ProgressToken.(string)
	if !ok {
		return
	}
	v, ok := g.progress.Load(tok)
	if !ok {
		return
	}
	cp := v.(*callProgress)
	p := *req.Params
	p.ProgressToken = cp.token
	cp.add(&p)
}

// hold waits for an approver, the timeout, the agent giving up or the
// gateway stopping.
func (g *Gateway) hold(ctx context.Context, c *relay, agent, session string, args any, v verdict) (*mcp.CallToolResult, error) {
	p, id, upLabel, toolLabel := c.p, c.id, c.upLabel, c.toolLabel
	now := time.Now()
	a := Approval{
		DecisionID: id, Agent: agent, Session: session, Tool: p.Name, Upstream: strings.SplitN(p.Name, Separator, 2)[0],
		Arguments: args, Reasons: v.reasons, Created: now, Expires: now.Add(g.cfg.Approvals.Timeout),
	}
	var pend *pending
	err := errStopping // a call that arrives as the gateway stops is not held, to be refused at once
	if g.stopping.Err() == nil {
		pend, err = g.approvals.add(a)
	}
	if err != nil {
		g.m.approvals.WithLabelValues(upLabel, toolLabel, string(Refused)).Inc()
		g.logApproval(a, resolution{verdict: Refused, by: "gateway", note: err.Error()})
		return refusal(id, OutcomeDeny, "Not approved", append(v.reasons, "approval required, but "+err.Error())), nil
	}
	g.log.Info("gateway: call held for approval", "approval_id", pend.ID, "decision_id", id, "tool", p.Name, "agent", agent)
	timer := time.NewTimer(g.cfg.Approvals.Timeout)
	defer timer.Stop()
	var r resolution
	select {
	case r = <-pend.done:
	case <-timer.C:
		r = g.settle(pend, resolution{verdict: TimedOut})
	case <-g.stopping.Done():
		r = g.settle(pend, stopRefusal)
	case <-ctx.Done():
		r = g.settle(pend, resolution{verdict: Cancelled})
	}
	// An approval that raced the agent's cancellation (both arrived before
	// this goroutine ran) is the approver's verdict, but there is nobody
	// left to forward the call for: the log says so.
	gone := r.verdict == Approved && ctx.Err() != nil
	if gone {
		r.note = strings.TrimPrefix(r.note+"; "+approvedGone, "; ")
	}
	g.m.approvals.WithLabelValues(upLabel, toolLabel, string(r.verdict)).Inc()
	g.logApproval(pend.Approval, r)
	switch {
	case gone:
		g.log.Info("gateway: a call was approved as its agent gave up; not forwarded", "approval_id", pend.ID, "decision_id", id, "tool", p.Name, "agent", agent)
		return refusal(id, OutcomeDeny, "Not forwarded", append(v.reasons, approvedGone)), nil
	case r.verdict == Approved:
		c.waited, c.approval = time.Since(now), pend.ID
		return g.forward(ctx, c)
	case r.verdict == Refused:
		reason := "refused by the approver"
		if r.by != "" {
			reason = "refused by " + r.by
		}
		if r.note != "" {
			reason += ": " + r.note
		}
		return refusal(id, OutcomeDeny, "Not approved", append(v.reasons, reason)), nil
	case r.verdict == TimedOut:
		return refusal(id, OutcomeDeny, "Not approved", append(v.reasons, fmt.Sprintf("no approval within %s", g.cfg.Approvals.Timeout))), nil
	}
	return refusal(id, OutcomeDeny, "Not approved", append(v.reasons, "the request was cancelled while waiting for approval")), nil
}

// approvedGone is the note of an approval that came as the agent gave up.
const approvedGone = "approved, but the agent had gone (its request was cancelled) before the call could be forwarded: not forwarded"

// settle ends a hold with the gateway's own verdict r (a timeout, a
// cancellation, a refusal as it stops) unless an approver's arrived in the
// meantime (an approver who got a 200 must not see the call refused).
func (g *Gateway) settle(p *pending, r resolution) resolution {
	g.approvals.remove(p)
	select {
	case ar := <-p.done:
		return ar
	default:
		return r
	}
}

// refusal is the result of a call that was not forwarded: an MCP tool
// error (isError) whose text names the reasons and the decision id, so the
// model sees why; the same in _meta for programs.
func refusal(id, outcome, title string, reasons []string) *mcp.CallToolResult {
	text := fmt.Sprintf("%s (decision %s)", title, id)
	if len(reasons) > 0 {
		text += ": " + strings.Join(reasons, "; ")
	}
	if reasons == nil {
		reasons = []string{}
	}
	return &mcp.CallToolResult{
		Content: []mcp.Content{&mcp.TextContent{Text: text}},
		IsError: true,
		Meta:    mcp.Meta{metaKey: map[string]any{"decision_id": id, "outcome": outcome, "reasons": reasons}},
	}
}

// errorResult is the tool error of a forwarded call the upstream did not
// complete; its _meta has the decision's outcome, as logged, and how the
// call came to be forwarded.
func (c *relay) errorResult(text string) *mcp.CallToolResult {
	meta := map[string]any{"decision_id": c.id, "outcome": c.outcome, "upstream_error": text}
	if c.shadow {
		meta["mode"] = "shadow"
	}
	if c.approval != "" {
		meta["approval_id"], meta["verdict"] = c.approval, string(Approved)
	}
	return &mcp.CallToolResult{
		Content: []mcp.Content{&mcp.TextContent{Text: text}},
		IsError: true,
		Meta:    mcp.Meta{metaKey: meta},
	}
}

// ---------------------------------------------------------------------------
// calls_last_minute rounding (see data.acgs.tool_call.rate_thresholds)
// ---------------------------------------------------------------------------

// roundCalls rounds n down to the largest rate threshold it has reached (0
// below all), which the rate rule answers exactly as it answers n; equal
// calls then share a cache entry. Without thresholds n is sent as it is.
func (g *Gateway) roundCalls(ctx context.Context, n int64) json.Number {
	info, ok := g.d.Engine.Info()
	if !ok {
		return json.Number(strconv.FormatInt(n, 10))
	}
	t := g.thresholds.Load()
	if t == nil || t.scope != info.Scope {
		var ok bool
		// A load that failed (this caller's context ended, the decision
		// timed out) is used for this call only: stored, it would stand
		// for the bundle until the next one.
		if t, ok = g.loadThresholds(ctx, info.Scope); ok {
			g.thresholds.Store(t)
		}
	}
	if t.values == nil {
		return json.Number(strconv.FormatInt(n, 10))
	}
	r := json.Number("0")
	for i, v := range t.values {
		if float64(n) >= v {
			r = json.Number(t.texts[i])
		}
	}
	return r
}

// loadThresholds asks the policy for its rate thresholds; ok is false when
// the decision failed (the answer is then exact counts, for this call).
func (g *Gateway) loadThresholds(ctx context.Context, scope string) (t *thresholds, ok bool) {
	t = &thresholds{scope: scope}
	ctx, cancel := context.WithTimeout(ctx, g.cfg.DecisionTimeout)
	defer cancel()
	d, err := g.d.Engine.Decide(ctx, thresholdsPath, nil)
	if err != nil {
		g.log.Warn("gateway: the rate thresholds could not be read; sending this call's exact count", "error", err)
		return t, false
	}
	if !d.Defined {
		g.log.Warn("gateway: no rate thresholds from the policy; sending exact call counts")
		return t, true
	}
	arr, _ := d.Result.([]any)
	for _, x := range arr {
		f, s, ok := number(x)
		if !ok {
			g.log.Warn("gateway: a rate threshold is not a number; sending exact call counts", "value", x)
			return &thresholds{scope: scope}, true
		}
		t.values = append(t.values, f)
		t.texts = append(t.texts, s)
	}
	if t.values == nil {
		t.values, t.texts = []float64{}, []string{}
	}
	return t, true
}

func number(x any) (float64, string, bool) {
	switch v := x.(type) {
	case json.Number:
		f, err := v.Float64()
		return f, v.String(), err == nil && !math.IsInf(f, 0)
	case float64:
		return v, strconv.FormatFloat(v, 'g', -1, 64), true
	case int:
		return float64(v), strconv.Itoa(v), true
	case int64:
		return float64(v), strconv.FormatInt(v, 10), true
	}
	return 0, "", false
}

// ---------------------------------------------------------------------------
// decision log
// ---------------------------------------------------------------------------

func (g *Gateway) logDecision(id string, input map[string]any, v verdict, shadow bool, calls int64, start time.Time, took time.Duration) {
	if g.d.DecisionLog == nil {
		return
	}
	ev := &telemetry.DecisionEvent{
		DecisionID:         id,
		Path:               DecisionPath,
		Input:              input,
		Timestamp:          start.UTC(),
		CacheTier:          v.dec.Source.CacheTier(),
		ConstitutionalHash: g.d.ConstitutionalHash,
		Metrics: map[string]any{
			"timer_gateway_decision_ns": took.Nanoseconds(),
			"timer_rego_query_eval_ns":  v.dec.EvalNS,
			"gateway_calls_last_minute": calls,
		},
		Labels: labelsEnforce,
	}
	if shadow {
		ev.Labels = labelsShadow
	}
	if v.outcome == OutcomeOverloaded || v.outcome == outcomeCanceled {
		// Not a decision of the policy nor a failed one: the label says
		// what it was (the error field has the engine's words).
		ev.Labels = map[string]string{"source": ev.Labels["source"], "mode": ev.Labels["mode"], "outcome": v.outcome}
	}
	if v.dec.Defined {
		ev.Result = v.dec.Result
	}
	if v.dec.Revision != "" {
		ev.Bundles = map[string]telemetry.BundleInfo{"acgs": {Revision: v.dec.Revision}}
	}
	if v.err != nil {
		ev.Error = v.err.Error()
	} else if v.failed {
		ev.Error = strings.Join(v.reasons, "; ")
	}
	g.d.DecisionLog.Log(ev)
}

// logApproval records how a call needing approval ended, linked to its
// decision: a held call (a.ID set) or one refused at the approvals bounds
// without being held (no approval id). An approver's verdict names the
// admin token it came with (tokenRef) beside the "by" it claims.
func (g *Gateway) logApproval(a Approval, r resolution) {
	if g.d.DecisionLog == nil {
		return
	}
	res := map[string]any{"decision_id": a.DecisionID, "verdict": string(r.verdict), "tool": a.Tool, "agent": a.Agent}
	if a.ID != "" {
		res["approval_id"] = a.ID
	}
	if r.by != "" {
		res["by"] = r.by
	}
	if r.token.position > 0 {
		res["admin_token"] = r.token.logValue()
	}
	if r.note != "" {
		res["note"] = r.note
	}
	g.d.DecisionLog.Log(&telemetry.DecisionEvent{
		Path:               "acgs/gateway/approval",
		Result:             res,
		ConstitutionalHash: g.d.ConstitutionalHash,
		CacheTier:          "none",
		Labels:             labelsEnforce,
	})
}
