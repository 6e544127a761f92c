package gateway

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/acgs-lite/acgs/internal/apierror"
)

// Admin API paths.
const (
	ApprovalsPath = "/v1/gateway/approvals"
	HealthPath    = "/health"
	MetricsPath   = "/metrics"
)

// ApprovalList is the body of GET /v1/gateway/approvals.
type ApprovalList struct {
	Approvals []Approval `json:"approvals"`
}

// ApprovalRequest is the optional body of POST .../approve and .../deny.
type ApprovalRequest struct {
	By   string `json:"by,omitempty"`   // who decided, as the approver says, recorded in the decision log beside the admin token used
	Note string `json:"note,omitempty"` // why; sent to the agent with a refusal
}

// tokenRef names the admin token a verdict came with, for the decision
// log, without the token: its position in the admin token list (from 1,
// as in the comma-separated ADMIN_TOKEN) and the first 16 hex digits of
// its SHA-256 (printf %s "$TOKEN" | sha256sum | cut -c1-16). The "by" of
// a verdict is what the approver claims; the token is what the gateway
// checked. Unset (position 0) for the gateway's own verdicts.
type tokenRef struct {
	position int
	sha256   string
}

func (t tokenRef) logValue() map[string]any {
	return map[string]any{"position": t.position, "sha256": t.sha256}
}

// adminTokenKey is the request context's key of the tokenRef of the admin
// token that authorised it.
type adminTokenKey struct{}

func newTokenRef(i int, token string) tokenRef {
	sum := sha256.Sum256([]byte(token))
	return tokenRef{position: i + 1, sha256: hex.EncodeToString(sum[:8])}
}

// ApprovalResult is the answer to POST .../approve and .../deny.
type ApprovalResult struct {
	Verdict  Verdict  `json:"verdict"`
	Approval Approval `json:"approval"`
}

// AdminHandler serves the approvals API and Go's profiles (bearer token),
// the metrics (the given handler) and health.
func (g *Gateway) AdminHandler(metrics http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+ApprovalsPath, g.authorised(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, ApprovalList{Approvals: g.approvals.list()})
	}))
	mux.HandleFunc("POST "+ApprovalsPath+"/{id}/{action}", g.authorised(g.resolveApproval))
	mux.HandleFunc("GET "+HealthPath, func(w http.ResponseWriter, r *http.Request) {
		ups := map[string]string{}
		for _, u := range g.order {
			state := "down"
			if u.Up() {
				state = "up"
			}
			ups[u.cfg.Name] = state
		}
		writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "upstreams": ups, "approvals_pending": len(g.approvals.list())})
	})
	if metrics != nil {
		mux.Handle("GET "+MetricsPath, metrics)
	}
	// Go's profiles, behind the admin token as in acgs serve: where a
	// gateway's CPU goes is the first question about its overhead.
	mux.HandleFunc("GET /debug/pprof/", g.authorised(pprof.Index))
	mux.HandleFunc("GET /debug/pprof/profile", g.authorised(pprof.Profile))
	mux.HandleFunc("GET /debug/pprof/trace", g.authorised(pprof.Trace))
	mux.HandleFunc("GET /debug/pprof/symbol", g.authorised(pprof.Symbol))
	return mux
}

func (g *Gateway) resolveApproval(w http.ResponseWriter, r *http.Request) {
	var v Verdict
	switch r.PathValue("action") {
	case "approve":
		v = Approved
	case "deny":
		v = Refused
	default:
		writeError(w, apierror.New(apierror.ResourceNotFound, "unknown action %q: approve or deny", r.PathValue("action")))
		return
	}
	var body ApprovalRequest
	b, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err != nil {
		writeError(w, apierror.New(apierror.InvalidParameter, "reading the body: %v", err))
		return
	}
	if len(strings.TrimSpace(string(b))) > 0 {
		if err := json.Unmarshal(b, &body); err != nil {
			writeError(w, apierror.New(apierror.InvalidParameter, "body: %v (want {\"by\": ..., \"note\": ...})", err))
			return
		}
	}
	tok, _ := r.Context().Value(adminTokenKey{}).(tokenRef)
	a, err := g.approvals.resolve(r.PathValue("id"), resolution{verdict: v, by: body.By, note: body.Note, token: tok})
	if err != nil {
		writeError(w, apierror.New(apierror.ResourceNotFound, "%s: %v", r.PathValue("id"), err))
		return
	}
	g.log.Info("gateway: approval decided", "approval_id", a.ID, "decision_id", a.DecisionID, "verdict", v, "by", body.By,
		"admin_token_position", tok.position, "admin_token_sha256", tok.sha256)
	writeJSON(w, http.StatusOK, ApprovalResult{Verdict: v, Approval: a})
}

// authorised wraps an admin handler: 404 with no token configured (as
// `acgs serve` does), 401 without a valid bearer token. The request's
// context carries which token it was (adminTokenKey).
func (g *Gateway) authorised(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if len(g.d.AdminTokens) == 0 {
			writeError(w, apierror.New(apierror.ResourceNotFound, "admin endpoints are disabled: no admin token is configured"))
			return
		}
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		i := -1
		if ok {
			i = indexEqual(tok, g.d.AdminTokens)
		}
		if i < 0 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="acgs-gateway"`)
			writeError(w, apierror.New(apierror.Unauthorized, "a valid admin bearer token is required"))
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), adminTokenKey{}, newTokenRef(i, tok))))
	}
}

// indexEqual is the position of tok in tokens (the first, compared in
// constant time with each of them), or -1.
func indexEqual(tok string, tokens []string) int {
	found := -1
	for i, t := range tokens {
		if subtle.ConstantTimeCompare([]byte(tok), []byte(t)) == 1 && found < 0 && tok != "" {
			found = i
		}
	}
	return found
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, err error) {
	e := apierror.As(err)
	writeJSON(w, e.Code.Status(), e)
}

// HTTPHandler serves agents over streamable HTTP at Config.Path. A bearer
// token names the agent (Config.Agents); without one the agent is
// Config.AnonymousAgent, or the request is refused (401).
//
// A POST is answered with one application/json body rather than an SSE
// stream (both are the protocol's; clients accept either): one write
// instead of an event stream and its flushes raised its calls/s by about a
// fifth (docs/performance.md). Only a call with progress to send before
// its answer has its POST turned into an event stream (postStream).
func (g *Gateway) HTTPHandler() http.Handler {
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return g.server }, &mcp.StreamableHTTPOptions{
		Logger:         g.log,
		SessionTimeout: g.idleTimeout,
		JSONResponse:   true,
	})
	verify := func(_ context.Context, token string, _ *http.Request) (*auth.TokenInfo, error) {
		var agent string
		for t, a := range g.tokens {
			if subtle.ConstantTimeCompare([]byte(token), []byte(t)) == 1 {
				agent = a
			}
		}
		if agent == "" {
			return nil, errors.Join(auth.ErrInvalidToken, errors.New("unknown agent token"))
		}
		return &auth.TokenInfo{UserID: agent}, nil
	}
	limited := g.limitSessions(h)
	authed := auth.RequireBearerToken(verify, &auth.RequireBearerTokenOptions{AllowMissingExpiration: true})(limited)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != g.cfg.Path {
			http.NotFound(w, r)
			return
		}
		w = g.boundWrites(w)
		if dw, ok := w.(*deadlineWriter); ok {
			defer dw.deadline() // for what net/http writes once the handler returns
		}
		if r.Method != http.MethodGet {
			// Run's shutdown waits for these to be answered before it
			// closes the sessions (which drops the answers not yet sent);
			// an event stream (GET) ends only then.
			g.answering.Add(1)
			defer g.answering.Add(-1)
		}
		if r.Header.Get("Authorization") == "" && g.cfg.AnonymousAgent != "" {
			limited.ServeHTTP(w, r)
			return
		}
		authed.ServeHTTP(w, r)
	})
}

// agentWriteTimeout bounds each write to an HTTP agent: an agent that
// reads nothing of an answer or of its event stream (the GET) for this
// long has its connection closed. Without it a goroutine writing to an
// agent that stopped reading (the progress sender of its session, a
// POST's handler) waited as long as the connection lasted, with what it
// was writing, and the SDK's lock of the stream. It is no bound on how
// long an answer takes (a call held for approval): only a write that has
// begun is timed, not the wait before it.
const agentWriteTimeout = 30 * time.Second

// agentWriteChunk is the most written to an agent under one deadline: a
// large answer gets agentWriteTimeout for each chunk, so that what is
// timed is the agent not reading, not the answer's size on a slow link.
const agentWriteChunk = 64 << 10

// boundWrites returns w with each write (and flush) given g.writeTimeout
// to reach the connection (agentWriteTimeout); the request's connection is
// left without a deadline until a write begins.
func (g *Gateway) boundWrites(w http.ResponseWriter) http.ResponseWriter {
	rc := http.NewResponseController(w)
	// A deadline left by an earlier request of the connection would fail
	// what net/http writes of this one before a write of ours.
	if rc.SetWriteDeadline(time.Time{}) != nil {
		return w // not a connection with deadlines (a test's recorder)
	}
	return &deadlineWriter{ResponseWriter: w, rc: rc, timeout: g.writeTimeout}
}

// deadlineWriter sets the connection's write deadline before each write
// and flush of the response.
type deadlineWriter struct {
	http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
}

func (w *deadlineWriter) deadline() { _ = w.rc.SetWriteDeadline(time.Now().Add(w.timeout)) }

func (w *deadlineWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		chunk := p[:min(len(p), agentWriteChunk)]
		w.deadline()
		m, err := w.ResponseWriter.Write(chunk)
		n += m
		if err != nil {
			return n, err
		}
		p = p[len(chunk):]
	}
	return n, nil
}

// FlushError is what http.ResponseController's Flush calls (the SDK's
// flush of each event).
func (w *deadlineWriter) FlushError() error {
	w.deadline()
	return w.rc.Flush()
}

func (w *deadlineWriter) Flush() { _ = w.FlushError() }

// Unwrap lets http.ResponseController reach the connection.
func (w *deadlineWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
