package acgs.main_test

import data.acgs.config
import data.acgs.main

hash := "cdd01ef066bc6cf2"

# The workload's requests (workloads/acgs-mixed.json, workloads/data-access.json).
safe_input := {
	"type": "constitutional_evaluation",
	"constitutional_hash": hash,
	"action": "data.read_public",
	"context": {
		"environment": {"sandbox_enabled": true, "audit_enabled": true},
		"agent": {"id": "agent-0", "trust_level": 0.9, "requested_resources": {"cpu_cores": 1}},
		"responsible_party": "load_test_user",
		"explanation": "Safe public data access for dashboard",
	},
}

dangerous_input := {
	"type": "constitutional_evaluation",
	"constitutional_hash": hash,
	"action": "system.execute_shell",
	"context": {
		"environment": {"sandbox_enabled": false},
		"agent": {"id": "rogue-0", "trust_level": 0.3, "requested_resources": {"cpu_cores": 4}},
		"responsible_party": "unknown",
		"explanation": "Attempting shell execution",
	},
}

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

data_access_input := {
	"type": "data_access",
	"constitutional_hash": hash,
	"data_request": {
		"data_fields": [
			{"name": "page_views", "category": "analytics", "classification_level": 1, "purpose_relevance": 0.9},
			{"name": "email", "category": "personal_identifiable_information", "classification_level": 2, "purpose_relevance": 0.8},
		],
		"requester_clearance_level": 2,
		"special_authorization": true,
		"purpose": "service_improvement",
		"allowed_purposes": ["service_improvement", "security_monitoring"],
		"justified_fields": ["page_views", "email"],
		"data_subjects": ["user-1"],
		"consent_records": [{
			"subject_id": "user-1",
			"status": "granted",
			"allowed_purposes": ["service_improvement"],
			"expiry_time": 4102444800,
		}],
		"timestamp": 1764201600,
		"retention_policy": {"personal_identifiable_information": 86400},
		"encryption_config": {"encrypted_fields": ["email"]},
		"record_count": 10,
		"automated_request": false,
	},
}

# obj with obj[key] replaced by value (object.union would merge objects).
replace(obj, key, value) := object.union(object.remove(obj, [key]), {key: value})

low_trust_input := object.union(safe_input, {"context": {"agent": {"trust_level": 0.5}}})

# A decision object as the contract describes it.
valid_decision(d) if {
	is_boolean(d.allow)
	is_number(d.compliance_score)
	d.compliance_score >= 0
	d.compliance_score <= 1
	is_array(d.reasons)
	every r in d.reasons {
		is_string(r)
	}
	no_reasons := count(d.reasons) == 0
	d.allow == no_reasons
	d.constitutional_hash == hash
	is_object(d.evaluation_details)
	is_string(d.policy)
}

# ---------------------------------------------------------------------------
# Worked examples
# ---------------------------------------------------------------------------

test_safe_action_allowed if {
	d := main.decision with input as safe_input
	d.allow == true
	d.compliance_score == 0.96
	d.reasons == []
	d.constitutional_hash == hash
	d.policy == "constitutional"
	d.evaluation_details.safety == 1
	d.evaluation_details.constitutional == 0.9
	d.evaluation_details.resources == 1
	d.evaluation_details.transparency == 1
	valid_decision(d)
}

test_safe_action_allow_rule if {
	main.allow with input as safe_input
}

test_dangerous_action_denied if {
	d := main.decision with input as dangerous_input
	d.allow == false
	d.compliance_score == 0
	d.reasons == ["Action 'system.execute_shell' is prohibited by the constitution"]
	d.evaluation_details.prohibited == true
	valid_decision(d)
}

test_dangerous_action_allow_rule_false if {
	not main.allow with input as dangerous_input
}

test_low_trust_denied_with_trust_reason if {
	d := main.decision with input as low_trust_input
	d.allow == false
	d.compliance_score == 0.96
	d.reasons == ["Agent trust level 0.5 below required 0.8"]
	valid_decision(d)
}

test_complex_evolution_auto_approved if {
	d := main.decision with input as complex_input
	d.allow == true
	d.compliance_score == 0.9665
	d.evolution_score == 0.9665
	d.approval_path == "auto_approve"
	d.required_actions == []
	d.reasons == []
	d.policy == "evolution"
	valid_decision(d)
}

test_data_access_example_allowed if {
	d := main.decision with input as data_access_input
	d.allow == true
	d.compliance_score == 1
	d.access_score == 1
	d.reasons == []
	d.policy == "data_access"
	"Audit logging for sensitive field access: [\"email\"]" in d.audit_requirements
	valid_decision(d)
}

# ---------------------------------------------------------------------------
# Routing
# ---------------------------------------------------------------------------

test_action_authorization_routes_to_constitutional if {
	d := main.decision with input as object.union(safe_input, {"type": "action_authorization"})
	d.allow == true
	d.policy == "constitutional"
	d.compliance_score == 0.96
}

test_action_authorization_prohibited if {
	d := main.decision with input as object.union(dangerous_input, {"type": "action_authorization"})
	d.reasons == ["Action 'system.execute_shell' is prohibited by the constitution"]
}

test_evolution_type_routes_to_evolution if {
	d := main.decision with input as complex_input
	d.policy == "evolution"
}

test_data_access_type_routes_to_data_access if {
	d := main.decision with input as data_access_input
	d.policy == "data_access"
}

test_unknown_type_denied if {
	d := main.decision with input as object.union(safe_input, {"type": "bogus_type"})
	d.allow == false
	d.compliance_score == 0
	d.reasons == ["Unknown request type: bogus_type"]
	d.evaluation_details == {}
	valid_decision(d)
}

test_unknown_type_empty_string if {
	d := main.decision with input as object.union(safe_input, {"type": ""})
	d.reasons == ["Unknown request type: "]
}

test_unknown_type_missing if {
	d := main.decision with input as json.remove(safe_input, ["type"])
	d.reasons == ["Unknown request type: <missing>"]
	valid_decision(d)
}

test_unknown_type_number if {
	d := main.decision with input as object.union(safe_input, {"type": 7})
	d.reasons == ["Unknown request type: 7"]
}

test_unknown_type_null if {
	d := main.decision with input as object.union(safe_input, {"type": null})
	d.reasons == ["Unknown request type: null"]
}

test_unknown_type_array if {
	d := main.decision with input as object.union(safe_input, {"type": ["constitutional_evaluation"]})
	d.reasons == ["Unknown request type: [\"constitutional_evaluation\"]"]
}

test_unknown_type_false if {
	d := main.decision with input as object.union(safe_input, {"type": false})
	d.reasons == ["Unknown request type: false"]
}

test_unknown_type_is_case_sensitive if {
	d := main.decision with input as object.union(safe_input, {"type": "Constitutional_Evaluation"})
	d.reasons == ["Unknown request type: Constitutional_Evaluation"]
}

test_unknown_type_reason_is_truncated if {
	long := concat("", [x | some _ in numbers.range(1, 500); x := "ab"])
	d := main.decision with input as object.union(safe_input, {"type": long})
	d.reasons == [sprintf("Unknown request type: %s", [substring(long, 0, config.max_reason_value_length)])]
}

test_unknown_type_with_prohibited_action_reports_type if {
	d := main.decision with input as object.union(dangerous_input, {"type": "other"})
	d.reasons == ["Unknown request type: other"]
}

# ---------------------------------------------------------------------------
# Constitutional hash
# ---------------------------------------------------------------------------

hash_mismatch_reasons := ["Constitutional hash mismatch"]

test_hash_missing_denied if {
	d := main.decision with input as json.remove(safe_input, ["constitutional_hash"])
	d.allow == false
	d.compliance_score == 0
	d.reasons == hash_mismatch_reasons
	d.policy == "hash_check"
	d.constitutional_hash == hash
	valid_decision(d)
}

test_hash_different_denied if {
	d := main.decision with input as object.union(safe_input, {"constitutional_hash": "0000000000000000"})
	d.allow == false
	d.reasons == hash_mismatch_reasons
}

test_hash_prefix_denied if {
	d := main.decision with input as object.union(safe_input, {"constitutional_hash": "cdd01ef066bc6cf"})
	d.reasons == hash_mismatch_reasons
}

test_hash_uppercase_denied if {
	d := main.decision with input as object.union(safe_input, {"constitutional_hash": "CDD01EF066BC6CF2"})
	d.reasons == hash_mismatch_reasons
}

test_hash_wrong_type_denied if {
	every h in [null, 0, true, [hash], {"hash": hash}] {
		d := main.decision with input as object.union(safe_input, {"constitutional_hash": h})
		d.reasons == hash_mismatch_reasons
	}
}

test_hash_checked_before_prohibited_action if {
	d := main.decision with input as json.remove(dangerous_input, ["constitutional_hash"])
	d.reasons == hash_mismatch_reasons
}

test_hash_checked_before_unknown_type if {
	d := main.decision with input as {"type": "bogus"}
	d.reasons == hash_mismatch_reasons
}

test_hash_mismatch_on_every_type if {
	every t in ["constitutional_evaluation", "action_authorization", "evolution_approval", "data_access", "x"] {
		d := main.decision with input as {"type": t, "constitutional_hash": "bad"}
		d.reasons == hash_mismatch_reasons
		d.allow == false
	}
}

test_hash_mismatch_allow_false if {
	not main.allow with input as object.union(safe_input, {"constitutional_hash": "bad"})
}

test_hash_comes_from_config if {
	config.constitutional_hash == hash
}

# ---------------------------------------------------------------------------
# Prohibited actions: every one, whatever the context
# ---------------------------------------------------------------------------

test_every_prohibited_action_denied if {
	count(config.prohibited_actions) == 12
	every a in config.prohibited_actions {
		every t in ["constitutional_evaluation", "action_authorization"] {
			d := main.decision with input as object.union(safe_input, {"type": t, "action": a})
			d.allow == false
			d.compliance_score == 0
			d.reasons == [sprintf("Action '%s' is prohibited by the constitution", [a])]
			d.evaluation_details.prohibited == true
		}
	}
}

test_prohibited_list_matches_constitution if {
	{a | some a in config.prohibited_actions} == {
		"system.execute_shell", "network.bypass_firewall",
		"auth.escalate_privileges", "file.delete_system", "file.write_system",
		"network.raw_socket", "process.spawn_root", "process.spawn_child",
		"memory.access_kernel", "system.modify_configuration",
		"crypto.break_encryption", "data.exfiltrate",
	}
}

test_prohibited_without_context if {
	d := main.decision with input as {"type": "constitutional_evaluation", "constitutional_hash": hash, "action": "data.exfiltrate"}
	d.reasons == ["Action 'data.exfiltrate' is prohibited by the constitution"]
}

test_prohibited_with_garbage_context if {
	d := main.decision with input as object.union(dangerous_input, {"context": "garbage"})
	d.reasons == ["Action 'system.execute_shell' is prohibited by the constitution"]
}

test_prohibited_match_is_exact if {
	d := main.decision with input as object.union(safe_input, {"action": "system.execute_shell.safe"})
	not d.evaluation_details.prohibited
}

test_common_actions_allowed_with_good_context if {
	count(config.common_actions) >= 8
	every a in config.common_actions {
		not a in config.prohibited_actions
		d := main.decision with input as object.union(safe_input, {"action": a})
		d.allow == true
	}
}

# ---------------------------------------------------------------------------
# Deny-by-default object, allow, health
# ---------------------------------------------------------------------------

test_default_decision_object if {
	main.default_decision == {
		"allow": false,
		"compliance_score": 0,
		"reasons": ["No matching policy"],
		"constitutional_hash": hash,
		"policy": "default",
		"evaluation_details": {},
	}
}

test_allow_mirrors_decision if {
	every x in [safe_input, dangerous_input, low_trust_input, complex_input, data_access_input, {}] {
		a := main.allow with input as x
		d := main.decision with input as x
		a == d.allow
	}
}

test_health if {
	h := main.health
	h.status == "healthy"
	h.constitutional_hash == hash
	{p | some p in h.packages} == {"acgs.main", "acgs.constitutional", "acgs.evolution", "acgs.data", "acgs.tool_call", "acgs.text"}
	every t in ["constitutional_evaluation", "action_authorization", "evolution_approval", "data_access", "tool_call"] {
		t in h.request_types
	}
	count(h.request_types) == 5
}

# ---------------------------------------------------------------------------
# Hostile inputs: exactly one valid decision, never an error, never allow
# ---------------------------------------------------------------------------

non_object_inputs := ["a string", "", 5, 0, -1.5, true, false, null, [], [1, "a"], [safe_input]]

test_non_object_inputs_get_hash_mismatch if {
	every x in non_object_inputs {
		d := main.decision with input as x
		valid_decision(d)
		d.reasons == hash_mismatch_reasons
		not main.allow with input as x
	}
}

# A decision for x exists, is valid and denies.
denied(x) if {
	d := main.decision with input as x
	valid_decision(d)
	d.allow == false
}

# A valid decision exists for base with the value at path replaced by each
# garbage value (allowed or not: a garbage value may be irrelevant).
decided_with_garbage(base, path) if {
	every g in garbage_values {
		d := main.decision with input as json.patch(base, [{"op": "replace", "path": path, "value": g}])
		valid_decision(d)
	}
}

# One value of each JSON type, plus the classic traps: numbers as strings,
# huge numbers, nested garbage. (Kept short: `opa test -v` traces every
# evaluation and each test has a 5 s budget.)
garbage_values := [null, "0.9", -1e308, [1, "a", null, {}], {"a": {"b": [null]}}]

# Replacements for a whole request object.
object_garbage_values := [null, true, 0, "", "true", [], [1, "a"], {}]

test_hostile_requests_without_details_denied if {
	every x in [
		{},
		{"constitutional_hash": hash},
		{"constitutional_hash": hash, "type": "constitutional_evaluation"},
		{"constitutional_hash": hash, "type": "action_authorization", "action": null},
		{"constitutional_hash": hash, "type": "evolution_approval"},
		{"constitutional_hash": hash, "type": "data_access"},
		{"constitutional_hash": hash, "type": "constitutional_evaluation", "action": ["system.execute_shell"]},
	] {
		denied(x)
	}
}

test_hostile_context_denied if {
	every ctx in [
		{
			"agent": {"trust_level": "0.9", "requested_resources": "all"},
			"environment": {"sandbox_enabled": "true", "audit_enabled": 1},
			"responsible_party": ["x"], "explanation": {"e": 1},
			"current_usage_count": "5", "benefit_assessment": "1", "harm_risk_assessment": -5,
			"fairness_assessment": 1e308, "overrides_user_preference": "yes", "user_consent": "yes",
		},
		{
			"agent": {"trust_level": 1e308, "requested_resources": {"cpu_cores": 1e308, "memory_gb": -1e308, "disk_gb": "1"}},
			"current_usage_count": -1e308,
		},
		{"agent": [1, 2], "environment": "on"},
	] {
		denied({"constitutional_hash": hash, "type": "constitutional_evaluation", "action": "data.read", "context": ctx})
	}
}

test_hostile_data_request_denied if {
	every req in [
		{
			"data_fields": "x", "data_subjects": "abc", "consent_records": {"a": 1},
			"justified_fields": {"a": 1}, "allowed_purposes": "p", "purpose": ["p"],
			"encryption_config": [], "retention_policy": [1],
		},
		{
			"data_fields": [null, 1, "x", [], {"name": {"n": 1}, "category": ["health_records"], "classification_level": "1"}],
			"data_subjects": [null, {"a": 1}, [1]],
			"consent_records": [null, 1, {"subject_id": null, "status": "granted", "allowed_purposes": "p"}],
			"timestamp": "100", "purpose": "p",
		},
	] {
		denied({"constitutional_hash": hash, "type": "data_access", "data_request": req})
	}
}

test_hostile_evolution_request_denied if {
	every req in [
		{
			"type": ["major_update"], "changes": [true], "mitigations": "all",
			"performance_analysis": {"complexity_delta": "9", "memory_delta": -5, "latency_delta": null, "resource_delta": 1e308},
			"rollback_plan": ["x"], "human_approved": "true",
		},
		{
			"changes": {"external_dependencies": "lots", "security_changes": ["x"]},
			"rollback_plan": {"procedure": 5, "tested": "true"},
		},
	] {
		denied({"constitutional_hash": hash, "type": "evolution_approval", "evolution_request": req})
	}
}

test_garbage_context_object_denied if {
	every g in object_garbage_values {
		denied(replace(safe_input, "context", g))
	}
}

test_garbage_evolution_request_object_denied if {
	every g in object_garbage_values {
		denied(replace(complex_input, "evolution_request", g))
	}
}

test_garbage_data_request_object_denied if {
	every g in object_garbage_values {
		denied(replace(data_access_input, "data_request", g))
	}
}

# Garbage in every field of the worked examples: always one valid decision.

test_garbage_context_agent if decided_with_garbage(safe_input, ["context", "agent"])

test_garbage_context_agent_trust_level if decided_with_garbage(safe_input, ["context", "agent", "trust_level"])

test_garbage_context_agent_requested_resources if decided_with_garbage(safe_input, ["context", "agent", "requested_resources"])

test_garbage_context_agent_requested_cpu if decided_with_garbage(safe_input, ["context", "agent", "requested_resources", "cpu_cores"])

test_garbage_context_environment if decided_with_garbage(safe_input, ["context", "environment"])

test_garbage_context_sandbox_enabled if decided_with_garbage(safe_input, ["context", "environment", "sandbox_enabled"])

test_garbage_context_responsible_party if decided_with_garbage(safe_input, ["context", "responsible_party"])

test_garbage_context_explanation if decided_with_garbage(safe_input, ["context", "explanation"])

test_garbage_action if decided_with_garbage(safe_input, ["action"])

test_garbage_evolution_type if decided_with_garbage(complex_input, ["evolution_request", "type"])

test_garbage_evolution_hash if decided_with_garbage(complex_input, ["evolution_request", "constitutional_hash"])

test_garbage_evolution_changes if decided_with_garbage(complex_input, ["evolution_request", "changes"])

test_garbage_evolution_external_dependencies if decided_with_garbage(complex_input, ["evolution_request", "changes", "external_dependencies"])

test_garbage_evolution_performance_analysis if decided_with_garbage(complex_input, ["evolution_request", "performance_analysis"])

test_garbage_evolution_complexity_delta if decided_with_garbage(complex_input, ["evolution_request", "performance_analysis", "complexity_delta"])

test_garbage_evolution_rollback_plan if decided_with_garbage(complex_input, ["evolution_request", "rollback_plan"])

test_garbage_evolution_rollback_tested if decided_with_garbage(complex_input, ["evolution_request", "rollback_plan", "tested"])

test_garbage_data_fields if decided_with_garbage(data_access_input, ["data_request", "data_fields"])

test_garbage_data_field_element if decided_with_garbage(data_access_input, ["data_request", "data_fields", 1])

test_garbage_data_field_classification if decided_with_garbage(data_access_input, ["data_request", "data_fields", 1, "classification_level"])

test_garbage_data_field_name if decided_with_garbage(data_access_input, ["data_request", "data_fields", 1, "name"])

test_garbage_data_clearance if decided_with_garbage(data_access_input, ["data_request", "requester_clearance_level"])

test_garbage_data_special_authorization if decided_with_garbage(data_access_input, ["data_request", "special_authorization"])

test_garbage_data_purpose if decided_with_garbage(data_access_input, ["data_request", "purpose"])

test_garbage_data_allowed_purposes if decided_with_garbage(data_access_input, ["data_request", "allowed_purposes"])

test_garbage_data_justified_fields if decided_with_garbage(data_access_input, ["data_request", "justified_fields"])

test_garbage_data_subjects if decided_with_garbage(data_access_input, ["data_request", "data_subjects"])

test_garbage_data_subject_element if decided_with_garbage(data_access_input, ["data_request", "data_subjects", 0])

test_garbage_data_consent_records if decided_with_garbage(data_access_input, ["data_request", "consent_records"])

test_garbage_data_consent_record if decided_with_garbage(data_access_input, ["data_request", "consent_records", 0])

test_garbage_data_consent_expiry if decided_with_garbage(data_access_input, ["data_request", "consent_records", 0, "expiry_time"])

test_garbage_data_timestamp if decided_with_garbage(data_access_input, ["data_request", "timestamp"])

test_garbage_data_retention_policy if decided_with_garbage(data_access_input, ["data_request", "retention_policy"])

test_garbage_data_retention_entry if decided_with_garbage(data_access_input, ["data_request", "retention_policy", "personal_identifiable_information"])

test_garbage_data_encryption_config if decided_with_garbage(data_access_input, ["data_request", "encryption_config"])

test_garbage_data_encrypted_fields if decided_with_garbage(data_access_input, ["data_request", "encryption_config", "encrypted_fields"])

test_garbage_data_record_count if decided_with_garbage(data_access_input, ["data_request", "record_count"])

test_garbage_data_automated_request if decided_with_garbage(data_access_input, ["data_request", "automated_request"])

# Only type, action, constitutional_hash, context, evolution_request and
# data_request are read: other top-level fields change nothing.
test_other_top_level_fields_ignored if {
	extra := {"input": {"type": "data_access"}, "allow": true, "decision": {"allow": true}, "metadata": [1, 2]}
	every x in [safe_input, dangerous_input, complex_input, data_access_input, low_trust_input] {
		a := main.decision with input as x
		b := main.decision with input as object.union(x, extra)
		a == b
	}
}

# Ids, times and free-form metadata at every level of the worked examples
# change no decision: each field used is read by its full path.
test_noise_at_every_level_changes_nothing if {
	noise := {"request_id": "req-1f0c", "sent_at": 1764201600123, "metadata": {"trace": {"id": "t-1"}, "tags": ["a"]}}
	noisy := object.union(noise, {
		"context": object.union(noise, {"agent": noise, "environment": noise}),
		"evolution_request": noise,
		"data_request": noise,
	})
	every x in [safe_input, dangerous_input, complex_input, data_access_input, low_trust_input] {
		a := main.decision with input as x
		b := main.decision with input as object.union(x, noisy)
		a == b
	}
}
