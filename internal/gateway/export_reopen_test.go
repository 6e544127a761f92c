package gateway

import "time"

// SetReopenAfter sets the least time between two openings of an
// upstream's standalone stream (reopenAfter: a stream without event IDs
// that ends is reopened once that long has passed since it opened) for
// the upstreams connected from now on, and returns what restores it. Call
// it before the gateway starts, and restore it once the gateway has
// stopped.
func SetReopenAfter(d time.Duration) (restore func()) {
	old := reopenAfter
	reopenAfter = d
	return func() { reopenAfter = old }
}
