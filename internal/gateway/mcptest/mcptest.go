// Package mcptest is a small, real MCP server for the gateway's tests and
// benchmarks, built on the official Go SDK: tools that answer at once
// (echo, add, noop), tools whose arguments the constitution judges
// (read_file, fetch, exec, delete_record), tools that misbehave (slow,
// crash), and unless told otherwise a resource, a resource template and a
// prompt. It runs in process over streamable HTTP, or as a child process
// over stdio: a test binary whose TestMain calls MainIfRequested becomes the
// server when started with ACGS_MCPTEST_SERVER=stdio. It holds no gateway
// logic and must not be used outside tests.
package mcptest

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// EnvServer makes MainIfRequested run the server: "stdio".
const EnvServer = "ACGS_MCPTEST_SERVER"

// Server is the test server and what it was asked.
type Server struct {
	MCP *mcp.Server

	mu    sync.Mutex
	calls map[string]int
	conns atomic.Int64 // TCP connections accepted over streamable HTTP
}

type textIn struct {
	Text string `json:"text" jsonschema:"text to echo"`
}

type echoOut struct {
	Echo   string `json:"echo"`
	Length int    `json:"length"`
}

type addIn struct {
	A float64 `json:"a"`
	B float64 `json:"b"`
}

type addOut struct {
	Sum float64 `json:"sum"`
}

type pathIn struct {
	Path string `json:"path"`
}

type urlIn struct {
	URL string `json:"url"`
}

type commandIn struct {
	Command string `json:"command"`
}

type recordIn struct {
	ID string `json:"id"`
}

type slowIn struct {
	MS int `json:"ms"`
	// IgnoreCancel sleeps on when the call is cancelled, as a tool that
	// never looks at its context does: its session's close waits for it.
	IgnoreCancel bool `json:"ignore_cancel,omitempty"`
}

type none struct{}

// EnvName names the stdio server (Options.Name).
const EnvName = "ACGS_MCPTEST_NAME"

// Options change what the server offers.
type Options struct {
	// Name goes into its resource URIs, mcptest://<name>/..., and texts
	// (default "mcptest"), so that tests can tell servers apart.
	Name string
	// ToolsOnly leaves out the resources and prompts (and so their
	// capabilities).
	ToolsOnly bool
}

// New builds the server with its tools, a resource
// (mcptest://<name>/readme), a resource template
// (mcptest://<name>/records/{id}) and a prompt (review).
func New() *Server { return NewWith(Options{}) }

// NewWith builds the server as o says.
func NewWith(o Options) *Server {
	if o.Name == "" {
		o.Name = "mcptest"
	}
	s := &Server{calls: map[string]int{}}
	s.MCP = mcp.NewServer(&mcp.Implementation{Name: "acgs-mcptest", Version: "1.0.0"}, nil)
	if !o.ToolsOnly {
		s.addResourcesAndPrompts(o.Name)
	}
	count := func(name string) {
		s.mu.Lock()
		s.calls[name]++
		s.mu.Unlock()
	}
	mcp.AddTool(s.MCP, &mcp.Tool{Name: "echo", Description: "Echo the text back"}, func(_ context.Context, _ *mcp.CallToolRequest, in textIn) (*mcp.CallToolResult, echoOut, error) {
		count("echo")
		return nil, echoOut{Echo: in.Text, Length: len(in.Text)}, nil
	})
	mcp.AddTool(s.MCP, &mcp.Tool{Name: "noop", Description: "Answer at once (the benchmark's trivial tool)"}, func(context.Context, *mcp.CallToolRequest, none) (*mcp.CallToolResult, any, error) {
		count("noop")
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "ok"}}}, nil, nil
	})
	mcp.AddTool(s.MCP, &mcp.Tool{Name: "add", Description: "Add two numbers"}, func(_ context.Context, _ *mcp.CallToolRequest, in addIn) (*mcp.CallToolResult, addOut, error) {
		count("add")
		return nil, addOut{Sum: in.A + in.B}, nil
	})
	mcp.AddTool(s.MCP, &mcp.Tool{Name: "read_file", Description: "Pretend to read a file"}, func(_ context.Context, _ *mcp.CallToolRequest, in pathIn) (*mcp.CallToolResult, any, error) {
		count("read_file")
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "contents of " + in.Path}}}, nil, nil
	})
	mcp.AddTool(s.MCP, &mcp.Tool{Name: "fetch", Description: "Pretend to fetch a URL"}, func(_ context.Context, _ *mcp.CallToolRequest, in urlIn) (*mcp.CallToolResult, any, error) {
		count("fetch")
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "fetched " + in.URL}}}, nil, nil
	})
	mcp.AddTool(s.MCP, &mcp.Tool{Name: "exec", Description: "Pretend to run a command (prohibited by the constitution)"}, func(_ context.Context, _ *mcp.CallToolRequest, in commandIn) (*mcp.CallToolResult, any, error) {
		count("exec")
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "ran " + in.Command}}}, nil, nil
	})
	mcp.AddTool(s.MCP, &mcp.Tool{Name: "delete_record", Description: "Pretend to delete a record (needs approval)"}, func(_ context.Context, _ *mcp.CallToolRequest, in recordIn) (*mcp.CallToolResult, any, error) {
		count("delete_record")
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "deleted " + in.ID}}}, nil, nil
	})
	mcp.AddTool(s.MCP, &mcp.Tool{Name: "fail", Description: "Answer a tool error"}, func(context.Context, *mcp.CallToolRequest, none) (*mcp.CallToolResult, any, error) {
		count("fail")
		return &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: "the tool failed on purpose"}}}, nil, nil
	})
	mcp.AddTool(s.MCP, &mcp.Tool{Name: "slow", Description: "Answer after ms milliseconds"}, func(ctx context.Context, _ *mcp.CallToolRequest, in slowIn) (*mcp.CallToolResult, any, error) {
		count("slow")
		if in.IgnoreCancel {
			ctx = context.Background()
		}
		select {
		case <-time.After(time.Duration(in.MS) * time.Millisecond):
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "slept"}}}, nil, nil
	})
	mcp.AddTool(s.MCP, &mcp.Tool{Name: "crash", Description: "Exit the process (stdio) without answering"}, func(context.Context, *mcp.CallToolRequest, none) (*mcp.CallToolResult, any, error) {
		count("crash")
		if os.Getenv(EnvServer) != "" {
			os.Exit(3)
		}
		select {} // in process: never answer
	})
	mcp.AddTool(s.MCP, &mcp.Tool{Name: "stats", Description: "How many times each tool was called"}, func(context.Context, *mcp.CallToolRequest, none) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: s.Stats()}}}, nil, nil
	})
	return s
}

func (s *Server) addResourcesAndPrompts(name string) {
	count := func(what string) {
		s.mu.Lock()
		s.calls[what]++
		s.mu.Unlock()
	}
	readme := "mcptest://" + name + "/readme"
	s.MCP.AddResource(&mcp.Resource{URI: readme, Name: "readme", Title: "Read me", MIMEType: "text/plain", Description: "A short text"},
		func(_ context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
			count("resources/read")
			return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: req.Params.URI, MIMEType: "text/plain", Text: "readme of " + name}}}, nil
		})
	records := "mcptest://" + name + "/records/"
	s.MCP.AddResourceTemplate(&mcp.ResourceTemplate{URITemplate: records + "{id}", Name: "record", MIMEType: "application/json", Description: "One record by id"},
		func(_ context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
			count("resources/read")
			id := strings.TrimPrefix(req.Params.URI, records)
			return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: req.Params.URI, MIMEType: "application/json", Text: fmt.Sprintf(`{"id":%q,"server":%q}`, id, name)}}}, nil
		})
	s.MCP.AddPrompt(&mcp.Prompt{Name: "review", Description: "Ask for a review of a topic", Arguments: []*mcp.PromptArgument{{Name: "topic", Required: true}}},
		func(_ context.Context, req *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
			count("prompts/get")
			return &mcp.GetPromptResult{
				Description: "review from " + name,
				Messages:    []*mcp.PromptMessage{{Role: "user", Content: &mcp.TextContent{Text: "Please review " + req.Params.Arguments["topic"] + " (" + name + ")"}}},
			}, nil
		})
}

// Calls is how many times tool was called (resources/read and prompts/get
// count the reads of any resource and gets of any prompt).
func (s *Server) Calls(tool string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[tool]
}

// Stats is "tool=n" for every tool called, sorted, comma-separated.
func (s *Server) Stats() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var parts []string
	for k, v := range s.calls {
		parts = append(parts, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

// ServeHTTP starts the server over streamable HTTP on a free loopback port
// and returns its endpoint and a function that stops it (closing every
// connection, as a crashed server would).
func (s *Server) ServeHTTP() (endpoint string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s.MCP }, nil)
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second,
		ConnState: func(_ net.Conn, st http.ConnState) {
			if st == http.StateNew {
				s.conns.Add(1)
			}
		}}
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String() + "/mcp", func() { _ = srv.Close() }, nil
}

// Conns is the number of TCP connections ServeHTTP has accepted.
func (s *Server) Conns() int64 { return s.conns.Load() }

// MainIfRequested runs the server over stdio and exits when EnvServer is
// "stdio"; otherwise it returns at once. Call it first in TestMain.
func MainIfRequested() {
	if os.Getenv(EnvServer) != "stdio" {
		return
	}
	if err := NewWith(Options{Name: os.Getenv(EnvName)}).MCP.Run(context.Background(), &mcp.StdioTransport{}); err != nil {
		fmt.Fprintln(os.Stderr, "mcptest:", err)
		os.Exit(1)
	}
	os.Exit(0)
}
