package gateway

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Resources and prompts are proxied, not decided one by one: an upstream's
// resources (and its prompts) are shown to an agent and read (got) by it
// only when the constitution does not hide the pseudo-tool
// "<upstream>__resources/read" ("<upstream>__prompts/get") for that agent,
// the same data.acgs.tool_call.hidden query as tools/list: a blocked
// upstream, an upstream not allowed for the agent, or a prohibited_tools
// pattern matching the pseudo-tool's name. The argument rules, the rate
// limit, approvals and the decision log apply to tools/call only.
const (
	resourcesTool = "resources/read"
	promptsTool   = "prompts/get"
)

// The method label of acgs_gateway_proxied_requests_total.
const (
	methodResourcesList = "resources/list"
	methodTemplatesList = "resources/templates/list"
	methodResourcesRead = "resources/read"
	methodPromptsList   = "prompts/list"
	methodPromptsGet    = "prompts/get"
)

// The outcome label of acgs_gateway_proxied_requests_total.
const (
	proxiedOK       = "ok"        // the upstream answered
	proxiedError    = "error"     // it answered a JSON-RPC error, passed on as it is
	proxiedFailed   = "failed"    // no answer (unavailable, connection lost, call_timeout, the gateway stopped)
	proxiedHidden   = "hidden"    // the constitution hides the upstream's resources or prompts from the agent
	proxiedNotFound = "not_found" // no upstream serves the URI or prompt name (upstream "unknown")
)

// countProxied counts one resources or prompts request of an agent.
func (g *Gateway) countProxied(upstream, method, outcome string) {
	g.m.proxied.WithLabelValues(upstream, method, outcome).Inc()
}

// countListed counts what a list request did with one upstream: asked is
// the result of asking it (proxiedOK, proxiedFailed, or "" when it does
// not serve the feature and was not asked, which is not counted). An
// upstream that did not answer counts as failed even when its last list is
// hidden from the agent: the failure is what operators need to see.
func (g *Gateway) countListed(u *upstream, method, asked string, hidden bool) {
	switch {
	case asked == "":
		return
	case asked == proxiedOK && hidden:
		asked = proxiedHidden
	}
	g.countProxied(u.cfg.Name, method, asked)
}

// hiddenFeature reports whether the constitution hides an upstream's
// resources or prompts (feature: resourcesTool or promptsTool) from agent;
// a failed or undefined check, or one whose result is not a boolean, hides
// them (fail closed). Shadow mode for the upstream (or for the pseudo-tool)
// shows them. A check the engine did not make (shed for overload, or
// cancelled while it waited) hides nothing and refuses nothing: err is the
// request's answer (notMadeError, what saying what the gateway did not
// do), as for tools/list.
func (g *Gateway) hiddenFeature(ctx context.Context, u *upstream, feature, agent, what string) (hidden bool, err error) {
	if u.cfg.shadowed(feature) {
		return false, nil
	}
	full := u.cfg.Name + Separator + feature
	hide, notMade := g.decideHidden(ctx, full, u.cfg.Name, feature, agent)
	if notMade != nil {
		return false, g.notMadeError(ctx, what, full, notMade)
	}
	return hide, nil
}

// countRefusedList counts a list refused because the check of the first
// of ups was not made (hiddenFeature's err): each of ups counts what
// asking it gave, as it does in a list answered (countListed), none as
// hidden: that was not decided.
func (g *Gateway) countRefusedList(ups []*upstream, method string, asked map[*upstream]string) {
	for _, u := range ups {
		g.countListed(u, method, asked[u], false)
	}
}

// ---------------------------------------------------------------------------
// resources/list, resources/templates/list, resources/read
// ---------------------------------------------------------------------------

// listResources merges the upstreams' resources. URIs are left as the
// upstream gave them (links in tool results and in resource contents keep
// working); names get the upstream's prefix as tools do. When two upstreams
// list the same URI, the first in the configuration owns it.
func (g *Gateway) listResources(ctx context.Context, req *mcp.ListResourcesRequest) (*mcp.ListResourcesResult, error) {
	agent, _ := g.identity(req.Session, req.Extra)
	asked := g.refreshResources(ctx)
	out := []*mcp.Resource{}
	for i, u := range g.order {
		res, _ := u.lastResources()
		hidden := false
		if len(res) > 0 {
			var err error
			if hidden, err = g.hiddenFeature(ctx, u, resourcesTool, agent, "list the resources"); err != nil {
				g.countRefusedList(g.order[i:], methodResourcesList, asked)
				return nil, err
			}
		}
		g.countListed(u, methodResourcesList, asked[u], hidden)
		if len(res) == 0 || hidden {
			continue
		}
		for _, r := range res {
			if owner := g.listedOwner(r.URI); owner != u {
				if owner != nil {
					g.log.Warn("gateway: two upstreams list the same resource; the first configured serves it",
						"uri", r.URI, "upstream", u.cfg.Name, "served_by", owner.cfg.Name)
				}
				// nil: a list refreshed since res was read dropped the
				// URI; it is not listed.
				continue
			}
			c := *r
			c.Name = u.cfg.Name + Separator + r.Name
			out = append(out, &c)
		}
	}
	return &mcp.ListResourcesResult{Resources: out}, nil
}

func (g *Gateway) listResourceTemplates(ctx context.Context, req *mcp.ListResourceTemplatesRequest) (*mcp.ListResourceTemplatesResult, error) {
	agent, _ := g.identity(req.Session, req.Extra)
	asked := g.refreshResources(ctx)
	out := []*mcp.ResourceTemplate{}
	for i, u := range g.order {
		_, tmpls := u.lastResources()
		hidden := false
		if len(tmpls) > 0 {
			var err error
			if hidden, err = g.hiddenFeature(ctx, u, resourcesTool, agent, "list the resource templates"); err != nil {
				g.countRefusedList(g.order[i:], methodTemplatesList, asked)
				return nil, err
			}
		}
		g.countListed(u, methodTemplatesList, asked[u], hidden)
		if len(tmpls) == 0 || hidden {
			continue
		}
		for _, t := range tmpls {
			c := *t
			c.Name = u.cfg.Name + Separator + t.Name
			out = append(out, &c)
		}
	}
	return &mcp.ListResourceTemplatesResult{ResourceTemplates: out}, nil
}

// readResource forwards a read to the upstream that owns the URI (see
// resourceOwner) and returns its answer unchanged, but for the gateway's
// own _meta keys (withoutGatewayMeta), as of a tool's result.
func (g *Gateway) readResource(ctx context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
	agent, _ := g.identity(req.Session, req.Extra)
	uri := req.Params.URI
	u := g.resourceOwner(uri)
	if u == nil { // not in the last lists: the upstreams may have new ones
		g.relistResources(ctx)
		u = g.resourceOwner(uri)
	}
	if u == nil {
		g.countProxied("unknown", methodResourcesRead, proxiedNotFound)
		return nil, mcp.ResourceNotFoundError(uri)
	}
	hidden, err := g.hiddenFeature(ctx, u, resourcesTool, agent, "read the resource")
	if err != nil {
		return nil, err
	}
	if hidden {
		g.countProxied(u.cfg.Name, methodResourcesRead, proxiedHidden)
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: fmt.Sprintf("resource %q: the constitution does not let agent %q read resources of upstream %q", uri, agent, u.cfg.Name)}
	}
	res, outcome, err := u.ReadResource(ctx, req.Params)
	g.countProxied(u.cfg.Name, methodResourcesRead, outcome)
	if res != nil {
		if m, forged := withoutGatewayMeta(res.Meta); forged {
			// A copy: the result may be the SDK client's cached one,
			// shared by every agent reading the resource.
			cp := *res
			cp.Meta = m
			res = &cp
			g.log.Warn("gateway: an upstream's resource carried the gateway's own _meta keys; dropped", "upstream", u.cfg.Name, "uri", uri)
		}
	}
	return res, err
}

// refreshResources lists the resources and templates of every upstream
// that has them (an upstream that does not answer in time keeps its last
// lists; one that is down has none). It returns what asking each upstream
// gave: proxiedOK, proxiedFailed (also for an upstream that is down: it
// was not asked), or nothing for an upstream without resources (not
// asked).
func (g *Gateway) refreshResources(ctx context.Context) map[*upstream]string {
	asked := make(map[*upstream]string, len(g.order))
	for _, u := range g.order {
		served, err := u.refreshResources(ctx)
		switch {
		case err != nil:
			g.logListFailure(u, "resources/list", err)
			asked[u] = proxiedFailed
		case served:
			asked[u] = proxiedOK
		}
	}
	return asked
}

// relistEvery is how often reads of URIs that are not in the upstreams'
// last lists may list them again (relistResources).
const relistEvery = time.Second

// relists are the lists that reads of unknown URIs ask for; last is the
// latest, waiting, running or done.
type relists struct {
	mu   sync.Mutex
	last *relist
}

// relist is one list of every upstream's resources for reads of unknown
// URIs: it begins at start (or once the one before it ends, if later) and
// closes done when its lists are in. began is when it began listing (zero
// until then; under relists.mu).
type relist struct {
	start time.Time
	began time.Time
	done  chan struct{}
}

// relistResources lists every upstream's resources again for a read of a
// URI not in their last lists, and returns once lists begun after it was
// called are in (or ctx ends), so that a resource that appeared before
// the read is found. Such reads share their lists, one beginning at most
// every relistEvery (a read waits for the next meanwhile): each read of a
// URI nobody serves listed every upstream again, so a client repeating
// one made the gateway list all its upstreams per request (review).
//
// A read shares the latest relist unless it has begun listing: then it
// queues the next. So at most one relist runs and one waits, whatever the
// upstreams' list times (a relist taken as begun at its scheduled start,
// though still waiting behind a slow one, let reads queue one a second
// without bound, each waiting for the whole chain; review of 768e4ba).
func (g *Gateway) relistResources(ctx context.Context) {
	t := &g.relists
	t.mu.Lock()
	r := t.last
	if r == nil || !r.began.IsZero() { // none waiting to begin
		now := time.Now()
		next := &relist{start: now, done: make(chan struct{})}
		var prev chan struct{}
		if r != nil {
			prev = r.done
			if s := r.began.Add(relistEvery); s.After(now) {
				next.start = s
			}
		}
		t.last = next
		go g.runRelist(next, prev)
		r = next
	}
	t.mu.Unlock()
	select {
	case <-r.done:
	case <-ctx.Done():
	}
}

// runRelist lists for r once prev (the relist before it, nil when none)
// has ended and r's start has come, unless the gateway stops first.
func (g *Gateway) runRelist(r *relist, prev chan struct{}) {
	defer close(r.done)
	if prev != nil {
		select {
		case <-prev:
		case <-g.lifetime.Done():
			return
		}
	}
	if d := time.Until(r.start); d > 0 {
		tm := time.NewTimer(d)
		defer tm.Stop()
		select {
		case <-tm.C:
		case <-g.lifetime.Done():
			return
		}
	}
	if g.lifetime.Err() != nil { // select may pick a ready prev over a stop
		return
	}
	g.relists.mu.Lock()
	r.began = time.Now()
	g.relists.mu.Unlock()
	g.refreshResources(g.lifetime)
}

// logListFailure logs a list request (what) of an upstream that failed:
// at debug level when the upstream is down (its loss and its reconnection
// attempts are logged), else a warning (it keeps its last list).
func (g *Gateway) logListFailure(u *upstream, what string, err error) {
	if errors.Is(err, errDown) {
		g.log.Debug("gateway: "+what+": an upstream is down; none of its entries are listed", "upstream", u.cfg.Name, "error", err)
		return
	}
	g.log.Warn("gateway: "+what+" of an upstream failed; using its last list", "upstream", u.cfg.Name, "error", err)
}

// listedOwner is the first upstream (in configuration order) whose last
// list has uri.
func (g *Gateway) listedOwner(uri string) *upstream {
	for _, u := range g.order {
		if u.hasResource(uri) {
			return u
		}
	}
	return nil
}

// resourceOwner is the upstream a read of uri goes to: the first whose
// last list has it, else the one with a resource template whose literal
// beginning (up to its first "{") is the longest beginning of uri (a URI
// made from a template, or a link in a tool result); nil when none.
func (g *Gateway) resourceOwner(uri string) *upstream {
	if u := g.listedOwner(uri); u != nil {
		return u
	}
	var best *upstream
	bestLen := -1
	for _, u := range g.order {
		_, tmpls := u.lastResources()
		for _, t := range tmpls {
			lit, _, _ := strings.Cut(t.URITemplate, "{")
			if strings.HasPrefix(uri, lit) && len(lit) > bestLen {
				best, bestLen = u, len(lit)
			}
		}
	}
	return best
}

// ---------------------------------------------------------------------------
// prompts/list, prompts/get
// ---------------------------------------------------------------------------

func (g *Gateway) listPrompts(ctx context.Context, req *mcp.ListPromptsRequest) (*mcp.ListPromptsResult, error) {
	agent, _ := g.identity(req.Session, req.Extra)
	out := []*mcp.Prompt{}
	for _, u := range g.order {
		prompts, served, err := u.Prompts(ctx)
		asked := ""
		switch {
		case err != nil:
			g.logListFailure(u, "prompts/list", err)
			asked = proxiedFailed
		case served:
			asked = proxiedOK
		}
		hidden := false
		if len(prompts) > 0 {
			if hidden, err = g.hiddenFeature(ctx, u, promptsTool, agent, "list the prompts"); err != nil {
				// As countRefusedList: the upstreams after u were not asked.
				g.countListed(u, methodPromptsList, asked, false)
				return nil, err
			}
		}
		g.countListed(u, methodPromptsList, asked, hidden)
		if len(prompts) == 0 || hidden {
			continue
		}
		for _, p := range prompts {
			c := *p
			c.Name = u.cfg.Name + Separator + p.Name
			out = append(out, &c)
		}
	}
	return &mcp.ListPromptsResult{Prompts: out}, nil
}

func (g *Gateway) getPrompt(ctx context.Context, req *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
	agent, _ := g.identity(req.Session, req.Extra)
	upName, prompt, ok := strings.Cut(req.Params.Name, Separator)
	u := g.ups[upName]
	if !ok || u == nil {
		g.countProxied("unknown", methodPromptsGet, proxiedNotFound)
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: fmt.Sprintf("unknown prompt %q: no upstream is named %q (prompts are named <upstream>%s<prompt>)", req.Params.Name, upName, Separator)}
	}
	hidden, err := g.hiddenFeature(ctx, u, promptsTool, agent, "get the prompt")
	if err != nil {
		return nil, err
	}
	if hidden {
		g.countProxied(u.cfg.Name, methodPromptsGet, proxiedHidden)
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: fmt.Sprintf("prompt %q: the constitution does not let agent %q get prompts of upstream %q", req.Params.Name, agent, upName)}
	}
	p := *req.Params
	p.Name = prompt
	res, outcome, err := u.GetPrompt(ctx, &p)
	g.countProxied(u.cfg.Name, methodPromptsGet, outcome)
	if res != nil {
		if m, forged := withoutGatewayMeta(res.Meta); forged {
			cp := *res
			cp.Meta = m
			res = &cp
			g.log.Warn("gateway: an upstream's prompt carried the gateway's own _meta keys; dropped", "upstream", u.cfg.Name, "prompt", req.Params.Name)
		}
	}
	return res, err
}

// ---------------------------------------------------------------------------
// the upstream side
// ---------------------------------------------------------------------------

// serverCaps is what the upstream said it serves (nil before it connects).
func serverCaps(cs *mcp.ClientSession) *mcp.ServerCapabilities {
	if ir := cs.InitializeResult(); ir != nil {
		return ir.Capabilities
	}
	return nil
}

// errDown is the error of a list request to an upstream that is down
// (not asked: lists never wait for a connection).
var errDown = errors.New("it is down, being reconnected in the background")

// downError is errDown for u.
func (u *upstream) downError() error {
	return fmt.Errorf("upstream %q: %w", u.cfg.Name, errDown)
}

// refreshResources lists the upstream's resources and templates now; an
// upstream without the resources capability has none (it is not asked:
// served is false). An upstream that is down is not asked (errDown), one
// that does not answer within listTimeout keeps its last lists, one whose
// transport fails goes down (errDown).
func (u *upstream) refreshResources(ctx context.Context) (served bool, err error) {
	cs := u.live()
	if cs == nil {
		return false, u.downError()
	}
	if caps := serverCaps(cs); caps == nil || caps.Resources == nil {
		u.mu.Lock()
		u.resources, u.templates, u.resourceURIs = nil, nil, nil
		u.mu.Unlock()
		return false, nil
	}
	ctx, cancel := u.bound(ctx, u.listTimeout())
	defer cancel()
	fail := func(err error, what string) (bool, error) {
		if u.failed(ctx, cs, err) {
			return true, u.downError()
		}
		return true, u.listError(ctx, err, what)
	}
	var res []*mcp.Resource
	for r, err := range cs.Resources(ctx, nil) {
		if err != nil {
			return fail(err, "resources/list")
		}
		res = append(res, r)
	}
	var tmpls []*mcp.ResourceTemplate
	for t, err := range cs.ResourceTemplates(ctx, nil) {
		if err != nil {
			if isMethodNotFound(err) { // resources without templates
				break
			}
			return fail(err, "resources/templates/list")
		}
		tmpls = append(tmpls, t)
	}
	uris := make(map[string]bool, len(res))
	for _, r := range res {
		uris[r.URI] = true
	}
	u.mu.Lock()
	u.resources, u.templates, u.resourceURIs = res, tmpls, uris
	u.mu.Unlock()
	return true, nil
}

// lastResources are the resources and templates of the last lists; none
// while the upstream is down.
func (u *upstream) lastResources() ([]*mcp.Resource, []*mcp.ResourceTemplate) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.session == nil {
		return nil, nil
	}
	return u.resources, u.templates
}

// hasResource reports whether uri is in the last list (never while the
// upstream is down).
func (u *upstream) hasResource(uri string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.session != nil && u.resourceURIs[uri]
}

// Prompts lists the upstream's prompts now. served is false for an
// upstream without the prompts capability (not asked). An upstream that is
// down is not asked and has none (errDown); one that does not answer
// within listTimeout keeps its last list (returned with the error, for the
// log); one whose transport fails goes down (errDown).
func (u *upstream) Prompts(ctx context.Context) (prompts []*mcp.Prompt, served bool, err error) {
	cs := u.live()
	if cs == nil {
		return nil, false, u.downError()
	}
	if caps := serverCaps(cs); caps == nil || caps.Prompts == nil {
		return nil, false, nil
	}
	ctx, cancel := u.bound(ctx, u.listTimeout())
	defer cancel()
	for p, err := range cs.Prompts(ctx, nil) {
		if err != nil {
			if u.failed(ctx, cs, err) {
				return nil, true, u.downError()
			}
			u.mu.Lock()
			defer u.mu.Unlock()
			return u.prompts, true, u.listError(ctx, err, "prompts/list")
		}
		prompts = append(prompts, p)
	}
	u.mu.Lock()
	u.prompts = prompts
	u.mu.Unlock()
	return prompts, true, nil
}

// ReadResource forwards one read; outcome is proxiedOK, proxiedError or
// proxiedFailed (see callError).
func (u *upstream) ReadResource(ctx context.Context, p *mcp.ReadResourceParams) (res *mcp.ReadResourceResult, outcome string, err error) {
	cs, err := u.get(ctx)
	if err != nil {
		return nil, proxiedFailed, upstreamError(err)
	}
	ctx, cancel := u.bound(ctx, u.cfg.CallTimeout)
	defer cancel()
	res, err = cs.ReadResource(ctx, p)
	if err != nil {
		u.failed(ctx, cs, err)
		outcome, err = u.callError(ctx, err)
		return nil, outcome, err
	}
	return res, proxiedOK, nil
}

// GetPrompt forwards one prompts/get (p.Name is the upstream's own name);
// outcome as for ReadResource.
func (u *upstream) GetPrompt(ctx context.Context, p *mcp.GetPromptParams) (res *mcp.GetPromptResult, outcome string, err error) {
	cs, err := u.get(ctx)
	if err != nil {
		return nil, proxiedFailed, upstreamError(err)
	}
	ctx, cancel := u.bound(ctx, u.cfg.CallTimeout)
	defer cancel()
	res, err = cs.GetPrompt(ctx, p)
	if err != nil {
		u.failed(ctx, cs, err)
		outcome, err = u.callError(ctx, err)
		return nil, outcome, err
	}
	return res, proxiedOK, nil
}

// The go-sdk's own codes for a request that got no answer from the
// upstream (its internal jsonrpc2 ErrRejected, which wraps transport
// failures such as a refused connection, ErrServerClosing and
// ErrClientClosing): not the upstream's answer.
const (
	codeRejectedByTransport = -32005
	codeServerClosing       = -32004
	codeClientClosing       = -32003
)

// callError passes the upstream's own JSON-RPC errors (resource not found,
// invalid params) to the agent as they are (outcome proxiedError), and says
// what happened otherwise (proxiedFailed: the upstream did not answer).
func (u *upstream) callError(ctx context.Context, err error) (string, error) {
	if je, ok := errorReply(err); ok {
		return proxiedError, je
	}
	err = u.noAnswer(ctx, err, "request")
	u.log.Warn("gateway: an upstream request failed", "error", err)
	return proxiedFailed, upstreamError(err)
}

// upstreamError is a JSON-RPC internal error naming the upstream's problem
// (resources/read and prompts/get have no isError result to carry it).
func upstreamError(err error) error {
	return &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: err.Error()}
}

func isMethodNotFound(err error) bool {
	var je *jsonrpc.Error
	return errors.As(err, &je) && je.Code == jsonrpc.CodeMethodNotFound
}
