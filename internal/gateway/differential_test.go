package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/acgs-lite/acgs/internal/config"
	"github.com/acgs-lite/acgs/internal/jsoneq"
	"github.com/acgs-lite/acgs/internal/service"
	"github.com/acgs-lite/acgs/internal/service/servicetest"
	"github.com/acgs-lite/acgs/internal/testenv"
)

// toolCallGen makes tool_call inputs that reach every rule: tool names that
// are allowed, prohibited or need approval (in other cases, with
// whitespace and zero-width characters, blank), arguments with paths, URLs,
// hosts, shell text and secrets on both sides of each rule (URLs without
// "//", hosts with / # \ in them, percent-encoded and malformed file: URLs,
// shells by full path, secrets as member names and inside hosts), nesting
// (strings in arrays of arrays), wrong types, missing identity, and call
// counts around the rate limit, negative and fractional ones included.
type toolCallGen struct{ r *rand.Rand }

func pick[T any](r *rand.Rand, xs ...T) T { return xs[r.IntN(len(xs))] }

func (g toolCallGen) value(depth int) any {
	r := g.r
	switch r.IntN(15) {
	case 0:
		return pick[any](r, "/workspace/a.txt", "/etc/passwd", "/workspace/../etc", "notes.txt", "/tmp/acgs-workspace/x", "~/.ssh/id_rsa", "/workspace-evil/x", "")
	case 1:
		return pick[any](r, "https://example.com/x", "http://169.254.169.254/", "https://a.example.com@evil.net/", "http://evil.net\\@example.com/", "ftp://evil.net", "file:///etc/shadow", "file:///workspace/ok", "HTTPS://API.GITHUB.COM/")
	case 2:
		return pick[any](r, "example.com:443", "[::1]:80", "evil.net", "::1", "api.github.com")
	case 3:
		return pick[any](r, "ls -la", "a; rm -rf /", "$(id)", "`whoami`", "curl x | sh", "fish && chips")
	case 4:
		return pick[any](r, "AKIAABCDEFGHIJKLMNOP", "ghp_abcdefghijklmnopqrstuvwxyz0123456789", "postgres://u:p@db/x", "-----BEGIN PRIVATE KEY-----", "hunter2", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.abcdefghijkl")
	case 9: // URLs as browsers and other parsers read them
		return pick[any](r, "https:evil.com/x", "http:/evil.com/x", "https:\\\\evil.com\\x", "HTTPS:example.com", " http://evil.com", "ht\ttp://evil.com", "http://example.com\\@evil.net/",
			"evil.com:80/x", "javascript:alert(1)", "//evil.com/x", "HTTP: 200 OK", "https://evil%2ecom%2f.example.com/", "http://", "mailto:a@example.com")
	case 10: // hosts with characters no hostname has, and secrets in them
		return pick[any](r, "evil.com/.example.com", "evil.com#.example.com", "evil.com\\.example.com", "x@evil.com", "a.b.example.com", "evil%2ecom.example.com", "AKIAIOSFODNN7EXAMPLE.evil.com", "example.com.")
	case 11: // file: URLs, encoded and malformed
		return pick[any](r, "file:///workspace/%2e%2e/%2e%2e/etc/passwd", "file:///workspace/x/..%2f..%2fetc/passwd", "file:/etc/passwd", "file:///workspace/%zz",
			"file:///workspace/%ff", "file://evil.com/x", "File: notes", "file:///workspace/a+b", "file:///etc/%41KIAIOSFODNN7EXAMPLE")
	case 12: // shells by path, chained after & or a line break, header credentials
		return pick[any](r, "curl x | /bin/sh", "curl x | ksh", "a; /bin/rm -rf /", "echo hi\nrm -rf /", "ls & rm -rf /", "x | C:\\Windows\\cmd.exe", "Bearer abc", "chips & fish")
	case 13: // strings in arrays of arrays keep their key
		inner := pick[any](r, "/etc/passwd", "evil.com", "https:evil.com", "hunter2")
		if depth < 3 {
			inner = g.value(depth + 1)
		}
		return []any{[]any{inner}, pick[any](r, "/etc/passwd", "evil.com", "rm -rf /")}
	case 5:
		return pick[any](r, json.Number("1"), json.Number("-2.5"), true, false, nil)
	case 6, 7:
		if depth < 3 {
			return g.args(depth + 1)
		}
		return "leaf"
	case 8:
		if depth < 3 {
			return []any{g.value(depth + 1), g.value(depth + 1)}
		}
		return []any{}
	}
	return pick[any](r, "hello", "the secret of soup", "report", "")
}

func (g toolCallGen) args(depth int) map[string]any {
	m := map[string]any{}
	for range g.r.IntN(4) {
		k := pick(g.r, "path", "paths", "File", "destination", "url", "endpoint", "host", "command", "cmd", "text", "token", "password", "note", "opts", "a/b", "c~d",
			"URL", "Host", "webhook", "file-path", "Authorization", "x-api-key", "AKIAIOSFODNN7EXAMPLE", "http://evil.com/k", "a; rm -rf /", "postgres://u:pw@db")
		m[k] = g.value(depth)
	}
	return m
}

func (g toolCallGen) input() any {
	r := g.r
	up := pick[any](r, "files", "web", "db", "ops", "", 7)
	tool := pick(r, "echo", "read_file", "exec", "bash", "delete_record", "send_email", "fetch", "deploy_prod", "execute_command", "noop")
	name := any(fmt.Sprint(up) + "__" + tool)
	switch r.IntN(20) {
	case 0:
		name = pick[any](r, nil, 42, "", "exec", " ", "\t")
	case 1:
		name = pick[any](r, "shell__Exec", "shell__exec ", "db__Delete_record", "notes__\u200becho", " notes__echo", "SHELL__BASH", "sk-abcdefghijklmnopqrstuvwxyz__exec")
	}
	tc := map[string]any{"name": name, "tool": tool, "upstream": up}
	if r.IntN(10) > 0 {
		tc["arguments"] = g.args(0)
	} else if r.IntN(2) == 0 {
		tc["arguments"] = pick[any](r, "x", []any{"/etc/passwd"}, nil, json.Number("3"))
	}
	agent := map[string]any{}
	if r.IntN(10) > 0 {
		agent["id"] = pick[any](r, "agent-1", "agent-2", "", 7)
	}
	if r.IntN(10) > 0 {
		agent["session"] = pick[any](r, "s-1", "s-2", "", false)
	}
	if r.IntN(15) > 0 {
		tc["agent"] = agent
	}
	if r.IntN(10) > 0 {
		tc["context"] = map[string]any{"calls_last_minute": pick[any](r, json.Number("0"), json.Number("5"), json.Number("119"), json.Number("120"), json.Number("121"), json.Number("5000"), "120", json.Number("-1"), json.Number("119.5"), json.Number("-1e9"), json.Number("1.0"))}
	}
	in := map[string]any{"type": "tool_call", "constitutional_hash": hash, "tool_call": tc}
	if r.IntN(40) == 0 {
		in["constitutional_hash"] = "0000000000000000"
	}
	if r.IntN(60) == 0 {
		in["type"] = "Tool_Call"
	}
	return in
}

// TestToolCallDifferentialAgainstStockOPA asks the engine as the gateway
// does (cache, read-set keys, partial-evaluation plans) and stock `opa run
// --server` on the same bundle for generated tool_call inputs, each twice
// (the second answer comes from the cache): every decision, the hidden flag
// and the rate thresholds must be identical.
func TestToolCallDifferentialAgainstStockOPA(t *testing.T) {
	n := 3000
	if testing.Short() {
		n = 300
	}
	opaURL := testenv.StartOPA(t, filepath.Join(testenv.ModuleRoot(t), "policies"))
	cfg := config.Default()
	cfg.Log.Level = "error"
	cfg.Policy.EvalTimeout = 10 * time.Second // a loaded machine must not turn a slow evaluation into a (correct) fail-closed error
	svc, err := service.New(context.Background(), cfg, service.Options{LogOutput: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	gen := toolCallGen{r: rand.New(rand.NewPCG(19, 2026))}
	inputs := make([]any, n)
	for i := range inputs {
		inputs[i] = gen.input()
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	var failures servicetest.Failures
	fail := failures.Add
	check := func(path string, in any) {
		code, want, err := servicetest.Post(client, opaURL+"/v1/data/"+path, map[string]any{"input": in})
		if err != nil || code != 200 {
			fail("opa: %d %v", code, err)
			return
		}
		for round := range 2 {
			d, err := svc.Engine.Decide(context.Background(), path, in)
			if err != nil {
				fail("engine %s: %v for %v", path, err, in)
				return
			}
			if diff := jsoneq.Diff(want["result"], d.Result); diff != "" {
				fail("%s (round %d, source %s) differs at %s for input %v", path, round, d.Source, diff, in)
			}
		}
	}
	servicetest.Each(inputs, 4, func(in any) {
		check("acgs/main/decision", in)
		check("acgs/tool_call/hidden", in)
	})
	check("acgs/tool_call/rate_thresholds", nil)
	failures.Report(t)
	// the generator reaches every outcome
	outcomes := map[string]int{}
	for _, in := range inputs {
		d, _ := svc.Engine.Decide(context.Background(), "acgs/main/decision", in)
		if m, ok := d.Result.(map[string]any); ok {
			o, _ := m["outcome"].(string)
			outcomes[o]++
		}
	}
	for _, o := range []string{"allow", "deny", "approval_required", ""} {
		if outcomes[o] == 0 {
			t.Errorf("no generated input has outcome %q: %v", o, outcomes)
		}
	}
	t.Logf("%d inputs, outcomes %v", n, outcomes)
}
