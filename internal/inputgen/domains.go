package inputgen

import "strings"

// The domains below are the constitution's configured lists and limits
// (policies/acgs/config/data.json), named so that generators outside this
// package (the varied wrk workload of internal/loadgen) draw from the same
// domains as Gen. A test keeps them equal to the bundle's configuration.

// RateLimits are the rate limits by action category (the part of the
// action before its first dot); any other category has DefaultRateLimit.
var RateLimits = map[string]int{"data": 100, "network": 20, "system": 200, "compute": 100, "report": 50}

// DefaultRateLimit is the rate limit of a category without its own.
const DefaultRateLimit = 10

// RateLimit is the rate limit of an action's category.
func RateLimit(action string) int {
	cat, _, _ := strings.Cut(action, ".")
	if l, ok := RateLimits[cat]; ok {
		return l
	}
	return DefaultRateLimit
}

// Limit is a named numeric limit.
type Limit struct {
	Name  string
	Limit float64
}

// ResourceLimits are the limits of the requestable resources, in name order.
var ResourceLimits = []Limit{
	{"cpu_cores", 2}, {"disk_gb", 10}, {"max_execution_time_seconds", 300}, {"max_file_operations_per_minute", 100},
	{"max_network_requests_per_minute", 50}, {"memory_gb", 4}, {"network_bandwidth_mbps", 10},
}

// MinExplanation is the length an explanation needs when the action needs one.
const MinExplanation = 50

// MinTrust is the trust level an allowed action needs.
const MinTrust = 0.8

// EvolutionTypes are the evolution types with a configured base risk, in
// increasing risk; any other type has the default base risk.
var EvolutionTypes = []string{"minor_update", "patch", "configuration", "feature_addition", "major_update", "architecture_change"}

// ChangeFlags are the boolean keys of evolution_request.changes the
// constitution reads: risk factors, constitutional violations and the
// security change that requires a review.
var ChangeFlags = []string{"privilege_escalation", "network_changes", "experimental_features", "logging_disabled", "audit_disabled", "data_encryption_weakened", "security_changes"}

// MitigationFlags are the keys of evolution_request.mitigations that lower the risk.
var MitigationFlags = []string{"sandbox_deployment", "gradual_rollout", "enhanced_monitoring"}

// PerformanceLimits are the limits of the performance deltas.
var PerformanceLimits = []Limit{{"complexity_delta", 0.3}, {"memory_delta", 0.2}, {"latency_delta", 0.15}, {"resource_delta", 0.25}}

// RollbackFields are the string fields of a rollback plan that score.
var RollbackFields = []string{"procedure", "verification", "timeline", "dependencies"}

// ReviewFlags are the review fields of an evolution request.
var ReviewFlags = []string{"human_approved", "security_review_passed", "peer_reviewed"}

// SensitiveCategories are the data categories that need special
// authorization and encryption.
var SensitiveCategories = []string{
	"personal_identifiable_information", "financial_information", "health_records", "biometric_data",
	"authentication_credentials", "cryptographic_keys", "trade_secrets", "legal_documents",
}

// PlainCategories are data categories that are not sensitive.
var PlainCategories = []string{"analytics", "public", "telemetry", "usage_statistics"}

// RetentionLimits are the retention limits in seconds by data category.
var RetentionLimits = []Limit{
	{"authentication_credentials", 86400}, {"financial_information", 31536000},
	{"health_records", 315360000}, {"personal_identifiable_information", 2592000},
}

// AllowedPurposes are the purposes the workloads allow; OtherPurposes are not allowed.
var (
	AllowedPurposes = []string{"service_improvement", "security_monitoring"}
	OtherPurposes   = []string{"marketing", "research", "resale"}
)

// Timestamp is the workloads' reference request time (2025-11-27T00:00Z).
const Timestamp = 1764201600
