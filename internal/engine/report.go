package engine

// RecordFailure records a reload attempt that failed before a bundle could
// reach Activate: a remote bundle that could not be downloaded, whose
// signature did not verify, or that OPA's bundle plugin refused to compile
// (internal/remote reports those). Like a refused Activate it leaves the
// active snapshot in place, shows err as the last reload error in health and
// tells Options.OnReload "failure", so every way a bundle can be refused is
// reported the same way. A later successful activation clears it.
func (e *Engine) RecordFailure(err error) {
	if err == nil {
		return
	}
	e.failed(err)
}
