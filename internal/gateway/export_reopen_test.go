package gateway

import "time"

// SetReopenAfter sets the least time between two openings of an
// upstream's standalone stream (reopenAfter: a stream without event IDs
// that ends is reopened once that long has passed since it opened; 0,
// once the SDK's first reconnection delay, 1 to 2 s, has) for the
// upstreams connected from now on, and returns what restores it. Call
// it before the gateway starts, and restore it once the gateway has
// stopped.
func SetReopenAfter(d time.Duration) (restore func()) {
	old := reopenAfter
	reopenAfter = d
	return func() { reopenAfter = old }
}
