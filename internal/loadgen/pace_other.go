//go:build !linux

package loadgen

import (
	"context"
	"time"
)

// waiter sleeps an open-loop sender until its request is due. Outside Linux
// it is a Go timer, which may wake late by the runtime's timer resolution
// (see pace_linux.go).
type waiter struct{}

func newWaiter() (waiter, error) { return waiter{}, nil }

func (w *waiter) wait(ctx context.Context, t time.Time) bool { return sleepUntil(ctx, t) }

func (w *waiter) wake()  {}
func (w *waiter) close() {}
