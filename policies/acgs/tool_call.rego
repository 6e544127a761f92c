# METADATA
# title: Tool calls (MCP gateway)
# description: |
#   Decides one agent tool call made through `acgs gateway`: allow (the
#   gateway forwards it), deny (never forwarded; the reasons go back to the
#   agent) or approval_required (held until a human approves or refuses).
#   Every list and threshold comes from data.acgs.config.tool_call.
#
#   Input (all under input.tool_call, read by name):
#     name       the tool's full name as the agent sees it, "<upstream>__<tool>"
#     tool       the upstream's own name of the tool
#     upstream   the configured name of the upstream MCP server
#     arguments  the call's arguments (an object; missing counts as {})
#     agent      {id, session}: the identity the gateway gave the client
#                session and the session id
#     context    what the gateway knows and the agent cannot forge:
#                calls_last_minute (this agent's tool calls in the last
#                60 s, before this one)
#
#   Inputs are untrusted: a field of the wrong type (or a string of
#   whitespace only) counts as missing, and what is missing fails closed
#   where it matters (no tool name, no agent identity, arguments that are
#   not an object: deny). Only the arguments
#   subtree is walked as a whole (the argument rules must look at every
#   value in it); everything else is read by constant path.
#
#   Deny beats approval: a call that breaks any rule is denied even when its
#   tool also needs approval. `allow` is true only for the outcome "allow",
#   so a client that ignores `outcome` stays fail-closed.
#
#   The configuration is an operator's to edit: a value the rules of a call
#   read that is missing or of the wrong type (a list of names that is not
#   an array of strings, a limit that is not a number, a requirement that is
#   not a boolean) would make the rule reading it match nothing, so the call
#   is denied with a configuration error naming it (configuration_problems),
#   as acgs.constitutional does for a number its scoring lacks.
package acgs.tool_call

import data.acgs.config
import data.acgs.text

cfg := config.tool_call

# The decision: the evaluated one or, when a value of the configuration the
# rules of this call read is missing or of the wrong type, a deny that says
# so (configuration_error_decision). The two bodies exclude each other.
decision := evaluated_decision if not configuration_error

decision := configuration_error_decision if configuration_error

evaluated_decision := {
	"allow": allow,
	"outcome": outcome,
	"compliance_score": cfg.scores[outcome],
	"reasons": reasons,
	"constitutional_hash": config.constitutional_hash,
	"policy": "tool_call",
	"evaluation_details": evaluation_details,
}

# ---------------------------------------------------------------------------
# Typed views of the input
# ---------------------------------------------------------------------------

default name := ""

name := n if {
	n := input.tool_call.name
	is_string(n)
}

default upstream := ""

upstream := u if {
	u := input.tool_call.upstream
	is_string(u)
}

default agent_id := ""

agent_id := a if {
	a := input.tool_call.agent.id
	is_string(a)
}

default session := ""

session := s if {
	s := input.tool_call.agent.session
	is_string(s)
}

default calls_last_minute := 0

calls_last_minute := n if {
	n := input.tool_call.context.calls_last_minute
	is_number(n)
}

default arguments_present := false

arguments_present if {
	_ = input.tool_call.arguments
}

default arguments_ok := false

arguments_ok if not arguments_present

arguments_ok if is_object(input.tool_call.arguments)

default arguments := {}

arguments := a if {
	a := input.tool_call.arguments
	is_object(a)
}

# ---------------------------------------------------------------------------
# Tool name and upstream (depend only on name, upstream and agent)
# ---------------------------------------------------------------------------

# The name as the prohibited and approval lists match it (acgs.text.key,
# as actions are matched): lower-cased, with every whitespace, control,
# format (zero-width) and combining character and the blank fillers
# removed, so that shell__Exec, "shell__exec ", shell__<U+200B>exec and
# shell__exec<U+FE0F> are shell__exec.
# (The exemption lists, shell_tools_allowed and secret_tools_allowed, match
# the name exactly: an exemption must not widen to other spellings.)
tool_key := text.key(name)

default prohibited := false

prohibited if {
	some pattern in cfg.prohibited_tools
	glob.match(lower(pattern), null, tool_key)
}

# A list that is not an array of strings (an operator's edit: an entry that
# is not a string would match no tool) matches every tool: the safe reading
# of a deny list nobody can read.
prohibited if not text.strings(object.get(config, ["tool_call", "prohibited_tools"], null))

# A name that is not blank but starts or ends with a space, or holds any
# character other than printable ASCII (U+0020-U+007E) anywhere. MCP asks
# for tool names of ASCII letters, digits, "_", "-" and "." (SEP-986 adds
# "/"), and names outside ASCII are how a denied name is dressed up as
# another: invisible characters (zero-width, bidi, tags), combining marks
# (U+034F), variation selectors (U+FE0F), blank fillers (U+3164), and
# letters that only look like ASCII ones (full-width, Cyrillic), which no
# key can fold. A class of what is allowed, rather than a list of what is
# not, covers the characters nobody has listed yet. Denied (and hidden).
default name_malformed := false

name_malformed if {
	not blank(name)
	regex.match(`^ | $|[^\x20-\x7E]`, name)
}

# A string of whitespace only counts as missing.
blank(s) if trim_space(s) == ""

default upstream_blocked := false

upstream_blocked if upstream in cfg.blocked_upstreams

# An agent listed in agent_upstreams may use only the upstreams listed for it.
default upstream_not_allowed_for_agent := false

upstream_not_allowed_for_agent if {
	allowed := cfg.agent_upstreams[agent_id]
	not upstream in allowed
}

# hidden: the gateway leaves the tool out of tools/list. True when the tool
# is refused whatever the arguments: by name, by upstream, or for this agent.
default hidden := false

hidden if prohibited

hidden if name_malformed

hidden if upstream_blocked

hidden if upstream_not_allowed_for_agent

hidden if upstream_configuration_error

default needs_approval := false

needs_approval if {
	some pattern in cfg.approval_required_tools
	glob.match(lower(pattern), null, tool_key)
}

needs_approval if not text.strings(object.get(config, ["tool_call", "approval_required_tools"], null))

# ---------------------------------------------------------------------------
# Rate limit
# ---------------------------------------------------------------------------

# A limit that is not a number (a string "120" would compare above every
# count: no call would ever be limited) is a configuration error (see
# configuration_problems); were it read, it would be 0: every call over it.
default rate_limit := 0

rate_limit := cfg.rate_limit.default_per_minute if {
	not agent_has_own_limit
	is_number(cfg.rate_limit.default_per_minute)
}

rate_limit := n if {
	agent_has_own_limit
	n := cfg.rate_limit.per_agent[agent_id]
	is_number(n)
}

# An agent listed in per_agent has the limit listed for it, whatever its
# type: one that is not a number is a configuration error (see
# configuration_problems), never the default (a limit of 5 written "5"
# would have let the agent make as many calls as any other).
default agent_has_own_limit := false

agent_has_own_limit if {
	_ = cfg.rate_limit.per_agent[agent_id]
}

# A count no counter makes (negative, or not a whole number) fails closed:
# a negative count would open even a limit of 0 (an agent allowed no
# calls). A count that is not a number at all counts as 0 (see
# calls_last_minute).
default calls_invalid := false

calls_invalid if calls_last_minute < 0

calls_invalid if floor(calls_last_minute) != calls_last_minute

default rate_limited := false

rate_limited if calls_last_minute >= rate_limit

# Every limit the rate rule compares calls_last_minute with, ascending. The
# gateway rounds the count it sends down to the largest of these it has
# reached (0 below them all): the rule's answer is the same for the exact
# count and the rounded one, and equal calls keep one cache entry.
rate_thresholds := sort({n |
	some n in array.concat([cfg.rate_limit.default_per_minute], [v | some v in cfg.rate_limit.per_agent])
	is_number(n)
})

# ---------------------------------------------------------------------------
# Argument rules: every value of the arguments, with the key it is under
# ---------------------------------------------------------------------------

# [path, key, value] for every string value in the arguments (path: the
# walk path, made a JSON pointer only for a reason). key is the name of the
# nearest object member the string is under, at any depth (array elements
# count under the member holding the array, however deeply nested),
# lower-cased with "-" read as "_" (so "X-Api-Key" is "x_api_key"); "" when
# there is none.
argument_strings contains [p, key_of(p), v] if {
	walk(arguments, [p, v])
	is_string(v)
}

# [path, name] for every object member name in the arguments.
argument_names contains [p, k] if {
	walk(arguments, [p, _])
	count(p) > 0
	k := p[count(p) - 1]
	is_string(k)
}

# Every string passed to the tool, values and member names alike: what the
# rules that look at "any string" (file URLs, URLs, shell syntax, secrets)
# read.
any_strings contains [p, v] if argument_strings[[p, _, v]]

any_strings contains [p, k] if argument_names[[p, k]]

key_of(p) := replace(lower(ks[count(ks) - 1]), "-", "_") if {
	ks := array.concat([""], [k | some k in p; is_string(k)])
}

# RFC 6901 JSON pointer of a walk path, as a reason shows it: a member
# name that looks like a secret is shown as <redacted>, and a pointer whose
# names only together look like one as /<redacted>.
shown_pointer(p) := redacted(r, "/<redacted>", r) if {
	r := concat("", [s |
		some x in p
		s := concat("", ["/", redacted_segment(x)])
	])
}

# (the escaped form hides a connection string's "//", so both are checked)
redacted_segment(x) := redacted(concat("\n", [sprintf("%v", [x]), e]), "<redacted>", e) if {
	e := replace(replace(sprintf("%v", [x]), "~", "~0"), "/", "~1")
}

tool_in(patterns) if {
	some pattern in patterns
	glob.match(pattern, null, name)
}

# --- file paths --------------------------------------------------------------

# The roots of this upstream: its entry in upstream_file_roots when it has
# one, else file_roots. Whatever an operator writes there, the bodies
# exclude each other (an entry of false used to satisfy both `not entry`
# and `entry`: eval_conflict_error), and a value that is not an array of
# roots is no roots at all (every path is outside).
default file_roots := []

file_roots := cfg.file_roots if {
	not upstream_has_own_roots
	is_array(cfg.file_roots)
}

file_roots := cfg.upstream_file_roots[upstream] if {
	upstream_has_own_roots
	is_array(cfg.upstream_file_roots[upstream])
}

default upstream_has_own_roots := false

upstream_has_own_roots if {
	_ = cfg.upstream_file_roots[upstream]
}

# [path, quoted, checked]: the string a reason quotes and the path the
# rules check.
path_arguments contains [p, v, v] if {
	argument_strings[[p, key, v]]
	key in cfg.path_argument_names
	v != ""
}

# file: URLs anywhere are paths too (read as a URL is: see url_text). The
# path follows "file:" and, when an authority follows ("file://host/..."),
# that authority: empty for file:///etc/x, which leaves /etc/x, and
# otherwise part of a relative path, which is denied. It is checked
# percent-decoded, as the file is opened ("%2e%2e" and "..%2f" climb), and
# quoted as sent. "file:" then whitespace is prose, not a URL.
path_arguments contains [p, raw, urlquery.decode(replace(raw, "+", "%2B"))] if {
	url_candidates[[p, _, u]]
	raw := file_url_path(u)
	not bad_escape(raw)
}

file_url(u) if regex.match(`^(?i:file):\S`, u)

file_url_path(u) := substring(u, 7, -1) if {
	file_url(u)
	regex.match(`^.....[/\\]{2}`, u)
}

file_url_path(u) := substring(u, 5, -1) if {
	file_url(u)
	not regex.match(`^.....[/\\]{2}`, u)
}

# A "%" not followed by two hex digits: no decoder agrees on what it means,
# so such a file URL is refused rather than checked undecoded.
bad_escape(s) if regex.match(`%([^0-9a-fA-F]|[0-9a-fA-F][^0-9a-fA-F]|[0-9a-fA-F]?$)`, s)

argument_reasons contains sprintf("Argument '%s' is a file URL with a malformed percent-escape ('%s')", [shown_pointer(p), shown(raw)]) if {
	url_candidates[[p, _, u]]
	raw := file_url_path(u)
	bad_escape(raw)
}

path_segments(v) := regex.split(`[/\\]`, v)

path_violation(v, q) := sprintf("is a relative path ('%s'); only absolute paths under the allowed file roots are accepted", [shown_from(v, q)]) if {
	not startswith(v, "/")
}

path_violation(v, q) := sprintf("climbs out of its directory with '..' ('%s')", [shown_from(v, q)]) if {
	startswith(v, "/")
	".." in path_segments(v)
}

path_violation(v, q) := sprintf("is outside the allowed file roots ('%s')", [shown_from(v, q)]) if {
	startswith(v, "/")
	not ".." in path_segments(v)
	not under_a_root(v)
}

under_a_root(v) if {
	some root in file_roots
	r := trim_suffix(root, "/")
	v == r
}

under_a_root(v) if {
	some root in file_roots
	r := trim_suffix(root, "/")
	startswith(v, concat("", [r, "/"]))
}

argument_reasons contains sprintf("Argument '%s' %s", [shown_pointer(p), path_violation(v, q)]) if {
	path_arguments[[p, q, v]]
}

# --- shell commands ----------------------------------------------------------

argument_reasons contains sprintf("Argument '%s' carries a shell command; tool '%s' may not run shell commands", [shown_pointer(p), shown(name)]) if {
	not tool_in(cfg.shell_tools_allowed)
	argument_strings[[p, key, v]]
	key in cfg.shell_argument_names
	v != ""
}

argument_reasons contains sprintf("Argument '%s' contains shell syntax (%s)", [shown_pointer(p), kind]) if {
	not tool_in(cfg.shell_tools_allowed)
	any_strings[[p, v]]
	regex.match(shell_regex, v)
	some kind, pattern in cfg.shell_patterns
	regex.match(pattern, v)
}

# --- network destinations ----------------------------------------------------

# [path, string, string as a URL parser reads it] for the strings that may
# be URLs or file: URLs: each has a colon, most strings have none.
url_candidates contains [p, v, url_text(v)] if {
	any_strings[[p, v]]
	contains(v, ":")
}

# A string as a URL parser reads it (WHATWG): leading and trailing C0
# controls and spaces dropped, tabs and newlines dropped everywhere.
url_text(v) := regex.replace(v, `^[\x00-\x20]+|[\x00-\x20]+$|[\t\n\r]`, "")

# The authority of a URL: for the special schemes (http, https, ws, wss,
# ftp) whatever follows the scheme and any run of slashes and backslashes,
# as a browser reads "https:evil.com", "http:/evil.com" or "https:\\evil.com";
# for any other scheme what follows "scheme://". No colon-only scheme of
# another kind (mailto:, data:, urn:) names a host, and neither does a
# scheme followed by whitespace ("HTTP: 200 OK" is no URL to any parser).
special_url := `^(?i:https?|wss?|ftp):[/\\]*([^\s].*)?$`

other_url := `^[a-zA-Z][a-zA-Z0-9+.-]*://([^\s].*)?$`

url_rest(u) := regex.find_all_string_submatch_n(special_url, u, 1)[0][1]

url_rest(u) := regex.find_all_string_submatch_n(other_url, u, 1)[0][1] if {
	not regex.match(special_url, u)
	not file_url(u)
}

# The hosts a string after the scheme (or a bare authority) names. Parsers
# disagree on a backslash: browsers end the authority there for the special
# schemes (http://evil\@good reaches evil), others read it as part of the
# userinfo (http://good\@evil reaches evil). Both readings count: every host
# either names must be allowed.
authority_hosts(r) := {
	authority_host(regex.split(`[/?#\\]`, r)[0]),
	authority_host(regex.split(`[/?#]`, r)[0]),
}

# The host of an authority: after the last "@" (userinfo), without the
# port; an IPv6 literal keeps its brackets, a bare IPv6 address (a host
# argument's "::1") stays whole.
authority_host(a) := host_port_host(hp) if {
	parts := split(a, "@")
	hp := parts[count(parts) - 1]
}

host_port_host(hp) := concat("", [split(hp, "]")[0], "]"]) if startswith(hp, "[")

host_port_host(hp) := split(hp, ":")[0] if {
	not startswith(hp, "[")
	count(split(hp, ":")) <= 2
}

host_port_host(hp) := hp if {
	not startswith(hp, "[")
	count(split(hp, ":")) > 2
}

# Any string that is a URL.
destinations contains [p, v, lower(h)] if {
	url_candidates[[p, v, u]]
	authority_hosts(url_rest(u))[h]
}

# A string under a URL-named key that is not a URL (no scheme, or a scheme
# that names no host: "evil.net/x", "//evil.net/x", "evil.net:80/x",
# "javascript:...") is still a destination: read as an authority after any
# leading slashes.
destinations contains [p, v, lower(h)] if {
	argument_strings[[p, key, v]]
	key in cfg.url_argument_names
	u := url_text(v)
	u != ""
	not url_rest(u)
	not file_url(u)
	authority_hosts(regex.replace(u, `^[/\\]+`, ""))[h]
}

# A host under a host-named key: host, host:port, [v6], [v6]:port, a bare
# v6 address, cut like an authority (at / ? # \ and after userinfo).
destinations contains [p, v, lower(h)] if {
	argument_strings[[p, key, v]]
	key in cfg.host_argument_names
	v != ""
	authority_hosts(v)[h]
}

bare_host(h) := trim_suffix(trim_prefix(h, "["), "]")

# Only a host a hostname or an IP literal can be is ever allowed: labels
# of letters, digits, "-" and "_" between single dots, or the hex digits,
# colons and dots of an IPv6 literal. A host with anything else (%, \, a
# space, a trailing dot, non-ASCII) is not compared with the allow-list, so
# a glob's "*" (which spans dots: *.example.com covers every subdomain)
# never spans a character no hostname has.
hostname_like(h) if regex.match(`^[a-z0-9_-]+(\.[a-z0-9_-]+)*$`, h)

hostname_like(h) if regex.match(`^\[?[0-9a-f:.]+\]?$`, h)

host_allowed(h) if {
	hostname_like(h)
	some pattern in cfg.allowed_hosts
	glob.match(lower(pattern), null, bare_host(h))
}

argument_reasons contains sprintf("Argument '%s' reaches '%s', which is not in the network allow-list", [shown_pointer(p), shown_from(v, display_host(h))]) if {
	destinations[[p, v, h]]
	not host_allowed(h)
}

display_host(h) := "<no host>" if h == ""

display_host(h) := h if h != ""

# --- secrets -----------------------------------------------------------------

# The reasons never repeat the secret itself.
argument_reasons contains sprintf("Argument '%s' looks like a secret (%s); secrets must not be passed to tools", [shown_pointer(p), kind]) if {
	not tool_in(cfg.secret_tools_allowed)
	any_strings[[p, v]]
	regex.match(secret_regex, v)
	some kind, pattern in cfg.secret_patterns
	regex.match(pattern, v)
}

argument_reasons contains sprintf("Argument '%s' carries a credential; tool '%s' may not receive credentials", [shown_pointer(p), shown(name)]) if {
	not tool_in(cfg.secret_tools_allowed)
	argument_strings[[p, key, v]]
	key in cfg.secret_argument_names
	v != ""
}

# ---------------------------------------------------------------------------
# Name, upstream, agent, session and rate rules
# ---------------------------------------------------------------------------

other_reasons contains "Tool name missing" if blank(name)

other_reasons contains sprintf("Tool name '%s' starts or ends with whitespace or holds characters other than printable ASCII", [shown(name)]) if name_malformed

other_reasons contains sprintf("Tool '%s' is prohibited by the constitution", [shown(name)]) if prohibited

other_reasons contains sprintf("Upstream '%s' is blocked", [shown(upstream)]) if upstream_blocked

other_reasons contains "Upstream missing" if blank(upstream)

other_reasons contains sprintf("Agent '%s' may not use upstream '%s'", [shown(agent_id), shown(upstream)]) if {
	upstream_not_allowed_for_agent
}

other_reasons contains "Agent identity missing" if {
	cfg.require_agent_identity == true
	blank(agent_id)
}

other_reasons contains "Session missing" if {
	cfg.require_session == true
	blank(session)
}

other_reasons contains "Arguments must be an object" if not arguments_ok

other_reasons contains sprintf("Call count invalid (%v): calls_last_minute must be a whole number, 0 or more", [calls_last_minute]) if calls_invalid

other_reasons contains sprintf("Agent '%s' made at least %v tool calls in the last minute (limit %v)", [shown(agent_id), calls_last_minute, rate_limit]) if {
	rate_limited
}

# ---------------------------------------------------------------------------
# Configuration errors
# ---------------------------------------------------------------------------

# What the rules of this call read from data.acgs.config.tool_call that is
# missing or of the wrong type, each as "<path>: <the type it needs>". A
# list of names the rules look a key or an upstream up in, a requirement or
# a limit of another type makes the rule match nothing (a string is no
# list: `in` finds nothing in it; "true" is not true; "5" is above every
# count), and a pattern that is no regular expression fails every match
# (and an invalid secret pattern the redaction of every reason): the call
# would be allowed as if the rule were not configured. Each is a
# configuration error instead, for the calls that read it: an agent's own
# entries (agent_upstreams, rate_limit.per_agent) for that agent's calls,
# the default limit for the agents without a limit of their own, the rest
# for every call. (The lists that only widen what is allowed are read
# safely as they are: a prohibited or approval list that is not an array of
# strings matches every tool, file roots that are not an array are no
# roots, and allowed_hosts, shell_tools_allowed and secret_tools_allowed of
# another type allow or exempt nothing.)
#
# The problems of the configuration only (all but the three that read the
# call's agent: its own rate limit, the default limit for an agent without
# one, its agent_upstreams entry) are rules of their own,
# data_configuration_problems and, of those the upstream rules
# read, data_upstream_configuration_problems: they depend on data only, so
# the compiled evaluator computes them once per bundle instead of at every
# decision (internal/vm, findShared).
configuration_problems contains p if some p in upstream_configuration_problems

configuration_problems contains p if some p in data_configuration_problems

data_configuration_problems contains p if some p in data_upstream_configuration_problems

data_configuration_problems contains concat("", [name, ": an array of strings"]) if {
	some name in ["path_argument_names", "shell_argument_names", "url_argument_names", "host_argument_names", "secret_argument_names"]
	not text.strings(object.get(cfg, name, null))
}

data_configuration_problems contains concat("", [name, ": a boolean"]) if {
	some name in ["require_agent_identity", "require_session"]
	not is_boolean(object.get(cfg, name, null))
}

data_configuration_problems contains "rate_limit.per_agent: an object" if {
	not is_object(object.get(cfg, ["rate_limit", "per_agent"], null))
}

configuration_problems contains "rate_limit.per_agent (this agent's entry): a number" if {
	agent_has_own_limit
	not is_number(cfg.rate_limit.per_agent[agent_id])
}

configuration_problems contains "rate_limit.default_per_minute: a number" if {
	not agent_has_own_limit
	not is_number(object.get(cfg, ["rate_limit", "default_per_minute"], null))
}

data_configuration_problems contains "upstream_file_roots: an object" if {
	not is_object(object.get(cfg, "upstream_file_roots", null))
}

# (Each pattern is tried on "": regex.match fails on a pattern that is no
# regular expression, or not a string, and keeps what it compiled.)
data_configuration_problems contains concat("", [name, ": an object of regular expressions"]) if {
	some name in ["shell_patterns", "secret_patterns"]
	not regular_expressions(object.get(cfg, name, null))
}

data_configuration_problems contains "scores: an object of numbers (allow, approval_required, deny)" if {
	some o in ["allow", "approval_required", "deny"]
	not is_number(object.get(cfg, ["scores", o], null))
}

regular_expressions(v) if {
	is_object(v)
	every pattern in v {
		is_boolean(regex.match(pattern, ""))
	}
}

# The problems of what the upstream rules read, which hidden reads too: a
# tool is then refused whatever its arguments, and the gateway leaves it
# (and its upstream's resources and prompts) out.
# (No tool_call section at all: every value is missing. Read as cfg is,
# the section's values are undefined then, not null.)
upstream_configuration_problems contains p if some p in data_upstream_configuration_problems

upstream_configuration_problems contains "agent_upstreams (this agent's entry): an array of strings" if {
	not text.strings(cfg.agent_upstreams[agent_id])
}

# (Of the configuration only, as data_configuration_problems.)
data_upstream_configuration_problems contains "tool_call: an object" if not is_object(object.get(config, "tool_call", null))

data_upstream_configuration_problems contains "blocked_upstreams: an array of strings" if {
	not text.strings(object.get(cfg, "blocked_upstreams", null))
}

data_upstream_configuration_problems contains "agent_upstreams: an object" if {
	not is_object(object.get(cfg, "agent_upstreams", null))
}

default upstream_configuration_error := false

upstream_configuration_error if count(upstream_configuration_problems) > 0

default configuration_error := false

configuration_error if count(configuration_problems) > 0

# The deny of a call whose configuration lacks a value its rules read. It
# reads nothing else of the configuration but the hash (a configuration
# error may be in the scores, or in the patterns that redact reasons).
configuration_error_decision := {
	"allow": false,
	"outcome": "deny",
	"compliance_score": 0,
	"reasons": [sprintf(
		"Constitution configuration error: data.acgs.config.tool_call lacks a value of the type this evaluation needs (%s)",
		[concat(", ", configuration_problems)],
	)],
	"constitutional_hash": config.constitutional_hash,
	"policy": "tool_call",
	"evaluation_details": {"configuration_error": true},
}

# ---------------------------------------------------------------------------
# Outcome (mutually exclusive bodies; the default covers the rest)
# ---------------------------------------------------------------------------

default outcome := "deny"

outcome := "allow" if {
	count(deny_reasons) == 0
	not needs_approval
}

outcome := "approval_required" if {
	count(deny_reasons) == 0
	needs_approval
}

default allow := false

allow if outcome == "allow"

default reasons := []

reasons := sort([r | some r in deny_reasons]) if count(deny_reasons) > 0

reasons := [sprintf("Tool '%s' requires human approval", [shown(name)])] if {
	count(deny_reasons) == 0
	needs_approval
}

evaluation_details := {
	"tool": shown(name),
	"upstream": shown(upstream),
	"agent": shown(agent_id),
	"prohibited": prohibited,
	"needs_approval": needs_approval,
	"argument_violations": count(argument_reasons),
	"rate_limit": {"calls_last_minute": calls_last_minute, "limit": rate_limit},
}

# The argument rules' reasons and the others', kept apart so that
# argument_violations counts the first without filtering deny_reasons:
# partial evaluation (which the planner runs on this route) would copy
# every reason rule into the filter.
deny_reasons := argument_reasons | other_reasons

truncate(s) := text.truncate(s, object.get(config, "max_reason_value_length", null))

# A value as a reason (or evaluation_details) shows it: truncated, or
# <redacted> when it, or its truncated form, looks like a secret (matches a
# secret pattern). No reason repeats a secret, whichever rule it comes from.
# (The strings are tested joined by a line break: a match across the join
# can only redact more.)
shown(s) := redacted(concat("\n", [s, truncate(s)]), "<redacted>", truncate(s))

# s as shown, unless the string it was taken from (a host's URL, a decoded
# path) looks like a secret.
shown_from(orig, s) := redacted(concat("\n", [orig, s, truncate(s)]), "<redacted>", truncate(s))

# mask when tested looks like a secret, else clear. Built-ins only, no
# branch: partial evaluation (which the planner runs on this route) makes a
# branch of every alternative a reason's functions take, and multiplies them.
redacted(tested, mask, clear) := concat("", array.slice([clear, mask], n, n + 1)) if {
	n := count(regex.find_n(secret_regex, tested, 1))
}

# Every secret (shell) pattern in one regular expression: one match per
# string finds whether any pattern matches, and only then are they tried
# one by one for the kind.
# With no patterns configured, a pattern that matches nothing: the empty
# one would match every string, and every reason would be redacted.
default secret_regex := `[^\s\S]`

secret_regex := concat("|", [concat("", ["(?:", pattern, ")"]) | some pattern in cfg.secret_patterns]) if {
	count(cfg.secret_patterns) > 0
}

default shell_regex := `[^\s\S]`

shell_regex := concat("|", [concat("", ["(?:", pattern, ")"]) | some pattern in cfg.shell_patterns]) if {
	count(cfg.shell_patterns) > 0
}
