package acgs.config_test

import data.acgs.config
import data.acgs.constitutional
import data.acgs.data as data_access
import data.acgs.evolution
import data.acgs.main
import data.acgs.main_test
import data.acgs.text
import data.acgs.tool_call
import data.acgs.tool_call_test

# ---------------------------------------------------------------------------
# A lint of data.json, stricter than the runtime
#
# problems(cfg) is not the policy's check of its configuration: that is
# each package's configuration_problems (below, runtime_problems), which a
# decision reads. The runtime names a value of the type its rule needs
# only where a value of another type would make the rule fire wrongly or
# never, and reads some such values safely instead (a deny list nobody can
# read covers everything); a value of the right type it takes as the
# operator's tuning. This lint is what a reviewer of a change to the
# shipped data.json wants besides: bounds (scores in [0, 1]), weights
# summing to 1, thresholds in order, names spelled as the rules match
# them, keys no rule reads. data.json passes both
# (test_data_json_has_no_problems, test_data_json_passes_the_runtime_checks);
# every configuration the lint calls broken and the runtime accepts is
# listed, with what the decisions then are (runtime_accepts), so that the
# two disagree in the open.
# ---------------------------------------------------------------------------

# Every problem of a configuration, in words; none for data.json.
problems(cfg) := {p | some p in all_problems(cfg)}

all_problems(cfg) := array.concat(
	array.concat(top_problems(cfg), constitutional_problems(object.get(cfg, "constitutional", null))),
	array.concat(
		array.concat(evolution_problems(object.get(cfg, "evolution", null)), data_access_problems(object.get(cfg, "data_access", null))),
		tool_call_problems(object.get(cfg, "tool_call", null)),
	),
)

test_data_json_has_no_problems if {
	problems(config) == set()
}

# --- checks, each a list of problems -----------------------------------------

not_object(where, v) := [sprintf("%s must be an object", [where]) | not is_object(v)]

# A number in [lo, hi].
bad_number(where, v, lo, hi) := [sprintf("%s must be a number in [%v, %v], is %v", [where, lo, hi, v]) |
	not in_range(v, lo, hi)
]

in_range(v, lo, hi) if {
	is_number(v)
	v >= lo
	v <= hi
}

# A whole number >= lo.
bad_count(where, v, lo) := [sprintf("%s must be a whole number >= %v, is %v", [where, lo, v]) |
	not whole_at_least(v, lo)
]

whole_at_least(v, lo) if {
	is_number(v)
	floor(v) == v
	v >= lo
}

bad_boolean(where, v) := [sprintf("%s must be a boolean, is %v", [where, v]) | not is_boolean(v)]

bad_string(where, v) := [sprintf("%s must be a non-empty string, is %v", [where, v]) | not non_empty_string(v)]

non_empty_string(v) if {
	is_string(v)
	v != ""
}

bad_strings(where, v) := [sprintf("%s must be an array of non-empty strings, is %v", [where, v]) | not strings(v)]

strings(v) if {
	is_array(v)
	every x in v {
		non_empty_string(x)
	}
}

# An object whose every member is a number in [lo, hi].
bad_numbers(where, v, lo, hi) := array.concat(not_object(where, v), [p |
	is_object(v)
	some k, x in v
	some p in bad_number(sprintf("%s.%s", [where, k]), x, lo, hi)
])

# The named members of an object, each a number in [lo, hi].
bad_members(where, v, names, lo, hi) := array.concat(not_object(where, v), [p |
	is_object(v)
	some k in names
	some p in bad_number(sprintf("%s.%s", [where, k]), object.get(v, k, null), lo, hi)
])

# Weights: the named members, each in [0, 1], summing to 1.
bad_weights(where, v, names) := array.concat(bad_members(where, v, names, 0, 1), [sprintf("%s must sum to 1, sum to %v", [where, s]) |
	is_object(v)
	s := sum([x | some k in names; x := object.get(v, k, 0); is_number(x)])
	abs(s - 1) > 0.000001
])

# Parts of a score: the named members, each in [0, 1], summing to at most 1
# (so that the score stays in [0, 1]).
bad_parts(where, v, names) := array.concat(bad_members(where, v, names, 0, 1), [sprintf("%s must sum to at most 1, sum to %v", [where, s]) |
	is_object(v)
	s := sum([x | some k in names; x := object.get(v, k, 0); is_number(x)])
	s > 1.000001
])

# A plain action name (what acgs.constitutional does not refuse), lower-case.
bad_actions(where, v) := array.concat(bad_strings(where, v), [sprintf("%s: '%s' is not a plain lower-case action name", [where, a]) |
	is_array(v)
	some a in v
	is_string(a)
	not regex.match(`^[a-z0-9_]+(\.[a-z0-9_-]+)*$`, a)
])

# --- sections ----------------------------------------------------------------

top_problems(cfg) := array.concat(
	array.concat(
		[p | some p in bad_string("constitutional_hash", object.get(cfg, "constitutional_hash", null))],
		bad_count("max_reason_value_length", object.get(cfg, "max_reason_value_length", null), 1),
	),
	array.concat(
		bad_strings("packages", object.get(cfg, "packages", null)),
		array.concat(bad_actions("prohibited_actions", object.get(cfg, "prohibited_actions", null)), bad_actions("common_actions", object.get(cfg, "common_actions", null))),
	),
)

constitutional_problems(c) := not_object("constitutional", c) if not is_object(c)

constitutional_problems(c) := concat_all([
	bad_number("constitutional.compliance_threshold", object.get(c, "compliance_threshold", null), 0, 1),
	bad_number("constitutional.min_trust_level", object.get(c, "min_trust_level", null), 0, 1),
	bad_weights("constitutional.weights", object.get(c, "weights", null), ["safety", "constitutional", "resources", "transparency"]),
	bad_parts("constitutional.safety", object.get(c, "safety", null), ["base", "sandbox", "rate_limit"]),
	bad_numbers("constitutional.rate_limits", object.get(c, "rate_limits", null), 0, 1e15),
	[sprintf("constitutional.rate_limits: '%s' is not a plain lower-case category (an action's category is looked up lower-cased)", [k]) |
		some k, _ in object.get(c, "rate_limits", {})
		not regex.match(`^[a-z0-9_]+$`, k)
	],
	bad_count("constitutional.default_rate_limit", object.get(c, "default_rate_limit", null), 0),
	bad_numbers("constitutional.resource_limits", object.get(c, "resource_limits", null), 0, 1e15),
	bad_parts("constitutional.transparency", object.get(c, "transparency", null), ["base", "explanation", "audit"]),
	bad_count("constitutional.min_explanation_length", object.get(c, "min_explanation_length", null), 0),
	bad_actions("constitutional.actions_requiring_explanation", object.get(c, "actions_requiring_explanation", null)),
	bad_members(
		"constitutional.principles", object.get(c, "principles", null), [
			"autonomy_no_override", "autonomy_override_with_consent", "autonomy_override_without_consent",
			"default_benefit", "default_harm_risk", "default_fairness",
		],
		0, 1,
	),
	bad_parts("constitutional.principles", object.get(c, "principles", null), ["accountability_audit", "accountability_responsible_party"]),
	bad_members("constitutional.concern_thresholds", object.get(c, "concern_thresholds", null), ["max_harm_risk", "min_benefit", "min_fairness_protected_groups"], 0, 1),
]) if {
	is_object(c)
}

evolution_problems(e) := not_object("evolution", e) if not is_object(e)

evolution_problems(e) := concat_all([
	bad_weights("evolution.weights", object.get(e, "weights", null), ["risk", "constitutional", "performance", "rollback", "approvals"]),
	bad_number("evolution.auto_approve_threshold", object.get(e, "auto_approve_threshold", null), 0, 1),
	bad_number("evolution.fast_track_threshold", object.get(e, "fast_track_threshold", null), 0, 1),
	[sprintf("evolution.fast_track_threshold %v must not be above auto_approve_threshold %v", [f, a]) |
		a := object.get(e, "auto_approve_threshold", null)
		f := object.get(e, "fast_track_threshold", null)
		is_number(a)
		is_number(f)
		f > a
	],
	bad_numbers("evolution.base_risks", object.get(e, "base_risks", null), 0, 1),
	bad_number("evolution.default_base_risk", object.get(e, "default_base_risk", null), 0, 1),
	bad_number("evolution.high_base_risk", object.get(e, "high_base_risk", null), 0, 1),
	bad_number("evolution.external_dependencies_risk", object.get(e, "external_dependencies_risk", null), 0, 1),
	bad_numbers("evolution.risk_factors", object.get(e, "risk_factors", null), 0, 1),
	bad_numbers("evolution.mitigations", object.get(e, "mitigations", null), 0, 1),
	bad_numbers("evolution.constitutional_violations", object.get(e, "constitutional_violations", null), 0, 1),
	bad_number("evolution.hash_mismatch_penalty", object.get(e, "hash_mismatch_penalty", null), 0, 1),
	bad_numbers("evolution.performance_limits", object.get(e, "performance_limits", null), 0.000001, 1e15),
	[p |
		limits := object.get(e, "performance_limits", null)
		is_object(limits)
		some name in ["complexity_delta", "memory_delta", "latency_delta", "resource_delta"]
		not name in object.keys(limits)
		some p in bad_number(sprintf("evolution.performance_limits.%s", [name]), null, 0.000001, 1e15)
	],
	[sprintf("evolution.performance_limits.%s is not a delta the spec names (complexity_delta, memory_delta, latency_delta, resource_delta): it is not scored", [name]) |
		some name, _ in object.get(e, "performance_limits", {})
		not name in {"complexity_delta", "memory_delta", "latency_delta", "resource_delta"}
	],
	bad_members("evolution.rollback", object.get(e, "rollback", null), ["plan", "field", "tested", "automated"], 0, 1),
	bad_strings("evolution.rollback.fields", object.get(e, ["rollback", "fields"], null)),
	not_object("evolution.required_reviews", object.get(e, "required_reviews", null)),
	[p |
		some name, review in object.get(e, "required_reviews", {})
		some p in review_problems(sprintf("evolution.required_reviews.%s", [name]), review)
	],
	[p |
		some path in ["auto_approve", "fast_track", "human_review"]
		some p in bad_strings(sprintf("evolution.path_actions.%s", [path]), object.get(e, ["path_actions", path], null))
	],
	[sprintf("evolution.path_actions.%s must not be empty (a denial on that path must require an action)", [path]) |
		some path in ["fast_track", "human_review"]
		object.get(e, ["path_actions", path], null) == []
	],
]) if {
	is_object(e)
}

review_problems(where, r) := not_object(where, r) if not is_object(r)

review_problems(where, r) := concat_all([
	bad_string(sprintf("%s.field", [where]), object.get(r, "field", null)),
	[p |
		not object.get(r, "field", null) in evolution.review_flag_names
		p := sprintf("%s.field must name a flag the policy reads (human_approved, security_review_passed, peer_reviewed)", [where])
	],
	bad_strings(sprintf("%s.types", [where]), object.get(r, "types", null)),
	bad_string(sprintf("%s.action", [where]), object.get(r, "action", null)),
	[p |
		t := object.get(r, "triggered_by_change", "absent")
		t != "absent"
		some p in bad_string(sprintf("%s.triggered_by_change", [where]), t)
	],
]) if {
	is_object(r)
}

data_access_problems(d) := not_object("data_access", d) if not is_object(d)

data_access_problems(d) := concat_all([
	bad_number("data_access.access_threshold", object.get(d, "access_threshold", null), 0, 1),
	bad_weights("data_access.weights", object.get(d, "weights", null), ["classification", "consent", "purpose", "minimisation", "retention", "encryption"]),
	bad_strings("data_access.sensitive_categories", object.get(d, "sensitive_categories", null)),
	bad_members("data_access.purpose_scores", object.get(d, "purpose_scores", null), ["allowed", "not_allowed", "missing"], 0, 1),
	bad_members("data_access.bulk_indicators", object.get(d, "bulk_indicators", null), ["max_record_count", "max_fields", "minimisation_denominator_extra"], 0, 1e15),
	bad_members("data_access.retention_scores", object.get(d, "retention_scores", null), ["compliant", "violations", "missing"], 0, 1),
	bad_numbers("data_access.retention_limits_seconds", object.get(d, "retention_limits_seconds", null), 0, 1e15),
	[p |
		limits := object.get(d, "retention_limits_seconds", null)
		is_object(limits)
		some name in ["personal_identifiable_information", "financial_information", "health_records", "authentication_credentials"]
		not name in object.keys(limits)
		some p in bad_number(sprintf("data_access.retention_limits_seconds.%s", [name]), null, 0, 1e15)
	],
]) if {
	is_object(d)
}

tool_call_problems(t) := not_object("tool_call", t) if not is_object(t)

tool_call_problems(t) := concat_all([
	[p |
		some name in [
			"prohibited_tools", "approval_required_tools", "file_roots", "path_argument_names",
			"shell_argument_names", "url_argument_names", "host_argument_names", "allowed_hosts",
			"secret_argument_names",
		]
		some p in bad_strings(sprintf("tool_call.%s", [name]), object.get(t, name, null))
	],
	# (lists that may be empty)
	[p |
		some name in ["blocked_upstreams", "shell_tools_allowed", "secret_tools_allowed"]
		v := object.get(t, name, null)
		not strings(v)
		p := sprintf("tool_call.%s must be an array of non-empty strings, is %v", [name, v])
	],
	# (the lists matched against a normalised form: an entry spelled
	# otherwise matches nothing)
	[sprintf("tool_call.%s: '%s' never matches (argument names are matched lower-cased, with '_' for '-')", [name, n]) |
		some name in ["path_argument_names", "shell_argument_names", "url_argument_names", "host_argument_names", "secret_argument_names"]
		some n in object.get(t, name, [])
		is_string(n)
		n != replace(lower(n), "-", "_")
	],
	[sprintf("tool_call.%s: '%s' never matches (tool names are matched without whitespace or invisible characters)", [name, n]) |
		some name in ["prohibited_tools", "approval_required_tools"]
		some n in object.get(t, name, [])
		is_string(n)
		lower(n) != text.key(n)
	],
	[sprintf("tool_call.file_roots: '%s' is not an absolute path", [r]) |
		some r in object.get(t, "file_roots", [])
		is_string(r)
		not startswith(r, "/")
	],
	not_object("tool_call.agent_upstreams", object.get(t, "agent_upstreams", null)),
	[p |
		some agent, ups in object.get(t, "agent_upstreams", {})
		some p in bad_strings(sprintf("tool_call.agent_upstreams.%s", [agent]), ups)
	],
	not_object("tool_call.upstream_file_roots", object.get(t, "upstream_file_roots", null)),
	[p |
		some up, roots in object.get(t, "upstream_file_roots", {})
		some p in bad_strings(sprintf("tool_call.upstream_file_roots.%s", [up]), roots)
	],
	bad_boolean("tool_call.require_agent_identity", object.get(t, "require_agent_identity", null)),
	bad_boolean("tool_call.require_session", object.get(t, "require_session", null)),
	bad_count("tool_call.rate_limit.default_per_minute", object.get(t, ["rate_limit", "default_per_minute"], null), 0),
	not_object("tool_call.rate_limit.per_agent", object.get(t, ["rate_limit", "per_agent"], null)),
	[p |
		some agent, n in object.get(t, ["rate_limit", "per_agent"], {})
		some p in bad_count(sprintf("tool_call.rate_limit.per_agent.%s", [agent]), n, 0)
	],
	bad_patterns("tool_call.shell_patterns", object.get(t, "shell_patterns", null)),
	bad_patterns("tool_call.secret_patterns", object.get(t, "secret_patterns", null)),
	bad_members("tool_call.scores", object.get(t, "scores", null), ["allow", "approval_required", "deny"], 0, 1),
]) if {
	is_object(t)
}

# An object of kind -> regular expression, each valid.
bad_patterns(where, v) := array.concat(not_object(where, v), [sprintf("%s.%s must be a valid regular expression", [where, k]) |
	is_object(v)
	some k, x in v
	not valid_regex(x)
])

valid_regex(x) if {
	is_string(x)
	regex.is_valid(x)
}

concat_all(lists) := [x | some l in lists; some x in l]

# --- what the runtime does with a broken configuration -----------------------

edited(ops) := json.patch(config, ops)

# The problems the rule files' own checks name for cfg (each package's
# configuration_problems, which its decisions read), as
# "<package>: <problem>", for requests that read every setting those
# checks look at: an action whose category has its own rate limit and one
# whose category has none, an evolution type with its own base risk and
# one without, a data request with a retention policy, a tool call of an
# agent without a rate limit of its own.
runtime_problems(cfg) := ((constitutional_runtime_problems(cfg) | evolution_runtime_problems(cfg)) | data_access_runtime_problems(cfg)) | tool_call_runtime_problems(cfg)

constitutional_runtime_problems(cfg) := {concat(": ", ["constitutional", p]) |
	some x in [main_test.safe_input, unknown_category]
	some p in constitutional.configuration_problems with input as x with data.acgs.config as cfg
}

evolution_runtime_problems(cfg) := {concat(": ", ["evolution", p]) |
	some x in [main_test.complex_input, unknown_evolution_type]
	some p in evolution.configuration_problems with input as x with data.acgs.config as cfg
}

data_access_runtime_problems(cfg) := {concat(": ", ["data_access", p]) |
	some p in data_access.configuration_problems with input as main_test.data_access_input with data.acgs.config as cfg
}

tool_call_runtime_problems(cfg) := {concat(": ", ["tool_call", p]) |
	some p in tool_call.configuration_problems with input as tool_base with data.acgs.config as cfg
}

unknown_category := json.patch(main_test.safe_input, [{"op": "replace", "path": "/action", "value": "custom.thing"}])

unknown_evolution_type := evolution_change([{"op": "replace", "path": "/evolution_request/type", "value": "hotfix"}])

test_data_json_passes_the_runtime_checks if {
	runtime_problems(config) == set()
}

# [edit, a problem the lint names, what the runtime does]: the problem its
# configuration_problems names, or "accepted" when it names none (the edit
# is then listed in runtime_accepts, with what the decisions are).
broken_configurations := [
	[[{"op": "replace", "path": "/constitutional/principles/default_benefit", "value": "0.5"}], "constitutional.principles.default_benefit must be a number in [0, 1], is 0.5", "constitutional: principles.default_benefit"],
	[thresholds_out_of_order, "evolution.fast_track_threshold 0.97 must not be above auto_approve_threshold 0.9", "accepted"],
	[[{"op": "replace", "path": "/tool_call/upstream_file_roots", "value": {"notes": false}}], "tool_call.upstream_file_roots.notes must be an array of non-empty strings, is false", "accepted"],
	[weights_not_summing_to_1, "constitutional.weights must sum to 1, sum to 1.1", "accepted"],
	[[{"op": "replace", "path": "/tool_call/rate_limit/default_per_minute", "value": "120"}], "tool_call.rate_limit.default_per_minute must be a whole number >= 0, is 120", "tool_call: rate_limit.default_per_minute: a number"],
	[[{"op": "add", "path": "/tool_call/secret_patterns/x", "value": "("}], "tool_call.secret_patterns.x must be a valid regular expression", "tool_call: secret_patterns: an object of regular expressions"],
	[[{"op": "add", "path": "/prohibited_actions/-", "value": "System.Execute_Shell"}], "prohibited_actions: 'System.Execute_Shell' is not a plain lower-case action name", "accepted"],
	[[{"op": "replace", "path": "/data_access/sensitive_categories", "value": "health_records"}], "data_access.sensitive_categories must be an array of non-empty strings, is health_records", "accepted"],
	[[{"op": "remove", "path": "/evolution/required_reviews/peer_review/field"}], "evolution.required_reviews.peer_review.field must be a non-empty string, is null", "evolution: required_reviews.peer_review.field: human_approved, security_review_passed or peer_reviewed"],
	[[{"op": "replace", "path": "/max_reason_value_length", "value": "200"}], "max_reason_value_length must be a whole number >= 1, is 200", "accepted"],
	# Names the rules look up by their normalised form (review): an
	# entry spelled otherwise never matches, and its rule never fires.
	[[{"op": "add", "path": "/constitutional/rate_limits/Network", "value": 5}], "constitutional.rate_limits: 'Network' is not a plain lower-case category (an action's category is looked up lower-cased)", "accepted"],
	[[{"op": "add", "path": "/tool_call/secret_argument_names/-", "value": "X-Api-Key"}], "tool_call.secret_argument_names: 'X-Api-Key' never matches (argument names are matched lower-cased, with '_' for '-')", "accepted"],
	[[{"op": "add", "path": "/tool_call/path_argument_names/-", "value": "File"}], "tool_call.path_argument_names: 'File' never matches (argument names are matched lower-cased, with '_' for '-')", "accepted"],
	[[{"op": "add", "path": "/tool_call/prohibited_tools/-", "value": "*__run shell"}], "tool_call.prohibited_tools: '*__run shell' never matches (tool names are matched without whitespace or invisible characters)", "accepted"],
	[[{"op": "add", "path": "/tool_call/approval_required_tools/-", "value": "*__send\u200bmail"}], "tool_call.approval_required_tools: '*__send\u200bmail' never matches (tool names are matched without whitespace or invisible characters)", "accepted"],
	# (the edits of the tests below, each named by both)
	[[{"op": "remove", "path": "/data_access/retention_limits_seconds/financial_information"}], "data_access.retention_limits_seconds.financial_information must be a number in [0, 1e+15], is null", "data_access: retention_limits_seconds.financial_information: a number"],
	[[{"op": "replace", "path": "/evolution/path_actions/human_review", "value": []}], "evolution.path_actions.human_review must not be empty (a denial on that path must require an action)", "evolution: path_actions.human_review: a non-empty array of non-empty strings"],
	[[{"op": "remove", "path": "/evolution/performance_limits/latency_delta"}], "evolution.performance_limits.latency_delta must be a number in [1e-06, 1e+15], is null", "evolution: performance_limits.latency_delta: a number above 0"],
	[[{"op": "add", "path": "/evolution/performance_limits/unused_delta", "value": 1}], "evolution.performance_limits.unused_delta is not a delta the spec names (complexity_delta, memory_delta, latency_delta, resource_delta): it is not scored", "accepted"],
	[[{"op": "replace", "path": "/evolution/path_actions/fast_track", "value": [""]}], "evolution.path_actions.fast_track must be an array of non-empty strings, is [\"\"]", "evolution: path_actions.fast_track: a non-empty array of non-empty strings"],
	[[{"op": "replace", "path": "/evolution/required_reviews/human_approval/action", "value": ""}], "evolution.required_reviews.human_approval.action must be a non-empty string, is ", "evolution: required_reviews.human_approval.action: a non-empty string"],
]

thresholds_out_of_order := [
	{"op": "replace", "path": "/evolution/auto_approve_threshold", "value": 0.9},
	{"op": "replace", "path": "/evolution/fast_track_threshold", "value": 0.97},
]

weights_not_summing_to_1 := [{"op": "replace", "path": "/constitutional/weights/safety", "value": 0.4}]

test_lint_finds_problems_in_broken_configurations if {
	every c in broken_configurations {
		c[1] in problems(edited(c[0]))
	}
	problems({}) == {
		"constitutional must be an object", "evolution must be an object",
		"data_access must be an object", "tool_call must be an object",
		"constitutional_hash must be a non-empty string, is null",
		"max_reason_value_length must be a whole number >= 1, is null",
		"packages must be an array of non-empty strings, is null",
		"prohibited_actions must be an array of non-empty strings, is null",
		"common_actions must be an array of non-empty strings, is null",
	}
}

test_runtime_names_or_accepts_broken_configurations if {
	every c in broken_configurations {
		runtime_verdict(c[0], c[2])
	}
	every name in ["evolution: evolution: an object", "data_access: data_access: an object", "tool_call: tool_call: an object", "constitutional: rate_limits", "constitutional: weights.safety"] {
		name in runtime_problems({})
	}
}

runtime_verdict(ops, "accepted") if {
	runtime_problems(edited(ops)) == set()
	accepted(ops)
}

runtime_verdict(ops, problem) if {
	problem != "accepted"
	problem in runtime_problems(edited(ops))
}

accepted(ops) if {
	some a in runtime_accepts
	a[0] == ops
}

# The configurations the lint calls broken and the runtime accepts (names
# no problem of), each with what the decisions then are:
#   "unchanged": the setting is not read, or read as the shipped one is
#     (every decision of accepted_probes is the shipped configuration's);
#   "safer": read safely, it denies more (no decision of accepted_probes
#     is more permissive than the shipped configuration's: allow over
#     approval_required over deny);
#   "retuned": the runtime takes it as the operator's tuning, and
#     decisions may go either way.
runtime_accepts := [
	# a value cut at 200 characters, as shipped
	[[{"op": "replace", "path": "/max_reason_value_length", "value": "200"}], "unchanged"],
	[[{"op": "replace", "path": "/max_reason_value_length", "value": null}], "unchanged"],
	[[{"op": "replace", "path": "/max_reason_value_length", "value": -1}], "unchanged"],
	[[{"op": "remove", "path": "/max_reason_value_length"}], "unchanged"],
	# an entry spelled otherwise than the rules match it, never matched
	[[{"op": "add", "path": "/prohibited_actions/-", "value": "System.Execute_Shell"}], "unchanged"],
	[[{"op": "add", "path": "/constitutional/rate_limits/Network", "value": 5}], "unchanged"],
	[[{"op": "add", "path": "/tool_call/secret_argument_names/-", "value": "X-Api-Key"}], "unchanged"],
	[[{"op": "add", "path": "/tool_call/path_argument_names/-", "value": "File"}], "unchanged"],
	[[{"op": "add", "path": "/tool_call/prohibited_tools/-", "value": "*__run shell"}], "unchanged"],
	[[{"op": "add", "path": "/tool_call/approval_required_tools/-", "value": "*__send\u200bmail"}], "unchanged"],
	# a key no rule reads (test_evolution_performance_limit_unknown_key)
	[[{"op": "add", "path": "/evolution/performance_limits/unused_delta", "value": 1}], "unchanged"],
	# deny lists nobody can read cover everything (test_lists_not_arrays,
	# test_action_lists_with_entries_not_strings,
	# test_sensitive_categories_with_entries_not_strings,
	# test_tool_call_name_lists_with_entries_not_strings); roots that are
	# not an array are no roots (test_upstream_file_roots_not_an_array)
	[[{"op": "replace", "path": "/prohibited_actions", "value": "system.execute_shell"}], "safer"],
	[[{"op": "replace", "path": "/constitutional/actions_requiring_explanation", "value": false}], "safer"],
	[[{"op": "replace", "path": "/data_access/sensitive_categories", "value": "health_records"}], "safer"],
	[[{"op": "replace", "path": "/data_access/sensitive_categories", "value": false}], "safer"],
	[[{"op": "replace", "path": "/data_access/sensitive_categories", "value": ["health_records", 5]}], "safer"],
	[[{"op": "replace", "path": "/tool_call/prohibited_tools", "value": "*__exec"}], "safer"],
	[[{"op": "replace", "path": "/tool_call/prohibited_tools", "value": [{"glob": "*__exec"}]}], "safer"],
	[[{"op": "replace", "path": "/tool_call/approval_required_tools", "value": {"a": 1}}], "safer"],
	[[{"op": "replace", "path": "/tool_call/upstream_file_roots", "value": {"notes": false}}], "safer"],
	[[{"op": "replace", "path": "/tool_call/upstream_file_roots", "value": {"notes": "/workspace"}}], "safer"],
	[[{"op": "replace", "path": "/tool_call/file_roots", "value": "/workspace"}], "safer"],
	# thresholds tried in order, auto_approve first: no score is fast_track
	# (test_evolution_thresholds_out_of_order)
	[thresholds_out_of_order, "retuned"],
	# weights summing to 1.1: a constitutional score 0.09 higher (clamped
	# to 1), and a request the shipped weights deny at 0.9 is allowed
	# (test_weights_not_summing_to_1_are_tuning)
	[weights_not_summing_to_1, "retuned"],
]

# The workload's requests and tool calls, requests with no action or one
# that is not a string, and requests that read each setting above, so
# that a rule reading it otherwise changes a decision (review: 21 probes
# let a tool rule matching the respelled '*__run shell' as '*__runshell'
# pass as "unchanged", and thresholds out of order pass as "safer"):
#   - max_reason_value_length: an action and a tool name past 200
#     characters;
#   - each respelled entry: names the respelling would match if the rules
#     folded it as they fold requests (a__runshell, mail__sendmail), names
#     its shipped counterpart matches, a respelled action and a network
#     action between the respelled limit (5) and the shipped one (20);
#   - a category without a rate limit of its own, an action needing an
#     explanation, a data request without special authorization;
#   - an evolution type without a base risk, and a patch at its latency
#     limit scoring 0.904, between fast_track_threshold and
#     auto_approve_threshold (auto_approve with the thresholds out of
#     order; a score the unused performance limit would raise);
#   - a request over its rate limit, denied at 0.9 (allowed with the
#     weights summing to 1.1);
#   - calls with arguments of each kind, and with a path under and
#     outside the file roots.
accepted_probes := array.concat(array.concat(example_inputs, actionless_inputs), [
	unknown_category, unknown_evolution_type,
	json.patch(main_test.safe_input, [{"op": "replace", "path": "/action", "value": "data.process_personal"}]),
	json.patch(main_test.safe_input, [{"op": "replace", "path": "/action", "value": "System.Execute_Shell"}]),
	json.patch(main_test.safe_input, [{"op": "replace", "path": "/action", "value": concat("", ["data.", long_name])}]),
	network_under_shipped_limit,
	over_rate_limit,
	json.patch(main_test.data_access_input, [{"op": "replace", "path": "/data_request/special_authorization", "value": false}]),
	patch_at_latency_limit,
	tool_call_test.call({"name": "shell__exec"}),
	tool_call_test.call({"name": "a__run_shell"}),
	tool_call_test.call({"name": "a__runshell"}),
	tool_call_test.call({"name": "a__run shell"}),
	tool_call_test.call({"name": "mail__send_email"}),
	tool_call_test.call({"name": "mail__sendmail"}),
	tool_call_test.call({"name": "mail__send mail"}),
	tool_call_test.call({"name": concat("", ["notes__", long_name])}),
	tool_call_test.args({"X-Api-Key": "hunter2", "File": "/etc/passwd", "cwd": "/workspace/a"}),
	tool_call_test.args({"x_api_key": "hunter2", "file": "/workspace/a"}),
	tool_call_test.args({"file": "/etc/passwd"}),
])

long_name := concat("", [x | some _ in numbers.range(1, 300); x := "x"])

network_under_shipped_limit := json.patch(main_test.safe_input, [
	{"op": "replace", "path": "/action", "value": "network.http_get"},
	{"op": "add", "path": "/context/current_usage_count", "value": 10},
])

over_rate_limit := json.patch(main_test.safe_input, [{"op": "add", "path": "/context/current_usage_count", "value": 100}])

patch_at_latency_limit := json.patch(main_test.complex_input, [
	{"op": "replace", "path": "/evolution_request/type", "value": "patch"},
	{"op": "replace", "path": "/evolution_request/performance_analysis/latency_delta", "value": 0.15},
])

# The probes reach what they are there for: each respelled entry's shipped
# counterpart decides the names it matches, and the patch scores between
# the two thresholds.
test_accepted_probes_reach_the_settings if {
	shell := main.decision with input as tool_call_test.call({"name": "a__run_shell"})
	shell.outcome == "deny"
	every name in ["a__runshell", "a__run shell"] {
		main.decision.outcome == "allow" with input as tool_call_test.call({"name": name})
	}
	main.decision.outcome == "approval_required" with input as tool_call_test.call({"name": "mail__send_email"})
	every name in ["mail__sendmail", "mail__send mail"] {
		main.decision.outcome == "allow" with input as tool_call_test.call({"name": name})
	}
	main.decision.allow == true with input as network_under_shipped_limit
	main.decision.allow == false with input as json.patch(network_under_shipped_limit, [{"op": "add", "path": "/context/current_usage_count", "value": 20}])
	e := main.decision with input as patch_at_latency_limit
	e.evolution_score == 0.904
	e.approval_path == "fast_track"
	main.decision.compliance_score == 0.9 with input as over_rate_limit
}

shipped_decisions := [d | some x in accepted_probes; d := main.decision with input as x]

# Higher is more allowed.
allowance(d) := 2 if d.allow == true

allowance(d) := 1 if {
	d.allow == false
	d.outcome == "approval_required"
}

allowance(d) := 0 if {
	d.allow == false
	object.get(d, "outcome", "deny") != "approval_required"
}

# (One test for each kind: each evaluates every probe with every edit.)
test_runtime_accepts_unchanged_as_listed if runtime_accepts_as_listed("unchanged")

test_runtime_accepts_safer_as_listed if runtime_accepts_as_listed("safer")

test_runtime_accepts_retuned_as_listed if runtime_accepts_as_listed("retuned")

runtime_accepts_as_listed(kind) if {
	every a in runtime_accepts {
		a[1] in {"unchanged", "safer", "retuned"}
	}
	every ops in [a[0] | some a in runtime_accepts; a[1] == kind] {
		cfg := edited(ops)
		runtime_problems(cfg) == set()
		every i, x in accepted_probes {
			d := main.decision with input as x with data.acgs.config as cfg
			main_test.valid_decision(d)
			accepted_as(kind, shipped_decisions[i], d)
		}
	}
}

accepted_as("unchanged", shipped, d) if d == shipped

accepted_as("safer", shipped, d) if allowance(d) <= allowance(shipped)

accepted_as("retuned", _, _)

# Every configuration the lint calls broken is named by the runtime (by
# the package of the section edited) or listed in runtime_accepts, and
# each listed is one the lint calls broken; every edit these tests make
# that the runtime names, the lint calls broken too.
test_lint_and_runtime_disagreements_are_listed if {
	every ops in lint_broken_edits {
		count(problems(edited(ops))) > 0
		named_or_accepted(ops)
	}
	every a in runtime_accepts {
		count(problems(edited(a[0]))) > 0
	}
	every ops in runtime_named_edits {
		count(section_runtime_problems(edited_section(ops), edited(ops))) > 0
		count(problems(edited(ops))) > 0
	}
}

lint_broken_edits := array.concat([c[0] | some c in broken_configurations], breaking_edits)

runtime_named_edits := array.concat([c[0] | some c in evolution_edits], [c[0] | some c in data_access_edits])

named_or_accepted(ops) if accepted(ops)

named_or_accepted(ops) if {
	not accepted(ops)
	count(section_runtime_problems(edited_section(ops), edited(ops))) > 0
}

# The top-level key of data.acgs.config an edit changes (its first).
edited_section(ops) := split(ops[0].path, "/")[1]

section_runtime_problems("constitutional", cfg) := constitutional_runtime_problems(cfg)

section_runtime_problems("evolution", cfg) := evolution_runtime_problems(cfg)

section_runtime_problems("data_access", cfg) := data_access_runtime_problems(cfg)

section_runtime_problems("tool_call", cfg) := tool_call_runtime_problems(cfg)

# (No package checks a top-level setting: max_reason_value_length,
# prohibited_actions and the rest are read safely as they are.)
section_runtime_problems(section, _) := set() if not section in {"constitutional", "evolution", "data_access", "tool_call"}

# Weights that do not sum to 1 are the operator's tuning to the runtime,
# which reads a weight only for its type: safety 0.4 (the four summing to
# 1.1) scores every constitutional request higher, and one over its rate
# limit, denied at 0.9 with the shipped weights, is allowed at 0.98. The
# lint names it; the runtime does not (runtime_accepts).
test_weights_not_summing_to_1_are_tuning if {
	over_limit := over_rate_limit
	d := main.decision with input as over_limit
	d.allow == false
	d.compliance_score == 0.9
	e := main.decision with input as over_limit with data.acgs.config as edited(weights_not_summing_to_1)
	e.allow == true
	e.compliance_score == 0.98
}

# ---------------------------------------------------------------------------
# Edits of the configuration: every decision stays defined and single, and a
# value of the wrong type takes its safest reading
# ---------------------------------------------------------------------------

# Each decision of the workload's examples and of tool calls, as JSON (so
# that `with` is applied once per configuration).
tool_base := tool_call_test.base

tool_path := json.patch(tool_base, [{"op": "replace", "path": "/tool_call/arguments", "value": {"path": "/workspace/a"}}])

example_inputs := [
	main_test.safe_input, main_test.dangerous_input, main_test.low_trust_input,
	main_test.complex_input, main_test.data_access_input, tool_base, tool_path,
]

# Requests with no action or one that is not a string. A prohibited list
# nobody can read prohibits these too, and their decision was undefined
# (review): the prohibited decision quoted the action cut as a string.
actionless_inputs := [
	{"type": "action_authorization", "constitutional_hash": main_test.hash, "context": {}},
	json.remove(main_test.safe_input, ["action"]),
	json.patch(main_test.safe_input, [{"op": "replace", "path": "/action", "value": 5}]),
	json.patch(main_test.safe_input, [{"op": "replace", "path": "/action", "value": null}]),
	json.patch(main_test.safe_input, [{"op": "replace", "path": "/action", "value": {"name": "data.read_public"}}]),
]

# ... denied as prohibited, the action quoted as it came.
test_unreadable_prohibited_list_denies_requests_without_a_string_action if {
	every c in [
		[actionless_inputs[0], "<missing>"], [actionless_inputs[1], "<missing>"],
		[actionless_inputs[2], "5"], [actionless_inputs[3], "null"],
		[actionless_inputs[4], "{\"name\": \"data.read_public\"}"],
	] {
		[x, shown] := c
		every v in ["system.execute_shell", null, ["system.execute_shell", 5]] {
			d := main.decision with input as x
				with data.acgs.config as edited([{"op": "replace", "path": "/prohibited_actions", "value": v}])
			d.allow == false
			d.reasons == [sprintf("Action '%s' is prohibited by the constitution", [shown])]
			d.evaluation_details.action == shown
		}

		# (as shipped: evaluated, and denied as missing)
		e := main.decision with input as x
		"Action is missing or not a string" in e.reasons
	}
}

# Edits that made a decision undefined or conflicting, or each rule's typed
# reading of its configuration.
breaking_edits := [
	[{"op": "replace", "path": "/tool_call/upstream_file_roots", "value": {"notes": false}}],
	[{"op": "replace", "path": "/tool_call/upstream_file_roots", "value": {"notes": "/workspace"}}],
	[{"op": "replace", "path": "/tool_call/file_roots", "value": "/workspace"}],
	[{"op": "replace", "path": "/evolution/auto_approve_threshold", "value": 0.9}, {"op": "replace", "path": "/evolution/fast_track_threshold", "value": 0.97}],
	[{"op": "replace", "path": "/evolution/auto_approve_threshold", "value": null}],
	[{"op": "replace", "path": "/evolution/auto_approve_threshold", "value": true}],
	[{"op": "replace", "path": "/evolution/fast_track_threshold", "value": "0.9"}],
	[{"op": "replace", "path": "/constitutional/principles/default_benefit", "value": "0.5"}],
	[{"op": "replace", "path": "/constitutional/principles/default_harm_risk", "value": null}],
	[{"op": "replace", "path": "/constitutional/principles/default_fairness", "value": true}],
	[{"op": "replace", "path": "/constitutional/principles/accountability_audit", "value": "0.5"}],
	[{"op": "replace", "path": "/constitutional/principles/autonomy_no_override", "value": "1"}],
	[{"op": "replace", "path": "/constitutional/weights/safety", "value": "0.3"}],
	[{"op": "remove", "path": "/constitutional/weights/resources"}],
	[{"op": "replace", "path": "/constitutional/safety/base", "value": null}],
	[{"op": "replace", "path": "/constitutional/transparency/audit", "value": "0.2"}],
	[{"op": "replace", "path": "/constitutional/compliance_threshold", "value": null}],
	[{"op": "replace", "path": "/constitutional/min_trust_level", "value": true}],
	[{"op": "replace", "path": "/constitutional/min_explanation_length", "value": null}],
	[{"op": "replace", "path": "/constitutional/rate_limits/data", "value": "100"}],
	[{"op": "replace", "path": "/constitutional/resource_limits/cpu_cores", "value": "2"}],
	[{"op": "replace", "path": "/constitutional/concern_thresholds", "value": "x"}],
	[{"op": "replace", "path": "/constitutional/concern_thresholds/min_benefit", "value": "0.3"}],
	[{"op": "replace", "path": "/prohibited_actions", "value": "system.execute_shell"}],
	[{"op": "replace", "path": "/constitutional/actions_requiring_explanation", "value": false}],
	[{"op": "replace", "path": "/data_access/access_threshold", "value": null}],
	[{"op": "remove", "path": "/data_access/access_threshold"}],
	[{"op": "remove", "path": "/evolution/auto_approve_threshold"}],
	[{"op": "remove", "path": "/evolution/fast_track_threshold"}],
	[{"op": "remove", "path": "/evolution/path_actions/human_review"}],
	[{"op": "replace", "path": "/data_access/sensitive_categories", "value": false}],
	[{"op": "replace", "path": "/tool_call/prohibited_tools", "value": "*__exec"}],
	[{"op": "replace", "path": "/tool_call/approval_required_tools", "value": {"a": 1}}],
	[{"op": "replace", "path": "/tool_call/rate_limit/default_per_minute", "value": "120"}],
	[{"op": "replace", "path": "/max_reason_value_length", "value": "200"}],
	[{"op": "replace", "path": "/max_reason_value_length", "value": null}],
	[{"op": "replace", "path": "/max_reason_value_length", "value": -1}],
	[{"op": "remove", "path": "/max_reason_value_length"}],
	[{"op": "replace", "path": "/tool_call/blocked_upstreams", "value": "notes"}],
	[{"op": "replace", "path": "/tool_call/path_argument_names", "value": null}],
	[{"op": "replace", "path": "/tool_call/agent_upstreams", "value": []}],
	[{"op": "replace", "path": "/tool_call/require_session", "value": "true"}],
	[{"op": "replace", "path": "/tool_call/rate_limit/per_agent", "value": {"agent-1": "5"}}],
	[{"op": "replace", "path": "/tool_call/upstream_file_roots", "value": []}],
	[{"op": "add", "path": "/tool_call/shell_patterns/x", "value": "("}],
	[{"op": "add", "path": "/tool_call/secret_patterns/x", "value": "("}],
	[{"op": "replace", "path": "/tool_call/scores", "value": null}],
	[{"op": "replace", "path": "/tool_call/prohibited_tools", "value": [{"glob": "*__exec"}]}],
	[{"op": "remove", "path": "/tool_call"}],
	[{"op": "replace", "path": "/evolution/risk_factors", "value": "x"}],
	[{"op": "replace", "path": "/evolution/performance_limits/memory_delta", "value": 0}],
	[{"op": "replace", "path": "/evolution/required_reviews/peer_review/types", "value": "x"}],
	[{"op": "remove", "path": "/evolution"}],
	[{"op": "replace", "path": "/data_access/bulk_indicators/max_record_count", "value": "1000"}],
	[{"op": "replace", "path": "/data_access/retention_limits_seconds", "value": "x"}],
	[{"op": "replace", "path": "/data_access/sensitive_categories", "value": ["health_records", 5]}],
	[{"op": "remove", "path": "/data_access"}],
]

test_config_edits_leave_one_decision_for_every_input if {
	every ops in breaking_edits {
		cfg := edited(ops)
		every x in array.concat(example_inputs, actionless_inputs) {
			d := main.decision with input as x with data.acgs.config as cfg
			main_test.valid_decision(d)
		}
	}
}

# upstream_file_roots {"notes": false}: eval_conflict_error before (review).
# An entry that is not an array of roots is no roots: every path is outside.
test_upstream_file_roots_not_an_array if {
	every v in [false, "/workspace", null, {"a": "/workspace"}] {
		cfg := edited([{"op": "replace", "path": "/tool_call/upstream_file_roots", "value": {"notes": v}}])
		d := main.decision with input as tool_path with data.acgs.config as cfg
		d.reasons == ["Argument '/path' is outside the allowed file roots ('/workspace/a')"]
	}
	other := edited([{"op": "replace", "path": "/tool_call/upstream_file_roots", "value": {"files": false}}])
	d := main.decision with input as tool_path with data.acgs.config as other
	d.outcome == "allow"
	roots := edited([{"op": "replace", "path": "/tool_call/file_roots", "value": "/workspace"}])
	e := main.decision with input as tool_path with data.acgs.config as roots
	e.outcome == "deny"
}

# auto_approve_threshold 0.9 with fast_track_threshold 0.97: a conflict for
# every score in [0.9, 0.97) before (review). The thresholds are tried in
# order: auto_approve first.
test_evolution_thresholds_out_of_order if {
	cfg := edited([
		{"op": "replace", "path": "/evolution/auto_approve_threshold", "value": 0.9},
		{"op": "replace", "path": "/evolution/fast_track_threshold", "value": 0.97},
	])
	d := main.decision with input as main_test.complex_input with data.acgs.config as cfg
	d.evolution_score == 0.9665
	d.approval_path == "auto_approve"
	d.allow == true
	low := json.patch(main_test.complex_input, [{"op": "add", "path": "/evolution_request/changes/network_changes", "value": true}])
	e := main.decision with input as low with data.acgs.config as cfg
	e.evolution_score < 0.9
	e.approval_path == "human_review"
}

# external_dependencies_risk or hash_mismatch_penalty missing added no
# risk: a request with an external dependency, or with another
# constitutional hash, went from human_review to auto_approve (review).
# Missing or not a number ("0.4"), each is a configuration error, named.
test_evolution_added_risks_missing if {
	every name in ["external_dependencies_risk", "hash_mismatch_penalty"] {
		every op in [{"op": "remove", "path": concat("/", ["", "evolution", name])}, {"op": "replace", "path": concat("/", ["", "evolution", name]), "value": "0.4"}] {
			d := main.decision with input as main_test.complex_input with data.acgs.config as edited([op])
			d.allow == false
			d.approval_path == "human_review"
			d.evaluation_details.configuration_error == true
			contains(d.reasons[0], concat("", [name, ": a number"]))
		}
	}
}

# A threshold missing or not a number was never reached: without
# auto_approve_threshold the complex request (0.9665) went to fast_track
# with no reason at all, with one of another type to fast_track "below"
# it; without fast_track_threshold every request short of auto-approval
# went to human review unexplained (review). A configuration error, named.
test_evolution_thresholds_not_numbers if {
	every name in ["auto_approve_threshold", "fast_track_threshold"] {
		path := concat("/", ["", "evolution", name])
		every op in [
			{"op": "remove", "path": path},
			{"op": "replace", "path": path, "value": null},
			{"op": "replace", "path": path, "value": true},
			{"op": "replace", "path": path, "value": "0.95"},
		] {
			d := main.decision with input as main_test.complex_input with data.acgs.config as edited([op])
			d.allow == false
			d.approval_path == "human_review"
			d.evaluation_details.configuration_error == true
			d.reasons == [sprintf(
				"Constitution configuration error: data.acgs.config.evolution lacks a value of the type this evaluation needs (%s: a number)",
				[name],
			)]
		}
	}
}

# A configuration error of the constitutional scoring, naming what lacks.
config_error(missing) := {
	"allow": false,
	"compliance_score": 0,
	"reasons": [sprintf(
		"Constitution configuration error: data.acgs.config.constitutional lacks a number this evaluation needs (%s)",
		[missing],
	)],
	"constitutional_hash": main_test.hash,
	"policy": "constitutional",
	"evaluation_details": {"configuration_error": true},
}

# principles.default_benefit "0.5": no decision before (review). A decision
# that needs a configured number that is missing or not one is a
# configuration error; one that does not need it is scored as ever.
test_principle_defaults_not_numbers if {
	every k in ["default_benefit", "default_harm_risk", "default_fairness"] {
		every v in ["0.5", null, true, [0.5]] {
			cfg := edited([{"op": "replace", "path": concat("/", ["", "constitutional", "principles", k]), "value": v}])
			d := main.decision with input as main_test.safe_input with data.acgs.config as cfg
			d == config_error(concat(".", ["principles", k]))
		}
	}
	cfg := edited([{"op": "replace", "path": "/constitutional/principles/default_benefit", "value": "0.5"}])
	x := json.patch(main_test.safe_input, [{"op": "add", "path": "/context/benefit_assessment", "value": 0.5}])
	g := main.decision with input as x with data.acgs.config as cfg
	g.evaluation_details.beneficence == 0.5
	g.allow == true
}

test_weights_and_parts_not_numbers if {
	d := main.decision with input as main_test.safe_input
		with data.acgs.config as edited([{"op": "replace", "path": "/constitutional/weights/safety", "value": "0.3"}])
	d == config_error("weights.safety")
	e := main.decision with input as main_test.safe_input
		with data.acgs.config as edited([{"op": "remove", "path": "/constitutional/weights/resources"}])
	e == config_error("weights.resources")
	f := main.decision with input as main_test.safe_input
		with data.acgs.config as edited([{"op": "replace", "path": "/constitutional/safety/sandbox", "value": null}])
	f == config_error("safety.sandbox")

	# (the sandbox points are not needed without a sandbox)
	g := main.decision with input as json.patch(main_test.safe_input, [{"op": "replace", "path": "/context/environment/sandbox_enabled", "value": false}])
		with data.acgs.config as edited([{"op": "replace", "path": "/constitutional/safety/sandbox", "value": null}])
	g.evaluation_details.safety == 0.7
	e2 := main.decision with input as main_test.safe_input
		with data.acgs.config as edited([{"op": "remove", "path": "/constitutional/principles"}])
	e2 == config_error("principles.autonomy_no_override, principles.autonomy_override_with_consent, principles.autonomy_override_without_consent, principles.default_benefit, principles.default_harm_risk, principles.default_fairness, principles.accountability_audit, principles.accountability_responsible_party")
}

# Thresholds of another type would pass every check (a number is greater
# than null and true): a configuration error.
test_constitutional_thresholds_not_numbers if {
	every k in ["compliance_threshold", "min_trust_level", "min_explanation_length"] {
		every v in [null, true, "0.9", {}] {
			d := main.decision with input as main_test.safe_input
				with data.acgs.config as edited([{"op": "replace", "path": concat("/", ["", "constitutional", k]), "value": v}])
			d == config_error(k)
		}
	}
}

# default_rate_limit removed: every constitutional request was denied with
# a configuration error naming nothing ("()"), even one whose category has
# its own limit (review). A category with its own limit is scored as
# before; one without is a configuration error naming default_rate_limit.
test_default_rate_limit_missing if {
	cfg := edited([{"op": "remove", "path": "/constitutional/default_rate_limit"}])
	d := main.decision with input as main_test.safe_input with data.acgs.config as cfg
	d.allow == true
	d == main.decision with input as main_test.safe_input
	custom := json.patch(main_test.safe_input, [{"op": "replace", "path": "/action", "value": "custom.thing"}])
	e := main.decision with input as custom with data.acgs.config as cfg
	e == config_error("default_rate_limit")
}

# So are limits of another type ("100" would be above every count).
test_limits_not_numbers if {
	d := main.decision with input as main_test.safe_input
		with data.acgs.config as edited([{"op": "replace", "path": "/constitutional/rate_limits/data", "value": "100"}])
	d == config_error("rate_limits.data")

	# another category's limit is not needed
	x := json.patch(main_test.safe_input, [{"op": "replace", "path": "/action", "value": "report.view"}])
	main.decision.allow with input as x
		with data.acgs.config as edited([{"op": "replace", "path": "/constitutional/rate_limits/data", "value": "100"}])
	e := main.decision with input as json.patch(main_test.safe_input, [{"op": "replace", "path": "/action", "value": "custom.thing"}])
		with data.acgs.config as edited([{"op": "replace", "path": "/constitutional/default_rate_limit", "value": null}])
	e == config_error("default_rate_limit")
	f := main.decision with input as main_test.safe_input
		with data.acgs.config as edited([{"op": "replace", "path": "/constitutional/resource_limits/cpu_cores", "value": "2"}])
	f == config_error("resource_limits.cpu_cores")
	g := main.decision with input as main_test.safe_input
		with data.acgs.config as edited([{"op": "replace", "path": "/constitutional/resource_limits", "value": "2"}])
	g == config_error("resource_limits")
	k := main.decision with input as main_test.safe_input
		with data.acgs.config as edited([{"op": "remove", "path": "/constitutional/concern_thresholds"}])
	k == config_error("concern_thresholds")
	h := main.decision with input as tool_base
		with data.acgs.config as edited([{"op": "replace", "path": "/tool_call/rate_limit/default_per_minute", "value": "120"}])
	tool_config_error_is(h, "rate_limit.default_per_minute: a number")
}

# concern_thresholds of another type, or a threshold in it missing or not
# a number: its concern was dropped silently (a string threshold is above
# every number, null below), or an always-true concern added (a benefit
# of 1 "below" "0.3"), so a harmful, useless or unfair action was denied
# without its reason (review). A configuration error, as a missing
# concern_thresholds is.
test_concern_thresholds_not_numbers if {
	harmful := json.patch(main_test.safe_input, [{"op": "add", "path": "/context/harm_risk_assessment", "value": 0.5}])
	d := main.decision with input as harmful
	d.allow == false
	"Harm risk 0.5 exceeds 0.2" in d.reasons
	every v in ["x", ["max_harm_risk"], 0.2, null] {
		e := main.decision with input as harmful
			with data.acgs.config as edited([{"op": "replace", "path": "/constitutional/concern_thresholds", "value": v}])
		e == config_error("concern_thresholds")
		main.decision == config_error("concern_thresholds") with input as main_test.safe_input
			with data.acgs.config as edited([{"op": "replace", "path": "/constitutional/concern_thresholds", "value": v}])
	}
	every k in ["max_harm_risk", "min_benefit", "min_fairness_protected_groups"] {
		path := concat("/", ["", "constitutional", "concern_thresholds", k])
		every op in [{"op": "remove", "path": path}, {"op": "replace", "path": path, "value": "0.2"}, {"op": "replace", "path": path, "value": null}] {
			f := main.decision with input as harmful with data.acgs.config as edited([op])
			f == config_error(concat(".", ["concern_thresholds", k]))
		}
	}
	g := main.decision with input as harmful
		with data.acgs.config as edited([{"op": "replace", "path": "/constitutional/concern_thresholds", "value": {
			"max_harm_risk": "0.2", "min_benefit": 0.3, "min_fairness_protected_groups": true,
		}}])
	g == config_error("concern_thresholds.max_harm_risk, concern_thresholds.min_fairness_protected_groups")
}

# Deny lists that are not arrays match everything; so does the list of the
# actions that need an explanation, and of sensitive categories.
test_lists_not_arrays if {
	d := main.decision with input as main_test.safe_input
		with data.acgs.config as edited([{"op": "replace", "path": "/prohibited_actions", "value": "system.execute_shell"}])
	d.reasons == ["Action 'data.read_public' is prohibited by the constitution"]
	e := main.decision with input as main_test.safe_input
		with data.acgs.config as edited([{"op": "replace", "path": "/constitutional/actions_requiring_explanation", "value": false}])
	"Explanation for action 'data.read_public' is too short (37 characters, minimum 50)" in e.reasons
	f := main.decision with input as tool_base
		with data.acgs.config as edited([{"op": "replace", "path": "/tool_call/prohibited_tools", "value": "*__exec"}])
	f.reasons == ["Tool 'notes__echo' is prohibited by the constitution"]
	g := main.decision with input as tool_base
		with data.acgs.config as edited([{"op": "replace", "path": "/tool_call/approval_required_tools", "value": {"a": 1}}])
	g.outcome == "approval_required"
	h := main.decision with input as json.patch(main_test.data_access_input, [{"op": "replace", "path": "/data_request/special_authorization", "value": false}])
		with data.acgs.config as edited([{"op": "replace", "path": "/data_access/sensitive_categories", "value": false}])
	h.evaluation_details.sensitive_field_count == 2
	h.allow == false
}

# A deny list that is missing (deleted from data.json) covers everything,
# as one that is not an array does: `not text.strings(config.x)` never
# fired for a missing x (the reference is undefined before the negation),
# so every action, tool and field went through (review).
test_deny_lists_missing if {
	shell := json.patch(main_test.safe_input, [{"op": "replace", "path": "/action", "value": "system.execute_shell"}])
	d := main.decision with input as shell with data.acgs.config as edited([{"op": "remove", "path": "/prohibited_actions"}])
	d.reasons == ["Action 'system.execute_shell' is prohibited by the constitution"]
	personal := json.patch(main_test.safe_input, [{"op": "replace", "path": "/action", "value": "data.process_personal"}])
	e := main.decision with input as personal
		with data.acgs.config as edited([{"op": "remove", "path": "/constitutional/actions_requiring_explanation"}])
	e.allow == false
	"Explanation for action 'data.process_personal' is too short (37 characters, minimum 50)" in e.reasons
	f := main.decision with input as tool_base with data.acgs.config as edited([{"op": "remove", "path": "/tool_call/prohibited_tools"}])
	f.reasons == ["Tool 'notes__echo' is prohibited by the constitution"]
	g := main.decision with input as tool_base with data.acgs.config as edited([{"op": "remove", "path": "/tool_call/approval_required_tools"}])
	g.outcome == "approval_required"
	h := main.decision with input as json.patch(main_test.data_access_input, [{"op": "replace", "path": "/data_request/special_authorization", "value": false}])
		with data.acgs.config as edited([{"op": "remove", "path": "/data_access/sensitive_categories"}])
	h.evaluation_details.sensitive_field_count == 2
	h.allow == false
}

# A prohibited list, or a list of the actions that need an explanation,
# with an entry that is not a string (an action written as an object):
# that action was neither prohibited nor asked for an explanation, and a
# well-formed system.execute_shell was allowed (review). Such a list reads
# as one nobody can read, like a list that is not an array: it covers
# every action.
test_action_lists_with_entries_not_strings if {
	shell := json.patch(main_test.safe_input, [{"op": "replace", "path": "/action", "value": "system.execute_shell"}])
	every v in [[{"action": "system.execute_shell"}], ["data.exfiltrate", 5], ["system.execute_shell", null]] {
		d := main.decision with input as shell
			with data.acgs.config as edited([{"op": "replace", "path": "/prohibited_actions", "value": v}])
		d.reasons == ["Action 'system.execute_shell' is prohibited by the constitution"]
		e := main.decision with input as main_test.safe_input
			with data.acgs.config as edited([{"op": "replace", "path": "/prohibited_actions", "value": v}])
		e.reasons == ["Action 'data.read_public' is prohibited by the constitution"]
	}
	personal := json.patch(main_test.safe_input, [{"op": "replace", "path": "/action", "value": "data.process_personal"}])
	every v in [[{"action": "data.process_personal"}], ["policy.update_rules", 5]] {
		d := main.decision with input as personal
			with data.acgs.config as edited([{"op": "replace", "path": "/constitutional/actions_requiring_explanation", "value": v}])
		d.allow == false
		"Explanation for action 'data.process_personal' is too short (37 characters, minimum 50)" in d.reasons
	}
}

# rate_limits that is not an object denied every decision with a
# configuration error naming nothing ("... needs ()").
test_rate_limits_not_an_object if {
	every v in ["x", null, [100]] {
		d := main.decision with input as main_test.safe_input
			with data.acgs.config as edited([{"op": "replace", "path": "/constitutional/rate_limits", "value": v}])
		d == config_error("rate_limits")
	}
}

# A configuration error of the evolution scoring, naming what lacks.
evolution_config_error(missing) := {
	"allow": false,
	"compliance_score": 0,
	"evolution_score": 0,
	"approval_path": "human_review",
	"required_actions": evolution_config_error_actions,
	"reasons": [sprintf(
		"Constitution configuration error: data.acgs.config.evolution lacks a value of the type this evaluation needs (%s)",
		[missing],
	)],
	"constitutional_hash": main_test.hash,
	"policy": "evolution",
	"evaluation_details": {"configuration_error": true},
}

# What a configuration error requires: the human review path's actions,
# and a corrected configuration.
evolution_config_error_actions := [
	"Full human review of the evolution request",
	"Correct data.acgs.config.evolution and evaluate the request again",
]

# (Compared as JSON text: the type checker sees an evolution decision as
# its evaluated kind only.)
evolution_config_error_is(d, missing) if json.marshal(d) == json.marshal(evolution_config_error(missing))

evolution_change(ops) := json.patch(main_test.complex_input, ops)

# [edit, a request the edited value is for, what lacks]. Each edit made a
# rule add nothing to the risk, take nothing from the constitutional score,
# count no performance limit or require no review: each request, denied
# with the shipped configuration, was auto-approved (the risk factors, the
# violations, the performance limits, triggered_by_change) or sent to a
# lighter path (a review's types, a review not an object) (review). (The
# reviews as an array still worked, by index.)
evolution_edits := [
	[
		[{"op": "replace", "path": "/evolution/risk_factors", "value": "privilege_escalation"}],
		evolution_change([{"op": "add", "path": "/evolution_request/changes/privilege_escalation", "value": true}]),
		"risk_factors: an object",
	],
	[
		[{"op": "replace", "path": "/evolution/constitutional_violations", "value": ["logging_disabled"]}],
		evolution_change([{"op": "add", "path": "/evolution_request/changes/logging_disabled", "value": true}]),
		"constitutional_violations: an object",
	],
	[
		[{"op": "replace", "path": "/evolution/performance_limits", "value": null}],
		evolution_change([{"op": "replace", "path": "/evolution_request/performance_analysis", "value": {"memory_delta": 5, "complexity_delta": 5, "latency_delta": 5, "resource_delta": 5}}]),
		"performance_limits: an object of numbers above 0",
	],
	[
		[{"op": "replace", "path": "/evolution/performance_limits", "value": {"complexity_delta": "0.3", "memory_delta": 0, "latency_delta": null, "resource_delta": 0.25}}],
		evolution_change([{"op": "replace", "path": "/evolution_request/performance_analysis", "value": {"memory_delta": 5, "complexity_delta": 5, "latency_delta": 5, "resource_delta": 0}}]),
		"performance_limits: an object of numbers above 0",
	],
	[
		[{"op": "replace", "path": "/evolution/required_reviews/security_review/triggered_by_change", "value": ["security_changes"]}],
		evolution_change([{"op": "add", "path": "/evolution_request/changes/security_changes", "value": true}]),
		"required_reviews.security_review.triggered_by_change: a string",
	],
	[
		[{"op": "replace", "path": "/evolution/required_reviews/security_review/types", "value": "configuration"}],
		evolution_change([{"op": "replace", "path": "/evolution_request/type", "value": "configuration"}]),
		"required_reviews.security_review.types: an array of strings",
	],
	[
		[{"op": "replace", "path": "/evolution/required_reviews/security_review", "value": "configuration"}],
		evolution_change([{"op": "replace", "path": "/evolution_request/type", "value": "configuration"}]),
		"required_reviews.security_review: an object",
	],
	[
		[{"op": "replace", "path": "/evolution/required_reviews", "value": [{"field": "security_review_passed", "types": ["configuration"]}]}],
		evolution_change([{"op": "replace", "path": "/evolution_request/type", "value": "configuration"}]),
		"required_reviews: an object",
	],
]

test_evolution_configuration_errors if {
	every c in evolution_edits {
		main.decision.allow == false with input as c[1]
		d := main.decision with input as c[1] with data.acgs.config as edited(c[0])
		evolution_config_error_is(d, c[2])
	}

	d := main.decision with input as main_test.complex_input with data.acgs.config as edited([{"op": "remove", "path": "/evolution"}])
	evolution_config_error_is(d, "evolution: an object")

	# (a review without triggered_by_change is only required by type)
	main.decision.allow with input as main_test.complex_input
		with data.acgs.config as edited([{"op": "remove", "path": "/evolution/required_reviews/security_review/triggered_by_change"}])
}

# A path's actions missing or not an array of strings: the request's
# required_actions were [] (array.concat failed, and the default held), so
# a denial for human review required no review, and no missing review's
# action was named (review). A configuration error, named.
test_evolution_path_actions_not_arrays_of_strings if {
	low := evolution_change([{"op": "add", "path": "/evolution_request/changes/network_changes", "value": true}])
	d := main.decision with input as low
	d.approval_path == "human_review"
	d.required_actions == ["Full human review of the evolution request"]
	every name, needs in {"auto_approve": "an array of non-empty strings", "fast_track": "a non-empty array of non-empty strings", "human_review": "a non-empty array of non-empty strings"} {
		path := concat("/", ["", "evolution", "path_actions", name])
		every op in [{"op": "remove", "path": path}, {"op": "replace", "path": path, "value": "x"}, {"op": "replace", "path": path, "value": [1]}] {
			e := main.decision with input as low with data.acgs.config as edited([op])
			evolution_config_error_is(e, concat("", ["path_actions.", name, ": ", needs]))
		}
	}
	f := main.decision with input as low with data.acgs.config as edited([{"op": "remove", "path": "/evolution/path_actions"}])
	evolution_config_error_is(f, "path_actions.auto_approve: an array of non-empty strings, path_actions.fast_track: a non-empty array of non-empty strings, path_actions.human_review: a non-empty array of non-empty strings")
}

# A deny path's actions empty ([]): a request sent to human review (or to
# fast track, which the spec says requires one human sign-off) with no
# missing review was required to do nothing, where the configuration
# error's denial required the spec's human review (review). A denial must
# require an action: a configuration error, named. (auto_approve's are
# for an allowed request, and may be none.)
test_evolution_deny_path_actions_empty if {
	low := evolution_change([{"op": "add", "path": "/evolution_request/changes/network_changes", "value": true}])
	every name in ["fast_track", "human_review"] {
		e := main.decision with input as low
			with data.acgs.config as edited([{"op": "replace", "path": concat("/", ["", "evolution", "path_actions", name]), "value": []}])
		evolution_config_error_is(e, concat("", ["path_actions.", name, ": a non-empty array of non-empty strings"]))
	}
	d := main.decision with input as main_test.complex_input
		with data.acgs.config as edited([{"op": "replace", "path": "/evolution/path_actions/auto_approve", "value": ["Announce the change"]}])
	d.allow == true
	d.required_actions == ["Announce the change"]
	"evolution: path_actions.human_review: a non-empty array of non-empty strings" in runtime_problems(edited([{"op": "replace", "path": "/evolution/path_actions/human_review", "value": []}]))
}

# A performance limit removed from data.json dropped its delta from the
# mean: a patch at its latency limit (denied, fast_track 0.944) or a
# configuration change at its resource limit (0.9375) was auto-approved
# (review). The limits must hold the four deltas the spec names: a missing
# one is a configuration error naming it.
test_evolution_performance_limit_missing if {
	patch := evolution_change([
		{"op": "replace", "path": "/evolution_request/type", "value": "patch"},
		{"op": "replace", "path": "/evolution_request/performance_analysis", "value": {"latency_delta": 0.15, "resource_delta": 0.03}},
		{"op": "add", "path": "/evolution_request/mitigations", "value": {"gradual_rollout": true}},
	])
	configuration := evolution_change([
		{"op": "replace", "path": "/evolution_request/type", "value": "configuration"},
		{"op": "add", "path": "/evolution_request/security_review_passed", "value": true},
		{"op": "replace", "path": "/evolution_request/performance_analysis", "value": {"resource_delta": 0.25}},
		{"op": "add", "path": "/evolution_request/mitigations", "value": {"gradual_rollout": true}},
	])
	every c in [[patch, "latency_delta"], [configuration, "resource_delta"]] {
		d := main.decision with input as c[0]
		d.allow == false
		d.approval_path == "fast_track"
		e := main.decision with input as c[0]
			with data.acgs.config as edited([{"op": "remove", "path": concat("/", ["", "evolution", "performance_limits", c[1]])}])
		evolution_config_error_is(e, concat("", ["performance_limits.", c[1], ": a number above 0"]))
	}
	f := main.decision with input as patch
		with data.acgs.config as edited([{"op": "replace", "path": "/evolution/performance_limits", "value": {"memory_delta": 0.2}}])
	evolution_config_error_is(f, "performance_limits.complexity_delta: a number above 0, performance_limits.latency_delta: a number above 0, performance_limits.resource_delta: a number above 0")
	"evolution: performance_limits.latency_delta: a number above 0" in runtime_problems(edited([{"op": "remove", "path": "/evolution/performance_limits/latency_delta"}]))
}

# A key of performance_limits the spec does not name (unused_delta) was
# averaged with the four deltas and diluted the mean: a patch at its
# latency limit (denied, fast_track 0.944) was auto-approved (0.9552)
# (review). The performance is the mean over the four deltas the spec
# names: an unknown key has no effect on the decision, whatever its value,
# and the runtime names no problem (the lint does: runtime_accepts).
test_evolution_performance_limit_unknown_key if {
	patch := evolution_change([
		{"op": "replace", "path": "/evolution_request/type", "value": "patch"},
		{"op": "replace", "path": "/evolution_request/performance_analysis", "value": {"latency_delta": 0.15, "resource_delta": 0.03, "unused_delta": 5}},
		{"op": "add", "path": "/evolution_request/mitigations", "value": {"gradual_rollout": true}},
	])
	d := main.decision with input as patch
	d.allow == false
	d.approval_path == "fast_track"
	d.evolution_score == 0.944
	every v in [1, 0.01, 0, "x", null] {
		cfg := edited([{"op": "add", "path": "/evolution/performance_limits/unused_delta", "value": v}])
		e := main.decision with input as patch with data.acgs.config as cfg
		e == d
	}
	runtime_problems(edited([{"op": "add", "path": "/evolution/performance_limits/unused_delta", "value": 1}])) == set()
}

# default_base_risk removed: the base risk was undefined for every type,
# even one with its own, so 1 applied to all: a minor update went from
# auto_approve (0.9665) to human_review (0.7415) with a false reason
# "High-risk evolution type" and no configuration error named (review). A
# type with its own base risk is scored as before; one without is a
# configuration error naming default_base_risk; base_risks removed is one
# naming base_risks.
test_evolution_default_base_risk_missing if {
	d := main.decision with input as main_test.complex_input
	d.allow == true
	d.evolution_score == 0.9665
	no_default := edited([{"op": "remove", "path": "/evolution/default_base_risk"}])
	e := main.decision with input as main_test.complex_input with data.acgs.config as no_default
	e == d
	unknown := evolution_change([{"op": "replace", "path": "/evolution_request/type", "value": "hotfix"}])
	"Unknown evolution type 'hotfix' (base risk 0.5)" in object.get(main.decision, "reasons", []) with input as unknown
	every op in [
		{"op": "remove", "path": "/evolution/default_base_risk"},
		{"op": "replace", "path": "/evolution/default_base_risk", "value": null},
		{"op": "replace", "path": "/evolution/default_base_risk", "value": "0.5"},
	] {
		f := main.decision with input as unknown with data.acgs.config as edited([op])
		evolution_config_error_is(f, "default_base_risk: a number")
	}
	every op in [
		{"op": "remove", "path": "/evolution/base_risks"},
		{"op": "replace", "path": "/evolution/base_risks", "value": ["minor_update"]},
	] {
		every x in [main_test.complex_input, unknown] {
			g := main.decision with input as x with data.acgs.config as edited([op])
			evolution_config_error_is(g, "base_risks: an object")
		}
	}
}

# An empty string counted as an action: path_actions.fast_track [""] made
# a fast-tracked request's required_actions [""], and a review's action ""
# put "" among them, so a denial required nothing anyone could do
# (review). An action must be a non-empty string: a configuration error,
# named (and the configuration error's denial requires the spec's human
# review when the human review path's actions hold "").
test_evolution_actions_empty_strings if {
	low := evolution_change([{"op": "add", "path": "/evolution_request/changes/network_changes", "value": true}])
	every name, needs in {"auto_approve": "an array of non-empty strings", "fast_track": "a non-empty array of non-empty strings", "human_review": "a non-empty array of non-empty strings"} {
		path := concat("/", ["", "evolution", "path_actions", name])
		every v in [[""], ["Obtain one human sign-off", ""]] {
			e := main.decision with input as low with data.acgs.config as edited([{"op": "replace", "path": path, "value": v}])
			evolution_config_error_is(e, concat("", ["path_actions.", name, ": ", needs]))
		}
	}
	major := evolution_change([
		{"op": "replace", "path": "/evolution_request/type", "value": "major_update"},
		{"op": "add", "path": "/evolution_request/changes/network_changes", "value": true},
	])
	f := main.decision with input as major
		with data.acgs.config as edited([{"op": "replace", "path": "/evolution/required_reviews/human_approval/action", "value": ""}])
	evolution_config_error_is(f, "required_reviews.human_approval.action: a non-empty string")
	g := main.decision with input as main_test.complex_input
		with data.acgs.config as edited([
			{"op": "remove", "path": "/evolution/auto_approve_threshold"},
			{"op": "replace", "path": "/evolution/path_actions/human_review", "value": [""]},
		])
	g.required_actions == evolution_config_error_actions
	"evolution: path_actions.fast_track: a non-empty array of non-empty strings" in runtime_problems(edited([{"op": "replace", "path": "/evolution/path_actions/fast_track", "value": [""]}]))
	"evolution: required_reviews.human_approval.action: a non-empty string" in runtime_problems(edited([{"op": "replace", "path": "/evolution/required_reviews/human_approval/action", "value": ""}]))
}

# high_base_risk missing dropped the concern "High-risk evolution type"
# from every request; null (below every number) added it to every type,
# even a minor update (review). A configuration error, named, as the
# constitutional concern thresholds are.
test_evolution_high_base_risk_not_a_number if {
	major := evolution_change([{"op": "replace", "path": "/evolution_request/type", "value": "major_update"}])
	d := main.decision with input as major
	"High-risk evolution type 'major_update' (base risk 0.7)" in d.reasons
	every x in [major, main_test.complex_input] {
		every op in [
			{"op": "remove", "path": "/evolution/high_base_risk"},
			{"op": "replace", "path": "/evolution/high_base_risk", "value": null},
			{"op": "replace", "path": "/evolution/high_base_risk", "value": "0.4"},
			{"op": "replace", "path": "/evolution/high_base_risk", "value": true},
		] {
			e := main.decision with input as x with data.acgs.config as edited([op])
			evolution_config_error_is(e, "high_base_risk: a number")
		}
	}
}

# A review's action missing was dropped from required_actions, one not a
# string (5) was required as it was: a major update missing its human
# approval was denied with "Missing required review: human_approval" but
# not required to obtain it (review). A configuration error, named.
test_evolution_review_action_not_a_string if {
	major := evolution_change([
		{"op": "replace", "path": "/evolution_request/type", "value": "major_update"},
		{"op": "add", "path": "/evolution_request/changes/network_changes", "value": true},
	])
	d := main.decision with input as major
	"Obtain human approval" in d.required_actions
	path := "/evolution/required_reviews/human_approval/action"
	every op in [
		{"op": "remove", "path": path},
		{"op": "replace", "path": path, "value": 5},
		{"op": "replace", "path": path, "value": null},
		{"op": "replace", "path": path, "value": ["Obtain human approval"]},
	] {
		e := main.decision with input as major with data.acgs.config as edited([op])
		evolution_config_error_is(e, "required_reviews.human_approval.action: a non-empty string")
	}
}

# A review's field missing or naming no flag the policy reads
# (security_review for security_review_passed) was never satisfied: a
# configuration change that passed its security review (auto_approve,
# 0.979) was denied (fast_track, 0.929) for
# "Missing required review: security_review" and required to pass it
# again, a denial that nothing the requester can do lifts (review). A
# configuration error, named.
test_evolution_review_field_not_a_flag if {
	reviewed := evolution_change([
		{"op": "replace", "path": "/evolution_request/type", "value": "configuration"},
		{"op": "add", "path": "/evolution_request/security_review_passed", "value": true},
		{"op": "add", "path": "/evolution_request/mitigations", "value": {"gradual_rollout": true}},
	])
	d := main.decision with input as reviewed
	d.allow == true
	d.approval_path == "auto_approve"
	path := "/evolution/required_reviews/security_review/field"
	every op in [
		{"op": "remove", "path": path},
		{"op": "replace", "path": path, "value": "security_review"},
		{"op": "replace", "path": path, "value": null},
		{"op": "replace", "path": path, "value": ["security_review_passed"]},
	] {
		every x in [reviewed, main_test.complex_input] {
			e := main.decision with input as x with data.acgs.config as edited([op])
			evolution_config_error_is(e, "required_reviews.security_review.field: human_approved, security_review_passed or peer_reviewed")
		}
	}
}

# A configuration error of the data access scoring, naming what lacks.
data_access_config_error(missing) := {
	"allow": false,
	"compliance_score": 0,
	"access_score": 0,
	"access_conditions": [],
	"reasons": [sprintf(
		"Constitution configuration error: data.acgs.config.data_access lacks a value of the type this evaluation needs (%s)",
		[missing],
	)],
	"constitutional_hash": main_test.hash,
	"policy": "data_access",
	"evaluation_details": {"configuration_error": true},
}

# (Compared as JSON text: the type checker sees a data access decision as
# its evaluated kind only.) Its audit requirements are the request's, as
# for any denial (test_configuration_error_denials_require_review), and a
# human review.
data_access_config_error_is(d, missing) if {
	json.marshal(object.remove(d, ["audit_requirements"])) == json.marshal(data_access_config_error(missing))
	d.audit_requirements[0] == "Log requester, purpose and fields accessed"
	d.audit_requirements[count(d.audit_requirements) - 1] == data_access_config_error_audit
}

data_access_config_error_audit := "Human review of the request: denied on a configuration error of data.acgs.config.data_access, not scored"

# A configuration error denied with no required action and no audit
# requirement: nothing said the denied request needed a human's review, or
# that the request had to be logged as every other data access is
# (review). It requires the human review path's actions (the configured
# ones, or the spec's when those cannot be read) and the audit of the
# request it is, with a human review.
test_configuration_error_denials_require_review if {
	d := main.decision with input as main_test.data_access_input
		with data.acgs.config as edited([{"op": "remove", "path": "/data_access/access_threshold"}])
	d.audit_requirements == [
		"Log requester, purpose and fields accessed",
		"Audit logging for sensitive field access: [\"email\"]",
		"Record consent verification for 1 data subjects",
		data_access_config_error_audit,
	]

	e := main.decision with input as main_test.complex_input
		with data.acgs.config as edited([{"op": "remove", "path": "/evolution/auto_approve_threshold"}])
	e.required_actions == evolution_config_error_actions
	every v in [null, "Full human review", [], [{"a": 1}]] {
		f := main.decision with input as main_test.complex_input
			with data.acgs.config as edited([
				{"op": "remove", "path": "/evolution/auto_approve_threshold"},
				{"op": "replace", "path": "/evolution/path_actions/human_review", "value": v},
			])
		f.required_actions == evolution_config_error_actions
	}
	g := main.decision with input as main_test.complex_input
		with data.acgs.config as edited([
			{"op": "remove", "path": "/evolution/auto_approve_threshold"},
			{"op": "replace", "path": "/evolution/path_actions/human_review", "value": ["Board review", "Security sign-off"]},
		])
	g.required_actions == ["Board review", "Security sign-off", "Correct data.acgs.config.evolution and evaluate the request again"]
}

# A bulk request (50,000 records) keeping personal data for longer than
# its limit: denied (0.92) with the shipped configuration.
bulk_long_retention := json.patch(main_test.data_access_input, [
	{"op": "replace", "path": "/data_request/record_count", "value": 50000},
	{"op": "replace", "path": "/data_request/retention_policy", "value": {"personal_identifiable_information": 99999999}},
])

# [edit, what lacks]. A bulk limit written "1000" was above every count (no
# bulk indicator), a retention limit "2592000" or limits that were not an
# object were never exceeded: the request was allowed (0.95, 0.97)
# (review).
data_access_edits := [
	[[{"op": "replace", "path": "/data_access/bulk_indicators/max_record_count", "value": "1000"}], "bulk_indicators.max_record_count: a number"],
	[[{"op": "replace", "path": "/data_access/bulk_indicators/max_fields", "value": null}], "bulk_indicators.max_fields: a number"],
	[[{"op": "replace", "path": "/data_access/bulk_indicators", "value": "1000"}], "bulk_indicators.max_fields: a number, bulk_indicators.max_record_count: a number"],
	[[{"op": "replace", "path": "/data_access/retention_limits_seconds/personal_identifiable_information", "value": "2592000"}], "retention_limits_seconds: an object of numbers"],
	[[{"op": "replace", "path": "/data_access/retention_limits_seconds", "value": ["2592000"]}], "retention_limits_seconds: an object of numbers"],
	[[{"op": "remove", "path": "/data_access"}], "data_access: an object"],
]

test_data_access_configuration_errors if {
	d := main.decision with input as bulk_long_retention
	d.allow == false
	d.access_score == 0.92
	every c in data_access_edits {
		e := main.decision with input as bulk_long_retention with data.acgs.config as edited(c[0])
		data_access_config_error_is(e, c[1])
	}

	# (the retention limits are not needed without a retention policy)
	no_policy := json.remove(main_test.data_access_input, ["data_request/retention_policy"])
	f := main.decision with input as no_policy
		with data.acgs.config as edited([{"op": "replace", "path": "/data_access/retention_limits_seconds", "value": "x"}])
	f.access_score == 0.9
}

# A configuration error's audit requirements were computed with the broken
# bulk limit: one removed (or a string) made no request bulk, so a request
# for 50,000 records required no review of bulk access (review). A bulk
# limit that cannot be read counts as exceeded.
test_data_access_bulk_limit_unreadable_audit if {
	d := main.decision with input as bulk_long_retention
	"Review bulk or automated access" in d.audit_requirements
	every name in ["max_record_count", "max_fields"] {
		path := concat("/", ["", "data_access", "bulk_indicators", name])
		every op in [{"op": "remove", "path": path}, {"op": "replace", "path": path, "value": "1000"}] {
			e := main.decision with input as bulk_long_retention with data.acgs.config as edited([op])
			data_access_config_error_is(e, concat("", ["bulk_indicators.", name, ": a number"]))
			"Review bulk or automated access" in e.audit_requirements
		}
	}
}

# The max_fields half of the above: 12 fields (above max_fields, 10) of
# 10 records (within max_record_count), so that only the field count makes
# the request bulk. With max_fields removed or "1000", the configuration
# error's audit requirements were computed as if no request had too many
# fields, and asked for no review of bulk access (review).
many_fields := json.patch(main_test.data_access_input, [{"op": "replace", "path": "/data_request/data_fields", "value": [
{"name": sprintf("metric_%d", [i]), "category": "analytics", "classification_level": 1, "purpose_relevance": 0.9} |
	some i in numbers.range(1, 12)
]}])

test_data_access_field_limit_unreadable_audit if {
	many_fields.data_request.record_count <= config.data_access.bulk_indicators.max_record_count
	count(many_fields.data_request.data_fields) > config.data_access.bulk_indicators.max_fields
	d := main.decision with input as many_fields
	d.evaluation_details.bulk_indicators == ["field_count"]
	"Review bulk or automated access" in d.audit_requirements
	path := "/data_access/bulk_indicators/max_fields"
	every op in [{"op": "remove", "path": path}, {"op": "replace", "path": path, "value": "1000"}] {
		e := main.decision with input as many_fields with data.acgs.config as edited([op])
		data_access_config_error_is(e, "bulk_indicators.max_fields: a number")
		"Review bulk or automated access" in e.audit_requirements
	}
}

# A retention limit removed from data.json dropped its check: a bulk
# request keeping financial information ten years (denied, 0.92) was
# allowed (0.97) (review). The limits must hold the four categories the
# spec names: a missing one is a configuration error naming it (for the
# requests with a retention policy, as the limits' type is).
test_data_access_retention_limit_missing if {
	req := json.patch(main_test.data_access_input, [
		{"op": "replace", "path": "/data_request/retention_policy", "value": {"financial_information": 315360000}},
		{"op": "replace", "path": "/data_request/record_count", "value": 1001},
	])
	d := main.decision with input as req
	d.allow == false
	d.access_score == 0.92
	e := main.decision with input as req
		with data.acgs.config as edited([{"op": "remove", "path": "/data_access/retention_limits_seconds/financial_information"}])
	data_access_config_error_is(e, "retention_limits_seconds.financial_information: a number")
	f := main.decision with input as req
		with data.acgs.config as edited([{"op": "replace", "path": "/data_access/retention_limits_seconds", "value": {}}])
	data_access_config_error_is(f, "retention_limits_seconds.authentication_credentials: a number, retention_limits_seconds.financial_information: a number, retention_limits_seconds.health_records: a number, retention_limits_seconds.personal_identifiable_information: a number")

	# (not needed without a retention policy)
	no_policy := json.remove(main_test.data_access_input, ["data_request/retention_policy"])
	g := main.decision with input as no_policy
		with data.acgs.config as edited([{"op": "remove", "path": "/data_access/retention_limits_seconds/financial_information"}])
	g.access_score == 0.9
	data_access.configuration_problems == set() with input as no_policy
		with data.acgs.config as edited([{"op": "remove", "path": "/data_access/retention_limits_seconds/financial_information"}])
}

# sensitive_categories with an entry that is not a string (a category
# written as an object): that category was not sensitive, so health records
# needed no special authorization or encryption (review). Such a list
# reads as one nobody can read, like a list that is not an array: every
# field is sensitive.
test_sensitive_categories_with_entries_not_strings if {
	x := json.patch(main_test.data_access_input, [{"op": "replace", "path": "/data_request/special_authorization", "value": false}])
	every v in [[{"category": "personal_identifiable_information"}], ["health_records", 5]] {
		d := main.decision with input as x
			with data.acgs.config as edited([{"op": "replace", "path": "/data_access/sensitive_categories", "value": v}])
		d.evaluation_details.sensitive_field_count == 2
		d.allow == false
	}
}

# A threshold missing or not a number was never reached: without
# access_threshold a request scoring 1 was denied with no reason at all,
# with null "below null" (review). A configuration error, named.
test_access_threshold_not_a_number if {
	every op in [
		{"op": "remove", "path": "/data_access/access_threshold"},
		{"op": "replace", "path": "/data_access/access_threshold", "value": null},
		{"op": "replace", "path": "/data_access/access_threshold", "value": "0.95"},
		{"op": "replace", "path": "/data_access/access_threshold", "value": false},
	] {
		d := main.decision with input as main_test.data_access_input with data.acgs.config as edited([op])
		d.allow == false
		d.compliance_score == 0
		d.evaluation_details.configuration_error == true
		d.reasons == ["Constitution configuration error: data.acgs.config.data_access lacks a value of the type this evaluation needs (access_threshold: a number)"]
	}
}

# A cut length that is not a whole number >= 0 cuts at 200: every tool_call
# decision was undefined ("200", null: substring failed), and -1 did not
# cut at all.
test_max_reason_value_length_not_a_whole_number if {
	long := concat("", ["notes__", concat("", [x | some _ in numbers.range(1, 300); x := "x"])])
	x := json.patch(tool_base, [{"op": "replace", "path": "/tool_call/name", "value": long}, {"op": "replace", "path": "/tool_call/upstream", "value": ""}])
	every v in ["200", null, -1, 2.5, true] {
		d := main.decision with input as x
			with data.acgs.config as edited([{"op": "replace", "path": "/max_reason_value_length", "value": v}])
		count(d.evaluation_details.tool) == 200
	}
	d := main.decision with input as x with data.acgs.config as edited([{"op": "replace", "path": "/max_reason_value_length", "value": 10}])
	d.evaluation_details.tool == "notes__xxx"
}

# ---------------------------------------------------------------------------
# The tool_call rules' configuration: a value of the wrong type the rules of
# a call read denies that call with a configuration error (as a number the
# constitutional scoring lacks does), naming each value and the type it
# needs
# ---------------------------------------------------------------------------

# A configuration error of the tool_call rules, naming what lacks.
tool_config_error(missing) := {
	"allow": false,
	"outcome": "deny",
	"compliance_score": 0,
	"reasons": [sprintf(
		"Constitution configuration error: data.acgs.config.tool_call lacks a value of the type this evaluation needs (%s)",
		[missing],
	)],
	"constitutional_hash": main_test.hash,
	"policy": "tool_call",
	"evaluation_details": {"configuration_error": true},
}

# (Compared as JSON text, where numbers of equal value are the same: the
# type checker sees a tool_call decision as its evaluated kind only.)
tool_config_error_is(d, missing) if json.marshal(d) == json.marshal(tool_config_error(missing))

# Values of the wrong type an operator's edit may leave: none is an array
# of strings, and the last is one that holds something else.
not_string_lists := ["notes", null, 5, true, {"a": "notes"}, [{"name": "notes"}], ["x", 1]]

# [list, a call it is for, the list as an operator meant it]. Each list set
# to a value of another type matched nothing, so each call was allowed
# (review); with the list as meant, each is denied.
tool_call_lists := [
	["blocked_upstreams", tool_base, ["notes"]],
	["path_argument_names", tool_call_test.args({"path": "/etc/passwd"}), ["path"]],
	["shell_argument_names", tool_call_test.args({"command": "rm -rf /"}), ["command"]],
	["url_argument_names", tool_call_test.args({"url": "evil.net/x"}), ["url"]],
	["host_argument_names", tool_call_test.args({"host": "evil.net"}), ["host"]],
	["secret_argument_names", tool_call_test.args({"password": "hunter2"}), ["password"]],
]

test_tool_call_lists_not_arrays_of_strings if {
	every c in tool_call_lists {
		[name, x, meant] := c
		main.decision.outcome == "deny" with input as x
			with data.acgs.config as edited([{"op": "replace", "path": concat("/", ["", "tool_call", name]), "value": meant}])
		every v in not_string_lists {
			d := main.decision with input as x
				with data.acgs.config as edited([{"op": "replace", "path": concat("/", ["", "tool_call", name]), "value": v}])
			tool_config_error_is(d, concat("", [name, ": an array of strings"]))
		}
	}
	d := main.decision with input as tool_base with data.acgs.config as edited([{"op": "remove", "path": "/tool_call/blocked_upstreams"}])
	tool_config_error_is(d, "blocked_upstreams: an array of strings")
}

# The upstream rules' configuration is read by hidden too: a tool the
# gateway lists (and whose upstream's resources and prompts it shows) is
# hidden when it is of the wrong type.
test_tool_call_upstream_configuration_hides if {
	every ops in [
		[{"op": "replace", "path": "/tool_call/blocked_upstreams", "value": "notes"}],
		[{"op": "replace", "path": "/tool_call/agent_upstreams", "value": [{"agent-1": ["files"]}]}],
		[{"op": "replace", "path": "/tool_call/agent_upstreams", "value": {"agent-1": {"u": "notes"}}}],
	] {
		tool_call.hidden with input as tool_base with data.acgs.config as edited(ops)
	}

	# (not the argument rules' configuration: resources and prompts are not
	# decided by them)
	not tool_call.hidden with input as tool_base
		with data.acgs.config as edited([{"op": "replace", "path": "/tool_call/shell_argument_names", "value": "command"}])
}

# agent_upstreams of another type limited no agent (review); an agent's
# entry of another type limits that agent's calls only.
test_tool_call_agent_upstreams_not_typed if {
	every v in ["agent-1", null, 5, [{"agent-1": ["files"]}]] {
		d := main.decision with input as tool_base
			with data.acgs.config as edited([{"op": "replace", "path": "/tool_call/agent_upstreams", "value": v}])
		tool_config_error_is(d, "agent_upstreams: an object")
	}
	every v in not_string_lists {
		cfg := edited([{"op": "replace", "path": "/tool_call/agent_upstreams", "value": {"agent-1": v}}])
		d := main.decision with input as tool_base with data.acgs.config as cfg
		tool_config_error_is(d, "agent_upstreams (this agent's entry): an array of strings")
		other := json.patch(tool_base, [{"op": "replace", "path": "/tool_call/agent/id", "value": "agent-2"}])
		main.decision.outcome == "allow" with input as other with data.acgs.config as cfg
	}
}

# require_agent_identity or require_session "true" (or 1, null) required
# nothing (review).
test_tool_call_requirements_not_booleans if {
	every c in [
		["require_agent_identity", json.patch(tool_base, [{"op": "remove", "path": "/tool_call/agent/id"}])],
		["require_session", json.patch(tool_base, [{"op": "remove", "path": "/tool_call/agent/session"}])],
	] {
		[name, x] := c
		main.decision.outcome == "deny" with input as x
		every v in ["true", 1, null, [true]] {
			d := main.decision with input as x
				with data.acgs.config as edited([{"op": "replace", "path": concat("/", ["", "tool_call", name]), "value": v}])
			tool_config_error_is(d, concat("", [name, ": a boolean"]))
		}
	}
}

# An agent's own limit of another type fell back to the default: a limit
# of 5 written "5" let the agent make 120 calls a minute (review). A
# configuration error for that agent's calls; other agents are limited as
# ever.
test_tool_call_per_agent_limit_not_a_number if {
	x := tool_call_test.call({"context": {"calls_last_minute": 50}})
	main.decision.outcome == "deny" with input as x
		with data.acgs.config as edited([{"op": "replace", "path": "/tool_call/rate_limit/per_agent", "value": {"agent-1": 5}}])
	every v in ["5", null, true, [5], {"n": 5}] {
		cfg := edited([{"op": "replace", "path": "/tool_call/rate_limit/per_agent", "value": {"agent-1": v}}])
		d := main.decision with input as x with data.acgs.config as cfg
		tool_config_error_is(d, "rate_limit.per_agent (this agent's entry): a number")
		other := json.patch(x, [{"op": "replace", "path": "/tool_call/agent/id", "value": "agent-2"}])
		main.decision.outcome == "allow" with input as other with data.acgs.config as cfg
	}

	# per_agent of another type: every agent's own limit was lost
	every v in [[["agent-1", 5]], "agent-1", null] {
		d := main.decision with input as x
			with data.acgs.config as edited([{"op": "replace", "path": "/tool_call/rate_limit/per_agent", "value": v}])
		tool_config_error_is(d, "rate_limit.per_agent: an object")
	}

	# the default is needed by the agents without a limit of their own
	cfg := edited([
		{"op": "replace", "path": "/tool_call/rate_limit/default_per_minute", "value": "120"},
		{"op": "replace", "path": "/tool_call/rate_limit/per_agent", "value": {"agent-2": 100}},
	])
	d := main.decision with input as x with data.acgs.config as cfg
	tool_config_error_is(d, "rate_limit.default_per_minute: a number")
	own := json.patch(x, [{"op": "replace", "path": "/tool_call/agent/id", "value": "agent-2"}])
	main.decision.outcome == "allow" with input as own with data.acgs.config as cfg
}

# upstream_file_roots of another type: an upstream's own, narrower roots
# were lost, and file_roots applied (review).
test_tool_call_upstream_file_roots_not_an_object if {
	x := tool_call_test.args({"path": "/workspace/a"})
	main.decision.outcome == "deny" with input as x
		with data.acgs.config as edited([{"op": "replace", "path": "/tool_call/upstream_file_roots", "value": {"notes": ["/workspace/notes"]}}])
	every v in [[{"notes": ["/workspace/notes"]}], "/workspace/notes", null] {
		d := main.decision with input as x
			with data.acgs.config as edited([{"op": "replace", "path": "/tool_call/upstream_file_roots", "value": v}])
		tool_config_error_is(d, "upstream_file_roots: an object")
	}
}

# Patterns of another type, or one that is no regular expression: a string
# of patterns or an invalid shell pattern matched nothing (review); an
# invalid secret pattern left every tool_call decision undefined, as the
# redaction of every reason failed.
test_tool_call_patterns_not_regular_expressions if {
	every c in [
		["shell_patterns", tool_call_test.args({"text": "$(id)"})],
		["secret_patterns", tool_call_test.args({"text": "AKIAIOSFODNN7EXAMPLE"})],
	] {
		[name, x] := c
		main.decision.outcome == "deny" with input as x
		every ops in [
			[{"op": "replace", "path": concat("/", ["", "tool_call", name]), "value": "\\$\\(|AKIA"}],
			[{"op": "replace", "path": concat("/", ["", "tool_call", name]), "value": ["\\$\\(", "AKIA"]}],
			[{"op": "replace", "path": concat("/", ["", "tool_call", name]), "value": null}],
			[{"op": "add", "path": concat("/", ["", "tool_call", name, "x"]), "value": "("}],
			[{"op": "add", "path": concat("/", ["", "tool_call", name, "x"]), "value": ")("}],
			[{"op": "add", "path": concat("/", ["", "tool_call", name, "x"]), "value": 5}],
		] {
			d := main.decision with input as x with data.acgs.config as edited(ops)
			tool_config_error_is(d, concat("", [name, ": an object of regular expressions"]))
		}
	}
}

# scores of another type: no decision at all (review).
test_tool_call_scores_not_numbers if {
	every ops in [
		[{"op": "replace", "path": "/tool_call/scores", "value": null}],
		[{"op": "replace", "path": "/tool_call/scores/deny", "value": "0"}],
		[{"op": "remove", "path": "/tool_call/scores/allow"}],
	] {
		d := main.decision with input as tool_base with data.acgs.config as edited(ops)
		tool_config_error_is(d, "scores: an object of numbers (allow, approval_required, deny)")
	}
}

# Several problems are named together, in order; a tool_call section
# missing altogether lacks every value.
test_tool_call_configuration_problems_named_together if {
	d := main.decision with input as tool_base
		with data.acgs.config as edited([
			{"op": "replace", "path": "/tool_call/require_session", "value": "true"},
			{"op": "replace", "path": "/tool_call/blocked_upstreams", "value": null},
		])
	tool_config_error_is(d, "blocked_upstreams: an array of strings, require_session: a boolean")
	e := main.decision with input as tool_base with data.acgs.config as edited([{"op": "remove", "path": "/tool_call"}])
	tool_config_error_is(e, "tool_call: an object")
	tool_call.hidden with input as tool_base with data.acgs.config as edited([{"op": "remove", "path": "/tool_call"}])
}

# The problems of the configuration only are their own rules, so that the
# compiled evaluator shares their values across decisions (internal/vm,
# TestMemoConstitutionShares checks it does): data_configuration_problems
# and, of those the upstream rules read,
# data_upstream_configuration_problems. [edit, the data-only problems it
# makes, the problems of a call of agent-1 (tool_base)]: the data-only
# problems are the same for calls of every agent and for no call, they
# are among every call's configuration_problems, and what else a call's
# configuration_problems names is one of the problems that read its agent.
test_tool_call_data_configuration_problems_read_no_input if {
	every c in [
		[[], set(), set()],
		[
			[{"op": "replace", "path": "/tool_call/path_argument_names", "value": "path"}],
			{"path_argument_names: an array of strings"}, {"path_argument_names: an array of strings"},
		],
		[
			[{"op": "replace", "path": "/tool_call/require_session", "value": "true"}],
			{"require_session: a boolean"}, {"require_session: a boolean"},
		],
		[
			[{"op": "replace", "path": "/tool_call/rate_limit/per_agent", "value": null}],
			{"rate_limit.per_agent: an object"}, {"rate_limit.per_agent: an object"},
		],
		[
			[{"op": "replace", "path": "/tool_call/upstream_file_roots", "value": []}],
			{"upstream_file_roots: an object"}, {"upstream_file_roots: an object"},
		],
		[
			[{"op": "replace", "path": "/tool_call/scores/deny", "value": "0"}],
			{"scores: an object of numbers (allow, approval_required, deny)"}, {"scores: an object of numbers (allow, approval_required, deny)"},
		],
		[
			[{"op": "replace", "path": "/tool_call/blocked_upstreams", "value": null}],
			{"blocked_upstreams: an array of strings"}, {"blocked_upstreams: an array of strings"},
		],
		[
			[{"op": "replace", "path": "/tool_call/agent_upstreams", "value": []}],
			{"agent_upstreams: an object"}, {"agent_upstreams: an object"},
		],
		[[{"op": "remove", "path": "/tool_call"}], {"tool_call: an object"}, {"tool_call: an object"}],
		[
			[{"op": "add", "path": "/tool_call/shell_patterns/x", "value": "("}],
			{"shell_patterns: an object of regular expressions"}, {"shell_patterns: an object of regular expressions"},
		],
		[
			[{"op": "replace", "path": "/tool_call/rate_limit/per_agent", "value": {"agent-1": "5"}}],
			set(), {"rate_limit.per_agent (this agent's entry): a number"},
		],
		[
			[{"op": "remove", "path": "/tool_call/rate_limit/default_per_minute"}],
			set(), {"rate_limit.default_per_minute: a number"},
		],
		[
			[{"op": "replace", "path": "/tool_call/agent_upstreams", "value": {"agent-1": "notes"}}],
			set(), {"agent_upstreams (this agent's entry): an array of strings"},
		],
		[
			[
				{"op": "replace", "path": "/tool_call/agent_upstreams", "value": {"agent-1": "notes"}},
				{"op": "replace", "path": "/tool_call/blocked_upstreams", "value": "notes"},
				{"op": "replace", "path": "/tool_call/require_agent_identity", "value": 1},
			],
			{"blocked_upstreams: an array of strings", "require_agent_identity: a boolean"},
			{"agent_upstreams (this agent's entry): an array of strings", "blocked_upstreams: an array of strings", "require_agent_identity: a boolean"},
		],
	] {
		[ops, data_only, of_base] := c
		cfg := edited(ops)
		tool_call.configuration_problems == of_base with input as tool_base with data.acgs.config as cfg
		every x in [tool_base, tool_call_test.call({"agent": {"id": "agent-2", "session": "s"}}), tool_call_test.call({"agent": {}}), {}] {
			tool_call.data_configuration_problems == data_only with input as x with data.acgs.config as cfg
			data_upstream := tool_call.data_upstream_configuration_problems with input as x with data.acgs.config as cfg
			data_upstream == data_only & upstream_problem_names
			upstream := tool_call.upstream_configuration_problems with input as x with data.acgs.config as cfg
			data_upstream == upstream - {"agent_upstreams (this agent's entry): an array of strings"}
			all := tool_call.configuration_problems with input as x with data.acgs.config as cfg
			(upstream | data_only) - all == set()
			every p in all - (upstream | data_only) {
				p in {"rate_limit.per_agent (this agent's entry): a number", "rate_limit.default_per_minute: a number"}
			}
		}
	}
}

upstream_problem_names := {"tool_call: an object", "blocked_upstreams: an array of strings", "agent_upstreams: an object"}

# An entry of the prohibited or approval list that is not a string (a glob
# written as an object) matched no tool: shell__exec was allowed (review).
# The list then reads as one nobody can read, like a list that is not an
# array: it matches every tool.
test_tool_call_name_lists_with_entries_not_strings if {
	every v in [[{"glob": "*__exec"}], ["*__bash", 5]] {
		cfg := edited([{"op": "replace", "path": "/tool_call/prohibited_tools", "value": v}])
		d := main.decision with input as tool_call_test.call({"name": "shell__exec"}) with data.acgs.config as cfg
		d.reasons == ["Tool 'shell__exec' is prohibited by the constitution"]
		tool_call.hidden with input as tool_base with data.acgs.config as cfg
		a := edited([{"op": "replace", "path": "/tool_call/approval_required_tools", "value": v}])
		main.decision.outcome == "approval_required" with input as tool_base with data.acgs.config as a
	}
}
