package gateway

import "time"

// SetReopenAfter sets how long an upstream's standalone stream must have
// lived to be reopened in place when it ends (reopenAfter), for the
// upstreams connected from now on, and returns what restores it. Call it
// before the gateway starts, and restore it once the gateway has stopped.
func SetReopenAfter(d time.Duration) (restore func()) {
	old := reopenAfter
	reopenAfter = d
	return func() { reopenAfter = old }
}
