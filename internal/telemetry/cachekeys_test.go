package telemetry

import "testing"

func TestCacheKeyKindsAreCounted(t *testing.T) {
	m := NewMetrics(BuildInfo{})
	for _, k := range []string{"read_set", "read_set", "whole_input", "uncached", "unknown-kind"} {
		m.ObserveCacheKey(k)
	}
	mfs, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "acgs_cache_keys_total" {
			continue
		}
		for _, mt := range mf.GetMetric() {
			got[mt.GetLabel()[0].GetValue()] = mt.GetCounter().GetValue()
		}
	}
	want := map[string]float64{"read_set": 2, "whole_input": 1, "uncached": 2}
	if len(got) != len(want) {
		t.Fatalf("series %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %v, want %v", k, got[k], v)
		}
	}
}
