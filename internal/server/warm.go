package server

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/acgs-lite/acgs/internal/admission"
	"github.com/acgs-lite/acgs/internal/apierror"
	"github.com/acgs-lite/acgs/internal/parallel"
	"github.com/acgs-lite/acgs/internal/telemetry/decisionmetrics"
	"github.com/acgs-lite/acgs/internal/workload"
)

// maxWarmRequests bounds the warm-up set so a large key space in a workload
// file cannot turn a warm-up call into a load test.
const maxWarmRequests = 20000

// warmRequest is one request of the warm-up set: the scenario and key index
// whose body it is. The body is rendered and decoded again on each warm-up
// rather than kept decoded, because the decoded set (1,300 bodies of the
// built-in workload: about 2.8 MB) would otherwise be live for the whole life
// of the process for a call that may never come.
type warmRequest struct {
	scenario *workload.Scenario
	idx      int64
}

// body renders and decodes the request as loadWarmup checked it.
func (r warmRequest) body() (any, error) {
	return decodeJSON(r.scenario.AppendBody(nil, r.idx, ""), 1000)
}

// loadWarmup expands a workload file (the built-in acgs-mixed one when path
// is empty) into every body of every scenario's key space: the requests a
// client of that workload will send, so that warming makes them all hits.
// Every body is decoded once here, so that a file the server cannot decode
// stops the start as before.
func loadWarmup(path string) ([]warmRequest, error) {
	wl, err := workload.Load(path)
	if err != nil {
		return nil, fmt.Errorf("CACHE_WARM_FILE: %w", err)
	}
	var out []warmRequest
	for i := range wl.Scenarios {
		sc := &wl.Scenarios[i]
		for idx := int64(0); idx < sc.KeySpace() && len(out) < maxWarmRequests; idx++ {
			r := warmRequest{scenario: sc, idx: idx}
			if _, err := r.body(); err != nil {
				return nil, fmt.Errorf("CACHE_WARM_FILE: scenario %s: %w", sc.Name, err)
			}
			out = append(out, r)
		}
	}
	return out, nil
}

// Warm evaluates the warm-up set through the engine (the caches, the
// evaluator and admission), as the requests' pipeline does. It returns the
// requests it warmed, those admission shed for overload (not warmed:
// reported with the warm-up's result) and the set's size.
func (s *Server) Warm(ctx context.Context) (warmed, shed, total int) {
	const (
		failed = iota
		ok
		wasShed
	)
	results := make([]uint8, len(s.warm))
	parallel.For(len(s.warm), func(i int) {
		if ctx.Err() != nil {
			return
		}
		body, err := s.warm[i].body()
		if err != nil {
			return
		}
		req, err := s.validateACGS(body)
		if err != nil {
			return
		}
		// Not recorded as a decision (no client asked for it). A
		// request shed for overload, or left when the operator went
		// away, is not counted as a client's would be: the shed and
		// canceled decision counters are clients' refusals, which
		// ACGSShedding pages on as a share of acgs_decisions_total,
		// where the warm-up has no decisions (admission counts its
		// refusals anyway, in acgs_admission_refused_total). An
		// evaluation that timed out or failed is counted as one would
		// be: it says the same of the policy whoever asked.
		_, err = s.d.Engine.Decide(ctx, decisionPath, req)
		switch {
		case err == nil:
			results[i] = ok
		case admission.ReasonOf(err) == admission.ReasonCanceled:
		case admission.Overloaded(err):
			results[i] = wasShed
		default:
			decisionmetrics.CountFailure(s.d.Metrics, err)
		}
	})
	for _, r := range results {
		switch r {
		case ok:
			warmed++
		case wasShed:
			shed++
		}
	}
	return warmed, shed, len(s.warm)
}

// handleWarm serves GET|POST /v1/cache/warm.
func (s *Server) handleWarm(w http.ResponseWriter, r *http.Request) {
	if s.d.Cache == nil {
		// Evaluating the set would take seconds for nothing (review).
		writeJSON(w, http.StatusOK, map[string]any{"warmed_scenarios": 0, "shed_scenarios": 0, "total_scenarios": len(s.warm), "duration_ms": 0, "reason": "cache disabled"}, false)
		return
	}
	start := time.Now()
	warmed, shed, total := s.Warm(r.Context())
	if r.Context().Err() != nil {
		writeError(w, apierror.New(apierror.Unavailable, "warm-up cancelled after %d of %d scenarios", warmed, total))
		return
	}
	if shed > 0 {
		s.log.Warn("cache warm-up: scenarios not warmed, shed for overload (no evaluation slot free in time); warm again when the service is less busy",
			"shed_scenarios", shed, "warmed_scenarios", warmed, "total_scenarios", total)
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"warmed_scenarios": warmed,
		"shed_scenarios":   shed,
		"total_scenarios":  total,
		"duration_ms":      float64(time.Since(start).Microseconds()) / 1000,
	}, false)
}
