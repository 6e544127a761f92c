package jsonenc

// Strings follows a byte-by-byte scan of JSON text in and out of its
// strings, so that a scanner can look at structure (brackets, colons,
// numbers) without mistaking string contents for it. Its zero value is
// outside any string.
type Strings struct {
	in, escaped bool
}

// Outside takes the next byte c of the text and reports whether c lies
// outside every string; a quote that opens or closes a string counts as
// inside.
func (s *Strings) Outside(c byte) bool {
	switch {
	case !s.in:
		if c != '"' {
			return true
		}
		s.in = true
	case s.escaped:
		s.escaped = false
	case c == '\\':
		s.escaped = true
	case c == '"':
		s.in = false
	}
	return false
}
