# METADATA
# title: Constitutional evaluation
# description: |
#   Scores an agent action against the constitution (safety, the five
#   principles, resources, transparency) and decides allow/deny.
#   Every threshold, weight, limit and list comes from data.acgs.config.
#   An operator's edit that leaves a list missing, not an array or with an
#   entry that is not a string reads it as covering every action
#   (prohibited, needing an explanation); one that
#   leaves a number the scoring needs missing or not a number denies with a
#   configuration error (configuration_error_decision), so that every input
#   still gets exactly one decision.
#
#   Inputs are untrusted: a field of the wrong type counts as missing
#   (trust "0.9" is 0, sandbox "true" is false, a string resource is 0).
#   Values are type-checked before any ordering comparison, arithmetic or
#   iteration, so no input can raise a runtime error.
#
#   The action is matched against the configured action lists (prohibited,
#   needing an explanation, rate-limit categories) by its key: lower-cased,
#   with whitespace and invisible characters removed (acgs.text.key). A
#   string action that is not a plain action name (see action_malformed)
#   is refused by the action alone, like a prohibited one.
#
#   Reads input.action and these fields of input.context, each by its
#   full path (so ids, timestamps and any other field an agent adds to the
#   context, the agent or the environment are never read):
#     agent.trust_level, agent.requested_resources (a map of resource
#     name to amount, read whole), environment.sandbox_enabled,
#     environment.audit_enabled, responsible_party, explanation,
#     user_consent, overrides_user_preference, benefit_assessment,
#     harm_risk_assessment, fairness_assessment, affects_protected_groups,
#     current_usage_count.
package acgs.constitutional

import data.acgs.config
import data.acgs.text

# ---------------------------------------------------------------------------
# Prohibited actions and malformed action names: decided by the action alone
# (constant under partial evaluation when input.action is known).
# ---------------------------------------------------------------------------

# The action is refused whatever the context: it is a prohibited action
# (matched by its key, so "System.Execute_Shell", "system.execute_shell "
# and "system.execute_shell<U+200B>" are system.execute_shell), or it is
# not a plain action name at all (a look-alike letter from another script,
# an invisible character, a space). No default: main.rego's bodies test
# `prohibited` and `not prohibited`.
prohibited if listed_prohibited

prohibited if action_malformed

default listed_prohibited := false

# (The list's own entries are plain lower-case names: config_test.rego.)
listed_prohibited if action_key in config.prohibited_actions

# A prohibited list that is missing, not an array or holds an entry that is
# not a string (an operator's edit: such an entry would match no action)
# prohibits every action: the safe reading of a deny list nobody can read.
listed_prohibited if not text.strings(object.get(config, "prohibited_actions", null))

# A plain action name, lower-cased: dot-separated segments of ASCII letters,
# digits and "_" ("-" too after the first, the category), as every action
# in the constitution and its workloads is (data.read_public,
# system.execute_shell). A string that is not one (empty segments, spaces,
# invisible characters, letters of other scripts that look like Latin
# ones) names no action the constitution knows, and could be a prohibited
# one dressed up: it is refused. An empty or missing action is not
# malformed: it is evaluated, and denied as missing.
default action_malformed := false

action_malformed if {
	action != ""
	not regex.match(`^[a-z0-9_]+(\.[a-z0-9_-]+)*$`, lower(action))
}

prohibited_decision := {
	"allow": false,
	"compliance_score": 0,
	"reasons": [prohibited_reason],
	"constitutional_hash": config.constitutional_hash,
	"policy": "constitutional",
	"evaluation_details": {
		"prohibited": true,
		"action": shown_input_action,
		"safety": 0,
	},
} if {
	prohibited
}

prohibited_reason := sprintf("Action '%s' is prohibited by the constitution", [shown_input_action]) if listed_prohibited

prohibited_reason := sprintf(
	"Action '%s' is not a plain action name (dot-separated segments of ASCII letters, digits, '_' and '-') and is refused",
	[shown_input_action],
) if {
	not listed_prohibited
	action_malformed
}

# The action as the prohibited decision quotes it: a string cut as every
# quoted value is, any other JSON value in its %v form, a missing one as
# <missing>. A prohibited list nobody can read prohibits a request with no
# action, or one that is not a string, too, and truncate of such an action
# is undefined: the decision was undefined (review).
shown_input_action := truncate(input.action) if is_string(input.action)

shown_input_action := truncate(sprintf("%v", [a])) if {
	a := input.action
	not is_string(a)
}

shown_input_action := "<missing>" if not has_action

default has_action := false

has_action if {
	_ = input.action
}

# Entry point of this package. The two bodies are mutually exclusive.
decision := prohibited_decision if prohibited

decision := evaluated_decision if not prohibited

# ---------------------------------------------------------------------------
# Views that depend on the action alone. They are separate rules so that
# partial evaluation with input.action known folds them to constants.
# ---------------------------------------------------------------------------

default action := ""

action := input.action if is_string(input.action)

# The action as the action lists match it (see prohibited): "" when it is
# missing or not a string.
action_key := text.key(action)

default category := ""

category := split(action_key, ".")[0]

# The category's own limit or, for a category without one, the default:
# null when the default is missing (a reference to it would be undefined
# for every category, even those with their own limit, and no problem
# would be named: review), so that a category that needs it is a
# configuration error naming default_rate_limit (configuration_problems).
rate_limit := object.get(
	config.constitutional.rate_limits, category,
	object.get(config.constitutional, "default_rate_limit", null),
)

# (Every action needs one when the list is missing, not an array or holds
# an entry that is not a string.)
default needs_explanation := false

needs_explanation if action_key in config.constitutional.actions_requiring_explanation

needs_explanation if not text.strings(object.get(config, ["constitutional", "actions_requiring_explanation"], null))

# Whether the action is refused by itself (for the evaluated decision, which
# main.rego asks for only when it is not).
default refused := false

refused if prohibited

# The action and its category as reasons and evaluation_details quote them:
# cut at max_reason_value_length characters, as every value taken from the
# input is (a 5,000-character action made a 5,055-character reason).
shown_action := truncate(action)

shown_category := truncate(category)

truncate(s) := text.truncate(s, object.get(config, "max_reason_value_length", null))

# ---------------------------------------------------------------------------
# The evaluated decision: the scored decision or, when the configuration
# lacks a number the scoring needs, a deny that says so.
# ---------------------------------------------------------------------------

evaluated_decision := scored_decision

evaluated_decision := configuration_error_decision if not scored_decision

# scored_decision is defined for every input (below), so it is undefined
# only when the configuration lacks a number the scoring of this input
# needs: missing, or of another type (an operator's edit: a weight "0.3" or
# a default_benefit "0.5" is a type error in the arithmetic; a threshold or
# limit of another type is tested for, as a number compared with null or
# a boolean is greater and with a string smaller, which would pass or skip
# every check). Every decision that needs it is then denied, rather than
# scored with a value nobody configured; the rest are unaffected.
configuration_error_decision := {
	"allow": false,
	"compliance_score": 0,
	"reasons": [sprintf(
		"Constitution configuration error: data.acgs.config.constitutional lacks a number this evaluation needs (%s)",
		[concat(", ", configuration_problems)],
	)],
	"constitutional_hash": config.constitutional_hash,
	"policy": "constitutional",
	"evaluation_details": {"configuration_error": true},
}

# What the scoring of this input reads that is missing or not a number, by
# path under data.acgs.config.constitutional.
configuration_problems := array.concat(
	array.concat(
		[concat(".", path) |
			some path in number_paths
			not is_number(object.get(config, array.concat(["constitutional"], path), null))
		],
		[truncate(rate_limit_source) | not is_number(rate_limit)],
	),
	array.concat(
		[p | some p in ["rate_limits", "resource_limits", "concern_thresholds"]; not is_object(object.get(config, ["constitutional", p], null))],
		array.concat(
			[concat(".", ["resource_limits", name]) |
				some name, limit in object.get(config, ["constitutional", "resource_limits"], {})
				not is_number(limit)
			],
			# (Each threshold of an object only: one that is not an object is
			# named as a whole above.)
			[concat(".", ["concern_thresholds", name]) |
				thresholds := object.get(config, ["constitutional", "concern_thresholds"], null)
				is_object(thresholds)
				some name in concern_threshold_names
				not is_number(object.get(thresholds, name, null))
			],
		),
	),
)

# The thresholds of the concerns (harm risk, benefit, fairness): a reason
# only, never part of the score, but one missing or not a number dropped
# its reason silently (review), so they are needed as the others are.
concern_threshold_names := ["max_harm_risk", "min_benefit", "min_fairness_protected_groups"]

default rate_limit_source := "default_rate_limit"

rate_limit_source := concat(".", ["rate_limits", category]) if {
	_ = config.constitutional.rate_limits[category]
}

number_paths := array.concat(
	[
		["compliance_threshold"], ["min_trust_level"], ["min_explanation_length"],
		["safety", "base"], ["safety", "sandbox"], ["safety", "rate_limit"],
		["transparency", "base"], ["transparency", "explanation"], ["transparency", "audit"],
		["weights", "safety"], ["weights", "constitutional"], ["weights", "resources"], ["weights", "transparency"],
	],
	[["principles", k] | some k in [
		"autonomy_no_override", "autonomy_override_with_consent", "autonomy_override_without_consent",
		"default_benefit", "default_harm_risk", "default_fairness",
		"accountability_audit", "accountability_responsible_party",
	]],
)

# ---------------------------------------------------------------------------
# The scored decision: one rule with one body, with every expression in it
# total (defined for any input), so that it never fails for any input.
#
# Written for OPA's partial evaluation (the plan cache specialises the policy
# on type, action and hash). A rule with a `default` is never inlined (it
# stays a support rule, evaluated like any other rule), and a rule with
# several bodies is inlined as several alternative queries; a single total
# body is inlined whole. The body has two parts:
#   - values known once the action is (config, category, rate limit,
#     explanation requirement, prohibited): partial evaluation folds them to
#     constants;
#   - everything that reads input.context, inside one comprehension of
#     exactly one element. Partial evaluation keeps a comprehension as it is,
#     so each intermediate value is computed once; inlined as plain
#     expressions, OPA's copy propagation would repeat a call at every use
#     (the score would be computed four times).
#
# How the context is read totally, one field at a time by its full path
# (never a whole object, so that nothing else in it is read). A reference
# through a missing field or through a non-object (a string context, an
# array agent) is undefined, so [x | x := <path>; <type test>] is [value]
# when the field is there with the right type and [] when it is missing or
# of a wrong type (which therefore count the same):
#   - array.concat([x | ...], [d])[0] is the value, or the default d;
#   - [x | x := <path>; x == true] != [] is true only for boolean true.
# (Written out rather than as helper functions: each function call costs a
# rule evaluation, here on every decision; and a function cannot take a
# path that is undefined.)
# ---------------------------------------------------------------------------

scored_decision := [out |
	# The context's fields, each by its full path; a field missing or of a
	# wrong type takes the default (see above).

	# The agent. Requested resources are a map keyed by resource name, read
	# whole; only numeric requests count.
	trust_level := array.concat([x | x := input.context.agent.trust_level; is_number(x)], [0])[0]
	requested := {name: v |
		is_object(input.context.agent.requested_resources)
		some name, v in input.context.agent.requested_resources
		is_number(v)
	}

	# Flags count only when they are boolean true.
	sandbox_enabled := [x | x := input.context.environment.sandbox_enabled; x == true] != []
	audit_enabled := [x | x := input.context.environment.audit_enabled; x == true] != []
	overrides := [x | x := input.context.overrides_user_preference; x == true] != []
	consent := [x | x := input.context.user_consent; x == true] != []
	protected_groups := [x | x := input.context.affects_protected_groups; x == true] != []

	# A responsible party is a non-empty string; an explanation counts only
	# as a string, and by its characters.
	has_party := [x | x := input.context.responsible_party; is_string(x); x != ""] != []
	explanation_length := count(array.concat([x | x := input.context.explanation; is_string(x)], [""])[0])
	usage_count := array.concat([x | x := input.context.current_usage_count; is_number(x)], [0])[0]

	# Assessments given as numbers are clamped to [0,1]; missing ones take the
	# configured default (in [0,1]: checked by test_config_defaults_in_range).
	benefit := array.concat([min([1, max([0, x])]) | x := input.context.benefit_assessment; is_number(x)], [default_benefit])[0]
	harm_risk := array.concat([min([1, max([0, x])]) | x := input.context.harm_risk_assessment; is_number(x)], [default_harm_risk])[0]
	fairness := array.concat([min([1, max([0, x])]) | x := input.context.fairness_assessment; is_number(x)], [default_fairness])[0]

	# Sums are written sum([a, b, c]) rather than (a + b) + c: one built-in call
	# instead of a chain, with the same value for numbers below 2^64 (these
	# are scores and weights). Each + rounds to a 64-bit binary float and
	# prints the shortest decimal that reads back as that float, and sum adds
	# left to right at the same precision, so both round at the same steps. (Checked against the chained form on 60,000
	# generated inputs; decisions.golden.jsonl.gz was written by it.)

	# Safety
	within_rate_limit := usage_count < rate
	safety := sum([safety_base, object.get(sandbox_points, sandbox_enabled, 0), object.get(rate_points, within_rate_limit, 0)])

	# Constitutional principles (mean of five)
	# (by [overrides user preference][user consent])
	autonomy := object.get(autonomy_by, [overrides, consent], 0)
	non_maleficence := 1 - harm_risk
	accountability := sum([object.get(audit_accountability, audit_enabled, 0), object.get(party_accountability, has_party, 0)])

	# (Also: OPA prints partial-evaluation residuals without parentheses, and
	# `(a + b) / 5` would read back as `a + b / 5`.)
	constitutional := sum([autonomy, benefit, non_maleficence, fairness, accountability]) / 5

	# Resources: mean over the configured limits of min(1, limit / max(requested, 1)),
	# computed as 1 - (sum of the shortfalls) / (number of limits) so that only the
	# limits actually exceeded cost any arithmetic: with none, resources is 1.
	# Only numeric requests count; anything else is 0. A limit can only be
	# exceeded by a resource that is requested, or (as max(0, 1) = 1) by a
	# limit below 1 that is not: only those are visited, in name order (the
	# order of the sum) as when iterating over every limit.
	shortfalls := [shortfall |
		some name, req in object.union(unrequested_exceeded, requested)
		limit := limits[name]
		m := max([req, 1])
		m > limit
		shortfall := 1 - (limit / m)
	]
	resources := array.concat([r | count(shortfalls) > 0; r := 1 - (sum(shortfalls) / n_limits)], [1])[0]

	# Transparency
	explanation_ok := object.get({false: true}, needs, explanation_length >= min_explanation)
	transparency := sum([transparency_base, object.get(explanation_points, explanation_ok, 0), object.get(audit_points, audit_enabled, 0)])

	# Score and decision
	raw_score := sum([w_safety * safety, w_constitutional * constitutional, w_resources * resources, w_transparency * transparency])
	score := round(min([1, max([0, raw_score])]) * 10000) / 10000
	score_ok := score >= threshold
	trust_ok := trust_level >= min_trust
	allow := [act != "", is_prohibited, score_ok, trust_ok] == [true, false, true, true]

	# Every failed check in words, in a fixed order; only for a deny.
	reasons := [msg |
		allow == false
		some part in [
			[m | act == ""; m := "Action is missing or not a string"],
			[m | trust_ok == false; m := sprintf("Agent trust level %v below required %v", [trust_level, min_trust])],
			[m | sandbox_enabled == false; m := "Sandbox is not enabled"],
			[m |
				within_rate_limit == false
				m := sprintf("Rate limit exceeded for category '%s': usage %v, limit %v", [shown_cat, usage_count, rate])
			],
			sort([m |
				some name, limit in limits
				object.get(requested, name, 0) > limit
				m := sprintf("Requested %s %v exceeds limit %v", [name, requested[name], limit])
			]),
			[m | audit_enabled == false; m := "Audit logging is not enabled (no audit trail)"],
			[m | has_party == false; m := "No responsible party specified"],
			[m |
				needs
				explanation_length == 0
				m := sprintf("Action '%s' requires an explanation but none was given", [shown_act])
			],
			[m |
				needs
				explanation_length > 0
				explanation_length < min_explanation
				m := sprintf(
					"Explanation for action '%s' is too short (%d characters, minimum %v)",
					[shown_act, explanation_length, min_explanation],
				)
			],
			[m | harm_risk > max_harm_risk; m := sprintf("Harm risk %v exceeds %v", [harm_risk, max_harm_risk])],
			[m | benefit < min_benefit; m := sprintf("Benefit assessment %v below %v", [benefit, min_benefit])],
			[m |
				protected_groups
				fairness < min_fairness
				m := sprintf(
					"Fairness assessment %v below %v while protected groups are affected",
					[fairness, min_fairness],
				)
			],
			[m | overrides; consent == false; m := "Overrides user preference without consent"],
			[m | score_ok == false; m := sprintf("Compliance score %v below %v", [score, threshold])],
		]
		some msg in part
	]

	out := {
		"allow": allow,
		"compliance_score": score,
		"reasons": reasons,
		"constitutional_hash": hash,
		"policy": "constitutional",
		# Sums of configured weights are exact; quotients and differences are
		# rounded (OPA's decimal arithmetic gives 1 - 0.9 = 0.10000000000000000002).
		"evaluation_details": {
			"safety": safety,
			"constitutional": round(constitutional * 10000) / 10000,
			"resources": array.concat([r | resources != 1; r := round(resources * 10000) / 10000], [1])[0],
			"transparency": transparency,
			"autonomy": autonomy,
			"beneficence": benefit,
			"non_maleficence": round(non_maleficence * 10000) / 10000,
			"fairness": fairness,
			"accountability": accountability,
			"trust_level": trust_level,
			"action_category": shown_cat,
		},
	}
][0] if {
	# Known once the action is: partial evaluation folds all of these to
	# constants, so the comprehension above reads no data at all. (The type
	# tests make the body undefined for a configuration that lacks a
	# number: see evaluated_decision.)
	c := config.constitutional
	p := c.principles
	max_harm_risk := c.concern_thresholds.max_harm_risk
	is_number(max_harm_risk)
	min_benefit := c.concern_thresholds.min_benefit
	is_number(min_benefit)
	min_fairness := c.concern_thresholds.min_fairness_protected_groups
	is_number(min_fairness)
	hash := config.constitutional_hash
	act := action
	shown_act := shown_action
	shown_cat := shown_category
	rate := rate_limit
	is_number(rate)
	needs := needs_explanation
	is_prohibited := refused
	limits := c.resource_limits
	is_object(limits)
	[name | some name, limit in limits; not is_number(limit)] == []
	n_limits := count(limits)
	unrequested_exceeded := {name: 0 | some name, limit in limits; 1 > limit}
	min_explanation := c.min_explanation_length
	is_number(min_explanation)
	min_trust := c.min_trust_level
	is_number(min_trust)
	threshold := c.compliance_threshold
	is_number(threshold)
	default_benefit := p.default_benefit
	default_harm_risk := p.default_harm_risk
	default_fairness := p.default_fairness
	safety_base := c.safety.base
	sandbox_points := {true: c.safety.sandbox}
	rate_points := {true: c.safety.rate_limit}
	autonomy_by := {
		true: {
			true: object.get(p, "autonomy_override_with_consent", 0),
			false: object.get(p, "autonomy_override_without_consent", 0),
		},
		false: {true: object.get(p, "autonomy_no_override", 0), false: object.get(p, "autonomy_no_override", 0)},
	}
	audit_accountability := {true: p.accountability_audit}
	party_accountability := {true: p.accountability_responsible_party}
	transparency_base := c.transparency.base
	explanation_points := {true: c.transparency.explanation}
	audit_points := {true: c.transparency.audit}
	[w_safety, w_constitutional, w_resources, w_transparency] := [
		c.weights.safety, c.weights.constitutional,
		c.weights.resources, c.weights.transparency,
	]
}
