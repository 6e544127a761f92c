# Text helpers shared by the packages that match names against configured
# lists (acgs.constitutional for actions, acgs.tool_call for tool names).
# Functions of their arguments only: they read no input and no data, so a
# rule that calls them with a known action or name still folds to a
# constant under partial evaluation.
package acgs.text

# Characters a name can hold without showing them: whitespace, separators
# and control and format (zero-width, bidi) characters.
invisible := `[\s\p{Z}\p{Cc}\p{Cf}]`

# A name as a list of names matches it: lower-cased, with every invisible
# character removed, so that "System.Execute_Shell", "system.execute_shell "
# and "system.execute_<U+200B>shell" all read system.execute_shell.
key(s) := lower(regex.replace(s, invisible, ""))
