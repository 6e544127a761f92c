package engine

import (
	"context"
	"fmt"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
)

// KeepSlowResiduals returns o with residual plans kept even when their first
// input times them slower than full evaluation (they must still agree), so
// that differential tests exercise residuals on every input.
func KeepSlowResiduals(o Options) Options {
	o.keepSlowResiduals = true
	return o
}

// ReplaceResidual swaps the prepared query of the residual plan for input at
// path (which must exist) for query, prepared on the active bundle's
// compiler; query must bind __acgs_result__. Tests use it to make a plan
// disagree with, or run slower than, full evaluation.
func ReplaceResidual(ctx context.Context, e *Engine, path string, input any, query string) error {
	s := e.cur.Load()
	pl := s.plans.get(path, input)
	if pl == nil || pl.Kind() != PlanResidual {
		return fmt.Errorf("no residual plan for %v", input)
	}
	body, err := ast.ParseBody(query)
	if err != nil {
		return err
	}
	for _, expr := range body {
		expr.Location = nil // as build does
	}
	q, err := rego.New(rego.ParsedQuery(body), rego.Compiler(s.compiler), rego.Store(s.store)).PrepareForEval(ctx)
	if err != nil {
		return err
	}
	pl.residual.Store(&q)
	return nil
}
