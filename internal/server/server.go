// Package server is the HTTP face of the service: routing, the ACGS-1 Lite
// and OPA dialects, admin endpoints, request limits and the one error writer.
// It decodes and encodes; every decision comes from the engine.
package server

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"path"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/acgs-lite/acgs/internal/admission"
	"github.com/acgs-lite/acgs/internal/apierror"
	"github.com/acgs-lite/acgs/internal/cache"
	"github.com/acgs-lite/acgs/internal/config"
	"github.com/acgs-lite/acgs/internal/engine"
	"github.com/acgs-lite/acgs/internal/telemetry"
)

// CacheAdmin is what the server needs of the decision cache beyond the engine.
type CacheAdmin interface {
	Stats() cache.Stats
	Flush(ctx context.Context) (uint64, error)
}

// Deps are the components a server answers with; Engine is required.
type Deps struct {
	Config      config.Config
	Engine      *engine.Engine
	Cache       CacheAdmin // nil when the cache is off
	Metrics     *telemetry.Metrics
	Window      *telemetry.Window
	DecisionLog *telemetry.DecisionLog // nil when off
	Logger      *slog.Logger
	// Reload reloads the policy from its source (POST /v1/admin/reload).
	Reload func(ctx context.Context) error
}

// Server routes requests to the dialect handlers.
type Server struct {
	d         Deps
	cfg       config.Config
	hash      string
	log       *slog.Logger
	targets   telemetry.Targets
	draining  atomic.Bool
	reqSeq    atomic.Uint64
	ridPrefix string
	warm      []warmRequest
	raw       *rawTier // nil: off
	pprof     http.Handler
	exact     map[string]*route
	prefixed  []prefixRoute
	hashHdr   []string            // X-Constitutional-Hash's value, shared by every response (never mutated)
	adminSums [][sha256.Size]byte // digests of the configured admin tokens
}

// New builds a server from its dependencies.
func New(d Deps) (*Server, error) {
	if d.Engine == nil {
		return nil, errors.New("server: an engine is required")
	}
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	if d.Metrics == nil {
		d.Metrics = telemetry.NewMetrics(telemetry.BuildInfo{})
	}
	if d.Window == nil {
		d.Window = telemetry.NewWindow(d.Config.Perf.WindowSpan)
	}
	s := &Server{
		d:         d,
		cfg:       d.Config,
		hash:      d.Config.Policy.ConstitutionalHash,
		log:       d.Logger,
		ridPrefix: telemetry.NewDecisionID()[:8] + "-",
		targets: telemetry.Targets{
			P50MS: d.Config.Perf.TargetP50MS, P95MS: d.Config.Perf.TargetP95MS,
			P99MS: d.Config.Perf.TargetP99MS, CacheHitRate: d.Config.Perf.CacheHitRateTarget,
		},
	}
	warm, err := loadWarmup(d.Config.Policy.CacheWarmFile)
	if err != nil {
		return nil, err
	}
	s.warm = warm
	s.hashHdr = []string{s.hash}
	if d.Config.Cache.Enabled && d.DecisionLog == nil {
		if s.raw, err = newRawTier(d.Config.Cache.RawSize); err != nil {
			return nil, err
		}
	}
	for _, t := range d.Config.AdminTok {
		s.adminSums = append(s.adminSums, sha256.Sum256([]byte(t)))
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	s.pprof = mux
	s.buildRoutes()
	return s, nil
}

// route is one endpoint: its metric label and its handler per method.
type route struct {
	name    string
	methods map[string]http.HandlerFunc
	// admin marks an admin endpoint: without a configured token it does
	// not exist, whatever the method or spelling (no 405 or redirect
	// telling that it would with one).
	admin bool
	// getActs marks a route whose GET does more than read (a decision is
	// evaluated, counted and logged; the cache warm-up evaluates and caches
	// its set; pprof's profile and trace run for seconds, one at a time):
	// HEAD, which ServeHTTP otherwise answers as GET (as Go's ServeMux
	// routes it), is not allowed there (405), so that a probe or a
	// crawler's HEAD does not act. Stock OPA answers 405 to HEAD on its
	// data routes too.
	getActs bool
	// batch marks a route that answers many decisions in one body: its
	// decisions keep the whole reserve of the decision window, however
	// late its body came, so one whose body came after the window is too
	// late for any but cached ones (decisionContext).
	batch bool
	// ok is the route's HTTP series for 200 (telemetry.HTTPSeries),
	// resolved by its first 200 (okSeries).
	ok atomic.Pointer[telemetry.HTTPSeries]
}

// okSeries returns the HTTP series of rt's 200 answers in m, resolving it
// the first time: most requests are a route's 200s, and each would
// otherwise look its two series up by label.
func (rt *route) okSeries(m *telemetry.Metrics) *telemetry.HTTPSeries {
	if s := rt.ok.Load(); s != nil {
		return s
	}
	s := m.HTTPSeries(rt.name, http.StatusOK)
	rt.ok.Store(&s)
	return &s
}

// slashRedirect reports whether the route's paths with a trailing slash
// are redirected to the path without it: every route's but pprof's, whose
// index is /debug/pprof/ (OPA's server mounts pprof without the redirect
// too).
func (rt *route) slashRedirect() bool { return rt != unknownRoute && rt.name != "pprof" }

// redirect answers with a redirect to the escaped path to, with the
// request's query. Location is written as it is, already escaped: Go's
// ServeMux escapes the escaped path again there (a%2Fb/ to a%252Fb) and
// OPA's trailing-slash redirect writes the unescaped one (a%2Fb/ to a/b),
// either naming another document than the one asked for; and neither
// drops the query, which holds a GET's input (OPA's 301 does).
func redirect(w http.ResponseWriter, to, rawQuery string, code int) {
	if rawQuery != "" {
		to += "?" + rawQuery
	}
	h := w.Header()
	h["Location"] = []string{to}
	h["Content-Type"] = jsonContentType
	w.WriteHeader(code)
}

// isClean reports whether the escaped path p is its own cleanPath (the
// common case, without cleanPath's allocation).
func isClean(p string) bool {
	if p == "" || p[0] != '/' {
		return false
	}
	return !strings.Contains(p, "//") && !strings.Contains(p, "/./") && !strings.Contains(p, "/../") &&
		!strings.HasSuffix(p, "/.") && !strings.HasSuffix(p, "/..")
}

// cleanPath is the canonical form of the escaped path p, as Go's ServeMux
// makes it: . and .. segments resolved, slashes single, a trailing slash
// kept.
func cleanPath(p string) string {
	if p == "" {
		return "/"
	}
	if p[0] != '/' {
		p = "/" + p
	}
	np := path.Clean(p)
	if p[len(p)-1] == '/' && np != "/" {
		np += "/"
	}
	return np
}

// ServeHTTP routes a request. Routing is a switch rather than a pattern mux
// so that unknown paths and wrong methods get OPA's error body, not text.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	// Canonical keys assigned directly: Header().Set would canonicalize
	// and allocate a value slice per header on every request.
	h := w.Header()
	h["X-Constitutional-Hash"] = s.hashHdr
	rid := r.Header.Get("X-Request-Id")
	if rid == "" || len(rid) > 128 {
		rid = s.newRequestID()
	}
	h["X-Request-Id"] = []string{rid}
	sw := statusWriters.Get().(*statusWriter)
	sw.ResponseWriter, sw.start = w, start
	name := "unknown"
	var rt *route // the request's route, once matched
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p) // sw is left to the collector
			}
			s.log.Error("panic while serving a request", "request_id", rid, "path", r.URL.Path, "panic", p)
			if !sw.wrote {
				writeError(sw, apierror.New(apierror.InternalError, "internal error (request %s)", rid))
			}
		}
		// Latency is recorded here, once, from the request's one clock:
		// the rolling window gets the decisions the handler answered.
		end := time.Now()
		lat := end.Sub(start)
		for _, smp := range sw.samples {
			s.d.Window.RecordAt(end, lat, smp)
		}
		if code := httpCode(sw, r); code == http.StatusOK && rt != nil && rt != unknownRoute {
			rt.okSeries(s.d.Metrics).Observe(lat)
		} else {
			s.d.Metrics.ObserveHTTP(name, code, lat)
		}
		*sw = statusWriter{}
		statusWriters.Put(sw)
	}()
	if r.Method != http.MethodConnect {
		// A path that is not clean (a doubled slash, a . or .. segment)
		// is redirected to its clean spelling, as OPA's router (Go's
		// ServeMux) does: 307, which keeps the method and the body, so a
		// client that follows redirects gets the document the clean path
		// names, and no handler ever reads an unclean path.
		if esc := r.URL.EscapedPath(); !isClean(esc) {
			name = "redirect"
			redirect(sw, cleanPath(esc), r.URL.RawQuery, http.StatusTemporaryRedirect)
			return
		}
	}
	rt = s.match(r.URL)
	name = rt.name
	sw.batch = rt.batch
	if rt.admin && len(s.adminSums) == 0 {
		writeError(sw, adminOff(r))
		return
	}
	handler, ok := rt.methods[r.Method]
	if !ok && r.Method == http.MethodHead && !rt.getActs {
		handler, ok = rt.methods[http.MethodGet]
	}
	if !ok {
		if len(rt.methods) == 0 {
			writeError(sw, apierror.New(apierror.ResourceNotFound, "no such endpoint: %s", r.URL.Path))
			return
		}
		allow := make([]string, 0, len(rt.methods)+1)
		for m := range rt.methods {
			allow = append(allow, m)
		}
		if _, get := rt.methods[http.MethodGet]; get && !rt.getActs {
			allow = append(allow, http.MethodHead) // answered as GET, above
		}
		sw.Header().Set("Allow", strings.Join(sortStrings(allow), ", "))
		writeError(sw, apierror.New(apierror.MethodNotAllowed, "method %s is not allowed on %s", r.Method, r.URL.Path))
		return
	}
	if p := r.URL.Path; rt.slashRedirect() && len(p) > 1 && p[len(p)-1] == '/' {
		// OPA's server answers a route's path with a trailing slash by
		// a redirect to the path without it (301, as its handlers'
		// TrailingSlashRedirectHandler), after the method check. The
		// slash must be one as sent: a path ending in an escaped one
		// (a%2F, the key "a/") is a document's, not a spelling to mend.
		if esc := r.URL.EscapedPath(); esc[len(esc)-1] == '/' {
			redirect(sw, esc[:len(esc)-1], r.URL.RawQuery, http.StatusMovedPermanently)
			return
		}
	}
	if err := checkQuery(r.URL.RawQuery); err != nil {
		writeError(sw, err)
		return
	}
	if s.d.DecisionLog != nil {
		// The request id travels to the decision log in the context; a
		// request copy per request is not paid when nothing reads it.
		r = r.WithContext(context.WithValue(r.Context(), requestIDKey{}, &requestLog{id: rid}))
	}
	handler(sw, r)
}

type requestIDKey struct{}

// requestLog is what a request's context carries for the decision log:
// its id, and the size of the one input a single-decision handler decodes
// (telemetry.DecisionEvent.InputSize: at least telemetry.ValueSize of the
// input; 0 when unknown).
type requestLog struct {
	id        string
	inputSize int64
}

func requestLogOf(ctx context.Context) *requestLog {
	l, _ := ctx.Value(requestIDKey{}).(*requestLog)
	return l
}

// setInputSize notes, for the decision log, that the one decision r asks
// for has an input of at most size (telemetry.ValueSize): the body's
// decoded value's, or a value within it. Only for a handler that decides
// one input: every decision of the request is logged with it.
func setInputSize(r *http.Request, size int64) {
	if l := requestLogOf(r.Context()); l != nil {
		l.inputSize = size
	}
}

// newRequestID returns a process-unique id: a random per-process prefix and
// a sequence number, far cheaper than a UUID on every request.
func (s *Server) newRequestID() string {
	var b [32]byte // the prefix's 9 bytes and at most 13 digits: one allocation, the string's
	return string(strconv.AppendUint(append(b[:0], s.ridPrefix...), s.reqSeq.Add(1), 36))
}

// buildRoutes makes the routing table once: exact paths, then the prefixed
// families, each with its metric label and its handler per method.
func (s *Server) buildRoutes() {
	s.exact = map[string]*route{
		"/v1/data/acgs/main/decision": {name: "acgs_decision", methods: map[string]http.HandlerFunc{http.MethodPost: s.handleDecision, http.MethodGet: s.handleOPAData}, getActs: true},
		"/v1/data/acgs/main/allow":    {name: "acgs_allow", methods: map[string]http.HandlerFunc{http.MethodGet: s.handleACGSAllow, http.MethodPost: s.handleOPAData}, getActs: true},
		"/v1/data/acgs/main/health":   {name: "acgs_health", methods: map[string]http.HandlerFunc{http.MethodGet: s.handleACGSHealth, http.MethodPost: s.handleOPAData}},
		"/v1/acgs/batch":              {name: "acgs_batch", methods: map[string]http.HandlerFunc{http.MethodPost: s.handleACGSBatch}, batch: true},
		"/v1/metrics":                 {name: "metrics_json", methods: map[string]http.HandlerFunc{http.MethodGet: s.handleMetricsJSON}},
		"/v1/cache/warm":              {name: "cache_warm", methods: map[string]http.HandlerFunc{http.MethodGet: s.handleWarm, http.MethodPost: s.handleWarm}, getActs: true},
		"/v1/cache":                   {name: "cache_flush", methods: map[string]http.HandlerFunc{http.MethodDelete: s.admin(s.handleCacheFlush)}, admin: true},
		"/v1/admin/reload":            {name: "admin_reload", methods: map[string]http.HandlerFunc{http.MethodPost: s.admin(s.handleReload)}, admin: true},
		"/":                           {name: "default_decision", methods: map[string]http.HandlerFunc{http.MethodPost: s.handleDefaultDecision}},
		"/health":                     {name: "health", methods: map[string]http.HandlerFunc{http.MethodGet: s.handleHealth}},
		"/health/live":                {name: "health_live", methods: map[string]http.HandlerFunc{http.MethodGet: s.handleLive}},
		"/health/ready":               {name: "health_ready", methods: map[string]http.HandlerFunc{http.MethodGet: s.handleReady}},
		"/metrics":                    {name: "metrics", methods: map[string]http.HandlerFunc{http.MethodGet: s.handlePrometheus}},
		"/v1/policies":                {name: "policies", methods: map[string]http.HandlerFunc{http.MethodGet: s.handlePolicies}},
		"/v1/data":                    {name: "data", methods: map[string]http.HandlerFunc{http.MethodGet: s.handleOPAData, http.MethodPost: s.handleOPAData}, getActs: true},
	}
	s.exact["/v0/data"] = &route{name: "data_v0", methods: map[string]http.HandlerFunc{http.MethodPost: s.handleV0Data}}
	// The batch API at the data root too, as Enterprise OPA serves it.
	s.exact["/v1/batch/data"] = &route{name: "batch", methods: map[string]http.HandlerFunc{http.MethodPost: s.handleOPABatch}, batch: true}
	s.prefixed = []prefixRoute{
		{"/v1/data/", s.exact["/v1/data"]},
		{"/v0/data/", s.exact["/v0/data"]},
		{"/v1/batch/data/", s.exact["/v1/batch/data"]},
		{"/v1/policies/", &route{name: "policies", methods: map[string]http.HandlerFunc{http.MethodGet: s.handlePolicy}}},
		{"/debug/pprof/", &route{name: "pprof", methods: map[string]http.HandlerFunc{http.MethodGet: s.admin(s.pprof.ServeHTTP), http.MethodPost: s.admin(s.pprof.ServeHTTP)}, admin: true, getActs: true}},
	}
}

type prefixRoute struct {
	prefix string
	rt     *route
}

var unknownRoute = &route{name: "unknown"}

// match returns the route of u's path from the table buildRoutes made (no
// allocation on the request path).
func (s *Server) match(u *url.URL) *route {
	p := u.Path
	if u.RawPath != "" && hasEscapedSlash(u.RawPath) {
		return s.matchSegments(u.EscapedPath())
	}
	if rt, ok := s.exact[p]; ok {
		return rt
	}
	// A route's path with a trailing slash is the route's, which
	// ServeHTTP redirects to the path without it, as OPA's server does
	// (…/acgs/main/decision/ to the ACGS route, not the generic data
	// route). An unclean path (a doubled slash, a dot segment) never
	// comes here: it was redirected to its clean spelling.
	if n := len(p); n > 1 && p[n-1] == '/' {
		if rt, ok := s.exact[p[:n-1]]; ok {
			return rt
		}
	}
	for _, pr := range s.prefixed {
		if strings.HasPrefix(p, pr.prefix) {
			return pr.rt
		}
	}
	return unknownRoute
}

// hasEscapedSlash reports whether the escaped path p holds %2F (or %2f).
func hasEscapedSlash(p string) bool {
	for i := 0; i+2 < len(p); i++ {
		if p[i] == '%' && p[i+1] == '2' && (p[i+2] == 'F' || p[i+2] == 'f') {
			return true
		}
	}
	return false
}

// matchSegments routes the escaped path esc of which a segment holds an
// escaped slash. OPA's router matches a path segment by segment, each
// unescaped on its own: a%2Fb is one segment, "a/b", which no segment of
// a route is. So no exact route matches (acgs%2Fmain%2Fdecision is not
// the decision route, whose unescaped path it spells), and a prefixed
// route only when the path's first segments are its prefix's.
func (s *Server) matchSegments(esc string) *route {
	for _, pr := range s.prefixed {
		if segmentsUnder(esc, pr.prefix) {
			return pr.rt
		}
	}
	return unknownRoute
}

// segmentsUnder reports whether the escaped path esc begins with the
// segments of prefix (unescaped, with a final slash: /v1/data/), each
// segment of esc unescaped on its own.
func segmentsUnder(esc, prefix string) bool {
	rest, ok := strings.CutPrefix(esc, "/")
	if !ok {
		return false
	}
	for seg := range strings.SplitSeq(strings.Trim(prefix, "/"), "/") {
		i := strings.IndexByte(rest, '/')
		if i < 0 {
			return false
		}
		if u, err := url.PathUnescape(rest[:i]); err != nil || u != seg {
			return false
		}
		rest = rest[i+1:]
	}
	return true
}

// adminOff is the answer of an admin endpoint when no token is configured.
func adminOff(r *http.Request) error {
	return apierror.New(apierror.ResourceNotFound, "no such endpoint: %s (admin endpoints are off: set ADMIN_TOKEN)", r.URL.Path)
}

// bearer returns the credentials of an Authorization header of the Bearer
// scheme, whose name is case-insensitive (RFC 9110, 11.1).
func bearer(h string) (string, bool) {
	const scheme = "Bearer "
	if len(h) < len(scheme) || !strings.EqualFold(h[:len(scheme)], scheme) {
		return "", false
	}
	return h[len(scheme):], true
}

// checkQuery refuses a query string that Go's URL.Query would read with
// pairs silently dropped (a malformed %-escape, a semicolon separator): the
// request would be answered as another one, without its input or with a
// parameter missing. OPA's server drops them; a 400 naming the problem is
// what a client can mend. It scans without allocating, as every request
// with a query passes here.
func checkQuery(raw string) error {
	if raw == "" {
		return nil
	}
	if n := strings.Count(raw, "&") + 1; n > maxQueryParams {
		return apierror.New(apierror.InvalidParameter, "malformed query string: %d parameters, more than %d", n, maxQueryParams)
	}
	for i := 0; i < len(raw); i++ {
		switch raw[i] {
		case '%':
			if i+2 >= len(raw) || !isHex(raw[i+1]) || !isHex(raw[i+2]) {
				end := min(i+3, len(raw))
				return apierror.New(apierror.InvalidParameter, "malformed query string: invalid escape %q at byte %d", raw[i:end], i)
			}
			i += 2
		case ';':
			return apierror.New(apierror.InvalidParameter, "malformed query string: a semicolon at byte %d (separate parameters with &)", i)
		}
	}
	return nil
}

// maxQueryParams is Go's bound on a query's parameters (GODEBUG
// urlmaxqueryparams, 10000 by default), past which URL.Query reads none.
const maxQueryParams = 10000

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// admin guards a handler with the admin bearer token. Without a configured
// token admin endpoints do not exist (404). Every configured token is
// compared in constant time so that rotation windows leak nothing; the
// comparison is over SHA-256 digests because ConstantTimeCompare returns at
// once when the lengths differ, which would leak the token's length.
func (s *Server) admin(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if len(s.adminSums) == 0 {
			writeError(w, adminOff(r))
			return
		}
		got, ok := bearer(r.Header.Get("Authorization"))
		gotSum := sha256.Sum256([]byte(got))
		match := 0
		for _, want := range s.adminSums {
			match |= subtle.ConstantTimeCompare(gotSum[:], want[:])
		}
		if !ok || match != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="acgs-admin"`)
			writeError(w, apierror.New(apierror.Unauthorized, "admin endpoint requires Authorization: Bearer <ADMIN_TOKEN>"))
			return
		}
		h(w, r)
	}
}

// statusWriter is one request's response as the server sees it: the status
// code for metrics, the request's start (the one clock latency is measured
// from: the response's latency_ms, the rolling window and the HTTP
// histogram) and the decisions answered, which ServeHTTP records in the
// rolling window once the handler has returned.
type statusWriter struct {
	http.ResponseWriter
	status  int
	wrote   bool
	start   time.Time
	samples []telemetry.Sample
	one     [1]telemetry.Sample // samples' storage for the usual single decision
	// For ?metrics (inputRead): when the input was decoded, from start,
	// and whether the query was prepared before the decision.
	inputNS  int64
	prepared bool
	// canceled: a decision of the request was not made because its
	// client went away while it waited (admission.ReasonCanceled).
	canceled bool
	// batch: the request's route answers a batch (route.batch).
	batch bool
}

// statusWriters are ServeHTTP's statusWriters, reused: a handler uses its
// writer only until it returns (net/http's rule for the ResponseWriter it
// wraps; no handler hands it to a goroutine that outlives it), and nothing
// else holds one (the headers are net/http's).
var statusWriters = sync.Pool{New: func() any { return new(statusWriter) }}

// startOf returns when the request w answers started.
func startOf(w http.ResponseWriter) time.Time {
	if sw, ok := w.(*statusWriter); ok {
		return sw.start
	}
	return time.Now()
}

// observeDecided observes d (a batch's item when item), unless it was shed
// for overload: that is not a decision, its fast 503 would pull the
// window's latencies and hit rates down, and the OPA dialect, which
// observes only answers, never recorded it (review).
func observeDecided(w http.ResponseWriter, d decided, item bool) {
	switch {
	case admission.ReasonOf(d.Err) == admission.ReasonCanceled:
		markCanceled(w)
	case admission.Overloaded(d.Err):
	case item:
		observe(w, itemSampleOf(d.Decision))
	default:
		observe(w, sampleOf(d.Decision))
	}
}

// markCanceled notes on w that a decision of its request was not made
// because the client went away (admission.ReasonCanceled), for httpCode.
func markCanceled(w http.ResponseWriter) {
	if sw, ok := w.(*statusWriter); ok {
		sw.canceled = true
	}
}

// observe adds a decision answered on w to what ServeHTTP records in the
// rolling window.
func observe(w http.ResponseWriter, smp telemetry.Sample) {
	if sw, ok := w.(*statusWriter); ok {
		if sw.samples == nil {
			sw.samples = sw.one[:0]
		}
		sw.samples = append(sw.samples, smp)
	}
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.status, w.wrote = http.StatusOK, true
	}
	return w.ResponseWriter.Write(b)
}

// statusClientClosed is the code the HTTP metrics record for an answer
// nobody read: nginx's 499 (client closed request).
const statusClientClosed = 499

// httpCode is the status the HTTP metrics record for the answer w wrote to
// r: the one written, or statusClientClosed when a decision was not made
// because the client went away and it is gone still. An overloaded 503
// written to nobody is no refusal (review): counted as one, a client's
// disconnection would read as load shedding to whatever watches the 503s
// (acgs slo).
func httpCode(w *statusWriter, r *http.Request) int {
	if w.canceled && r.Context().Err() != nil && w.code() == http.StatusServiceUnavailable {
		return statusClientClosed
	}
	return w.code()
}

func (w *statusWriter) code() int {
	if !w.wrote {
		return http.StatusOK
	}
	return w.status
}

// Unwrap lets http.ResponseController reach the connection (pprof needs flushes).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func sortStrings(ss []string) []string {
	for i := 1; i < len(ss); i++ {
		for j := i; j > 0 && ss[j] < ss[j-1]; j-- {
			ss[j], ss[j-1] = ss[j-1], ss[j]
		}
	}
	return ss
}

// HTTPServer returns an http.Server with the configured timeouts and limits.
func (s *Server) HTTPServer() *http.Server {
	c := s.cfg.Server
	return &http.Server{
		Addr:              net.JoinHostPort(c.Host, itoa(c.Port)),
		Handler:           s,
		ReadHeaderTimeout: c.ReadHeaderTimeout,
		ReadTimeout:       c.ReadTimeout,
		WriteTimeout:      c.WriteTimeout,
		IdleTimeout:       c.IdleTimeout,
		MaxHeaderBytes:    c.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
}

// SetDraining makes readiness fail while in-flight requests finish.
func (s *Server) SetDraining() { s.draining.Store(true) }
