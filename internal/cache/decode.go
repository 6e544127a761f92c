package cache

import (
	"bytes"
	"encoding/json"
	"strings"
)

// decodeStored decodes the JSON of a stored decision as encoding/json does
// with UseNumber (map[string]any, []any, string, json.Number, bool, nil),
// about four times faster for what the engine stores: documents of ASCII
// without escapes. Those it reads itself, every string a part of one copy
// of the document; any other document (an escape, a byte past ASCII: what
// encoding/json may rewrite) is decoded by encoding/json. j is valid JSON
// (intern stores no other), and the decoded value never shares j's memory.
func decodeStored(j []byte) any {
	if v, ok := decodeASCII(j); ok {
		return v
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.UseNumber()
	var r any
	if err := dec.Decode(&r); err != nil {
		panic("cache: stored JSON does not decode: " + err.Error()) // intern stores valid JSON only
	}
	return r
}

// decodeASCII is decodeStored's own reader; ok is false when the document
// has an escape or a byte past ASCII, or is not one JSON value.
func decodeASCII(j []byte) (any, bool) {
	for _, c := range j {
		if c == '\\' || c >= 0x80 {
			return nil, false
		}
	}
	d := asciiDecoder{s: string(j)}
	v, ok := d.value(0)
	if !ok {
		return nil, false
	}
	d.space()
	return v, d.i == len(d.s)
}

// asciiDecoder reads one document; entries and items are stacks of the
// members of the objects and arrays being read, so that each map and slice
// is made at its final size.
type asciiDecoder struct {
	s       string
	i       int
	entries []entry
	items   []any
}

type entry struct {
	k string
	v any
}

// maxDepth bounds nesting as encoding/json does.
const maxDepth = 10000

func (d *asciiDecoder) space() {
	for d.i < len(d.s) {
		switch d.s[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

func (d *asciiDecoder) value(depth int) (any, bool) {
	if depth > maxDepth {
		return nil, false
	}
	d.space()
	if d.i >= len(d.s) {
		return nil, false
	}
	switch c := d.s[d.i]; {
	case c == '{':
		return d.object(depth)
	case c == '[':
		return d.array(depth)
	case c == '"':
		s, ok := d.str()
		return s, ok
	case c == '-' || (c >= '0' && c <= '9'):
		start := d.i
		for d.i < len(d.s) && isNumberByte(d.s[d.i]) {
			d.i++
		}
		return json.Number(d.s[start:d.i]), true
	case strings.HasPrefix(d.s[d.i:], "true"):
		d.i += 4
		return true, true
	case strings.HasPrefix(d.s[d.i:], "false"):
		d.i += 5
		return false, true
	case strings.HasPrefix(d.s[d.i:], "null"):
		d.i += 4
		return nil, true
	}
	return nil, false
}

// str reads a string without escapes, d.i at its opening quote.
func (d *asciiDecoder) str() (string, bool) {
	end := strings.IndexByte(d.s[d.i+1:], '"')
	if end < 0 {
		return "", false
	}
	s := d.s[d.i+1 : d.i+1+end]
	d.i += end + 2
	return s, true
}

func (d *asciiDecoder) object(depth int) (any, bool) {
	d.i++ // {
	base := len(d.entries)
	d.space()
	if d.i < len(d.s) && d.s[d.i] == '}' {
		d.i++
		return map[string]any{}, true
	}
	for {
		d.space()
		if d.i >= len(d.s) || d.s[d.i] != '"' {
			return nil, false
		}
		k, ok := d.str()
		if !ok {
			return nil, false
		}
		d.space()
		if d.i >= len(d.s) || d.s[d.i] != ':' {
			return nil, false
		}
		d.i++
		v, ok := d.value(depth + 1)
		if !ok {
			return nil, false
		}
		d.entries = append(d.entries, entry{k, v})
		d.space()
		if d.i >= len(d.s) {
			return nil, false
		}
		switch d.s[d.i] {
		case ',':
			d.i++
			continue
		case '}':
			d.i++
			m := make(map[string]any, len(d.entries)-base)
			for _, e := range d.entries[base:] {
				m[e.k] = e.v // a repeated key: the last one, as encoding/json
			}
			d.entries = d.entries[:base]
			return m, true
		}
		return nil, false
	}
}

func (d *asciiDecoder) array(depth int) (any, bool) {
	d.i++ // [
	base := len(d.items)
	d.space()
	if d.i < len(d.s) && d.s[d.i] == ']' {
		d.i++
		return []any{}, true
	}
	for {
		v, ok := d.value(depth + 1)
		if !ok {
			return nil, false
		}
		d.items = append(d.items, v)
		d.space()
		if d.i >= len(d.s) {
			return nil, false
		}
		switch d.s[d.i] {
		case ',':
			d.i++
			continue
		case ']':
			d.i++
			a := append([]any(nil), d.items[base:]...)
			d.items = d.items[:base]
			return a, true
		}
		return nil, false
	}
}
