package telemetry_test

import (
	"strings"
	"testing"

	"github.com/acgs-lite/acgs/internal/cache"
	"github.com/acgs-lite/acgs/internal/telemetry"
)

// TestCacheCollectorSkipped: the L1 misses not looked up in L2 and the
// write-behind entries not written are exported, each from its Stats
// counter, and the misses' help no longer claims that every L1 miss is
// looked up in L2.
func TestCacheCollectorSkipped(t *testing.T) {
	m := telemetry.NewMetrics(telemetry.BuildInfo{Version: "1.2.3"})
	m.RegisterCacheStats(func() cache.Stats {
		return cache.Stats{L2Enabled: true, BreakerState: "open", L1Misses: 40, L2Skipped: 7, WriteSkipped: 3}
	})
	fams := families(t, m)
	tests := []struct {
		name string
		want float64
	}{
		{"acgs_cache_l2_skipped_total", 7},
		{"acgs_cache_write_skipped_total", 3},
	}
	for _, tt := range tests {
		got, ok := value(t, fams, tt.name, nil)
		if !ok || got != tt.want {
			t.Errorf("%s = %v (present %v), want %v", tt.name, got, ok, tt.want)
		}
		if fams[tt.name].GetType().String() != "COUNTER" {
			t.Errorf("%s is a %s, want a counter", tt.name, fams[tt.name].GetType())
		}
	}
	if help := fams["acgs_cache_misses_total"].GetHelp(); strings.Contains(help, "Every L1 miss is looked up") || !strings.Contains(help, "acgs_cache_l2_skipped_total") {
		t.Errorf("acgs_cache_misses_total help %q: want it to name the skipped lookups", help)
	}
}
