package acgs.constitutional_test

import data.acgs.config
import data.acgs.constitutional
import data.acgs.main

hash := "cdd01ef066bc6cf2"

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

# safe_input with context fields merged in (nested objects merge).
with_context(patch) := object.union(safe_input, {"context": patch})

# safe_input with one context path set to a value (replacing, not merging).
set_context(path, value) := json.patch(safe_input, [{"op": "add", "path": array.concat(["context"], path), "value": value}])

decide(x) := d if {
	d := main.decision with input as x
}

explanation_50 := "This explanation is exactly fifty characters long."

explanation_49 := "This explanation is exactly fifty characters long"

# ---------------------------------------------------------------------------
# Package entry point
# ---------------------------------------------------------------------------

test_package_decision_safe if {
	d := constitutional.decision with input as safe_input
	d.allow == true
	d.compliance_score == 0.96
}

test_package_decision_prohibited if {
	d := constitutional.decision with input as object.union(safe_input, {"action": "process.spawn_root"})
	d.allow == false
	d.compliance_score == 0
	d.reasons == ["Action 'process.spawn_root' is prohibited by the constitution"]
}

test_prohibited_rule if {
	constitutional.prohibited with input as {"action": "network.raw_socket"}
	not constitutional.prohibited with input as {"action": "network.http_get"}
	not constitutional.prohibited with input as {"action": ["network.raw_socket"]}
	not constitutional.prohibited with input as {}
}

test_evaluation_details_has_all_scores if {
	d := decide(safe_input)
	every k in [
		"safety", "constitutional", "resources", "transparency",
		"autonomy", "beneficence", "non_maleficence", "fairness", "accountability",
	] {
		is_number(d.evaluation_details[k])
	}
	d.evaluation_details.autonomy == 1
	d.evaluation_details.beneficence == 0.5
	d.evaluation_details.non_maleficence == 1
	d.evaluation_details.fairness == 1
	d.evaluation_details.accountability == 1
	d.evaluation_details.trust_level == 0.9
	d.evaluation_details.action_category == "data"
}

# ---------------------------------------------------------------------------
# Trust level (threshold 0.8, missing or wrong type counts as 0)
# ---------------------------------------------------------------------------

test_trust_exactly_threshold_allows if {
	d := decide(with_context({"agent": {"trust_level": 0.8}}))
	d.allow == true
	d.reasons == []
}

test_trust_just_below_threshold_denies if {
	d := decide(with_context({"agent": {"trust_level": 0.7999}}))
	d.allow == false
	d.compliance_score == 0.96
	d.reasons == ["Agent trust level 0.7999 below required 0.8"]
}

test_trust_one_allows if {
	decide(with_context({"agent": {"trust_level": 1}})).allow == true
}

test_trust_string_counts_as_zero if {
	d := decide(with_context({"agent": {"trust_level": "0.9"}}))
	d.allow == false
	d.reasons == ["Agent trust level 0 below required 0.8"]
	d.evaluation_details.trust_level == 0
}

test_trust_wrong_types_count_as_zero if {
	every v in [null, true, [0.9], {"v": 0.9}, "1"] {
		d := decide(set_context(["agent", "trust_level"], v))
		d.allow == false
		d.reasons == ["Agent trust level 0 below required 0.8"]
	}
}

test_trust_missing_counts_as_zero if {
	d := decide(json.remove(safe_input, ["context/agent/trust_level"]))
	d.reasons == ["Agent trust level 0 below required 0.8"]
}

test_agent_missing_counts_as_zero_trust if {
	d := decide(json.remove(safe_input, ["context/agent"]))
	d.allow == false
	"Agent trust level 0 below required 0.8" in d.reasons
}

test_context_missing_denied if {
	d := decide(json.remove(safe_input, ["context"]))
	d.allow == false
	d.reasons == [
		"Agent trust level 0 below required 0.8",
		"Sandbox is not enabled",
		"Audit logging is not enabled (no audit trail)",
		"No responsible party specified",
		"Compliance score 0.77 below 0.95",
	]
}

# ---------------------------------------------------------------------------
# Compliance score threshold (0.95) and rounding
# ---------------------------------------------------------------------------

# benefit 0.375 -> constitutional 0.875 -> 0.3 + 0.35 + 0.2 + 0.1 = 0.95
test_score_exactly_threshold_allows if {
	d := decide(with_context({"benefit_assessment": 0.375}))
	d.compliance_score == 0.95
	d.allow == true
	d.reasons == []
}

# benefit 0.37375 -> constitutional 0.87475 -> 0.9499
test_score_just_below_threshold_denies if {
	d := decide(with_context({"benefit_assessment": 0.37375}))
	d.compliance_score == 0.9499
	d.allow == false
	d.reasons == ["Compliance score 0.9499 below 0.95"]
}

test_score_rounded_to_four_decimals if {
	d := decide(with_context({"agent": {"requested_resources": {"cpu_cores": 4}}}))
	d.compliance_score == 0.9457
	d.evaluation_details.resources == 0.9286
}

test_score_is_weighted_sum if {
	w := config.constitutional.weights
	d := decide(with_context({"benefit_assessment": 1}))
	d.compliance_score == (((w.safety * 1) + (w.constitutional * 1)) + (w.resources * 1)) + (w.transparency * 1)
	d.compliance_score == 1
}

test_reasons_empty_when_allowed_despite_concern if {
	# harm 0.25 is a concern (> 0.2) but the score is 0.98 and trust is fine
	d := decide(with_context({"benefit_assessment": 1, "harm_risk_assessment": 0.25}))
	d.compliance_score == 0.98
	d.allow == true
	d.reasons == []
}

# ---------------------------------------------------------------------------
# Safety: base 0.5 + sandbox 0.3 + rate limit 0.2
# ---------------------------------------------------------------------------

test_sandbox_disabled if {
	d := decide(with_context({"environment": {"sandbox_enabled": false}}))
	d.evaluation_details.safety == 0.7
	d.compliance_score == 0.87
	d.allow == false
	d.reasons == ["Sandbox is not enabled", "Compliance score 0.87 below 0.95"]
}

test_sandbox_string_true_is_false if {
	d := decide(with_context({"environment": {"sandbox_enabled": "true"}}))
	d.evaluation_details.safety == 0.7
	"Sandbox is not enabled" in d.reasons
}

test_sandbox_missing_is_false if {
	d := decide(json.remove(safe_input, ["context/environment/sandbox_enabled"]))
	d.evaluation_details.safety == 0.7
	d.allow == false
}

test_sandbox_number_one_is_false if {
	decide(with_context({"environment": {"sandbox_enabled": 1}})).evaluation_details.safety == 0.7
}

test_rate_limits_match_constitution if {
	config.constitutional.rate_limits == {"data": 100, "network": 20, "system": 200, "compute": 100, "report": 50}
	config.constitutional.default_rate_limit == 10
}

test_rate_limit_per_category_below_limit if {
	every category, limit in config.constitutional.rate_limits {
		d := decide(object.union(with_context({"current_usage_count": limit - 1}), {"action": sprintf("%s.probe", [category])}))
		d.evaluation_details.safety == 1
		d.allow == true
	}
}

test_rate_limit_per_category_at_limit if {
	every category, limit in config.constitutional.rate_limits {
		d := decide(object.union(with_context({"current_usage_count": limit}), {"action": sprintf("%s.probe", [category])}))
		d.evaluation_details.safety == 0.8
		d.compliance_score == 0.9
		d.allow == false
		d.reasons == [
			sprintf("Rate limit exceeded for category '%s': usage %v, limit %v", [category, limit, limit]),
			"Compliance score 0.9 below 0.95",
		]
	}
}

test_rate_limit_other_category if {
	ok := decide(object.union(with_context({"current_usage_count": 9}), {"action": "custom.thing"}))
	ok.allow == true
	d := decide(object.union(with_context({"current_usage_count": 10}), {"action": "custom.thing"}))
	d.evaluation_details.safety == 0.8
	"Rate limit exceeded for category 'custom': usage 10, limit 10" in d.reasons
}

test_rate_limit_category_is_before_first_dot if {
	d := decide(object.union(with_context({"current_usage_count": 150}), {"action": "system.status.read"}))
	d.evaluation_details.action_category == "system"
	d.evaluation_details.safety == 1
}

test_rate_limit_action_without_dot if {
	d := decide(object.union(with_context({"current_usage_count": 10}), {"action": "report"}))
	d.evaluation_details.action_category == "report"
	d.evaluation_details.safety == 1
}

test_usage_count_string_counts_as_zero if {
	d := decide(with_context({"current_usage_count": "1000"}))
	d.evaluation_details.safety == 1
	d.allow == true
}

# ---------------------------------------------------------------------------
# Principles
# ---------------------------------------------------------------------------

test_autonomy_override_with_consent if {
	d := decide(with_context({"overrides_user_preference": true, "user_consent": true}))
	d.evaluation_details.autonomy == 0.8
	d.evaluation_details.constitutional == 0.86
	d.compliance_score == 0.944
	d.reasons == ["Compliance score 0.944 below 0.95"]
}

test_autonomy_override_without_consent if {
	d := decide(with_context({"overrides_user_preference": true}))
	d.evaluation_details.autonomy == 0.2
	d.compliance_score == 0.896
	d.reasons == ["Overrides user preference without consent", "Compliance score 0.896 below 0.95"]
}

test_autonomy_consent_string_is_no_consent if {
	d := decide(with_context({"overrides_user_preference": true, "user_consent": "true"}))
	d.evaluation_details.autonomy == 0.2
}

test_autonomy_override_string_is_no_override if {
	d := decide(with_context({"overrides_user_preference": "true"}))
	d.evaluation_details.autonomy == 1
	d.allow == true
}

test_beneficence_default if {
	decide(safe_input).evaluation_details.beneficence == 0.5
}

test_beneficence_given if {
	d := decide(with_context({"benefit_assessment": 1}))
	d.evaluation_details.beneficence == 1
	d.evaluation_details.constitutional == 1
	d.compliance_score == 1
}

test_beneficence_string_uses_default if {
	decide(with_context({"benefit_assessment": "1"})).evaluation_details.beneficence == 0.5
}

test_beneficence_clamped if {
	decide(with_context({"benefit_assessment": 7})).evaluation_details.beneficence == 1
	decide(with_context({"benefit_assessment": -3})).evaluation_details.beneficence == 0
}

test_benefit_below_threshold_reason if {
	d := decide(with_context({"benefit_assessment": 0.2}))
	d.compliance_score == 0.936
	d.reasons == ["Benefit assessment 0.2 below 0.3", "Compliance score 0.936 below 0.95"]
}

test_benefit_at_threshold_no_reason if {
	d := decide(with_context({"benefit_assessment": 0.3}))
	not "Benefit assessment 0.3 below 0.3" in d.reasons
}

test_non_maleficence_from_harm if {
	d := decide(with_context({"harm_risk_assessment": 0.3}))
	d.evaluation_details.non_maleficence == 0.7
	d.compliance_score == 0.936
	d.reasons == ["Harm risk 0.3 exceeds 0.2", "Compliance score 0.936 below 0.95"]
}

test_harm_at_threshold_no_reason if {
	d := decide(with_context({"benefit_assessment": 1, "harm_risk_assessment": 0.2}))
	d.evaluation_details.non_maleficence == 0.8
	d.allow == true
}

test_harm_wrong_type_defaults_to_zero if {
	decide(with_context({"harm_risk_assessment": "0.9"})).evaluation_details.non_maleficence == 1
}

test_harm_clamped if {
	decide(with_context({"harm_risk_assessment": 5})).evaluation_details.non_maleficence == 0
	decide(with_context({"harm_risk_assessment": -5})).evaluation_details.non_maleficence == 1
}

test_fairness_default if {
	decide(safe_input).evaluation_details.fairness == 1
}

test_fairness_low_with_protected_groups if {
	d := decide(with_context({"fairness_assessment": 0.5, "affects_protected_groups": true}))
	d.evaluation_details.fairness == 0.5
	d.compliance_score == 0.92
	d.reasons == [
		"Fairness assessment 0.5 below 0.9 while protected groups are affected",
		"Compliance score 0.92 below 0.95",
	]
}

test_fairness_low_without_protected_groups if {
	d := decide(with_context({"fairness_assessment": 0.5}))
	d.reasons == ["Compliance score 0.92 below 0.95"]
}

test_fairness_at_threshold_with_protected_groups if {
	d := decide(with_context({"benefit_assessment": 1, "fairness_assessment": 0.9, "affects_protected_groups": true}))
	d.allow == true
}

test_accountability_without_audit if {
	d := decide(with_context({"environment": {"audit_enabled": false}}))
	d.evaluation_details.accountability == 0.5
	d.evaluation_details.transparency == 0.8
	d.compliance_score == 0.9
	d.reasons == ["Audit logging is not enabled (no audit trail)", "Compliance score 0.9 below 0.95"]
}

test_accountability_without_responsible_party if {
	d := decide(json.remove(safe_input, ["context/responsible_party"]))
	d.evaluation_details.accountability == 0.5
	d.compliance_score == 0.92
	d.reasons == ["No responsible party specified", "Compliance score 0.92 below 0.95"]
}

test_accountability_empty_or_wrong_type_responsible_party if {
	every v in ["", 5, true, ["ops"], {"name": "ops"}, null] {
		d := decide(set_context(["responsible_party"], v))
		d.evaluation_details.accountability == 0.5
		"No responsible party specified" in d.reasons
	}
}

# ---------------------------------------------------------------------------
# Resources: mean of min(1, limit / max(requested, 1))
# ---------------------------------------------------------------------------

test_resource_limits_match_constitution if {
	config.constitutional.resource_limits == {
		"cpu_cores": 2, "memory_gb": 4, "disk_gb": 10, "network_bandwidth_mbps": 10,
		"max_execution_time_seconds": 300, "max_file_operations_per_minute": 100,
		"max_network_requests_per_minute": 50,
	}
}

test_resource_over_limit_reason if {
	d := decide(with_context({"agent": {"requested_resources": {"cpu_cores": 4}}}))
	d.reasons == ["Requested cpu_cores 4 exceeds limit 2", "Compliance score 0.9457 below 0.95"]
}

test_resource_at_limit_no_reason if {
	d := decide(with_context({"agent": {"requested_resources": {"cpu_cores": 2, "memory_gb": 4}}}))
	d.evaluation_details.resources == 1
	d.allow == true
}

test_every_resource_over_limit if {
	requested := {k: doubled |
		some k, v in config.constitutional.resource_limits
		doubled := 2 * v
	}
	d := decide(set_context(["agent", "requested_resources"], requested))
	d.evaluation_details.resources == 0.5
	d.compliance_score == 0.86
	every k, v in config.constitutional.resource_limits {
		sprintf("Requested %s %v exceeds limit %v", [k, 2 * v, v]) in d.reasons
	}
	count(d.reasons) == 8
}

test_resource_string_counts_as_zero if {
	d := decide(with_context({"agent": {"requested_resources": {"cpu_cores": "64"}}}))
	d.evaluation_details.resources == 1
	d.allow == true
}

test_requested_resources_wrong_type_counts_as_zero if {
	every v in ["64 cores", [64], 64, true, null] {
		d := decide(set_context(["agent", "requested_resources"], v))
		d.evaluation_details.resources == 1
		d.allow == true
	}
}

test_resource_unknown_names_ignored if {
	d := decide(with_context({"agent": {"requested_resources": {"gpu_count": 1000}}}))
	d.evaluation_details.resources == 1
}

test_resource_negative_or_fractional if {
	d := decide(with_context({"agent": {"requested_resources": {"cpu_cores": -5, "memory_gb": 0.5}}}))
	d.evaluation_details.resources == 1
}

test_resource_huge_request if {
	d := decide(with_context({"agent": {"requested_resources": {"cpu_cores": 1e300}}}))
	d.evaluation_details.resources < 1
	d.evaluation_details.resources >= 0.857
	d.allow == false
}

# A limit below 1 is exceeded even by a resource nobody requested (the
# request counts as max(0, 1) = 1); shortfalls are summed over all seven
# limits. (`with` on the limits object replaces the values of these keys.)
low_limits := {"cpu_cores": 0.25, "memory_gb": 0.5}

test_resource_limit_below_one_unrequested if {
	every req in [{}, {"cpu_cores": 0.1}, {"cpu_cores": "x"}, {"cpu_cores": 1, "memory_gb": -3}] {
		d := main.decision with input as set_context(["agent", "requested_resources"], req)
			with data.acgs.config.constitutional.resource_limits as low_limits

		# cpu_cores 1 - 0.25/1 = 0.75, memory_gb 1 - 0.5/1 = 0.5: 1 - 1.25/7
		d.evaluation_details.resources == 0.8214
	}
}

test_resource_limit_below_one_with_requests_over if {
	d := main.decision with input as set_context(["agent", "requested_resources"], {"disk_gb": 20, "memory_gb": 2})
		with data.acgs.config.constitutional.resource_limits as low_limits

	# cpu_cores 0.75, disk_gb 1 - 10/20 = 0.5, memory_gb 1 - 0.5/2 = 0.75: 1 - 2/7
	d.evaluation_details.resources == 0.7143
	d.reasons == [
		"Requested disk_gb 20 exceeds limit 10",
		"Requested memory_gb 2 exceeds limit 0.5",
		sprintf("Compliance score %v below 0.95", [d.compliance_score]),
	]
}

# ---------------------------------------------------------------------------
# Transparency: 0.6 + 0.2 explanation + 0.2 audit
# ---------------------------------------------------------------------------

test_actions_requiring_explanation_match_constitution if {
	{a | some a in config.constitutional.actions_requiring_explanation} == {
		"decision.make_automated", "data.process_personal", "policy.update_rules",
		"user.recommend_action", "system.modify_behavior",
	}
}

test_explanation_not_needed_for_other_actions if {
	d := decide(json.remove(safe_input, ["context/explanation"]))
	d.evaluation_details.transparency == 1
	d.allow == true
}

test_explanation_missing_for_every_action_that_needs_it if {
	every a in config.constitutional.actions_requiring_explanation {
		d := decide(object.union(json.remove(safe_input, ["context/explanation"]), {"action": a}))
		d.evaluation_details.transparency == 0.8
		d.compliance_score == 0.94
		sprintf("Action '%s' requires an explanation but none was given", [a]) in d.reasons
	}
}

test_explanation_too_short if {
	d := decide(object.union(safe_input, {"action": "data.process_personal"}))
	d.evaluation_details.transparency == 0.8
	d.reasons == [
		"Explanation for action 'data.process_personal' is too short (37 characters, minimum 50)",
		"Compliance score 0.94 below 0.95",
	]
}

test_explanation_exactly_50_characters if {
	count(explanation_50) == 50
	d := decide(object.union(with_context({"explanation": explanation_50}), {"action": "data.process_personal"}))
	d.evaluation_details.transparency == 1
	d.allow == true
}

test_explanation_49_characters if {
	count(explanation_49) == 49
	d := decide(object.union(with_context({"explanation": explanation_49}), {"action": "data.process_personal"}))
	d.evaluation_details.transparency == 0.8
	"Explanation for action 'data.process_personal' is too short (49 characters, minimum 50)" in d.reasons
}

test_explanation_wrong_type_counts_as_missing if {
	long := [explanation_50, explanation_50]
	d := decide(object.union(set_context(["explanation"], long), {"action": "policy.update_rules"}))
	d.evaluation_details.transparency == 0.8
	"Action 'policy.update_rules' requires an explanation but none was given" in d.reasons
}

test_explanation_counts_characters_not_bytes if {
	e := concat("", [x | some _ in numbers.range(1, 50); x := "é"])
	d := decide(object.union(with_context({"explanation": e}), {"action": "user.recommend_action"}))
	d.evaluation_details.transparency == 1
}

# ---------------------------------------------------------------------------
# Action validity
# ---------------------------------------------------------------------------

test_action_missing_denied if {
	d := decide(json.remove(safe_input, ["action"]))
	d.allow == false
	d.reasons == ["Action is missing or not a string"]
}

test_action_wrong_type_denied if {
	every a in [5, null, true, ["data.read_public"], {"name": "data.read_public"}] {
		d := decide(object.union(safe_input, {"action": a}))
		d.allow == false
		"Action is missing or not a string" in d.reasons
	}
}

# ---------------------------------------------------------------------------
# Action spelling: the lists match the action's key (lower-cased, whitespace
# and invisible characters removed); a string that is not a plain action
# name is refused by the action alone
# ---------------------------------------------------------------------------

respelled_prohibited := [
	"System.Execute_Shell", "SYSTEM.EXECUTE_SHELL", "system.execute_shell ",
	" system.execute_shell", "\tsystem.execute_shell\n", "system.execute_shell\u200b",
	"system.\u200dexecute_shell", "system.exe\u00adcute_shell", "\ufeffsystem.execute_shell",
	"system.execute_shell\u00a0", "system.execute_shell\u3000", "system. execute_shell",
	"Data.Exfiltrate", "data.exfiltrate\u2060", "process.spawn_root\u202e",
]

test_prohibited_whatever_the_spelling if {
	every a in respelled_prohibited {
		every t in ["constitutional_evaluation", "action_authorization"] {
			d := decide(object.union(safe_input, {"type": t, "action": a}))
			d.allow == false
			d.compliance_score == 0
			d.reasons == [sprintf("Action '%s' is prohibited by the constitution", [a])]
			d.evaluation_details.prohibited == true
		}
		constitutional.prohibited with input as {"action": a}
		constitutional.listed_prohibited with input as {"action": a}
	}
}

# Reported by review: allowed (0.96) where system.execute_shell is prohibited.
test_reviewed_respellings_denied if {
	every a in ["System.Execute_Shell", "system.execute_shell ", "system.execute_shell\u200b", "system.ex\u0435cute_shell"] {
		d := decide(object.union(safe_input, {"action": a}))
		d.allow == false
		d.compliance_score == 0
	}
}

malformed_actions := [
	"system.ex\u0435cute_shell", # Cyrillic e
	"d\u0430ta.read_public", # Cyrillic a
	"data.read_public\u200b", "data.read_public ", "\u00a0data.read_public",
	"data.read public", "data..read", ".leading", "data.", ".",
	"data/read", "data:read", "data.read*", "\uff44ata.read", # full-width d
	"my-category.read", "data.re\u0301ad", " ", "data.read_public\ufe0f",
]

test_malformed_actions_refused if {
	every a in malformed_actions {
		d := decide(object.union(safe_input, {"action": a}))
		d.allow == false
		d.compliance_score == 0
		d.reasons == [sprintf(
			"Action '%s' is not a plain action name (dot-separated segments of ASCII letters, digits, '_' and '-') and is refused",
			[a],
		)]
		d.evaluation_details.prohibited == true
		d.evaluation_details.action == a
		constitutional.action_malformed with input as {"action": a}
		not constitutional.listed_prohibited with input as {"action": a}
	}
}

# Both: a prohibited action with an invisible character is reported as
# prohibited (the clearer reason), once.
test_prohibited_and_malformed_reports_prohibited if {
	d := decide(object.union(safe_input, {"action": "system.execute_shell\u200b"}))
	d.reasons == ["Action 'system.execute_shell\u200b' is prohibited by the constitution"]
	constitutional.action_malformed with input as {"action": "system.execute_shell\u200b"}
}

# Plain names, in any case, are evaluated; the lists and the rate-limit
# categories see them lower-cased.
test_plain_actions_evaluated if {
	every a in ["data.read_public", "Data.Read_Public", "DATA.READ_PUBLIC", "nodot", "report", "v2.x", "data.read-only", "data.a.b.c", "a_b.c-d_e"] {
		d := decide(object.union(safe_input, {"action": a}))
		d.allow == true
		d.compliance_score == 0.96
		not constitutional.prohibited with input as {"action": a}
	}
	decide(object.union(safe_input, {"action": "Data.Read_Public"})).evaluation_details.action_category == "data"
}

test_action_lists_match_case_insensitively if {
	d := decide(object.union(json.remove(safe_input, ["context/explanation"]), {"action": "Data.Process_Personal"}))
	d.reasons == [
		"Action 'Data.Process_Personal' requires an explanation but none was given",
		"Compliance score 0.94 below 0.95",
	]
	e := decide(object.union(with_context({"current_usage_count": 20}), {"action": "NETWORK.http_get"}))
	"Rate limit exceeded for category 'network': usage 20, limit 20" in e.reasons
}

# A missing, empty or non-string action is not malformed: it is evaluated and
# denied as missing.
test_missing_action_is_not_malformed if {
	every x in [{}, {"action": ""}, {"action": 5}, {"action": null}] {
		not constitutional.prohibited with input as x
		not constitutional.action_malformed with input as x
	}
	d := decide(object.union(safe_input, {"action": ""}))
	d.reasons == ["Action is missing or not a string"]
}

# The evaluated decision, asked for directly, never allows a refused action.
test_evaluated_decision_never_allows_refused_action if {
	every a in ["system.execute_shell", "System.Execute_Shell", "data.read public"] {
		d := constitutional.evaluated_decision with input as object.union(safe_input, {"action": a})
		d.allow == false
	}
}

# The defaults of the assessments are used unclamped (only given values are
# clamped), so the configuration must keep them in [0,1].
test_config_defaults_in_range if {
	every k in ["default_benefit", "default_harm_risk", "default_fairness"] {
		v := config.constitutional.principles[k]
		is_number(v)
		v >= 0
		v <= 1
	}
}

# ---------------------------------------------------------------------------
# Only the named fields are read, each by its full path
# ---------------------------------------------------------------------------

# What agents add beside the named fields: an id, a timestamp and nested
# free-form metadata, some of it named like the fields that are read (each
# field is read at its own path only, never a look-alike further down).
noise := {
	"id": "req-7f3a9c",
	"timestamp": 1764201600123,
	"metadata": {
		"source": "sdk",
		"tags": ["a", "b"],
		"trust_level": 1,
		"sandbox_enabled": true,
		"responsible_party": "someone",
		"agent": {"trust_level": 1, "requested_resources": {"cpu_cores": 64}},
	},
}

# Allowed and denied requests, and ones where the context, the agent or the
# environment is missing or empty (noise then adds an object of unknown
# fields only, which must count as missing).
noise_bases := [
	safe_input,
	set_context(["agent", "trust_level"], 0.5),
	with_context({"overrides_user_preference": true, "benefit_assessment": 0.2, "current_usage_count": 500}),
	json.remove(safe_input, ["context/environment"]),
	json.remove(safe_input, ["context/agent"]),
	set_context([], {}),
	json.remove(safe_input, ["context"]),
]

test_unknown_fields_in_context_agent_environment_change_nothing if {
	every x in noise_bases {
		d := decide(x)
		every patch in [
			{"context": noise},
			{"context": {"agent": noise}},
			{"context": {"environment": noise}},
			{"context": object.union(noise, {"agent": noise, "environment": noise})},
		] {
			decide(object.union(x, patch)) == d
		}
	}
}

# A request in which every field read matters: removing any one of them
# changes the decision.
typed_base := object.union(safe_input, {
	"action": "data.process_personal",
	"context": {
		"agent": {"requested_resources": {"cpu_cores": 4}},
		"explanation": explanation_50,
		"user_consent": true,
		"overrides_user_preference": true,
		"benefit_assessment": 0.9,
		"harm_risk_assessment": 0.1,
		"fairness_assessment": 0.5,
		"affects_protected_groups": true,
		"current_usage_count": 150,
	},
})

# Every context field read, with values of a wrong type for it.
wrong_typed := {
	"agent/trust_level": ["0.9", true, null, [0.9], {"value": 0.9}],
	"agent/requested_resources": ["cpu_cores: 4", 4, [4], true],
	"environment/sandbox_enabled": ["true", 1, null, [true], {"value": true}],
	"environment/audit_enabled": ["true", 1, null, [true]],
	"responsible_party": [1, true, ["ops_team"], {"name": "ops_team"}, null],
	"explanation": [[explanation_50], 50, {"text": explanation_50}, true],
	"user_consent": ["true", 1, [true]],
	"overrides_user_preference": ["true", 1, [true]],
	"benefit_assessment": ["0.9", true, [0.9], {"value": 0.9}],
	"harm_risk_assessment": ["0.1", true, [0.1]],
	"fairness_assessment": ["0.5", false, [0.5]],
	"affects_protected_groups": ["true", 1, [true]],
	"current_usage_count": ["150", [150], true, {"value": 150}],
}

test_wrong_typed_field_counts_as_missing if {
	every field, values in wrong_typed {
		path := array.concat(["context"], split(field, "/"))
		missing := decide(json.remove(typed_base, [path]))
		missing != decide(typed_base) # the field matters in typed_base
		every v in values {
			decide(json.patch(typed_base, [{"op": "add", "path": path, "value": v}])) == missing
		}
	}
}

test_wrong_typed_context_agent_environment_count_as_missing if {
	every field in ["agent", "environment"] {
		missing := decide(json.remove(typed_base, [["context", field]]))
		every v in ["x", 1, true, null, [typed_base.context[field]]] {
			decide(json.patch(typed_base, [{"op": "add", "path": ["context", field], "value": v}])) == missing
		}
	}
	every v in ["x", 1, true, null, [typed_base.context]] {
		decide(object.union(typed_base, {"context": v})) == decide(json.remove(typed_base, ["context"]))
	}
}

# ---------------------------------------------------------------------------
# Quoted values are cut at max_reason_value_length (200) characters
# ---------------------------------------------------------------------------

# A string of n copies of s.
repeat(s, n) := concat("", [s | some _ in numbers.range(1, n)])

long_a := repeat("a", 5000)

# Reported by review: a 5,000-character action made a 5,055-character reason.
test_long_action_is_cut_in_reasons if {
	shown := substring(concat("", ["data ", long_a]), 0, 200)
	count(shown) == 200
	d := decide(object.union(safe_input, {"action": concat("", ["data ", long_a])}))
	d.reasons == [sprintf(
		"Action '%s' is not a plain action name (dot-separated segments of ASCII letters, digits, '_' and '-') and is refused",
		[shown],
	)]
	d.evaluation_details.action == shown
	p := decide(object.union(safe_input, {"action": concat("", ["system.execute_shell", repeat("\u200b", 5000)])}))
	p.reasons == [sprintf("Action '%s' is prohibited by the constitution", [substring(concat("", ["system.execute_shell", repeat("\u200b", 5000)]), 0, 200)])]
	count(p.evaluation_details.action) == 200
}

test_long_category_is_cut_in_reasons if {
	d := decide(object.union(with_context({"current_usage_count": 50}), {"action": concat("", [long_a, ".read"])}))
	d.reasons == [
		sprintf("Rate limit exceeded for category '%s': usage 50, limit 10", [substring(long_a, 0, 200)]),
		"Compliance score 0.9 below 0.95",
	]
	d.evaluation_details.action_category == substring(long_a, 0, 200)
}

test_long_action_needing_an_explanation_is_cut_in_reasons if {
	x := json.remove(object.union(safe_input, {"action": long_a}), ["context/explanation"])
	d := decide(x) with data.acgs.config.constitutional.actions_requiring_explanation as [long_a]
	d.reasons[0] == sprintf("Action '%s' requires an explanation but none was given", [substring(long_a, 0, 200)])
	e := decide(object.union(x, {"context": object.union(x.context, {"explanation": "short"})})) with data.acgs.config.constitutional.actions_requiring_explanation as [long_a]
	e.reasons[0] == sprintf("Explanation for action '%s' is too short (5 characters, minimum 50)", [substring(long_a, 0, 200)])
}

# The cut follows the configuration.
test_cut_length_is_configured if {
	d := decide(object.union(safe_input, {"action": "system.execute_shell "})) with data.acgs.config.max_reason_value_length as 6
	d.reasons == ["Action 'system' is prohibited by the constitution"]
}
