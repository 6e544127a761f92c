package acgs.evolution_test

import data.acgs.config
import data.acgs.evolution
import data.acgs.main

hash := "cdd01ef066bc6cf2"

# The workload's `complex` request.
complex_input := {
	"type": "evolution_approval",
	"constitutional_hash": hash,
	"evolution_request": {
		"id": "evo-0",
		"type": "minor_update",
		"constitutional_hash": hash,
		"changes": {
			"code_changes": ["Performance optimization in query processing"],
			"external_dependencies": [],
			"privilege_escalation": false,
			"experimental_features": false,
		},
		"performance_analysis": {
			"complexity_delta": 0.03,
			"memory_delta": 0.01,
			"latency_delta": -0.02,
			"resource_delta": 0.005,
		},
		"rollback_plan": {
			"procedure": "Automated rollback via git revert",
			"verification": "Unit tests + integration tests",
			"timeline": "< 3 minutes",
			"dependencies": "None",
			"tested": true,
			"automated": true,
		},
	},
}

# complex_input with evolution_request fields merged in (nested objects merge).
with_request(patch) := object.union(complex_input, {"evolution_request": patch})

# complex_input with one evolution_request path set to a value (replacing).
set_request(path, value) := json.patch(complex_input, [{"op": "add", "path": array.concat(["evolution_request"], path), "value": value}])

decide(x) := d if {
	d := main.decision with input as x
}

no_deltas := {"complexity_delta": 0, "memory_delta": 0, "latency_delta": 0, "resource_delta": 0}

# ---------------------------------------------------------------------------
# Worked example
# ---------------------------------------------------------------------------

test_complex_request_scores if {
	d := decide(complex_input)
	d.evaluation_details.risk == 0.9
	d.evaluation_details.constitutional == 1
	d.evaluation_details.performance == 0.9575
	d.evaluation_details.rollback == 1
	d.evaluation_details.approvals == 1
	d.evolution_score == 0.9665
	d.compliance_score == 0.9665
	d.approval_path == "auto_approve"
	d.allow == true
	d.required_actions == []
	d.reasons == []
}

test_package_decision if {
	d := evolution.decision with input as complex_input
	d.approval_path == "auto_approve"
}

test_weights_match_constitution if {
	config.evolution.weights == {"risk": 0.25, "constitutional": 0.35, "performance": 0.2, "rollback": 0.15, "approvals": 0.05}
}

# ---------------------------------------------------------------------------
# Risk
# ---------------------------------------------------------------------------

test_base_risk_per_type if {
	config.evolution.base_risks == {
		"minor_update": 0.1, "patch": 0.15, "configuration": 0.2,
		"feature_addition": 0.4, "major_update": 0.7, "architecture_change": 0.9,
	}
	every t, b in config.evolution.base_risks {
		d := decide(with_request({"type": t}))
		d.evaluation_details.adjusted_risk == b
		d.evaluation_details.risk == round((1 - b) * 10000) / 10000
	}
}

test_unknown_evolution_type_base_risk if {
	d := decide(with_request({"type": "rewrite_everything"}))
	d.evaluation_details.adjusted_risk == 0.5
	"Unknown evolution type 'rewrite_everything' (base risk 0.5)" in d.reasons
}

test_missing_or_wrong_type_evolution_type_is_unknown if {
	every v in [null, 5, ["minor_update"]] {
		d := decide(set_request(["type"], v))
		d.evaluation_details.adjusted_risk == 0.5
		d.evaluation_details.evolution_type == ""
	}
}

test_patch_auto_approved if {
	d := decide(with_request({"type": "patch"}))
	d.evolution_score == 0.954
	d.approval_path == "auto_approve"
}

test_high_risk_type_concern if {
	d := decide(with_request({"type": "feature_addition", "peer_reviewed": true}))
	d.evolution_score == 0.8915
	d.approval_path == "human_review"
	"High-risk evolution type 'feature_addition' (base risk 0.4)" in d.reasons
}

test_external_dependencies_add_risk if {
	d := decide(with_request({"changes": {"external_dependencies": ["left-pad"]}}))
	d.evaluation_details.adjusted_risk == 0.5
	d.evolution_score == 0.8665
	d.approval_path == "human_review"
	"Adds external dependencies" in d.reasons
}

test_external_dependencies_empty_or_wrong_type_no_risk if {
	every v in [[], "left-pad", {"a": 1}, true, 3] {
		d := decide(set_request(["changes", "external_dependencies"], v))
		d.evaluation_details.adjusted_risk == 0.1
	}
}

test_privilege_escalation_adds_risk if {
	d := decide(with_request({"changes": {"privilege_escalation": true}}))
	d.evaluation_details.adjusted_risk == 0.7
	d.evolution_score == 0.8165
	"Risky change: privilege_escalation" in d.reasons
}

test_network_changes_add_risk if {
	d := decide(with_request({"changes": {"network_changes": true}}))
	d.evaluation_details.adjusted_risk == 0.4
	d.evolution_score == 0.8915
	"Risky change: network_changes" in d.reasons
}

test_experimental_features_add_risk if {
	d := decide(with_request({"changes": {"experimental_features": true}}))
	d.evaluation_details.adjusted_risk == 0.6
	d.evolution_score == 0.8415
	"Risky change: experimental_features" in d.reasons
}

test_risk_flags_must_be_boolean_true if {
	d := decide(with_request({"changes": {"privilege_escalation": "true", "network_changes": 1, "experimental_features": [true]}}))
	d.evaluation_details.adjusted_risk == 0.1
	d.allow == true
}

test_risk_clamped_to_one if {
	d := decide(with_request({"changes": {
		"external_dependencies": ["x"], "privilege_escalation": true,
		"network_changes": true, "experimental_features": true,
	}}))
	d.evaluation_details.adjusted_risk == 1
	d.evaluation_details.risk == 0
	d.evolution_score == 0.7415
}

test_each_mitigation_subtracts if {
	base := with_request({"type": "feature_addition", "peer_reviewed": true})
	decide(object.union(base, {"evolution_request": {"mitigations": {"sandbox_deployment": true}}})).evaluation_details.adjusted_risk == 0.2
	decide(object.union(base, {"evolution_request": {"mitigations": {"gradual_rollout": true}}})).evaluation_details.adjusted_risk == 0.25
	decide(object.union(base, {"evolution_request": {"mitigations": {"enhanced_monitoring": true}}})).evaluation_details.adjusted_risk == 0.3
}

test_all_mitigations if {
	d := decide(with_request({"type": "architecture_change", "mitigations": {
		"sandbox_deployment": true, "gradual_rollout": true, "enhanced_monitoring": true,
	}}))
	d.evaluation_details.adjusted_risk == 0.45
}

test_risk_clamped_to_zero if {
	d := decide(with_request({"mitigations": {"sandbox_deployment": true}}))
	d.evaluation_details.adjusted_risk == 0
	d.evaluation_details.risk == 1
	d.evolution_score == 0.9915
}

test_mitigations_wrong_type_ignored if {
	every v in ["all", ["sandbox_deployment"], {"sandbox_deployment": "yes"}] {
		d := decide(set_request(["mitigations"], v))
		d.evaluation_details.adjusted_risk == 0.1
	}
}

# ---------------------------------------------------------------------------
# Constitutional impact
# ---------------------------------------------------------------------------

test_each_constitutional_violation_subtracts if {
	every flag in ["logging_disabled", "audit_disabled", "data_encryption_weakened"] {
		d := decide(with_request({"changes": {flag: true}}))
		d.evaluation_details.constitutional == 0.7
		d.evolution_score == 0.8615
		sprintf("Constitutional violation: %s", [flag]) in d.reasons
	}
}

test_all_constitutional_violations if {
	d := decide(with_request({"changes": {"logging_disabled": true, "audit_disabled": true, "data_encryption_weakened": true}}))
	d.evaluation_details.constitutional == 0.1
	d.evolution_score == 0.6515
}

test_evolution_hash_mismatch if {
	d := decide(with_request({"constitutional_hash": "other"}))
	d.evaluation_details.constitutional == 0.5
	d.evolution_score == 0.7915
	d.approval_path == "human_review"
	"Evolution request constitutional hash missing or mismatched" in d.reasons
}

test_evolution_hash_missing if {
	d := decide(json.remove(complex_input, ["evolution_request/constitutional_hash"]))
	d.evaluation_details.constitutional == 0.5
	d.evolution_score == 0.7915
}

test_constitutional_clamped_to_zero if {
	d := decide(with_request({"constitutional_hash": 1, "changes": {"logging_disabled": true, "audit_disabled": true, "data_encryption_weakened": true}}))
	d.evaluation_details.constitutional == 0
	d.evolution_score == 0.6165
}

# ---------------------------------------------------------------------------
# Performance: 1 - mean(min(1, max(0, delta) / limit))
# ---------------------------------------------------------------------------

test_performance_limits_match_constitution if {
	config.evolution.performance_limits == {"complexity_delta": 0.3, "memory_delta": 0.2, "latency_delta": 0.15, "resource_delta": 0.25}
}

test_performance_no_deltas if {
	d := decide(with_request({"performance_analysis": no_deltas}))
	d.evaluation_details.performance == 1
	d.evolution_score == 0.975
}

test_performance_missing if {
	d := decide(json.remove(complex_input, ["evolution_request/performance_analysis"]))
	d.evaluation_details.performance == 1
}

test_performance_negative_delta_is_zero if {
	d := decide(with_request({"performance_analysis": {"complexity_delta": -5, "memory_delta": -1, "latency_delta": -1, "resource_delta": -1}}))
	d.evaluation_details.performance == 1
}

test_performance_delta_capped_at_one if {
	d := decide(with_request({"performance_analysis": {"complexity_delta": 0.6}}))
	d.evaluation_details.performance == 0.7325
	"Performance complexity_delta 0.6 exceeds limit 0.3" in d.reasons
}

test_performance_wrong_type_delta_is_zero if {
	d := decide(with_request({"performance_analysis": {"complexity_delta": "0.9", "memory_delta": true, "latency_delta": [1], "resource_delta": null}}))
	d.evaluation_details.performance == 1
}

# ---------------------------------------------------------------------------
# Rollback
# ---------------------------------------------------------------------------

test_rollback_missing if {
	d := decide(json.remove(complex_input, ["evolution_request/rollback_plan"]))
	d.evaluation_details.rollback == 0
	d.evolution_score == 0.8165
	"No rollback plan" in d.reasons
}

test_rollback_empty_or_wrong_type_is_no_plan if {
	every v in [{}, "git revert", ["git revert"], true, null] {
		d := decide(set_request(["rollback_plan"], v))
		d.evaluation_details.rollback == 0
	}
}

test_rollback_plan_only_procedure if {
	d := decide(set_request(["rollback_plan"], {"procedure": "revert"}))
	d.evaluation_details.rollback == 0.475
}

test_rollback_not_tested_not_automated if {
	d := decide(with_request({"rollback_plan": {"tested": false, "automated": "true"}}))
	d.evaluation_details.rollback == 0.7
	d.evolution_score == 0.9215
	d.approval_path == "fast_track"
	"Rollback plan not tested" in d.reasons
	"Rollback plan not automated" in d.reasons
}

test_rollback_fields_must_be_non_empty_strings if {
	d := decide(with_request({"rollback_plan": {"procedure": "", "verification": 5, "timeline": ["x"]}}))
	d.evaluation_details.rollback == 0.775
}

# ---------------------------------------------------------------------------
# Reviews
# ---------------------------------------------------------------------------

test_no_reviews_required_for_minor_update if {
	d := decide(complex_input)
	d.evaluation_details.required_reviews == []
	d.evaluation_details.approvals == 1
}

test_configuration_requires_security_review if {
	d := decide(with_request({"type": "configuration"}))
	d.evaluation_details.required_reviews == ["security_review"]
	d.evaluation_details.approvals == 0
	d.evolution_score == 0.8915
	d.approval_path == "human_review"
	d.required_actions == ["Full human review of the evolution request", "Pass a security review"]
	"Missing required review: security_review" in d.reasons
}

test_configuration_with_security_review if {
	d := decide(with_request({"type": "configuration", "security_review_passed": true}))
	d.evaluation_details.approvals == 1
	d.evolution_score == 0.9415
	d.approval_path == "fast_track"
	d.required_actions == ["Obtain one human sign-off"]
}

test_security_changes_require_security_review if {
	d := decide(with_request({"changes": {"security_changes": true}}))
	d.evaluation_details.required_reviews == ["security_review"]
	d.evolution_score == 0.9165
	d.approval_path == "fast_track"
	d.required_actions == ["Obtain one human sign-off", "Pass a security review"]
	d.reasons == [
		"Missing required review: security_review",
		"Evolution score 0.9165 below auto-approval threshold 0.95 (path fast_track)",
	]
}

test_feature_addition_requires_peer_review if {
	d := decide(with_request({"type": "feature_addition"}))
	d.evaluation_details.required_reviews == ["peer_review"]
	d.evaluation_details.approvals == 0
}

test_major_update_requires_three_reviews if {
	every t in ["major_update", "architecture_change"] {
		d := decide(with_request({"type": t}))
		d.evaluation_details.required_reviews == ["human_approval", "peer_review", "security_review"]
		d.evaluation_details.approvals == 0
		d.approval_path == "human_review"
		d.required_actions == [
			"Full human review of the evolution request",
			"Obtain human approval",
			"Obtain a peer review",
			"Pass a security review",
		]
	}
}

test_major_update_partial_reviews if {
	d := decide(with_request({"type": "major_update", "human_approved": true, "peer_reviewed": true}))
	d.evaluation_details.approvals == 0.6667
	d.evaluation_details.missing_reviews == ["security_review"]
	d.required_actions == ["Full human review of the evolution request", "Pass a security review"]
}

test_major_update_all_reviews if {
	d := decide(with_request({"type": "major_update", "human_approved": true, "peer_reviewed": true, "security_review_passed": true}))
	d.evaluation_details.approvals == 1
	d.evolution_score == 0.8165
	d.approval_path == "human_review"
	d.required_actions == ["Full human review of the evolution request"]
	"High-risk evolution type 'major_update' (base risk 0.7)" in d.reasons
}

test_review_flags_must_be_boolean_true if {
	d := decide(with_request({"type": "major_update", "human_approved": "true", "peer_reviewed": 1, "security_review_passed": [true]}))
	d.evaluation_details.approvals == 0
}

# ---------------------------------------------------------------------------
# Approval paths and their boundaries
# ---------------------------------------------------------------------------

# complexity 0.15 -> performance 0.875 -> 0.225 + 0.35 + 0.175 + 0.15 + 0.05 = 0.95
test_auto_approve_at_exactly_threshold if {
	d := decide(with_request({"performance_analysis": object.union(no_deltas, {"complexity_delta": 0.15})}))
	d.evolution_score == 0.95
	d.approval_path == "auto_approve"
	d.allow == true
	d.reasons == []
}

test_fast_track_just_below_auto_approve if {
	d := decide(with_request({"performance_analysis": object.union(no_deltas, {"complexity_delta": 0.153})}))
	d.evolution_score == 0.9495
	d.approval_path == "fast_track"
	d.allow == false
	d.required_actions == ["Obtain one human sign-off"]
	d.reasons == ["Evolution score 0.9495 below auto-approval threshold 0.95 (path fast_track)"]
}

# complexity 0.3 + memory 0.1 -> performance 0.625 -> 0.9
test_fast_track_at_exactly_threshold if {
	d := decide(with_request({"performance_analysis": object.union(no_deltas, {"complexity_delta": 0.3, "memory_delta": 0.1})}))
	d.evolution_score == 0.9
	d.approval_path == "fast_track"
	d.allow == false
}

test_human_review_just_below_fast_track if {
	d := decide(with_request({"performance_analysis": object.union(no_deltas, {"complexity_delta": 0.3, "memory_delta": 0.102})}))
	d.evolution_score == 0.8995
	d.approval_path == "human_review"
	d.allow == false
	d.required_actions == ["Full human review of the evolution request"]
	"Evolution score 0.8995 below auto-approval threshold 0.95 (path human_review)" in d.reasons
}

test_thresholds_match_constitution if {
	config.evolution.auto_approve_threshold == 0.95
	config.evolution.fast_track_threshold == 0.9
}

# ---------------------------------------------------------------------------
# Missing or malformed request
# ---------------------------------------------------------------------------

test_missing_evolution_request if {
	d := decide({"type": "evolution_approval", "constitutional_hash": hash})
	d.allow == false
	d.approval_path == "human_review"
	d.evolution_score == 0.55
	"Evolution request missing or not an object" in d.reasons
	"No rollback plan" in d.reasons
}

test_evolution_request_wrong_type if {
	every v in ["upgrade", 5, [complex_input.evolution_request], null, true] {
		d := decide(object.union(complex_input, {"evolution_request": v}))
		d.allow == false
		d.approval_path == "human_review"
		"Evolution request missing or not an object" in d.reasons
	}
}

test_changes_wrong_type if {
	d := decide(set_request(["changes"], ["privilege_escalation"]))
	d.evaluation_details.adjusted_risk == 0.1
	d.evaluation_details.constitutional == 1
}

# ---------------------------------------------------------------------------
# Only the named fields are read, each by its full path
# ---------------------------------------------------------------------------

# What clients add beside the named fields: an id, a timestamp and nested
# free-form metadata, some of it named like the fields that are read.
noise := {
	"id": "evo-9f2c",
	"timestamp": 1764201600123,
	"metadata": {
		"source": "ci",
		"type": "patch",
		"human_approved": true,
		"changes": {"privilege_escalation": true},
		"rollback_plan": {"tested": true},
	},
}

test_unknown_request_fields_change_nothing if {
	every x in [
		complex_input,
		with_request({"type": "major_update", "human_approved": true}),
		with_request({"changes": {"privilege_escalation": true}, "constitutional_hash": "x"}),
		set_request([], {}),
	] {
		decide(object.union(x, {"evolution_request": noise})) == decide(x)
	}
}

# A request in which every field read matters: removing any one of them
# changes the decision.
typed_base := with_request({
	"type": "major_update",
	"changes": {"network_changes": true},
	"mitigations": {"sandbox_deployment": true},
	"human_approved": true,
	"security_review_passed": true,
	"peer_reviewed": true,
})

# Every request field read, with values of a wrong type for it.
wrong_typed := {
	"type": [5, ["major_update"], {"name": "major_update"}, null],
	"constitutional_hash": [1, [hash], {"hash": hash}],
	"changes": [["network_changes"], "network_changes", true],
	"mitigations": [["sandbox_deployment"], "sandbox_deployment", 1],
	"performance_analysis": [[0.03, 0.01], "small", 0.1],
	"rollback_plan": ["git revert", ["procedure"], true],
	"human_approved": ["true", 1, [true]],
	"security_review_passed": ["true", 1, [true]],
	"peer_reviewed": ["true", 1, [true], {"value": true}],
}

test_wrong_typed_field_counts_as_missing if {
	every field, values in wrong_typed {
		path := ["evolution_request", field]
		missing := decide(json.remove(typed_base, [path]))
		missing != decide(typed_base) # the field matters in typed_base
		every v in values {
			decide(json.patch(typed_base, [{"op": "add", "path": path, "value": v}])) == missing
		}
	}
}

# Each configured review names a flag the policy reads (by its own path):
# that flag alone satisfies the review.
# review_flag_names, the fields a review may name (configuration_problems),
# is a copy kept by hand of the flags review_flags_true reads: each name
# it lists is read, by itself, and no other field of a request is read as
# a flag (every field acgs.evolution documents reading, and others a
# request might carry, all true: only the listed names count).
test_review_flag_names_are_the_flags_read if {
	every name in evolution.review_flag_names {
		evolution.review_flags_true == {name} with input as with_request({"type": "major_update", name: true})
	}
	fields := {
		"type", "constitutional_hash", "changes", "mitigations", "performance_analysis", "rollback_plan",
		"human_approved", "security_review_passed", "peer_reviewed",
		"approved", "reviewed", "human_reviewed", "security_reviewed", "peer_review_passed",
		"compliance_reviewed", "legal_review_passed", "review_passed", "signed_off",
	}
	all_true := {f: true | some f in fields}
	evolution.review_flags_true == evolution.review_flag_names with input as object.union(complex_input, {"evolution_request": all_true})
	count(evolution.review_flags_true) == 0 with input as complex_input
}

test_config_review_fields_are_read if {
	every name, review in config.evolution.required_reviews {
		d := decide(with_request({"type": "major_update", review.field: true}))
		not name in d.evaluation_details.missing_reviews
		name in d.evaluation_details.required_reviews
	}
}

# ---------------------------------------------------------------------------
# Quoted values are cut at max_reason_value_length (200) characters
# ---------------------------------------------------------------------------

# Reported by review: the unknown type was quoted whole.
test_long_unknown_type_is_cut if {
	long := concat("", [x | some _ in numbers.range(1, 5000); x := "t"])
	d := decide(set_request(["type"], long))
	shown := substring(long, 0, 200)
	sprintf("Unknown evolution type '%s' (base risk 0.5)", [shown]) in d.reasons
	d.evaluation_details.evolution_type == shown
	every r in d.reasons {
		count(r) < 300
	}
}
