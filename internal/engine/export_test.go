package engine

// KeepSlowResiduals returns o with residual plans kept even when their first
// input times them slower than full evaluation (they must still agree), so
// that differential tests exercise residuals on every input.
func KeepSlowResiduals(o Options) Options {
	o.keepSlowResiduals = true
	return o
}
