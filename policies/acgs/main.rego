# METADATA
# title: ACGS-1 Lite entry point
# description: |
#   Routes every request to exactly one decision.
#
#   The policy reads only these input paths, each by its full path (the
#   decision cache keys on them: an id, a timestamp or any other field
#   outside them does not change the key):
#     type, constitutional_hash, action;
#     context.agent.trust_level, context.agent.requested_resources,
#     context.environment.sandbox_enabled,
#     context.environment.audit_enabled, context.responsible_party,
#     context.explanation, context.user_consent,
#     context.overrides_user_preference, context.benefit_assessment,
#     context.harm_risk_assessment, context.fairness_assessment,
#     context.affects_protected_groups, context.current_usage_count
#     (read by acgs.constitutional);
#     fields of evolution_request and data_request by name (listed in
#     acgs.evolution and acgs.data), and of each request itself only
#     whether it is an object (is_object: the cache keys on its type, not
#     on its contents).
#   A route added in another file of this package says there what it
#   reads. Partial evaluation with type, action and constitutional_hash
#   known and context, evolution_request and data_request unknown
#   therefore covers every path these routes read.
#
#   The hash check, the type routing and the prohibited-action short-circuit
#   are mutually exclusive rule bodies (no `else`): OPA's partial evaluation
#   does not inline `else` chains, and a `default` on `decision` would force a
#   support rule for every plan. With exclusive bodies a prohibited action,
#   a hash mismatch or an unknown type reduce to a constant under partial
#   evaluation. The bodies below cover every input:
#
#     hash wrong or missing                          -> hash mismatch deny
#     hash ok, constitutional type, prohibited       -> prohibited deny
#     hash ok, constitutional type, not prohibited   -> acgs.constitutional
#     hash ok, evolution_approval                    -> acgs.evolution
#     hash ok, data_access                           -> acgs.data
#     hash ok, any other (or missing) type           -> unknown type deny
#
#   ("prohibited" is acgs.constitutional.prohibited: an action refused by
#   itself, listed as prohibited whatever its case and invisible characters,
#   or not a plain action name.)
#
#   and each routed decision is total: it is one object built from rules
#   that all have a fail-closed `default` (score 0, allow false, ...), so it
#   is defined for every input. Hence exactly one `decision` exists for
#   every input and no eval_conflict_error is possible (tested with hostile
#   inputs in main_test.rego).
#
#   Why no `default decision`: a default on `decision` makes OPA's partial
#   evaluation emit a support module (rule + default) even for a constant
#   answer, instead of the constant itself; and a default's value cannot
#   reference data, so it could not carry the configured hash. The
#   contract's deny-by-default object is `default_decision` below; since the
#   routing above is exhaustive, no input reaches it.
package acgs.main

import data.acgs.config
import data.acgs.constitutional
import data.acgs.data as data_access
import data.acgs.evolution
import data.acgs.text

# ---------------------------------------------------------------------------
# Guards (all depend only on type, action and constitutional_hash)
# ---------------------------------------------------------------------------

default hash_ok := false

hash_ok if input.constitutional_hash == config.constitutional_hash

default is_constitutional := false

is_constitutional if input.type == "constitutional_evaluation"

is_constitutional if input.type == "action_authorization"

default is_evolution := false

is_evolution if input.type == "evolution_approval"

default is_data_access := false

is_data_access if input.type == "data_access"

default known_type := false

known_type if is_constitutional

known_type if is_evolution

known_type if is_data_access

# ---------------------------------------------------------------------------
# decision: mutually exclusive complete-rule definitions
# ---------------------------------------------------------------------------

# METADATA
# title: decision
# description: |
#   The decision for every request (the routing table above). Its plan keys
#   and seeds tell the service which decisions to settle without evaluating:
#   with type, action and constitutional_hash known, a prohibited action (or
#   a wrong hash, or an unknown type) is one constant decision whatever the
#   rest of the input, built at activation for every listed action.
# scope: document
# entrypoint: true
# custom:
#   plans:
#     input.type: [constitutional_evaluation, action_authorization]
#     input.action:
#       - data: acgs.config.prohibited_actions
#       - data: acgs.config.common_actions
#     input.constitutional_hash:
#       - data: acgs.config.constitutional_hash
decision := hash_mismatch_decision if not hash_ok

decision := constitutional.prohibited_decision if {
	hash_ok
	is_constitutional
	constitutional.prohibited
}

decision := constitutional.evaluated_decision if {
	hash_ok
	is_constitutional
	not constitutional.prohibited
}

decision := evolution.decision if {
	hash_ok
	is_evolution
}

decision := data_access.decision if {
	hash_ok
	is_data_access
}

decision := unknown_type_decision if {
	hash_ok
	not known_type
}

# METADATA
# title: allow
# description: |
#   Whether the decision allows. No plan keys: its default makes OPA's
#   partial evaluation answer with a support rule, never a constant, and a
#   miss costs a few microseconds on the compiled evaluator anyway.
# scope: document
# entrypoint: true
default allow := false

allow if decision.allow == true

health := {
	"status": "healthy",
	"constitutional_hash": config.constitutional_hash,
	"version": config.version,
	"packages": config.packages,
	"request_types": [
		"constitutional_evaluation",
		"action_authorization",
		"evolution_approval",
		"data_access",
		"tool_call",
	],
	"prohibited_action_count": count(config.prohibited_actions),
}

# ---------------------------------------------------------------------------
# Constant deny objects
# ---------------------------------------------------------------------------

default_decision := {
	"allow": false,
	"compliance_score": 0,
	"reasons": ["No matching policy"],
	"constitutional_hash": config.constitutional_hash,
	"policy": "default",
	"evaluation_details": {},
}

hash_mismatch_decision := {
	"allow": false,
	"compliance_score": 0,
	"reasons": ["Constitutional hash mismatch"],
	"constitutional_hash": config.constitutional_hash,
	"policy": "hash_check",
	"evaluation_details": {},
}

unknown_type_decision := {
	"allow": false,
	"compliance_score": 0,
	"reasons": [sprintf("Unknown request type: %s", [type_label])],
	"constitutional_hash": config.constitutional_hash,
	"policy": "router",
	"evaluation_details": {},
}

# The type as shown in the unknown-type reason: strings as they are, other
# JSON values in their JSON-ish %v form, a missing type as <missing>.
# Truncated so that a hostile input cannot make the reason arbitrarily long.
type_label := truncate(t) if {
	t := input.type
	is_string(t)
}

type_label := truncate(sprintf("%v", [t])) if {
	t := input.type
	not is_string(t)
}

type_label := "<missing>" if not has_type

default has_type := false

has_type if {
	_ = input.type
}

truncate(s) := text.truncate(s, object.get(config, "max_reason_value_length", null))
