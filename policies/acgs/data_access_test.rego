package acgs.data_access_test

import data.acgs.config
import data.acgs.data as data_access
import data.acgs.main

hash := "cdd01ef066bc6cf2"

# workloads/data-access.json
example := {
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

# example with data_request fields merged in (nested objects merge).
with_request(patch) := object.union(example, {"data_request": patch})

# example with one data_request path set to a value (replacing).
set_request(path, value) := json.patch(example, [{"op": "add", "path": array.concat(["data_request"], path), "value": value}])

without(path) := json.remove(example, [concat("/", array.concat(["data_request"], path))])

decide(x) := d if {
	d := main.decision with input as x
}

consent_for(subject) := {
	"subject_id": subject,
	"status": "granted",
	"allowed_purposes": ["service_improvement"],
	"expiry_time": 4102444800,
}

# ---------------------------------------------------------------------------
# Worked example
# ---------------------------------------------------------------------------

test_example_allowed if {
	d := decide(example)
	d.allow == true
	d.access_score == 1
	d.compliance_score == 1
	d.reasons == []
	d.evaluation_details.classification == 1
	d.evaluation_details.consent == 1
	d.evaluation_details.purpose == 1
	d.evaluation_details.minimisation == 1
	d.evaluation_details.retention == 1
	d.evaluation_details.encryption == 1
	d.audit_requirements == [
		"Log requester, purpose and fields accessed",
		"Audit logging for sensitive field access: [\"email\"]",
		"Record consent verification for 1 data subjects",
	]
	d.access_conditions == [
		"Use limited to the stated purpose 'service_improvement'",
		"Access limited to the requested, justified fields",
		"Sensitive fields must stay encrypted at rest and in transit",
		"Special authorization must be recorded with the access",
		"Data must be deleted at the end of the retention period",
	]
}

test_package_decision if {
	d := data_access.decision with input as example
	d.allow == true
	d.policy == "data_access"
}

test_weights_match_constitution if {
	config.data_access.weights == {
		"classification": 0.2, "consent": 0.25, "purpose": 0.15,
		"minimisation": 0.15, "retention": 0.1, "encryption": 0.15,
	}
	config.data_access.access_threshold == 0.95
}

test_sensitive_categories_match_constitution if {
	{c | some c in config.data_access.sensitive_categories} == {
		"personal_identifiable_information", "financial_information", "health_records",
		"biometric_data", "authentication_credentials", "cryptographic_keys",
		"trade_secrets", "legal_documents",
	}
}

# ---------------------------------------------------------------------------
# Classification
# ---------------------------------------------------------------------------

test_field_above_clearance if {
	d := decide(set_request(["data_fields", 1, "classification_level"], 3))
	d.evaluation_details.classification == 0.5
	d.access_score == 0.9
	d.allow == false
	d.reasons == [
		"Fields above requester clearance 2 (or unclassified): [\"email\"]",
		"Access score 0.9 below 0.95",
	]
}

test_field_at_clearance_is_within if {
	d := decide(set_request(["data_fields", 0, "classification_level"], 2))
	d.evaluation_details.classification == 1
}

test_field_without_classification_counts_above_clearance if {
	d := decide(without(["data_fields", "0", "classification_level"]))
	d.evaluation_details.classification == 0.5
	"Fields above requester clearance 2 (or unclassified): [\"page_views\"]" in d.reasons
}

test_field_classification_string_counts_above_clearance if {
	d := decide(set_request(["data_fields", 0, "classification_level"], "1"))
	d.evaluation_details.classification == 0.5
}

test_clearance_wrong_type_counts_as_zero if {
	d := decide(with_request({"requester_clearance_level": "2"}))
	d.evaluation_details.classification == 0
	d.access_score == 0.8
}

test_sensitive_without_special_authorization if {
	d := decide(with_request({"special_authorization": false}))
	d.evaluation_details.classification == 0.5
	d.access_score == 0.9
	d.reasons == [
		"Sensitive fields without special authorization: [\"email\"]",
		"Access score 0.9 below 0.95",
	]
}

test_special_authorization_must_be_boolean_true if {
	d := decide(with_request({"special_authorization": "true"}))
	d.evaluation_details.classification == 0.5
}

test_classification_clamped_at_zero if {
	d := decide(with_request({"special_authorization": false, "data_fields": [
		{"name": "email", "category": "personal_identifiable_information", "classification_level": 5},
	]}))
	d.evaluation_details.classification == 0
}

test_every_sensitive_category_needs_authorization if {
	every c in config.data_access.sensitive_categories {
		d := decide(with_request({
			"special_authorization": false, "data_fields": [
				{"name": "f", "category": c, "classification_level": 1},
				{"name": "g", "category": "analytics", "classification_level": 1},
			],
			"justified_fields": ["f", "g"], "encryption_config": {"encrypted_fields": ["f"]},
		}))
		d.evaluation_details.classification == 0.5
	}
}

# ---------------------------------------------------------------------------
# Consent
# ---------------------------------------------------------------------------

no_consent_reason := "No valid consent (granted, covering the purpose, not expired) for 1 of 1 data subjects"

test_consent_missing_record if {
	d := decide(set_request(["consent_records"], []))
	d.evaluation_details.consent == 0
	d.access_score == 0.75
	d.reasons == [no_consent_reason, "Access score 0.75 below 0.95"]
}

test_consent_not_granted if {
	d := decide(set_request(["consent_records", 0, "status"], "revoked"))
	d.evaluation_details.consent == 0
}

test_consent_for_other_subject if {
	d := decide(set_request(["consent_records", 0, "subject_id"], "user-2"))
	d.evaluation_details.consent == 0
}

test_consent_not_covering_purpose if {
	d := decide(set_request(["consent_records", 0, "allowed_purposes"], ["marketing"]))
	d.evaluation_details.consent == 0
	no_consent_reason in d.reasons
}

test_consent_purposes_wrong_type if {
	d := decide(set_request(["consent_records", 0, "allowed_purposes"], "service_improvement"))
	d.evaluation_details.consent == 0
}

test_consent_expired if {
	d := decide(set_request(["consent_records", 0, "expiry_time"], 1764201599))
	d.evaluation_details.consent == 0
	d.allow == false
	no_consent_reason in d.reasons
}

test_consent_expiring_at_timestamp_is_valid if {
	d := decide(set_request(["consent_records", 0, "expiry_time"], 1764201600))
	d.evaluation_details.consent == 1
	d.allow == true
}

test_consent_without_expiry_is_valid if {
	decide(without(["consent_records", "0", "expiry_time"])).evaluation_details.consent == 1
	decide(set_request(["consent_records", 0, "expiry_time"], null)).evaluation_details.consent == 1
}

test_consent_with_unverifiable_expiry_is_invalid if {
	every v in ["2099-01-01T00:00:00Z", true, [4102444800], {"at": 4102444800}] {
		d := decide(set_request(["consent_records", 0, "expiry_time"], v))
		d.evaluation_details.consent == 0
	}
}

test_consent_timestamp_missing_is_a_violation if {
	d := decide(without(["timestamp"]))
	d.evaluation_details.consent == 0
	d.allow == false
	d.reasons == [
		"Request timestamp missing: consent expiry cannot be verified",
		no_consent_reason,
		"Access score 0.75 below 0.95",
	]
}

test_consent_timestamp_wrong_type_is_a_violation if {
	d := decide(with_request({"timestamp": "1764201600"}))
	d.evaluation_details.consent == 0
	"Request timestamp missing: consent expiry cannot be verified" in d.reasons
}

test_consent_partial if {
	d := decide(with_request({"data_subjects": ["user-1", "user-2"]}))
	d.evaluation_details.consent == 0.5
	d.access_score == 0.875
	"No valid consent (granted, covering the purpose, not expired) for 1 of 2 data subjects" in d.reasons
}

# 4 of 5 subjects consented: consent 0.8 -> 1 - 0.25 * 0.2 = 0.95
test_access_score_exactly_threshold_allows if {
	subjects := ["u1", "u2", "u3", "u4", "u5"]
	d := decide(with_request({
		"data_subjects": subjects,
		"consent_records": [consent_for(s) | some s in ["u1", "u2", "u3", "u4"]],
	}))
	d.evaluation_details.consent == 0.8
	d.access_score == 0.95
	d.allow == true
	d.reasons == []
}

test_consent_no_subjects if {
	d := decide(with_request({"data_subjects": [], "consent_records": []}))
	d.evaluation_details.consent == 1
}

test_consent_records_wrong_type if {
	every v in ["granted", {"user-1": "granted"}, [null, 1, "x"]] {
		d := decide(set_request(["consent_records"], v))
		d.evaluation_details.consent == 0
	}
}

test_consent_multiple_records_one_valid if {
	d := decide(with_request({"consent_records": [
		{"subject_id": "user-1", "status": "revoked", "allowed_purposes": ["service_improvement"]},
		consent_for("user-1"),
	]}))
	d.evaluation_details.consent == 1
}

# ---------------------------------------------------------------------------
# Purpose
# ---------------------------------------------------------------------------

test_purpose_not_allowed if {
	d := decide(with_request({
		"purpose": "analytics",
		"consent_records": [object.union(consent_for("user-1"), {"allowed_purposes": ["analytics"]})],
	}))
	d.evaluation_details.purpose == 0.5
	d.evaluation_details.consent == 1
	d.access_score == 0.925
	d.reasons == ["Purpose 'analytics' is not an allowed purpose", "Access score 0.925 below 0.95"]
}

test_purpose_missing if {
	d := decide(without(["purpose"]))
	d.evaluation_details.purpose == 0
	d.evaluation_details.consent == 0
	d.access_score == 0.6
	d.reasons == [no_consent_reason, "Purpose not stated", "Access score 0.6 below 0.95"]
}

test_purpose_wrong_type_or_empty_is_not_stated if {
	every v in ["", ["service_improvement"], 1, null] {
		d := decide(set_request(["purpose"], v))
		d.evaluation_details.purpose == 0
		"Purpose not stated" in d.reasons
	}
}

test_allowed_purposes_wrong_type if {
	d := decide(set_request(["allowed_purposes"], "service_improvement"))
	d.evaluation_details.purpose == 0.5
}

# ---------------------------------------------------------------------------
# Minimisation: 1 - (unjustified + bulk indicators) / max(1, fields + 3)
# ---------------------------------------------------------------------------

test_unjustified_field if {
	d := decide(with_request({"justified_fields": ["page_views"]}))
	d.evaluation_details.minimisation == 0.8
	d.access_score == 0.97
	d.allow == true
}

test_field_without_name_is_unjustified if {
	d := decide(without(["data_fields", "0", "name"]))
	d.evaluation_details.minimisation == 0.8
}

test_justified_fields_wrong_type if {
	d := decide(set_request(["justified_fields"], "page_views,email"))
	d.evaluation_details.minimisation == 0.6
}

test_record_count_bulk_indicator if {
	d := decide(with_request({"record_count": 1001}))
	d.evaluation_details.minimisation == 0.8
	d.evaluation_details.bulk_indicators == ["record_count"]
	"Review bulk or automated access" in d.audit_requirements
	ok := decide(with_request({"record_count": 1000}))
	ok.evaluation_details.minimisation == 1
	string_count := decide(with_request({"record_count": "5000"}))
	string_count.evaluation_details.minimisation == 1
}

test_automated_request_bulk_indicator if {
	d := decide(with_request({"automated_request": true}))
	d.evaluation_details.minimisation == 0.8
	decide(with_request({"automated_request": "true"})).evaluation_details.minimisation == 1
}

fields(n) := [{"name": sprintf("f%d", [i]), "category": "analytics", "classification_level": 1} | some i in numbers.range(1, n)]

names(n) := [sprintf("f%d", [i]) | some i in numbers.range(1, n)]

test_field_count_bulk_indicator if {
	d := decide(with_request({"data_fields": fields(11), "justified_fields": names(11)}))
	d.evaluation_details.bulk_indicators == ["field_count"]
	d.evaluation_details.minimisation == 0.9286
	d.access_score == 0.9893
	ten := decide(with_request({"data_fields": fields(10), "justified_fields": names(10)}))
	ten.evaluation_details.minimisation == 1
}

test_minimisation_all_indicators if {
	d := decide(with_request({"justified_fields": [], "record_count": 5000, "automated_request": true}))
	d.evaluation_details.minimisation == 0.2
	d.access_score == 0.88
	d.reasons == [
		"Unjustified fields: [\"page_views\", \"email\"]",
		"Automated request counts as bulk access",
		"Bulk access: record_count 5000 exceeds 1000",
		"Access score 0.88 below 0.95",
	]
}

# ---------------------------------------------------------------------------
# Retention (seconds): PII 30 days, financial 1 year, health 10 years, credentials 1 day
# ---------------------------------------------------------------------------

test_retention_limits_match_constitution if {
	config.data_access.retention_limits_seconds == {
		"personal_identifiable_information": 2592000,
		"financial_information": 31536000,
		"health_records": 315360000,
		"authentication_credentials": 86400,
	}
}

test_retention_missing_policy if {
	d := decide(without(["retention_policy"]))
	d.evaluation_details.retention == 0
	d.access_score == 0.9
	d.reasons == ["No retention policy", "Access score 0.9 below 0.95"]
}

test_retention_empty_or_wrong_type_policy if {
	every v in [{}, [], "30 days", 86400] {
		d := decide(set_request(["retention_policy"], v))
		d.evaluation_details.retention == 0
	}
}

# A retention violation alone costs 0.05: exactly the threshold, still allowed.
test_retention_violation_at_threshold if {
	d := decide(set_request(["retention_policy"], {"personal_identifiable_information": 2592001}))
	d.evaluation_details.retention == 0.5
	d.access_score == 0.95
	d.allow == true
}

test_retention_violation_reason if {
	d := decide(with_request({"retention_policy": {"personal_identifiable_information": 2592001}, "record_count": 1001}))
	d.access_score == 0.92
	d.allow == false
	d.reasons == [
		"Bulk access: record_count 1001 exceeds 1000",
		"Retention for personal_identifiable_information 2592001 seconds exceeds limit 2592000 seconds",
		"Access score 0.92 below 0.95",
	]
}

test_retention_each_category_limit if {
	every category, limit in config.data_access.retention_limits_seconds {
		ok := decide(set_request(["retention_policy"], {category: limit}))
		ok.evaluation_details.retention == 1
		over := decide(set_request(["retention_policy"], {category: limit + 1}))
		over.evaluation_details.retention == 0.5
	}
}

test_retention_non_numeric_entry_ignored if {
	d := decide(set_request(["retention_policy"], {"personal_identifiable_information": "forever"}))
	d.evaluation_details.retention == 1
}

test_retention_unlisted_category if {
	d := decide(set_request(["retention_policy"], {"analytics": 999999999999}))
	d.evaluation_details.retention == 1
}

# ---------------------------------------------------------------------------
# Encryption
# ---------------------------------------------------------------------------

test_sensitive_field_not_encrypted if {
	d := decide(set_request(["encryption_config", "encrypted_fields"], []))
	d.evaluation_details.encryption == 0
	d.access_score == 0.85
	d.reasons == ["Sensitive fields not encrypted: [\"email\"]", "Access score 0.85 below 0.95"]
}

test_encryption_config_missing if {
	d := decide(without(["encryption_config"]))
	d.evaluation_details.encryption == 0
}

test_encryption_config_wrong_type if {
	every v in ["email", ["email"], {"encrypted_fields": "email"}] {
		d := decide(set_request(["encryption_config"], v))
		d.evaluation_details.encryption == 0
	}
}

test_encryption_partial if {
	d := decide(with_request({
		"data_fields": [
			{"name": "email", "category": "personal_identifiable_information", "classification_level": 1},
			{"name": "card", "category": "financial_information", "classification_level": 1},
		],
		"justified_fields": ["email", "card"],
	}))
	d.evaluation_details.encryption == 0.5
	d.evaluation_details.sensitive_field_count == 2
}

test_no_sensitive_fields_full_encryption_score if {
	d := decide(with_request({
		"data_fields": [{"name": "page_views", "category": "analytics", "classification_level": 1}],
		"encryption_config": {"encrypted_fields": []},
	}))
	d.evaluation_details.encryption == 1
	d.audit_requirements == [
		"Log requester, purpose and fields accessed",
		"Record consent verification for 1 data subjects",
	]
}

# ---------------------------------------------------------------------------
# Malformed requests
# ---------------------------------------------------------------------------

test_missing_data_request if {
	d := decide({"type": "data_access", "constitutional_hash": hash})
	d.allow == false
	d.access_score == 0.75
	"Data request missing or not an object" in d.reasons
}

test_data_request_wrong_type if {
	every v in ["all", 1, [example.data_request], null, true] {
		d := decide(object.union(example, {"data_request": v}))
		d.allow == false
	}
}

test_data_fields_elements_not_objects if {
	d := decide(set_request(["data_fields"], [null, "email"]))
	d.evaluation_details.field_count == 2
	d.evaluation_details.classification == 0
	d.evaluation_details.minimisation == 0.6
	"Fields above requester clearance 2 (or unclassified): [\"<unnamed>\", \"<unnamed>\"]" in d.reasons
}

test_data_fields_wrong_type_is_empty if {
	every v in ["email", {"name": "email"}, 3] {
		d := decide(set_request(["data_fields"], v))
		d.evaluation_details.field_count == 0
	}
}

test_data_subjects_wrong_type_is_empty if {
	d := decide(set_request(["data_subjects"], "user-1"))
	d.evaluation_details.consent == 1
}

test_field_count_bulk_reason if {
	d := decide(with_request({
		"data_fields": fields(11), "justified_fields": names(11),
		"retention_policy": {"personal_identifiable_information": 2592001},
	}))
	d.access_score == 0.9393
	d.allow == false
	d.reasons == [
		"Bulk access: 11 fields exceeds 10",
		"Retention for personal_identifiable_information 2592001 seconds exceeds limit 2592000 seconds",
		"Access score 0.9393 below 0.95",
	]
}

# ---------------------------------------------------------------------------
# Only the named fields are read, each by its full path
# ---------------------------------------------------------------------------

# What clients add beside the named fields: an id, a time of sending (the
# request's own `timestamp` is a named field) and nested free-form metadata,
# some of it named like the fields that are read.
noise := {
	"id": "dar-5e1b",
	"sent_at": 1764201600123,
	"metadata": {
		"source": "portal",
		"purpose": "marketing",
		"special_authorization": false,
		"encryption_config": {"encrypted_fields": []},
	},
}

test_unknown_request_fields_change_nothing if {
	every x in [
		example,
		with_request({"purpose": "marketing", "record_count": 5000}),
		without(["timestamp"]),
		set_request([], {}),
	] {
		decide(object.union(x, {"data_request": noise})) == decide(x)
	}
}

# A request in which every field read matters: removing any one of them
# changes the decision.
typed_base := with_request({"record_count": 5000, "automated_request": true})

# Every request field read, with values of a wrong type for it.
wrong_typed := {
	"data_fields": ["page_views", {"name": "page_views"}, 2],
	"requester_clearance_level": ["2", [2], true],
	"special_authorization": ["true", 1, [true]],
	"purpose": [1, ["service_improvement"], {"name": "service_improvement"}],
	"allowed_purposes": ["service_improvement", {"service_improvement": true}],
	"justified_fields": ["page_views", {"page_views": true}],
	"data_subjects": ["user-1", {"user-1": true}],
	"consent_records": ["granted", {"user-1": "granted"}],
	"timestamp": ["1764201600", [1764201600], true],
	"retention_policy": ["30 days", [86400], 86400],
	"encryption_config/encrypted_fields": ["email", {"email": true}],
	"record_count": ["5000", [5000], true],
	"automated_request": ["true", 1, [true]],
}

test_wrong_typed_field_counts_as_missing if {
	every field, values in wrong_typed {
		path := array.concat(["data_request"], split(field, "/"))
		missing := decide(json.remove(typed_base, [path]))
		missing != decide(typed_base) # the field matters in typed_base
		every v in values {
			decide(json.patch(typed_base, [{"op": "add", "path": path, "value": v}])) == missing
		}
	}
}

# ---------------------------------------------------------------------------
# Quoted values are cut at max_reason_value_length (200) characters
# ---------------------------------------------------------------------------

long_text := concat("", [x | some _ in numbers.range(1, 5000); x := "p"])

# Reported by review: the purpose and the field names were quoted whole.
test_long_purpose_is_cut if {
	d := decide(set_request(["purpose"], long_text))
	shown := substring(long_text, 0, 200)
	sprintf("Purpose '%s' is not an allowed purpose", [shown]) in d.reasons
	sprintf("Use limited to the stated purpose '%s'", [shown]) in d.access_conditions
}

# Lists of field names are cut as a whole, in their %v form: names can be any
# JSON value, and a request can list any number of fields.
test_long_field_lists_are_cut if {
	fs := [{"name": sprintf("%d%s", [i, long_text]), "category": "personal_identifiable_information", "classification_level": 9} | some i in numbers.range(1, 3)]
	d := decide(with_request({"data_fields": fs, "special_authorization": false, "justified_fields": [], "encryption_config": {}}))
	shown := substring(sprintf("%v", [[f.name | some f in fs]]), 0, 200)
	every prefix in [
		"Fields above requester clearance 2 (or unclassified): ",
		"Sensitive fields without special authorization: ",
		"Unjustified fields: ",
		"Sensitive fields not encrypted: ",
	] {
		concat("", [prefix, shown]) in d.reasons
	}
	concat("", ["Audit logging for sensitive field access: ", shown]) in d.audit_requirements
	every r in array.concat(d.reasons, d.audit_requirements) {
		count(r) < 300
	}

	# many short names: cut too
	many := [{"name": sprintf("field_%d", [i]), "category": "analytics", "classification_level": 1} | some i in numbers.range(1, 500)]
	e := decide(with_request({"data_fields": many, "justified_fields": []}))
	some r in e.reasons
	startswith(r, "Unjustified fields: [\"field_1\", ")
	count(r) == count("Unjustified fields: ") + 200
}
