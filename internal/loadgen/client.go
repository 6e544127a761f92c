package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// NewHTTPClient returns a keep-alive client whose idle pool holds one
// connection per concurrent worker: with Go's default of 2 idle connections
// per host, every other request of a 50-worker run would open a new TCP
// connection and the tool would measure connection setup, not the service.
func NewHTTPClient(concurrency int, timeout time.Duration) *http.Client {
	if concurrency < 1 {
		concurrency = 1
	}
	tr := &http.Transport{
		Proxy:               nil, // never route load through a proxy from the environment
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        concurrency * 2,
		MaxIdleConnsPerHost: concurrency * 2,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
	return &http.Client{Transport: tr, Timeout: timeout}
}

// CheckLoopback refuses a base URL whose host is not a loopback address. The
// load tool is a traffic generator; pointing it at another machine by mistake
// is a denial of service, so remote targets need an explicit opt-in.
func CheckLoopback(ctx context.Context, base string) error {
	u, err := url.Parse(base)
	if err != nil {
		return fmt.Errorf("target %q: %w", base, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("target %q: scheme must be http or https", base)
	}
	host := u.Hostname()
	if host == "" {
		return fmt.Errorf("target %q: missing host", base)
	}
	if ip := net.ParseIP(host); ip != nil {
		if !ip.IsLoopback() {
			return fmt.Errorf("target %q is not a loopback address (use --allow-remote to load a remote host)", base)
		}
		return nil
	}
	if strings.EqualFold(host, "localhost") {
		return nil
	}
	addrs, err := net.DefaultResolver.LookupIPAddr(ctx, host)
	if err != nil {
		return fmt.Errorf("target %q: %w", base, err)
	}
	for _, a := range addrs {
		if !a.IP.IsLoopback() {
			return fmt.Errorf("target %q resolves to %s, not a loopback address (use --allow-remote to load a remote host)", base, a.IP)
		}
	}
	if len(addrs) == 0 {
		return fmt.Errorf("target %q does not resolve", base)
	}
	return nil
}

// requester sends workload requests and classifies answers. One per worker:
// it owns its body buffer (and its connection, when direct).
type requester struct {
	client *http.Client
	direct *directConn // if set, requests go through it instead of client
	url    string
	method string
	fixed  []byte // if set, the body of every request (Options.Body)
	buf    []byte
	resp   bytes.Buffer
}

func newRequester(client *http.Client, base string, w *Workload) *requester {
	return &requester{client: client, url: strings.TrimRight(base, "/") + w.Path, method: w.Method}
}

// decision is the part of an answer the tool judges: ACGS dialect puts allow
// at the top level; the OPA dialect wraps it in result. Code is the error
// code of a refusal ("overloaded" for a shed request).
type decision struct {
	Allow  *bool `json:"allow"`
	Result *struct {
		Allow *bool `json:"allow"`
	} `json:"result"`
	Code string `json:"code"`
}

// shedCode is the error code of a request refused for overload.
const shedCode = "overloaded"

var errNoAllow = errors.New(`response has no boolean "allow"`)

// do sends one request built from scenario s with key idx and reports the
// outcome; err explains a failure (for the first-error report).
func (r *requester) do(ctx context.Context, s *Scenario, idx int64, suffix string) (Outcome, error) {
	body := r.fixed
	if body == nil {
		r.buf = s.AppendBody(r.buf[:0], idx, suffix)
		body = r.buf
	}
	r.resp.Reset()
	var (
		status int
		header http.Header
		err    error
	)
	if r.direct != nil {
		status, header, err = r.direct.do(ctx, body, &r.resp)
	} else {
		status, header, err = r.viaClient(ctx, body)
	}
	if err != nil {
		return OutcomeFailure, err
	}
	if status == http.StatusServiceUnavailable {
		return classifyUnavailable(header, r.resp.Bytes())
	}
	if status != http.StatusOK {
		return OutcomeFailure, fmt.Errorf("HTTP %d: %s", status, truncate(r.resp.String(), 200))
	}
	var d decision
	if err := json.Unmarshal(r.resp.Bytes(), &d); err != nil {
		return OutcomeFailure, fmt.Errorf("bad JSON: %w", err)
	}
	allow := d.Allow
	if allow == nil && d.Result != nil {
		allow = d.Result.Allow
	}
	if allow == nil {
		return OutcomeFailure, errNoAllow
	}
	if *allow {
		return OutcomeAllow, nil
	}
	return OutcomeDeny, nil
}

// viaClient sends one request through the net/http client and reads the
// answer into r.resp.
func (r *requester) viaClient(ctx context.Context, body []byte) (int, http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, r.method, r.url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := r.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	_, err = r.resp.ReadFrom(io.LimitReader(resp.Body, 8<<20))
	resp.Body.Close()
	if err != nil {
		return 0, nil, err
	}
	return resp.StatusCode, resp.Header, nil
}

// classifyUnavailable judges a 503: shed when the service says it is
// overloaded and when to retry (Retry-After); anything else, an overload
// answer without Retry-After included, is a failure.
func classifyUnavailable(h http.Header, body []byte) (Outcome, error) {
	var d decision
	if json.Unmarshal(body, &d) == nil && d.Code == shedCode {
		if h.Get("Retry-After") == "" {
			return OutcomeFailure, errors.New("HTTP 503 overloaded without a Retry-After header")
		}
		return OutcomeShed, nil
	}
	return OutcomeFailure, fmt.Errorf("HTTP 503: %s", truncate(string(body), 200))
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
