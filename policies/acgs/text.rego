# Text helpers shared by the packages that match names against configured
# lists (acgs.constitutional for actions, acgs.tool_call for tool names).
# Functions of their arguments only: they read no input and no data, so a
# rule that calls them with a known action or name still folds to a
# constant under partial evaluation.
package acgs.text

# Characters a name can hold without showing them, or that only modify the
# character before them: whitespace and separators (\s, \p{Z}), control,
# format (zero-width, bidi, tags), private-use and surrogate characters
# (\p{C}), combining marks (\p{M}: the combining grapheme joiner U+034F,
# the variation selectors U+FE00-FE0F and U+E0100-E01EF, accents), and the
# letters and symbols that render blank: the Hangul fillers U+115F, U+1160,
# U+3164, U+FFA0 and the Braille blank U+2800. (Letters that only look like
# others, such as Cyrillic or full-width ones, are not folded: the callers
# refuse names outside plain ASCII.)
invisible := `[\s\p{Z}\p{C}\p{M}\x{115F}\x{1160}\x{3164}\x{FFA0}\x{2800}]`

# A name as a list of names matches it: lower-cased, with every invisible
# character removed, so that "System.Execute_Shell", "system.execute_shell "
# and "system.execute_<U+200B>shell" all read system.execute_shell.
key(s) := lower(regex.replace(s, invisible, ""))

# s cut to its first n characters (a value quoted in a reason). An n that
# is not a whole number >= 0 (an operator's edit of max_reason_value_length:
# substring would fail on "200" and null, and not cut at all at -1) cuts at
# 200, the length data.json ships.
truncate(s, n) := substring(s, 0, cut_length(n))

default cut_length(_) := 200

cut_length(n) := n if {
	is_number(n)
	n >= 0
	floor(n) == n
}

# An array of strings: a list of names nobody can misread. (A list with an
# entry of another type is read by the callers as one nobody can read.)
strings(v) if {
	is_array(v)
	every x in v {
		is_string(x)
	}
}
