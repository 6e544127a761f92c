package inputgen

import (
	"encoding/json"
	"io/fs"
	"maps"
	"slices"
	"testing"

	"github.com/acgs-lite/acgs/policies"
)

// TestDomainsMatchTheBundle: the exported domains are the bundle's
// configuration, so that a generator drawing from them covers what the
// constitution reads (and stays covering it when the configuration changes).
func TestDomainsMatchTheBundle(t *testing.T) {
	raw, err := fs.ReadFile(policies.FS, "acgs/config/data.json")
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Prohibited     []string `json:"prohibited_actions"`
		Constitutional struct {
			RateLimits       map[string]int     `json:"rate_limits"`
			DefaultRateLimit int                `json:"default_rate_limit"`
			ResourceLimits   map[string]float64 `json:"resource_limits"`
			MinExplanation   int                `json:"min_explanation_length"`
			MinTrust         float64            `json:"min_trust_level"`
			NeedsExplanation []string           `json:"actions_requiring_explanation"`
		} `json:"constitutional"`
		Evolution struct {
			BaseRisks      map[string]float64 `json:"base_risks"`
			RiskFactors    map[string]float64 `json:"risk_factors"`
			Violations     map[string]float64 `json:"constitutional_violations"`
			Mitigations    map[string]float64 `json:"mitigations"`
			Performance    map[string]float64 `json:"performance_limits"`
			Rollback       struct{ Fields []string }
			RequiredReview map[string]struct {
				Field     string `json:"field"`
				Triggered string `json:"triggered_by_change"`
			} `json:"required_reviews"`
		} `json:"evolution"`
		Data struct {
			Sensitive []string           `json:"sensitive_categories"`
			Retention map[string]float64 `json:"retention_limits_seconds"`
		} `json:"data_access"`
	}
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	c, e := cfg.Constitutional, cfg.Evolution
	limits := func(ls []Limit) map[string]float64 {
		m := map[string]float64{}
		for _, l := range ls {
			m[l.Name] = l.Limit
		}
		return m
	}
	sameSet := func(name string, got []string, want []string) {
		t.Helper()
		g, w := slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(want))
		if !slices.Equal(g, w) {
			t.Errorf("%s: %v, the bundle has %v", name, g, w)
		}
	}
	if !maps.Equal(RateLimits, c.RateLimits) || DefaultRateLimit != c.DefaultRateLimit {
		t.Errorf("rate limits %v/%d, the bundle has %v/%d", RateLimits, DefaultRateLimit, c.RateLimits, c.DefaultRateLimit)
	}
	if !maps.Equal(limits(ResourceLimits), c.ResourceLimits) {
		t.Errorf("resource limits %v, the bundle has %v", ResourceLimits, c.ResourceLimits)
	}
	if MinExplanation != c.MinExplanation || MinTrust != c.MinTrust {
		t.Errorf("min explanation %d, trust %v; the bundle has %d, %v", MinExplanation, MinTrust, c.MinExplanation, c.MinTrust)
	}
	sameSet("prohibited actions", Prohibited, cfg.Prohibited)
	sameSet("actions needing an explanation", NeedsExplanation, c.NeedsExplanation)
	sameSet("evolution types", EvolutionTypes, slices.Collect(maps.Keys(e.BaseRisks)))
	flags := append(slices.Collect(maps.Keys(e.RiskFactors)), slices.Collect(maps.Keys(e.Violations))...)
	var reviews []string
	for _, r := range e.RequiredReview {
		reviews = append(reviews, r.Field)
		if r.Triggered != "" {
			flags = append(flags, r.Triggered)
		}
	}
	sameSet("change flags", ChangeFlags, flags)
	sameSet("review flags", ReviewFlags, reviews)
	sameSet("mitigations", MitigationFlags, slices.Collect(maps.Keys(e.Mitigations)))
	sameSet("rollback fields", RollbackFields, e.Rollback.Fields)
	if !maps.Equal(limits(PerformanceLimits), e.Performance) {
		t.Errorf("performance limits %v, the bundle has %v", PerformanceLimits, e.Performance)
	}
	sameSet("sensitive categories", SensitiveCategories, cfg.Data.Sensitive)
	if !maps.Equal(limits(RetentionLimits), cfg.Data.Retention) {
		t.Errorf("retention limits %v, the bundle has %v", RetentionLimits, cfg.Data.Retention)
	}
	for _, p := range PlainCategories {
		if slices.Contains(cfg.Data.Sensitive, p) {
			t.Errorf("plain category %q is sensitive in the bundle", p)
		}
	}
	for action, want := range map[string]int{"data.read": 100, "network.x": 20, "system.status": 200, "report.generate": 50, "file.read": 10, "nodot": 10, "": 10} {
		if got := RateLimit(action); got != want {
			t.Errorf("RateLimit(%q) = %d, want %d", action, got, want)
		}
	}
}
