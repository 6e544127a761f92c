// Package servicetest starts the real `acgs serve` wiring in process on a
// free loopback port for end-to-end tests.
package servicetest

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/acgs-lite/acgs/internal/config"
	"github.com/acgs-lite/acgs/internal/service"
)

// Instance is one running service.
type Instance struct {
	URL     string
	Service *service.Service
	cancel  context.CancelFunc
	done    chan error
}

// Start runs the service with the default config changed by mutate; it is
// stopped (gracefully) when the test ends.
func Start(tb testing.TB, mutate ...func(*config.Config)) *Instance {
	tb.Helper()
	cfg := config.Default()
	cfg.Log.Level = "warn"
	for _, m := range mutate {
		m(&cfg)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	svc, err := service.New(ctx, cfg, service.Options{LogOutput: io.Discard, Listener: ln})
	if err != nil {
		cancel()
		_ = ln.Close()
		tb.Fatalf("starting the service: %v", err)
	}
	in := &Instance{URL: "http://" + ln.Addr().String(), Service: svc, cancel: cancel, done: make(chan error, 1)}
	go func() { in.done <- svc.Run(ctx) }()
	tb.Cleanup(in.Stop)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(in.URL + "/health/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return in
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	tb.Fatal("service did not become ready")
	return nil
}

// Stop shuts the service down and waits for it.
func (in *Instance) Stop() {
	if in.cancel == nil {
		return
	}
	in.cancel()
	in.cancel = nil
	select {
	case err := <-in.done:
		if err != nil {
			fmt.Fprintln(os.Stderr, "servicetest: service stopped with:", err)
		}
	case <-time.After(30 * time.Second):
	}
}
