package remote

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/open-policy-agent/opa/v1/tracing"

	"github.com/acgs-lite/acgs/internal/engine"
)

// OPA's downloader hands the response body straight to its tarball loader,
// which bounds each member (size_limit_bytes) but not their sum, and keeps
// every member in memory: a bundle server, or anything between it and this
// instance, could send a gzip bomb spread over many members and exhaust
// memory. OPA offers no hook on its bundle clients' HTTP transport except
// the one for distributed tracing, so this package registers a tracing
// service whose only work is to wrap the transport of the clients it builds
// (those whose options carry a bodyLimit) with limitTransport; every other
// client, OPA's or not, gets its transport back unchanged.

// bodyLimit marks the tracing options of this package's plugin managers.
type bodyLimit struct{ bytes int64 }

type limitTracing struct{}

func init() { tracing.RegisterHTTPTracing(limitTracing{}) }

func (limitTracing) NewTransport(next http.RoundTripper, opts tracing.Options) http.RoundTripper {
	for _, o := range opts {
		if l, ok := o.(*bodyLimit); ok {
			return limitTransport{next: next, limit: l}
		}
	}
	return next
}

// check fails when the hook does not wrap this limit's clients: another
// package (OPA's OpenTelemetry feature, say) registered its own tracing
// service after this one, and downloads would go unbounded.
func (l *bodyLimit) check() error {
	if _, ok := tracing.NewTransport(http.DefaultTransport, tracing.NewOptions(l)).(limitTransport); !ok {
		return errors.New("remote bundles: the bound on downloaded bundles is not in place " +
			"(another HTTP tracing service replaced it); refusing to download unbounded archives")
	}
	return nil
}

func (limitTracing) NewHandler(h http.Handler, _ string, _ tracing.Options) http.Handler { return h }

// limitTransport reads a successful answer whole (at most limit bytes) and
// refuses it, as a failed request, when it is larger or decompresses to
// more: engine.CheckTarball, the bound local archives have. The downloader
// then reports the refusal as a failed request and the active policy stays;
// the refusal's text begins with refusedArchive, so that it is told from a
// download that failed (failedRequest), as an answer that broke off is. An
// archive is held twice for a moment (here and in OPA's loader), each at
// most limit bytes compressed.
type limitTransport struct {
	next  http.RoundTripper
	limit *bodyLimit // read at each answer: New sets it once the bundles are parsed
}

// refusedArchive begins the error of an archive limitTransport refused.
const refusedArchive = "bundle archive refused: "

func (t limitTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if err != nil || resp.StatusCode != http.StatusOK || resp.Body == nil || req.Method != http.MethodGet {
		return resp, err
	}
	name := req.URL.Redacted()
	data, err := io.ReadAll(io.LimitReader(resp.Body, t.limit.bytes+1))
	_ = resp.Body.Close()
	if err != nil { // the answer broke off: a failed download
		return nil, fmt.Errorf("reading bundle %s: %w", name, err)
	}
	if err := engine.CheckTarball(data, name, t.limit.bytes); err != nil {
		return nil, fmt.Errorf("%s%w", refusedArchive, err)
	}
	resp.Body = io.NopCloser(bytes.NewReader(data))
	resp.ContentLength = int64(len(data))
	return resp, nil
}
