# METADATA
# title: Data access
# description: |
#   Scores a data access request (classification, consent, purpose,
#   minimisation, retention, encryption) and decides allow/deny.
#   Every threshold, weight, category and limit comes from
#   data.acgs.config.data_access.
#
#   A configured limit of a type that would make its rule never fire (a
#   bulk or retention limit or the access threshold missing or not a
#   number) denies with a configuration error (configuration_problems), as
#   acgs.constitutional does for a number its scoring lacks; a
#   sensitive_categories that is not an array of strings makes every field
#   sensitive; a weight or score of another type fails the arithmetic, and
#   the score is 0.
#
#   Inputs are untrusted: a field of the wrong type counts as missing.
#   Fail-safe choices (documented where they are made):
#   - a data_fields element that is not an object counts as a field with
#     no name, no category and no classification level;
#   - a field whose classification_level is not a number counts as above
#     the requester's clearance (unclassified data is not released);
#   - with no numeric request timestamp, consent expiry cannot be verified,
#     so no consent is valid and every data subject is a violation;
#   - a consent without expiry_time (or null) does not expire; one whose
#     expiry_time is present but not a number cannot be verified and counts
#     as expired.
#
#   Reads these fields of input.data_request, each by its full path:
#   data_fields, requester_clearance_level, special_authorization, purpose,
#   allowed_purposes, justified_fields, data_subjects, consent_records,
#   timestamp, retention_policy, encryption_config.encrypted_fields,
#   record_count, automated_request (the lists and the retention map are
#   read whole). Of the request itself, only whether it is an object
#   (request_present).
#   Deterministic: expiry is compared with the request's own timestamp,
#   never with the clock.
package acgs.data

import data.acgs.config
import data.acgs.text

# The decision: the evaluated one or, when a value of the configuration
# the scoring reads is of a type that would make its rule never fire, a
# deny that says so (configuration_error_decision). The two bodies exclude
# each other.
decision := evaluated_decision if not configuration_error

decision := configuration_error_decision if configuration_error

evaluated_decision := {
	"allow": allow,
	"compliance_score": access_score,
	"access_score": access_score,
	"access_conditions": access_conditions,
	"audit_requirements": audit_requirements,
	"reasons": reasons,
	"constitutional_hash": config.constitutional_hash,
	"policy": "data_access",
	"evaluation_details": evaluation_details,
}

# ---------------------------------------------------------------------------
# Typed views of the input
# ---------------------------------------------------------------------------

# Whether the request is an object at all, for the concern "Data request
# missing or not an object". A type test applied to the path itself: the
# read-set analysis counts it as reading the request's type only, so its id
# and other fields stay outside the cache key.
default request_present := false

request_present if is_object(input.data_request)

default fields := []

fields := [f |
	some x in input.data_request.data_fields
	f := as_object(x)
] if {
	is_array(input.data_request.data_fields)
}

default field_count := 0

field_count := count(fields)

default clearance := 0

clearance := c if {
	c := input.data_request.requester_clearance_level
	is_number(c)
}

default special_authorization := false

special_authorization if input.data_request.special_authorization == true

default purpose := ""

purpose := p if {
	p := input.data_request.purpose
	is_string(p)
}

default purpose_stated := false

purpose_stated if purpose != ""

default allowed_purposes := []

allowed_purposes := a if {
	a := input.data_request.allowed_purposes
	is_array(a)
}

default justified_fields := set()

justified_fields := {n | some n in input.data_request.justified_fields} if {
	is_array(input.data_request.justified_fields)
}

default data_subjects := []

data_subjects := s if {
	s := input.data_request.data_subjects
	is_array(s)
}

default consent_records := []

consent_records := [r |
	some r in input.data_request.consent_records
	is_object(r)
] if {
	is_array(input.data_request.consent_records)
}

timestamp := t if {
	t := input.data_request.timestamp
	is_number(t)
}

default timestamp_known := false

timestamp_known if is_number(timestamp)

default record_count := 0

record_count := n if {
	n := input.data_request.record_count
	is_number(n)
}

default automated_request := false

automated_request if input.data_request.automated_request == true

default retention_policy := {}

retention_policy := p if {
	p := input.data_request.retention_policy
	is_object(p)
}

default encrypted_fields := set()

encrypted_fields := {n | some n in input.data_request.encryption_config.encrypted_fields} if {
	is_array(input.data_request.encryption_config.encrypted_fields)
}

sensitive_categories := {c | some c in config.data_access.sensitive_categories}

# ---------------------------------------------------------------------------
# Classification
# ---------------------------------------------------------------------------

# A field is within clearance only when its level is a number <= clearance.
within_clearance(f) if {
	level := f.classification_level
	is_number(level)
	level <= clearance
}

default fields_above_clearance := []

fields_above_clearance := [field_label(f) |
	some f in fields
	not within_clearance(f)
]

# Every field is sensitive when sensitive_categories is missing, not an
# array or holds an entry that is not a string (an operator's edit: such an
# entry would match no category): the safe reading of a list nobody can
# read.
default sensitive_fields := []

sensitive_fields := [f |
	some f in fields
	f.category in sensitive_categories
] if {
	text.strings(config.data_access.sensitive_categories)
}

sensitive_fields := fields if not text.strings(object.get(config, ["data_access", "sensitive_categories"], null))

default sensitive_count := 0

sensitive_count := count(sensitive_fields)

default sensitive_without_authorization := 0

sensitive_without_authorization := sensitive_count if not special_authorization

default classification_score := 0

# (sum([...]) rather than a nested +: see constitutional_score in acgs.constitutional.)
classification_score := clamp01(1 - (sum([count(fields_above_clearance), sensitive_without_authorization]) / max([1, field_count])))

# ---------------------------------------------------------------------------
# Consent
# ---------------------------------------------------------------------------

# A consent record is expired when its numeric expiry_time is before the
# request timestamp. An expiry_time that is present but not a number cannot
# be verified and counts as expired (fail-safe); a record without
# expiry_time (or with null) does not expire. Without a numeric request
# timestamp no record is valid at all (see consented_subjects).
expired(record) if {
	e := record.expiry_time
	is_number(e)
	e < timestamp
}

expired(record) if {
	e := record.expiry_time
	e != null
	not is_number(e)
}

consented_subjects contains subject if {
	timestamp_known
	purpose_stated
	some record in consent_records
	record.status == "granted"
	is_array(record.allowed_purposes)
	purpose in record.allowed_purposes
	not expired(record)
	subject := record.subject_id
}

default consent_violations := []

consent_violations := [s |
	some s in data_subjects
	not s in consented_subjects
]

default consent_score := 0

consent_score := 1 - (count(consent_violations) / max([1, count(data_subjects)]))

# ---------------------------------------------------------------------------
# Purpose
# ---------------------------------------------------------------------------

default purpose_allowed := false

purpose_allowed if {
	purpose_stated
	purpose in allowed_purposes
}

default purpose_score := 0

purpose_score := config.data_access.purpose_scores.allowed if purpose_allowed

purpose_score := config.data_access.purpose_scores.not_allowed if {
	purpose_stated
	not purpose_allowed
}

purpose_score := config.data_access.purpose_scores.missing if not purpose_stated

# ---------------------------------------------------------------------------
# Minimisation
# ---------------------------------------------------------------------------

# A field without a name is never justified. (Helper function, because
# `not f.name in s` is undefined, not true, when f has no name.)
justified(f) if f.name in justified_fields

default unjustified_fields := []

unjustified_fields := [field_label(f) |
	some f in fields
	not justified(f)
]

# A bulk limit that cannot be read (missing or not a number: the decision
# is then a configuration error) counts as exceeded, so that the error's
# audit requirements still ask for the review of bulk access: a removed
# limit made no request bulk, and one "1000" was above every count
# (review).
bulk_indicators contains "record_count" if exceeds(record_count, bulk_limit("max_record_count"))

bulk_indicators contains "field_count" if exceeds(field_count, bulk_limit("max_fields"))

bulk_limit(name) := object.get(config, ["data_access", "bulk_indicators", name], null)

exceeds(n, limit) if {
	is_number(limit)
	n > limit
}

exceeds(_, limit) if not is_number(limit)

bulk_indicators contains "automated_request" if automated_request

default minimisation_score := 0

minimisation_score := clamp01(1 - (sum([count(unjustified_fields), count(bulk_indicators)]) / max([1, field_count + config.data_access.bulk_indicators.minimisation_denominator_extra])))

# ---------------------------------------------------------------------------
# Retention (limits in seconds; non-numeric policy entries are ignored)
# ---------------------------------------------------------------------------

default has_retention_policy := false

has_retention_policy if count(retention_policy) > 0

retention_violations contains category if {
	some category, limit in config.data_access.retention_limits_seconds
	seconds := retention_policy[category]
	is_number(seconds)
	seconds > limit
}

default retention_score := 0

retention_score := config.data_access.retention_scores.compliant if {
	has_retention_policy
	count(retention_violations) == 0
}

retention_score := config.data_access.retention_scores.violations if {
	has_retention_policy
	count(retention_violations) > 0
}

retention_score := config.data_access.retention_scores.missing if not has_retention_policy

# ---------------------------------------------------------------------------
# Encryption
# ---------------------------------------------------------------------------

# A sensitive field without a name cannot be listed as encrypted.
encrypted(f) if f.name in encrypted_fields

default unencrypted_sensitive_fields := []

unencrypted_sensitive_fields := [field_label(f) |
	some f in sensitive_fields
	not encrypted(f)
]

default encryption_score := 0

encryption_score := 1 - (count(unencrypted_sensitive_fields) / max([1, sensitive_count]))

# ---------------------------------------------------------------------------
# Configuration errors
# ---------------------------------------------------------------------------

# What the scoring reads from data.acgs.config.data_access that is of a
# type that would make its rule never fire, each as "<path>: <the type it
# needs>": a bulk limit that is not a number (a string is above every
# count: no request would be bulk; null and booleans below: every request
# would be), retention limits that are not an object of numbers (a string
# limit is never exceeded; limits that are not an object have no category
# to check), these needed by the requests with a retention policy. The
# request would be scored as if the rule passed. (A weight or score of
# another type fails the arithmetic, and the score it is part of is 0:
# fail-closed as it is.)
# The problems of the configuration only (every rule below but the two on
# retention limits, which apply to requests with a retention policy) are
# a rule of their own: it depends on data only, so the compiled evaluator
# computes it once per bundle instead of at every decision (internal/vm,
# findShared).
configuration_problems contains p if some p in data_configuration_problems

data_configuration_problems contains "data_access: an object" if not is_object(object.get(config, "data_access", null))

data_configuration_problems contains concat("", ["bulk_indicators.", name, ": a number"]) if {
	some name in ["max_record_count", "max_fields"]
	not is_number(object.get(config.data_access, ["bulk_indicators", name], null))
}

# The threshold too: one missing or of another type is never reached, and
# every request was denied, without it with no reason at all (review).
data_configuration_problems contains "access_threshold: a number" if {
	not is_number(object.get(config.data_access, "access_threshold", null))
}

configuration_problems contains "retention_limits_seconds: an object of numbers" if {
	has_retention_policy
	not numbers(object.get(config.data_access, "retention_limits_seconds", null))
}

# A limit removed dropped its category's check: a bulk request keeping
# financial information ten years was allowed (review). The limits must
# hold the four categories the spec names.
configuration_problems contains concat("", ["retention_limits_seconds.", name, ": a number"]) if {
	has_retention_policy
	limits := object.get(config.data_access, "retention_limits_seconds", null)
	is_object(limits)
	some name in retention_limit_categories
	not name in object.keys(limits)
}

retention_limit_categories := [
	"personal_identifiable_information", "financial_information",
	"health_records", "authentication_credentials",
]

numbers(v) if {
	is_object(v)
	every x in v {
		is_number(x)
	}
}

default configuration_error := false

configuration_error if count(configuration_problems) > 0

# The deny of a request whose configuration lacks a value the scoring
# reads, with nothing scored and no access condition (nothing is granted).
# Its audit requirements are the request's, as for any denial (sensitive
# fields read safely: every field is sensitive when the categories cannot
# be read), and a human review of it: it required no audit at all before,
# not even the log of the request (review).
configuration_error_decision := {
	"allow": false,
	"compliance_score": 0,
	"access_score": 0,
	"access_conditions": [],
	"audit_requirements": array.concat(
		audit_requirements,
		["Human review of the request: denied on a configuration error of data.acgs.config.data_access, not scored"],
	),
	"reasons": [sprintf(
		"Constitution configuration error: data.acgs.config.data_access lacks a value of the type this evaluation needs (%s)",
		[concat(", ", configuration_problems)],
	)],
	"constitutional_hash": config.constitutional_hash,
	"policy": "data_access",
	"evaluation_details": {"configuration_error": true},
}

# ---------------------------------------------------------------------------
# Score and decision
# ---------------------------------------------------------------------------

raw_score := score if {
	w := config.data_access.weights
	score := (((((w.classification * classification_score) + (w.consent * consent_score)) + (w.purpose * purpose_score)) + (w.minimisation * minimisation_score)) + (w.retention * retention_score)) + (w.encryption * encryption_score)
}

default access_score := 0

access_score := round4(clamp01(raw_score))

# A threshold that is not a number is never reached (compared with a
# number, null and booleans are below every number); the decision is then
# the configuration error (configuration_problems) anyway.
default allow := false

allow if {
	is_number(config.data_access.access_threshold)
	access_score >= config.data_access.access_threshold
}

default reasons := []

reasons := [msg | some [_, msg] in sort(concerns)] if not allow

default evaluation_details := {}

evaluation_details := {
	"classification": round4(classification_score),
	"consent": round4(consent_score),
	"purpose": purpose_score,
	"minimisation": round4(minimisation_score),
	"retention": retention_score,
	"encryption": round4(encryption_score),
	"field_count": field_count,
	"sensitive_field_count": sensitive_count,
	"consent_violations": count(consent_violations),
	"bulk_indicators": sort(bulk_indicators),
}

default access_conditions := []

access_conditions := [c | some [_, c] in sort(conditions)]

default audit_requirements := []

audit_requirements := [a | some [_, a] in sort(audits)]

conditions contains [0, sprintf("Use limited to the stated purpose '%s'", [truncate(purpose)])] if purpose_stated

conditions contains [1, "Access limited to the requested, justified fields"]

conditions contains [2, "Sensitive fields must stay encrypted at rest and in transit"] if sensitive_count > 0

conditions contains [3, "Special authorization must be recorded with the access"] if {
	sensitive_count > 0
	special_authorization
}

conditions contains [4, "Data must be deleted at the end of the retention period"] if has_retention_policy

audits contains [0, "Log requester, purpose and fields accessed"]

audits contains [1, msg] if {
	sensitive_count > 0
	msg := sprintf("Audit logging for sensitive field access: %s", [shown_list([field_label(f) | some f in sensitive_fields])])
}

audits contains [2, msg] if {
	count(data_subjects) > 0
	msg := sprintf("Record consent verification for %d data subjects", [count(data_subjects)])
}

audits contains [3, "Review bulk or automated access"] if count(bulk_indicators) > 0

# ---------------------------------------------------------------------------
# Concerns ([order, message] pairs)
# ---------------------------------------------------------------------------

concerns contains [0, "Data request missing or not an object"] if not request_present

concerns contains [1, msg] if {
	count(fields_above_clearance) > 0
	msg := sprintf("Fields above requester clearance %v (or unclassified): %s", [clearance, shown_list(fields_above_clearance)])
}

concerns contains [2, msg] if {
	sensitive_without_authorization > 0
	msg := sprintf("Sensitive fields without special authorization: %s", [shown_list([field_label(f) | some f in sensitive_fields])])
}

concerns contains [3, "Request timestamp missing: consent expiry cannot be verified"] if {
	count(data_subjects) > 0
	not timestamp_known
}

concerns contains [4, msg] if {
	count(consent_violations) > 0
	msg := sprintf(
		"No valid consent (granted, covering the purpose, not expired) for %d of %d data subjects",
		[count(consent_violations), count(data_subjects)],
	)
}

concerns contains [5, "Purpose not stated"] if not purpose_stated

concerns contains [5, msg] if {
	purpose_stated
	not purpose_allowed
	msg := sprintf("Purpose '%s' is not an allowed purpose", [truncate(purpose)])
}

concerns contains [6, msg] if {
	count(unjustified_fields) > 0
	msg := sprintf("Unjustified fields: %s", [shown_list(unjustified_fields)])
}

concerns contains [7, msg] if {
	"record_count" in bulk_indicators
	msg := sprintf("Bulk access: record_count %v exceeds %v", [record_count, config.data_access.bulk_indicators.max_record_count])
}

concerns contains [7, msg] if {
	"field_count" in bulk_indicators
	msg := sprintf("Bulk access: %d fields exceeds %v", [field_count, config.data_access.bulk_indicators.max_fields])
}

concerns contains [7, "Automated request counts as bulk access"] if automated_request

concerns contains [8, "No retention policy"] if not has_retention_policy

concerns contains [9, msg] if {
	some category in retention_violations
	msg := sprintf(
		"Retention for %s %v seconds exceeds limit %v seconds",
		[category, retention_policy[category], config.data_access.retention_limits_seconds[category]],
	)
}

concerns contains [10, msg] if {
	count(unencrypted_sensitive_fields) > 0
	msg := sprintf("Sensitive fields not encrypted: %s", [shown_list(unencrypted_sensitive_fields)])
}

concerns contains [11, msg] if {
	msg := sprintf("Access score %v below %v", [access_score, config.data_access.access_threshold])
}

# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

# Names are reported as given (any JSON value); a missing name as "<unnamed>".
field_label(f) := object.get(f, "name", "<unnamed>")

# Values taken from the input as reasons, conditions and audit requirements
# quote them: cut at max_reason_value_length characters, a list of field
# names as a whole, in its %v form (a field's name can be any JSON value,
# and a request can name any number of fields).
truncate(s) := text.truncate(s, object.get(config, "max_reason_value_length", null))

shown_list(l) := truncate(sprintf("%v", [l]))

as_object(x) := x if is_object(x)

as_object(x) := {} if not is_object(x)

clamp01(x) := min([1, max([0, x])])

round4(x) := round(x * 10000) / 10000
