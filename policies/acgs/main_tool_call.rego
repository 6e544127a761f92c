# ACGS-1 Lite entry point, tool_call route. (Plain comments: main.rego
# holds the package's metadata annotation, and a package has only one.)
#
# Adds the tool_call request type (decisions of `acgs gateway`, see
# acgs.tool_call) to the router of main.rego, in the same package, as one
# more mutually exclusive body: is_tool_call is true only for
# input.type == "tool_call", which none of main.rego's type guards
# accepts, and known_type gains it so that main.rego's unknown-type body
# excludes it. The routing table of main.rego therefore gains one row:
#
#   hash ok, tool_call -> acgs.tool_call
#
# and acgs.tool_call.decision is total (built from rules with fail-closed
# defaults), so exactly one decision still exists for every input.
#
# What this route reads (besides type and constitutional_hash), each by its
# full path, which the decision cache keys on (`acgs policy readset
# acgs/tool_call/decision`): tool_call.name, tool_call.upstream,
# tool_call.agent.id, tool_call.agent.session,
# tool_call.context.calls_last_minute, and tool_call.arguments whole (the
# argument rules look at every value in it).
package acgs.main

import data.acgs.tool_call

default is_tool_call := false

is_tool_call if input.type == "tool_call"

known_type if is_tool_call

decision := tool_call.decision if {
	hash_ok
	is_tool_call
}
