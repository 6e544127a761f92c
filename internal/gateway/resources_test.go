package gateway_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/acgs-lite/acgs/internal/config"
	"github.com/acgs-lite/acgs/internal/gateway/mcptest"
	"github.com/acgs-lite/acgs/internal/testenv"
)

// resourceEnv is a gateway in front of three upstreams: "local" (this
// binary over stdio, resources mcptest://local/...), "remote" (in process
// over HTTP, mcptest://mcptest/...) and "plain" (tools only: no resources,
// no prompts). agent-2 may use only "remote" and "plain" (agent_upstreams).
// prohibit is added to prohibited_tools.
func resourceEnv(t *testing.T, prohibit ...string) *env {
	t.Helper()
	plain := mcptest.NewWith(mcptest.Options{Name: "plain", ToolsOnly: true})
	plainURL, stop, err := plain.ServeHTTP()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	files := testenv.ConstitutionFiles(t, nil)
	const dataPath = "acgs/config/data.json"
	var data map[string]any
	if err := json.Unmarshal(files[dataPath], &data); err != nil {
		t.Fatalf("%s: %v", dataPath, err)
	}
	tc := data["tool_call"].(map[string]any)
	tc["agent_upstreams"] = map[string]any{"agent-2": []string{"remote", "plain"}}
	for _, p := range prohibit {
		tc["prohibited_tools"] = append(tc["prohibited_tools"].([]any), p)
	}
	b, _ := json.Marshal(data)
	dir := testenv.WriteConstitution(t, t.TempDir(), nil, map[string]string{dataPath: string(b)})
	exe, _ := os.Executable()
	ups := fmt.Sprintf("  - name: local\n    command: [%q]\n    env: {%s: stdio, %s: local}\n", exe, mcptest.EnvServer, mcptest.EnvName) +
		"  - name: remote\n    url: REMOTE\n" +
		fmt.Sprintf("  - name: plain\n    url: %s\n", plainURL)
	return startEnv(t, envOptions{upstreams: ups, mutate: func(c *config.Config) { c.Policy.BundlePath = dir }})
}

func TestResourcesThroughGateway(t *testing.T) {
	e := resourceEnv(t)
	gw := e.agent(t, "token-1")
	ctx := testCtx(t)

	list, err := gw.ListResources(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, r := range list.Resources {
		got[r.Name] = r.URI
	}
	want := map[string]string{"local__readme": "mcptest://local/readme", "remote__readme": "mcptest://mcptest/readme"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("resources/list = %v, want %v (plain has none)", got, want)
	}

	tmpls, err := gw.ListResourceTemplates(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var tnames []string
	for _, tm := range tmpls.ResourceTemplates {
		tnames = append(tnames, tm.Name+"="+tm.URITemplate)
	}
	sort.Strings(tnames)
	if w := []string{"local__record=mcptest://local/records/{id}", "remote__record=mcptest://mcptest/records/{id}"}; !reflect.DeepEqual(tnames, w) {
		t.Fatalf("resources/templates/list = %v, want %v", tnames, w)
	}

	// Each listed URI goes to its own upstream, and a URI made from a
	// template to the upstream of the template.
	for uri, wantText := range map[string]string{
		"mcptest://local/readme":       "readme of local",
		"mcptest://mcptest/readme":     "readme of mcptest",
		"mcptest://local/records/42":   `{"id":"42","server":"local"}`,
		"mcptest://mcptest/records/a7": `{"id":"a7","server":"mcptest"}`,
	} {
		res, err := gw.ReadResource(ctx, &mcp.ReadResourceParams{URI: uri})
		if err != nil {
			t.Fatalf("read %s: %v", uri, err)
		}
		if len(res.Contents) != 1 || res.Contents[0].Text != wantText || res.Contents[0].URI != uri {
			t.Fatalf("read %s = %+v, want text %q", uri, res.Contents, wantText)
		}
	}
	if n := e.remote.Calls("resources/read"); n != 2 {
		t.Errorf("remote served %d reads, want 2", n)
	}

	// Unchanged: the same read made directly.
	direct := connectHTTP(t, e.remURL, "")
	for _, uri := range []string{"mcptest://mcptest/readme", "mcptest://mcptest/records/x"} {
		a, err := gw.ReadResource(ctx, &mcp.ReadResourceParams{URI: uri})
		if err != nil {
			t.Fatal(err)
		}
		d, err := direct.ReadResource(ctx, &mcp.ReadResourceParams{URI: uri})
		if err != nil {
			t.Fatal(err)
		}
		ja, _ := json.Marshal(a)
		jd, _ := json.Marshal(d)
		if string(ja) != string(jd) {
			t.Errorf("read %s through the gateway\n%s\ndirectly\n%s", uri, ja, jd)
		}
	}

	// A URI nobody serves.
	_, err = gw.ReadResource(ctx, &mcp.ReadResourceParams{URI: "mcptest://nobody/readme"})
	var je *jsonrpc.Error
	if !errors.As(err, &je) || je.Code != jsonrpc.CodeInvalidParams || je.Message != "Resource not found" {
		t.Fatalf("read of an unknown URI: %v, want resource not found", err)
	}

	// The upstream without resources still serves its tools.
	if res := call(t, gw, "plain__echo", map[string]any{"text": "hi"}); res.IsError {
		t.Fatalf("plain__echo: %q", text(res))
	}
}

func TestPromptsThroughGateway(t *testing.T) {
	e := resourceEnv(t)
	gw := e.agent(t, "token-1")
	ctx := testCtx(t)

	list, err := gw.ListPrompts(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range list.Prompts {
		names = append(names, p.Name)
		if len(p.Arguments) != 1 || p.Arguments[0].Name != "topic" || !p.Arguments[0].Required {
			t.Errorf("prompt %s arguments %+v", p.Name, p.Arguments)
		}
	}
	sort.Strings(names)
	if w := []string{"local__review", "remote__review"}; !reflect.DeepEqual(names, w) {
		t.Fatalf("prompts/list = %v, want %v", names, w)
	}

	res, err := gw.GetPrompt(ctx, &mcp.GetPromptParams{Name: "local__review", Arguments: map[string]string{"topic": "the gateway"}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Description != "review from local" || len(res.Messages) != 1 || res.Messages[0].Content.(*mcp.TextContent).Text != "Please review the gateway (local)" {
		t.Fatalf("prompts/get local__review = %+v", res)
	}

	direct := connectHTTP(t, e.remURL, "")
	p := &mcp.GetPromptParams{Name: "remote__review", Arguments: map[string]string{"topic": "x"}}
	a, err := gw.GetPrompt(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	d, err := direct.GetPrompt(ctx, &mcp.GetPromptParams{Name: "review", Arguments: p.Arguments})
	if err != nil {
		t.Fatal(err)
	}
	ja, _ := json.Marshal(a)
	jd, _ := json.Marshal(d)
	if string(ja) != string(jd) {
		t.Errorf("prompts/get through the gateway\n%s\ndirectly\n%s", ja, jd)
	}

	for _, name := range []string{"plain__review", "nobody__review", "review"} {
		if _, err := gw.GetPrompt(ctx, &mcp.GetPromptParams{Name: name}); err == nil {
			t.Errorf("prompts/get %s: no error", name)
		}
	}
}

// TestResourcesAndPromptsFollowUpstreamRules: an agent that may not use an
// upstream sees none of its resources or prompts and cannot read or get
// them, as it does not see its tools.
func TestResourcesAndPromptsFollowUpstreamRules(t *testing.T) {
	e := resourceEnv(t)
	gw := e.agent(t, "token-2")
	ctx := testCtx(t)

	if names := toolNames(t, gw); names["local__echo"] || !names["remote__echo"] {
		t.Fatalf("agent-2 tools: local__echo %v, remote__echo %v", names["local__echo"], names["remote__echo"])
	}
	list, err := gw.ListResources(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Resources) != 1 || list.Resources[0].Name != "remote__readme" {
		t.Fatalf("agent-2 resources: %+v", list.Resources)
	}
	prompts, err := gw.ListPrompts(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(prompts.Prompts) != 1 || prompts.Prompts[0].Name != "remote__review" {
		t.Fatalf("agent-2 prompts: %+v", prompts.Prompts)
	}
	for _, uri := range []string{"mcptest://local/readme", "mcptest://local/records/1"} {
		_, err = gw.ReadResource(ctx, &mcp.ReadResourceParams{URI: uri})
		if err == nil || !strings.Contains(err.Error(), "does not let agent \"agent-2\" read resources of upstream \"local\"") {
			t.Fatalf("agent-2 read %s: %v", uri, err)
		}
	}
	if _, err := gw.GetPrompt(ctx, &mcp.GetPromptParams{Name: "local__review", Arguments: map[string]string{"topic": "x"}}); err == nil || !strings.Contains(err.Error(), "does not let agent") {
		t.Fatalf("agent-2 get local__review: %v", err)
	}
	if _, err := gw.ReadResource(ctx, &mcp.ReadResourceParams{URI: "mcptest://mcptest/readme"}); err != nil {
		t.Fatalf("agent-2 read of remote: %v", err)
	}
}

// TestResourcesProhibitedByPattern: a prohibited_tools pattern on the
// pseudo-tool turns every upstream's resources off and leaves the prompts.
func TestResourcesProhibitedByPattern(t *testing.T) {
	e := resourceEnv(t, "*__resources/read")
	gw := e.agent(t, "token-1")
	ctx := testCtx(t)
	list, err := gw.ListResources(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Resources) != 0 {
		t.Fatalf("resources listed though prohibited: %+v", list.Resources)
	}
	if _, err := gw.ReadResource(ctx, &mcp.ReadResourceParams{URI: "mcptest://mcptest/readme"}); err == nil || !strings.Contains(err.Error(), "does not let agent") {
		t.Fatalf("read though prohibited: %v", err)
	}
	if e.remote.Calls("resources/read") != 0 {
		t.Fatal("a prohibited read reached the upstream")
	}
	prompts, err := gw.ListPrompts(ctx, nil)
	if err != nil || len(prompts.Prompts) != 2 {
		t.Fatalf("prompts: %v %+v", err, prompts)
	}
}

// TestResourcesAndPromptsMetrics: acgs_gateway_proxied_requests_total
// counts every resources and prompts request by upstream, method and
// outcome; an upstream without resources or prompts is not counted for
// lists, and names no upstream serves are "unknown".
func TestResourcesAndPromptsMetrics(t *testing.T) {
	e := resourceEnv(t)
	gw := e.agent(t, "token-1")
	gw2 := e.agent(t, "token-2") // may not use "local"
	ctx := testCtx(t)
	const name = "acgs_gateway_proxied_requests_total"
	check := func(when, upstream, method, outcome string, want float64) {
		t.Helper()
		if got := e.metric(t, name, map[string]string{"upstream": upstream, "method": method, "outcome": outcome}); got != want {
			t.Errorf("%s: %s{upstream=%q, method=%q, outcome=%q} = %v, want %v", when, name, upstream, method, outcome, got, want)
		}
	}

	if _, err := gw.ListResources(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := gw.ListResourceTemplates(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := gw.ListPrompts(ctx, nil); err != nil {
		t.Fatal(err)
	}
	for _, up := range []string{"local", "remote"} {
		check("agent-1 lists", up, "resources/list", "ok", 1)
		check("agent-1 lists", up, "resources/templates/list", "ok", 1)
		check("agent-1 lists", up, "prompts/list", "ok", 1)
	}
	if got := e.metric(t, name, map[string]string{"upstream": "plain"}); got != 0 {
		t.Errorf("plain (no resources, no prompts) counted %v times", got)
	}

	if _, err := gw.ReadResource(ctx, &mcp.ReadResourceParams{URI: "mcptest://mcptest/records/7"}); err != nil {
		t.Fatal(err)
	}
	if _, err := gw.GetPrompt(ctx, &mcp.GetPromptParams{Name: "local__review", Arguments: map[string]string{"topic": "x"}}); err != nil {
		t.Fatal(err)
	}
	check("read", "remote", "resources/read", "ok", 1)
	check("get", "local", "prompts/get", "ok", 1)

	// The upstream's own error, and names nobody serves.
	if _, err := gw.GetPrompt(ctx, &mcp.GetPromptParams{Name: "remote__nosuch"}); err == nil {
		t.Fatal("prompts/get remote__nosuch: no error")
	}
	check("get of a prompt the upstream does not have", "remote", "prompts/get", "error", 1)
	if _, err := gw.ReadResource(ctx, &mcp.ReadResourceParams{URI: "mcptest://nobody/readme"}); err == nil {
		t.Fatal("read of an unknown URI: no error")
	}
	if _, err := gw.GetPrompt(ctx, &mcp.GetPromptParams{Name: "nobody__review"}); err == nil {
		t.Fatal("prompts/get nobody__review: no error")
	}
	check("unknown URI", "unknown", "resources/read", "not_found", 1)
	check("unknown upstream", "unknown", "prompts/get", "not_found", 1)

	// What the constitution hides from agent-2 is counted as hidden and
	// not forwarded.
	reads := e.remote.Calls("resources/read")
	if _, err := gw2.ListResources(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := gw2.ListPrompts(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := gw2.ReadResource(ctx, &mcp.ReadResourceParams{URI: "mcptest://local/readme"}); err == nil {
		t.Fatal("agent-2 read a resource of local")
	}
	if _, err := gw2.GetPrompt(ctx, &mcp.GetPromptParams{Name: "local__review", Arguments: map[string]string{"topic": "x"}}); err == nil {
		t.Fatal("agent-2 got a prompt of local")
	}
	check("agent-2 lists", "local", "resources/list", "hidden", 1)
	check("agent-2 lists", "local", "prompts/list", "hidden", 1)
	check("agent-2 lists", "remote", "resources/list", "ok", 2)
	check("agent-2 lists", "remote", "prompts/list", "ok", 2)
	check("agent-2 read", "local", "resources/read", "hidden", 1)
	check("agent-2 get", "local", "prompts/get", "hidden", 1)
	check("agent-2 read", "local", "resources/read", "ok", 0)
	if e.remote.Calls("resources/read") != reads {
		t.Error("agent-2's requests reached remote")
	}

	// An upstream that went away: no answer.
	e.stopRem()
	// The SDK reports the refused connection as its own JSON-RPC error
	// ("rejected by transport"): not the upstream's answer.
	_, err := gw.ReadResource(ctx, &mcp.ReadResourceParams{URI: "mcptest://mcptest/readme"})
	var je *jsonrpc.Error
	if !errors.As(err, &je) || je.Code != jsonrpc.CodeInternalError || !strings.Contains(je.Message, `upstream "remote"`) {
		t.Fatalf("read from a stopped upstream: %v, want an internal error naming the upstream", err)
	}
	check("read from a stopped upstream", "remote", "resources/read", "error", 0)
	check("read from a stopped upstream", "remote", "resources/read", "failed", 1)
	if _, err := gw.ListResources(ctx, nil); err != nil {
		t.Fatal(err)
	}
	check("list with a stopped upstream", "remote", "resources/list", "failed", 1)
	check("list with a stopped upstream", "local", "resources/list", "ok", 2)
}

// TestUnknownURIsDoNotListEveryUpstreamEachTime: a read of a URI that is
// in no upstream's last list lists the upstreams again (the resource may
// be new). Each such read listed every upstream: a client repeating reads
// of URIs nobody serves made the gateway list all its upstreams per
// request. Reads at once share their lists now (one beginning at most
// every relistEvery), and a resource that appeared since the last list is
// still found.
func TestUnknownURIsDoNotListEveryUpstreamEachTime(t *testing.T) {
	var lists atomic.Int32
	s := mcp.NewServer(&mcp.Implementation{Name: "res", Version: "1"}, nil)
	s.AddReceivingMiddleware(func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
			if method == "resources/list" {
				lists.Add(1)
			}
			return next(ctx, method, req)
		}
	})
	read := func(uri string) mcp.ResourceHandler {
		return func(context.Context, *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
			return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: uri, Text: uri}}}, nil
		}
	}
	s.AddResource(&mcp.Resource{URI: "res://a", Name: "a"}, read("res://a"))
	e := startEnv(t, envOptions{upstreams: "  - name: res\n    url: " + serveServer(t, s) + "\n"})
	agent := e.agent(t, "token-1")
	ctx := testCtx(t)
	if _, err := agent.ReadResource(ctx, &mcp.ReadResourceParams{URI: "res://a"}); err != nil {
		t.Fatal(err)
	}
	before := lists.Load()
	const reads = 20
	var wg sync.WaitGroup
	for i := range reads {
		wg.Go(func() {
			_, err := agent.ReadResource(ctx, &mcp.ReadResourceParams{URI: fmt.Sprintf("res://nobody/%d", i)})
			var je *jsonrpc.Error
			if !errors.As(err, &je) || je.Message != "Resource not found" {
				t.Errorf("read of an unknown URI: %v, want resource not found", err)
			}
		})
	}
	wg.Wait()
	if n := lists.Load() - before; n > 3 {
		t.Errorf("%d reads of unknown URIs at once listed the upstream's resources %d times", reads, n)
	}
	// a resource that appeared since the last list
	s.AddResource(&mcp.Resource{URI: "res://b", Name: "b"}, read("res://b"))
	res, err := agent.ReadResource(ctx, &mcp.ReadResourceParams{URI: "res://b"})
	if err != nil {
		t.Fatalf("read of a resource new since the last list: %v", err)
	}
	if len(res.Contents) != 1 || res.Contents[0].Text != "res://b" {
		t.Errorf("read res://b = %+v", res.Contents)
	}
}

// TestRelistsDoNotQueueUpBehindASlowList: reads of unknown URIs while a
// list of the upstreams hangs share one list waiting to begin: at most one
// runs and one waits. A list was taken as begun at its scheduled start
// though it still waited behind the hanging one, so reads queued one list
// a second without bound, each run after the readers had gone (review of
// 768e4ba: 7 lists over 22 s after the last reader left).
func TestRelistsDoNotQueueUpBehindASlowList(t *testing.T) {
	var lists atomic.Int32
	var holding atomic.Bool
	release := make(chan struct{})
	s := mcp.NewServer(&mcp.Implementation{Name: "res", Version: "1"}, nil)
	s.AddReceivingMiddleware(func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
			if method == "resources/list" {
				lists.Add(1)
				if holding.Load() {
					select {
					case <-release:
					case <-ctx.Done():
					}
				}
			}
			return next(ctx, method, req)
		}
	})
	s.AddResource(&mcp.Resource{URI: "res://a", Name: "a"}, func(context.Context, *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
		return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: "res://a", Text: "a"}}}, nil
	})
	e := startEnv(t, envOptions{upstreams: "  - name: res\n    url: " + serveServer(t, s) + "\n"})
	agent := e.agent(t, "token-1")
	if _, err := agent.ReadResource(testCtx(t), &mcp.ReadResourceParams{URI: "res://a"}); err != nil {
		t.Fatal(err)
	}
	holding.Store(true)
	before := lists.Load()
	// Reads that give up after 200 ms, for 2.6 s (past two relistEvery)
	// while the first list hangs (well within listTimeout, 5 s, which
	// would end it and let a third begin).
	for i, end := 0, time.Now().Add(2600*time.Millisecond); time.Now().Before(end); i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		_, _ = agent.ReadResource(ctx, &mcp.ReadResourceParams{URI: fmt.Sprintf("res://nobody/%d", i)})
		cancel()
		time.Sleep(100 * time.Millisecond)
	}
	// A read the gateway takes up late (its client gone) joins the list
	// waiting to begin while the first still hangs: one second for such
	// stragglers before the release (review).
	time.Sleep(time.Second)
	holding.Store(false)
	close(release)
	// The hanging list and the one that waited: then nothing more, as no
	// reader is left. (The window can only show more lists, never fewer.)
	waitFor(t, 30*time.Second, "the waiting list", func() bool { return lists.Load()-before >= 2 })
	time.Sleep(2500 * time.Millisecond)
	if n := lists.Load() - before; n != 2 {
		t.Errorf("reads of unknown URIs during a hanging list made %d lists, want 2 (the hanging one and one shared by every read after it began)", n)
	}
}

// TestResourcesAndPromptsShedForOverloadAreAnErrorNotHidden: a resources
// or prompts request whose check of the upstream's pseudo-tool
// (data.acgs.tool_call.hidden for remote__resources/read,
// remote__prompts/get) the engine sheds for overload is refused with the
// gateway's overload error, as a tools/list is, counted as a shed
// decision; a list is not answered without the upstream's resources or
// prompts, nor a read or get refused as not allowed by the constitution:
// answers made by capacity, not by the policy. Once the slot is free each
// is answered. Before, the shed check hid the upstream: the lists left
// remote's entries out and the read and get were refused as not allowed.
func TestResourcesAndPromptsShedForOverloadAreAnErrorNotHidden(t *testing.T) {
	e, hold := overloadEnv(t, time.Nanosecond)
	gw := e.agent(t, "token-1")
	ctx := testCtx(t)
	release := hold()

	// Nothing asked before: no check is answered by the cache. Only
	// remote's are checked ("shadowed" is in shadow mode).
	// want is in the answer once the slot is free.
	requests := []struct {
		method, what, want string
		do                 func() (any, error)
	}{
		{"resources/list", "list the resources", `"remote__readme"`, func() (any, error) { return gw.ListResources(ctx, nil) }},
		{"resources/templates/list", "list the resource templates", `"remote__record"`, func() (any, error) { return gw.ListResourceTemplates(ctx, nil) }},
		{"resources/read", "read the resource", `"readme of mcptest"`, func() (any, error) {
			return gw.ReadResource(ctx, &mcp.ReadResourceParams{URI: "mcptest://mcptest/readme"})
		}},
		{"prompts/list", "list the prompts", `"remote__review"`, func() (any, error) { return gw.ListPrompts(ctx, nil) }},
		{"prompts/get", "get the prompt", `"review from mcptest"`, func() (any, error) {
			return gw.GetPrompt(ctx, &mcp.GetPromptParams{Name: "remote__review", Arguments: map[string]string{"topic": "x"}})
		}},
	}
	for _, r := range requests {
		res, err := r.do()
		wantOverloadError(t, r.method, r.what, res, err)
	}
	n := float64(len(requests))
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"acgs_decisions_shed_total", map[string]string{"reason": "queue_timeout"}, n},
		{"acgs_decisions_total", map[string]string{"path": "acgs/tool_call/hidden", "outcome": "overloaded"}, n},
		{"acgs_decisions_total", map[string]string{"path": "acgs/tool_call/hidden"}, n},
		{"acgs_gateway_proxied_requests_total", map[string]string{"outcome": "hidden"}, 0},
	} {
		if got := e.metric(t, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}

	release()
	for _, r := range requests {
		res, err := r.do()
		if b, _ := json.Marshal(res); err != nil || !strings.Contains(string(b), r.want) {
			t.Errorf("%s once the slot is free: %v, %s; want %s in it", r.method, err, b, r.want)
		}
	}
}

// TestResourceReadCancelledWhileItsCheckWaitsIsNotRefused: an agent that
// gives up a resources/read while its check waits for the only slot was
// refused nothing: the read is not counted as hidden and the check is
// counted as cancelled, not shed, as a cancelled tools/list is. Before,
// the check not made hid the upstream's resources: the read was counted
// (and answered) as refused by the constitution.
func TestResourceReadCancelledWhileItsCheckWaitsIsNotRefused(t *testing.T) {
	read := &mcp.ReadResourceParams{URI: "mcptest://mcptest/readme"}
	gw, release := cancelWhileChecking(t, "resources/read", func(ctx context.Context, gw *mcp.ClientSession) error {
		_, err := gw.ReadResource(ctx, read)
		return err
	}, series{"acgs_gateway_proxied_requests_total", map[string]string{"method": "resources/read"}, 0})
	release()
	if _, err := gw.ReadResource(testCtx(t), read); err != nil {
		t.Errorf("resources/read once the slot is free: %v", err)
	}
}
