# METADATA
# title: Constitutional evaluation
# description: |
#   Scores an agent action against the constitution (safety, the five
#   principles, resources, transparency) and decides allow/deny.
#   Every threshold, weight, limit and list comes from data.acgs.config.
#
#   Inputs are untrusted: a field of the wrong type counts as missing
#   (trust "0.9" is 0, sandbox "true" is false, a string resource is 0).
#   Values are type-checked before any ordering comparison, arithmetic or
#   iteration, so no input can raise a runtime error.
#
#   Only input.action and input.context are read here.
package acgs.constitutional

import data.acgs.config

# ---------------------------------------------------------------------------
# Prohibited actions: decided by the action alone (constant under partial
# evaluation when input.action is known).
# ---------------------------------------------------------------------------

prohibited if input.action in config.prohibited_actions

prohibited_decision := {
	"allow": false,
	"compliance_score": 0,
	"reasons": [sprintf("Action '%s' is prohibited by the constitution", [input.action])],
	"constitutional_hash": config.constitutional_hash,
	"policy": "constitutional",
	"evaluation_details": {
		"prohibited": true,
		"action": input.action,
		"safety": 0,
	},
} if {
	prohibited
}

# Entry point of this package. The two bodies are mutually exclusive.
decision := prohibited_decision if prohibited

decision := evaluated_decision if not prohibited

evaluated_decision := {
	"allow": allow,
	"compliance_score": compliance_score,
	"reasons": reasons,
	"constitutional_hash": config.constitutional_hash,
	"policy": "constitutional",
	"evaluation_details": evaluation_details,
}

# ---------------------------------------------------------------------------
# Typed views of the input (wrong type == missing).
# ---------------------------------------------------------------------------

default action := ""

action := input.action if is_string(input.action)

default category := ""

category := split(action, ".")[0]

default trust_level := 0

trust_level := t if {
	t := input.context.agent.trust_level
	is_number(t)
}

default sandbox_enabled := false

sandbox_enabled if input.context.environment.sandbox_enabled == true

default audit_enabled := false

audit_enabled if input.context.environment.audit_enabled == true

usage_count := object.get(context_numbers, "current_usage_count", 0)

default overrides_user_preference := false

overrides_user_preference if input.context.overrides_user_preference == true

default user_consent := false

user_consent if input.context.user_consent == true

default affects_protected_groups := false

affects_protected_groups if input.context.affects_protected_groups == true

default has_responsible_party := false

has_responsible_party if {
	p := input.context.responsible_party
	is_string(p)
	p != ""
}

default explanation_length := 0

explanation_length := count(e) if {
	e := input.context.explanation
	is_string(e)
}

# Numeric context fields (wrong type == missing), clamped to [0,1]; the
# config default when missing. One body each, so that partial evaluation
# does not multiply alternatives.
default context_numbers := {}

context_numbers := {k: v |
	some k, v in input.context
	is_number(v)
} if {
	is_object(input.context)
}

default benefit := 0

benefit := clamp01(object.get(context_numbers, "benefit_assessment", config.constitutional.principles.default_benefit))

default harm_risk := 1

harm_risk := clamp01(object.get(context_numbers, "harm_risk_assessment", config.constitutional.principles.default_harm_risk))

default fairness_assessment := 0

fairness_assessment := clamp01(object.get(context_numbers, "fairness_assessment", config.constitutional.principles.default_fairness))

# Requested resources: only numeric entries of an object count; anything else is 0.
default requested := {}

requested := {k: v |
	some k, v in input.context.agent.requested_resources
	is_number(v)
} if {
	is_object(input.context.agent.requested_resources)
}

# ---------------------------------------------------------------------------
# Safety
# ---------------------------------------------------------------------------

default rate_limit := 0

rate_limit := object.get(config.constitutional.rate_limits, category, config.constitutional.default_rate_limit)

default within_rate_limit := false

within_rate_limit if usage_count < rate_limit

default sandbox_points := 0

sandbox_points := config.constitutional.safety.sandbox if sandbox_enabled

default rate_points := 0

rate_points := config.constitutional.safety.rate_limit if within_rate_limit

default safety := 0

safety := (config.constitutional.safety.base + sandbox_points) + rate_points

# ---------------------------------------------------------------------------
# Constitutional principles
# ---------------------------------------------------------------------------

default autonomy_case := "autonomy_no_override"

autonomy_case := "autonomy_override_with_consent" if {
	overrides_user_preference
	user_consent
}

autonomy_case := "autonomy_override_without_consent" if {
	overrides_user_preference
	not user_consent
}

default autonomy := 0

autonomy := object.get(config.constitutional.principles, autonomy_case, 0)

beneficence := benefit

non_maleficence := 1 - harm_risk

fairness := fairness_assessment

default accountability_audit := 0

accountability_audit := config.constitutional.principles.accountability_audit if audit_enabled

default accountability_party := 0

accountability_party := config.constitutional.principles.accountability_responsible_party if has_responsible_party

default accountability := 0

accountability := accountability_audit + accountability_party

default constitutional_score := 0

# (sum([...]) rather than nested +: OPA prints partial-evaluation residuals
# without parentheses, and `(a + b) / 5` would come out as `a + b / 5`.)
constitutional_score := sum([autonomy, beneficence, non_maleficence, fairness, accountability]) / 5

# ---------------------------------------------------------------------------
# Resources: mean over the configured limits of min(1, limit / max(requested, 1)),
# computed as 1 - (sum of the shortfalls) / (number of limits) so that only the
# limits actually exceeded cost any arithmetic (the common case is none).
# ---------------------------------------------------------------------------

resource_shortfalls := [shortfall |
	some name, limit in config.constitutional.resource_limits
	m := max([object.get(requested, name, 0), 1])
	m > limit
	shortfall := 1 - (limit / m)
]

default resources := 0

resources := 1 if count(resource_shortfalls) == 0

resources := 1 - (sum(resource_shortfalls) / count(config.constitutional.resource_limits)) if {
	count(resource_shortfalls) > 0
}

# ---------------------------------------------------------------------------
# Transparency
# ---------------------------------------------------------------------------

default needs_explanation := false

needs_explanation if action in config.constitutional.actions_requiring_explanation

default explanation_ok := false

explanation_ok if not needs_explanation

explanation_ok if explanation_length >= config.constitutional.min_explanation_length

default explanation_points := 0

explanation_points := config.constitutional.transparency.explanation if explanation_ok

default transparency_audit_points := 0

transparency_audit_points := config.constitutional.transparency.audit if audit_enabled

default transparency := 0

transparency := (config.constitutional.transparency.base + explanation_points) + transparency_audit_points

# ---------------------------------------------------------------------------
# Score and decision
# ---------------------------------------------------------------------------

raw_score := score if {
	w := config.constitutional.weights
	score := (((w.safety * safety) + (w.constitutional * constitutional_score)) + (w.resources * resources)) + (w.transparency * transparency)
}

default compliance_score := 0

compliance_score := round4(clamp01(raw_score))

default score_ok := false

score_ok if compliance_score >= config.constitutional.compliance_threshold

default trust_ok := false

trust_ok if trust_level >= config.constitutional.min_trust_level

default allow := false

allow if {
	not prohibited
	action != ""
	score_ok
	trust_ok
}

default reasons := []

reasons := [msg | some [_, msg] in sort(concerns)] if not allow

default evaluation_details := {}

# Sums of configured weights are exact; quotients and differences are rounded
# (OPA's decimal arithmetic gives 1 - 0.9 = 0.10000000000000000002).
evaluation_details := {
	"safety": safety,
	"constitutional": round4(constitutional_score),
	"resources": round4(resources),
	"transparency": transparency,
	"autonomy": autonomy,
	"beneficence": beneficence,
	"non_maleficence": round4(non_maleficence),
	"fairness": fairness,
	"accountability": accountability,
	"trust_level": trust_level,
	"action_category": category,
}

# ---------------------------------------------------------------------------
# Concerns: every failed check in words, as [order, message] pairs so that
# the reasons keep a stable, meaningful order.
# ---------------------------------------------------------------------------

concerns contains [0, "Action is missing or not a string"] if action == ""

concerns contains [1, sprintf("Agent trust level %v below required %v", [trust_level, config.constitutional.min_trust_level])] if {
	not trust_ok
}

concerns contains [2, "Sandbox is not enabled"] if not sandbox_enabled

concerns contains [3, msg] if {
	not within_rate_limit
	msg := sprintf("Rate limit exceeded for category '%s': usage %v, limit %v", [category, usage_count, rate_limit])
}

concerns contains [4, msg] if {
	some name, limit in config.constitutional.resource_limits
	req := object.get(requested, name, 0)
	req > limit
	msg := sprintf("Requested %s %v exceeds limit %v", [name, req, limit])
}

concerns contains [5, "Audit logging is not enabled (no audit trail)"] if not audit_enabled

concerns contains [6, "No responsible party specified"] if not has_responsible_party

concerns contains [7, msg] if {
	needs_explanation
	explanation_length == 0
	msg := sprintf("Action '%s' requires an explanation but none was given", [action])
}

concerns contains [7, msg] if {
	needs_explanation
	explanation_length > 0
	explanation_length < config.constitutional.min_explanation_length
	msg := sprintf(
		"Explanation for action '%s' is too short (%d characters, minimum %v)",
		[action, explanation_length, config.constitutional.min_explanation_length],
	)
}

concerns contains [8, msg] if {
	harm_risk > config.constitutional.concern_thresholds.max_harm_risk
	msg := sprintf("Harm risk %v exceeds %v", [harm_risk, config.constitutional.concern_thresholds.max_harm_risk])
}

concerns contains [9, msg] if {
	benefit < config.constitutional.concern_thresholds.min_benefit
	msg := sprintf("Benefit assessment %v below %v", [benefit, config.constitutional.concern_thresholds.min_benefit])
}

concerns contains [10, msg] if {
	affects_protected_groups
	fairness_assessment < config.constitutional.concern_thresholds.min_fairness_protected_groups
	msg := sprintf(
		"Fairness assessment %v below %v while protected groups are affected",
		[fairness_assessment, config.constitutional.concern_thresholds.min_fairness_protected_groups],
	)
}

concerns contains [11, "Overrides user preference without consent"] if {
	overrides_user_preference
	not user_consent
}

concerns contains [12, msg] if {
	not score_ok
	msg := sprintf("Compliance score %v below %v", [compliance_score, config.constitutional.compliance_threshold])
}

# ---------------------------------------------------------------------------
# Helpers (numbers only; callers guarantee is_number).
# ---------------------------------------------------------------------------

clamp01(x) := min([1, max([0, x])])

round4(x) := round(x * 10000) / 10000
