# METADATA
# title: Evolution approval
# description: |
#   Scores a proposed system evolution (risk, constitutional impact,
#   performance, rollback readiness, reviews) and picks an approval path:
#   auto_approve (allow), fast_track or human_review (deny).
#   Every threshold, weight and list comes from data.acgs.config.evolution.
#
#   A configured value of the wrong type that would make a rule add no
#   risk, take no penalty or require no review (risk_factors that is not an
#   object, a performance limit that is not a number above 0, a review's
#   types that are not an array of strings, a threshold missing or not a
#   number) denies with a configuration error (configuration_problems), as
#   acgs.constitutional does for a number its scoring lacks; one that
#   breaks the arithmetic (a weight, a base risk, a mitigation of another
#   type) scores 0 where it is used.
#
#   Inputs are untrusted: a field of the wrong type counts as missing.
#   Change and mitigation flags count only when they are boolean true;
#   changes.external_dependencies counts when it is a non-empty array.
#
#   Reads these fields of input.evolution_request, each by its full path:
#   type, constitutional_hash, human_approved, security_review_passed,
#   peer_reviewed, and the maps changes, mitigations, performance_analysis
#   and rollback_plan (read whole: their keys come from the config, and any
#   member makes a rollback plan non-empty). Of the request itself, only
#   whether it is an object (request_present).
package acgs.evolution

import data.acgs.config
import data.acgs.text

# The decision: the evaluated one or, when a value of the configuration
# the scoring reads is of a type that would make its rule add or require
# nothing, a deny that says so (configuration_error_decision). The two
# bodies exclude each other.
decision := evaluated_decision if not configuration_error

decision := configuration_error_decision if configuration_error

evaluated_decision := {
	"allow": allow,
	"compliance_score": evolution_score,
	"evolution_score": evolution_score,
	"approval_path": approval_path,
	"required_actions": required_actions,
	"reasons": reasons,
	"constitutional_hash": config.constitutional_hash,
	"policy": "evolution",
	"evaluation_details": evaluation_details,
}

# ---------------------------------------------------------------------------
# Typed views of the input
# ---------------------------------------------------------------------------

# Whether the request is an object at all, for the concern "Evolution
# request missing or not an object". A type test applied to the path
# itself: the read-set analysis counts it as reading the request's type
# only, so its id and other fields stay outside the cache key.
default request_present := false

request_present if is_object(input.evolution_request)

default evolution_type := ""

evolution_type := t if {
	t := input.evolution_request.type
	is_string(t)
}

# Keys of changes / mitigations whose value is boolean true.
default changes_true := set()

changes_true := {k |
	some k, v in input.evolution_request.changes
	v == true
} if {
	is_object(input.evolution_request.changes)
}

default mitigations_true := set()

mitigations_true := {k |
	some k, v in input.evolution_request.mitigations
	v == true
} if {
	is_object(input.evolution_request.mitigations)
}

default has_external_dependencies := false

has_external_dependencies if {
	deps := input.evolution_request.changes.external_dependencies
	is_array(deps)
	count(deps) > 0
}

# Numeric performance deltas; anything else is 0.
default performance_deltas := {}

performance_deltas := {k: v |
	some k, v in input.evolution_request.performance_analysis
	is_number(v)
} if {
	is_object(input.evolution_request.performance_analysis)
}

default rollback_plan := {}

rollback_plan := p if {
	p := input.evolution_request.rollback_plan
	is_object(p)
}

# ---------------------------------------------------------------------------
# Risk (score = 1 - adjusted risk)
# ---------------------------------------------------------------------------

default base_risk := 1

# The type's own base risk or, for a type without one, the default: null
# when the default is missing (a reference to it would be undefined for
# every type, even those with their own base risk, so 1 applied to all
# with the false reason "High-risk evolution type" and no problem named:
# review), so that a type that needs it is a configuration error naming
# default_base_risk (configuration_problems). With base_risks not an
# object, 1, and a configuration error naming base_risks.
base_risk := object.get(
	config.evolution.base_risks, evolution_type,
	object.get(config.evolution, "default_base_risk", null),
)

default external_dependencies_risk := 0

external_dependencies_risk := config.evolution.external_dependencies_risk if has_external_dependencies

risk_additions := sum([w |
	some flag, w in config.evolution.risk_factors
	flag in changes_true
]) + external_dependencies_risk

risk_mitigations := sum([w |
	some flag, w in config.evolution.mitigations
	flag in mitigations_true
])

default adjusted_risk := 1

adjusted_risk := clamp01((base_risk + risk_additions) - risk_mitigations)

default risk_score := 0

risk_score := 1 - adjusted_risk

# ---------------------------------------------------------------------------
# Constitutional impact
# ---------------------------------------------------------------------------

default hash_ok := false

hash_ok if input.evolution_request.constitutional_hash == config.constitutional_hash

default hash_penalty := 0

hash_penalty := config.evolution.hash_mismatch_penalty if not hash_ok

constitutional_penalties := sum([w |
	some flag, w in config.evolution.constitutional_violations
	flag in changes_true
])

default constitutional_score := 0

constitutional_score := clamp01((1 - constitutional_penalties) - hash_penalty)

# ---------------------------------------------------------------------------
# Performance: 1 - mean of min(1, max(0, delta) / limit) over the four
# deltas the spec names (performance_limit_names). A key of
# performance_limits the spec does not name is not scored: averaged with
# the four, it diluted the mean, and a patch at its latency limit went from
# fast_track (0.944) to auto_approve (0.9552) with unused_delta: 1 (review).
# ---------------------------------------------------------------------------

performance_penalties := [p |
	some name in performance_limit_names
	limit := config.evolution.performance_limits[name]
	p := min([1, max([0, object.get(performance_deltas, name, 0)]) / limit])
]

default performance_score := 0

performance_score := 1 - (sum(performance_penalties) / max([1, count(performance_penalties)]))

# ---------------------------------------------------------------------------
# Rollback readiness
# ---------------------------------------------------------------------------

default has_rollback_plan := false

has_rollback_plan if count(rollback_plan) > 0

default rollback_plan_points := 0

rollback_plan_points := config.evolution.rollback.plan if has_rollback_plan

default rollback_fields_present := 0

rollback_fields_present := count([f |
	some f in config.evolution.rollback.fields
	s := rollback_plan[f]
	is_string(s)
	s != ""
])

default rollback_tested := false

rollback_tested if rollback_plan.tested == true

default rollback_automated := false

rollback_automated if rollback_plan.automated == true

default rollback_tested_points := 0

rollback_tested_points := config.evolution.rollback.tested if rollback_tested

default rollback_automated_points := 0

rollback_automated_points := config.evolution.rollback.automated if rollback_automated

default rollback_score := 0

rollback_score := clamp01(((rollback_plan_points + (config.evolution.rollback.field * rollback_fields_present)) + rollback_tested_points) + rollback_automated_points)

# ---------------------------------------------------------------------------
# Reviews
# ---------------------------------------------------------------------------

required_reviews contains name if {
	some name, review in config.evolution.required_reviews
	evolution_type in review.types
}

required_reviews contains name if {
	some name, review in config.evolution.required_reviews
	review.triggered_by_change in changes_true
}

# The review flags that are boolean true, each read by its own path (the
# spec's names; config.evolution.required_reviews[_].field names one of
# them: test_config_review_fields_are_read).
review_flags_true contains "human_approved" if input.evolution_request.human_approved == true

review_flags_true contains "security_review_passed" if input.evolution_request.security_review_passed == true

review_flags_true contains "peer_reviewed" if input.evolution_request.peer_reviewed == true

satisfied_reviews contains name if {
	some name in required_reviews
	config.evolution.required_reviews[name].field in review_flags_true
}

default missing_reviews := set()

missing_reviews := required_reviews - satisfied_reviews

default approvals_score := 0

approvals_score := 1 if count(required_reviews) == 0

approvals_score := count(satisfied_reviews) / count(required_reviews) if count(required_reviews) > 0

# ---------------------------------------------------------------------------
# Score, path and decision
# ---------------------------------------------------------------------------

raw_score := score if {
	w := config.evolution.weights
	score := ((((w.risk * risk_score) + (w.constitutional * constitutional_score)) + (w.performance * performance_score)) + (w.rollback * rollback_score)) + (w.approvals * approvals_score)
}

default evolution_score := 0

evolution_score := round4(clamp01(raw_score))

# The path, by thresholds tried in order: auto_approve at or above
# auto_approve_threshold, else fast_track at or above fast_track_threshold,
# else human_review. The bodies exclude each other whatever the thresholds
# are (each later one requires that no earlier one holds), so no edit of
# data.json can make them conflict: with auto_approve_threshold 0.9 and
# fast_track_threshold 0.97 (out of order), 0.95 is auto_approve and no
# score is fast_track. A threshold that is not a number is never reached
# (compared with a number it would be ordered by type: Rego orders null
# and booleans below every number, strings above); the decision is then
# the configuration error (configuration_problems) anyway.
default approval_path := "human_review"

approval_path := "auto_approve" if reaches(config.evolution.auto_approve_threshold)

approval_path := "fast_track" if {
	not reaches(config.evolution.auto_approve_threshold)
	reaches(config.evolution.fast_track_threshold)
}

reaches(threshold) if {
	is_number(threshold)
	evolution_score >= threshold
}

default allow := false

allow if approval_path == "auto_approve"

default required_actions := []

required_actions := array.concat(
	config.evolution.path_actions[approval_path],
	[config.evolution.required_reviews[name].action | some name in missing_reviews],
)

default reasons := []

reasons := [msg | some [_, msg] in sort(concerns)] if not allow

default evaluation_details := {}

evaluation_details := {
	"risk": round4(risk_score),
	"adjusted_risk": round4(adjusted_risk),
	"constitutional": round4(constitutional_score),
	"performance": round4(performance_score),
	"rollback": round4(rollback_score),
	"approvals": round4(approvals_score),
	"evolution_type": truncate(evolution_type),
	"required_reviews": sort(required_reviews),
	"missing_reviews": sort(missing_reviews),
	"approval_path": approval_path,
}

# ---------------------------------------------------------------------------
# Concerns ([order, message] pairs)
# ---------------------------------------------------------------------------

concerns contains [0, "Evolution request missing or not an object"] if not request_present

concerns contains [1, msg] if {
	not evolution_type in object.keys(config.evolution.base_risks)
	msg := sprintf("Unknown evolution type '%s' (base risk %v)", [truncate(evolution_type), base_risk])
}

concerns contains [1, msg] if {
	evolution_type in object.keys(config.evolution.base_risks)
	base_risk >= config.evolution.high_base_risk
	msg := sprintf("High-risk evolution type '%s' (base risk %v)", [evolution_type, base_risk])
}

concerns contains [2, "Adds external dependencies"] if has_external_dependencies

concerns contains [3, msg] if {
	some flag, _ in config.evolution.risk_factors
	flag in changes_true
	msg := sprintf("Risky change: %s", [flag])
}

concerns contains [4, msg] if {
	some flag, _ in config.evolution.constitutional_violations
	flag in changes_true
	msg := sprintf("Constitutional violation: %s", [flag])
}

concerns contains [5, "Evolution request constitutional hash missing or mismatched"] if not hash_ok

concerns contains [6, msg] if {
	some name in performance_limit_names
	limit := config.evolution.performance_limits[name]
	delta := object.get(performance_deltas, name, 0)
	delta > limit
	msg := sprintf("Performance %s %v exceeds limit %v", [name, delta, limit])
}

concerns contains [7, "No rollback plan"] if not has_rollback_plan

concerns contains [8, "Rollback plan not tested"] if {
	has_rollback_plan
	not rollback_tested
}

concerns contains [9, "Rollback plan not automated"] if {
	has_rollback_plan
	not rollback_automated
}

concerns contains [10, msg] if {
	some name in missing_reviews
	msg := sprintf("Missing required review: %s", [name])
}

concerns contains [11, msg] if {
	msg := sprintf(
		"Evolution score %v below auto-approval threshold %v (path %s)",
		[evolution_score, config.evolution.auto_approve_threshold, approval_path],
	)
}

# ---------------------------------------------------------------------------
# Configuration errors
# ---------------------------------------------------------------------------

# What the scoring reads from data.acgs.config.evolution that is of a type
# that would make its rule add or require nothing, each as "<path>: <the
# type it needs>": risk factors or constitutional violations that are not
# an object add no risk and take no penalty (a string or an array has no
# flags to find); a performance limit that is not a number above 0 drops
# its delta from the mean (the division fails); a review that is not an
# object, whose types are not an array of strings or whose
# triggered_by_change is not a string is never required (one whose action
# is not a string is required with no action to take, one whose field
# names no flag of the request is never satisfied). The request would
# be scored as if the change were harmless. (A weight, base risk,
# mitigation, penalty or rollback value of another type fails the
# arithmetic, and the score it is part of is 0: fail-closed as it is.)
# The problems of the configuration only (every rule below but the one on
# default_base_risk, which reads the request's type) are a rule of their
# own: it depends on data only, so the compiled evaluator computes it once
# per bundle instead of at every decision (internal/vm, findShared).
configuration_problems contains p if some p in data_configuration_problems

data_configuration_problems contains "evolution: an object" if not is_object(object.get(config, "evolution", null))

data_configuration_problems contains concat("", [name, ": an object"]) if {
	some name in ["base_risks", "risk_factors", "constitutional_violations", "required_reviews"]
	not is_object(object.get(config.evolution, name, null))
}

# A type without its own base risk takes default_base_risk, which must then
# be a number: missing, 1 applied to every type (see base_risk); of
# another type, it failed the arithmetic (review).
configuration_problems contains "default_base_risk: a number" if {
	base_risks := object.get(config.evolution, "base_risks", null)
	is_object(base_risks)
	not evolution_type in object.keys(base_risks)
	not is_number(object.get(config.evolution, "default_base_risk", null))
}

# The two risks added only when the request has them default to 0 when
# missing: an external dependency or a wrong constitutional hash would add
# nothing, and a request for human review was auto-approved (review). They
# must be numbers (a number of another type failed the arithmetic, score 0).
# So must the two thresholds: one missing or of another type is never
# reached, and the request went to a heavier path with no reason naming why
# (without auto_approve_threshold, none at all) (review).
data_configuration_problems contains concat("", [name, ": a number"]) if {
	some name in ["external_dependencies_risk", "hash_mismatch_penalty", "auto_approve_threshold", "fast_track_threshold"]
	not is_number(object.get(config.evolution, name, null))
}

# So must the threshold of the concern "High-risk evolution type" (a
# reason only, never part of the score): missing, it dropped the concern
# from every request; null (below every number) added it to every type,
# a string (above every number) to none (review).
data_configuration_problems contains "high_base_risk: a number" if {
	not is_number(object.get(config.evolution, "high_base_risk", null))
}

# A path's actions that are missing or not an array of strings made the
# request's required_actions [] (the concatenation failed, and the default
# held): a denial for human review required no review, and no missing
# review was named (review). An action that is "" counted as one: [""]
# made a request's required_actions [""], an action nobody can take
# (review). Each must be a non-empty string (actions).
data_configuration_problems contains "path_actions.auto_approve: an array of non-empty strings" if {
	not actions(object.get(config.evolution, ["path_actions", "auto_approve"], null))
}

# A deny path's actions must also be some: with [] a request sent to human
# review (or to fast track, which the spec says requires one human
# sign-off) and missing no review was required to do nothing, where the
# configuration error's denial required the spec's human review (review).
data_configuration_problems contains concat("", ["path_actions.", name, ": a non-empty array of non-empty strings"]) if {
	some name in ["fast_track", "human_review"]
	not some_actions(object.get(config.evolution, ["path_actions", name], null))
}

# Actions: an array of non-empty strings ("" is no action to take).
actions(v) if {
	text.strings(v)
	every x in v {
		x != ""
	}
}

some_actions(v) if {
	actions(v)
	count(v) > 0
}

data_configuration_problems contains "performance_limits: an object of numbers above 0" if {
	not positive_numbers(object.get(config.evolution, "performance_limits", null))
}

# The performance is the mean over the four deltas the spec names: one
# removed dropped its delta from the mean, and a patch at its latency limit
# was auto-approved (review). The limits must hold the four.
data_configuration_problems contains concat("", ["performance_limits.", name, ": a number above 0"]) if {
	limits := object.get(config.evolution, "performance_limits", null)
	is_object(limits)
	some name in performance_limit_names
	not name in object.keys(limits)
}

performance_limit_names := ["complexity_delta", "memory_delta", "latency_delta", "resource_delta"]

data_configuration_problems contains concat("", ["required_reviews.", name, ": an object"]) if {
	some name, review in configured_reviews
	not is_object(review)
}

data_configuration_problems contains concat("", ["required_reviews.", name, ".types: an array of strings"]) if {
	some name, review in configured_reviews
	is_object(review)
	not text.strings(object.get(review, "types", null))
}

data_configuration_problems contains concat("", ["required_reviews.", name, ".triggered_by_change: a string"]) if {
	some name, review in configured_reviews
	t := review.triggered_by_change
	not is_string(t)
}

# A review's action missing was dropped from the request's
# required_actions, one of another type (5) required as it was: a request
# missing a review was denied naming it but not required to obtain it
# (review). One that is "" put "" among them, an action nobody can take
# (review).
data_configuration_problems contains concat("", ["required_reviews.", name, ".action: a non-empty string"]) if {
	some name, review in configured_reviews
	is_object(review)
	not non_empty_string(object.get(review, "action", null))
}

non_empty_string(v) if {
	is_string(v)
	v != ""
}

# A review's field names the flag of the request that satisfies it: one
# missing or naming no flag the policy reads (review_flags_true) was never
# satisfied, and a request that had passed the review was denied for
# missing it, required to obtain it again (review).
data_configuration_problems contains concat("", ["required_reviews.", name, ".field: human_approved, security_review_passed or peer_reviewed"]) if {
	some name, review in configured_reviews
	is_object(review)
	not object.get(review, "field", null) in review_flag_names
}

review_flag_names := {"human_approved", "security_review_passed", "peer_reviewed"}

# The human review path's actions as configured or, when they cannot be
# read (the configuration is in error) or are none, the spec's.
default human_review_actions := ["Full human review of the evolution request"]

human_review_actions := a if {
	a := config.evolution.path_actions.human_review
	some_actions(a)
}

default configured_reviews := {}

configured_reviews := config.evolution.required_reviews if is_object(config.evolution.required_reviews)

# (The four deltas the spec names, those present: a missing one is named
# by its own problem, a key the spec does not name is not read.)
positive_numbers(v) if {
	is_object(v)
	every x in object.filter(v, performance_limit_names) {
		is_number(x)
		x > 0
	}
}

default configuration_error := false

configuration_error if count(configuration_problems) > 0

# The deny of a request whose configuration lacks a value the scoring
# reads: the human review path, with nothing scored, requiring what that
# path requires and a corrected configuration (it required nothing before,
# as if the denied request needed no one's review: review).
configuration_error_decision := {
	"allow": false,
	"compliance_score": 0,
	"evolution_score": 0,
	"approval_path": "human_review",
	"required_actions": array.concat(
		human_review_actions,
		["Correct data.acgs.config.evolution and evaluate the request again"],
	),
	"reasons": [sprintf(
		"Constitution configuration error: data.acgs.config.evolution lacks a value of the type this evaluation needs (%s)",
		[concat(", ", configuration_problems)],
	)],
	"constitutional_hash": config.constitutional_hash,
	"policy": "evolution",
	"evaluation_details": {"configuration_error": true},
}

# ---------------------------------------------------------------------------
# Helpers (numbers only)
# ---------------------------------------------------------------------------

clamp01(x) := min([1, max([0, x])])

# A value taken from the input as a reason or evaluation_details quotes it:
# cut at max_reason_value_length characters.
truncate(s) := text.truncate(s, object.get(config, "max_reason_value_length", null))

round4(x) := round(x * 10000) / 10000
