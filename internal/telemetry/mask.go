package telemetry

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/acgs-lite/acgs/internal/cache"
)

// maskPointer is one parsed JSON pointer (RFC 6901) into a decision's input.
type maskPointer struct {
	raw  string   // relative to the input, e.g. /context/agent/id
	segs []string // unescaped reference tokens
}

// parseMaskPointer parses an RFC 6901 pointer into the input. It is written
// relative to the input (/context/agent/id), or as OPA's mask policies and
// the log's own erased field write it, under /input (/input/context/agent/id):
// that prefix is taken off, so a top-level input field named input is
// /input/input/... . /result/... is refused rather than read as an input
// field named result: the log masks the input only, and a pointer that
// silently masked nothing would log what it was meant to hide. The empty
// pointer and /input (the whole input) are refused too: erasing the whole
// input is what an "off" sink or an input-less log is for, and it is more
// likely a typo than a wish.
func parseMaskPointer(p string) (maskPointer, error) {
	if p == "" || p == "/input" {
		return maskPointer{}, fmt.Errorf("decision log mask %q: the pointer would erase the whole input", p)
	}
	if !strings.HasPrefix(p, "/") {
		return maskPointer{}, fmt.Errorf("decision log mask %q: a JSON pointer starts with /", p)
	}
	if p == "/result" || strings.HasPrefix(p, "/result/") {
		return maskPointer{}, fmt.Errorf("decision log mask %q: masking the result is not supported, only the input "+
			"(a pointer relative to the input such as /context/agent/id, or /input/context/agent/id; an input field named result is /input/result/...)", p)
	}
	orig := p
	if strings.HasPrefix(p, "/input/") {
		p = p[len("/input"):]
	}
	raw := strings.Split(p[1:], "/")
	segs := make([]string, len(raw))
	for i, t := range raw {
		// One left-to-right pass, as a reader of the pointer takes the
		// escapes: removing ~0 first and then ~1 would make ~~01 (a bad
		// ~~ and then ~01) look like one ~1.
		if strings.Contains(strings.NewReplacer("~0", "", "~1", "").Replace(t), "~") {
			return maskPointer{}, fmt.Errorf("decision log mask %q: bad escape in %q (only ~0 and ~1)", orig, t)
		}
		segs[i] = strings.ReplaceAll(strings.ReplaceAll(t, "~1", "/"), "~0", "~")
	}
	return maskPointer{raw: p, segs: segs}, nil
}

// CheckMaskPointer says why p is not a mask pointer the decision log
// takes (nil when it is), for configuration checks before a log is opened.
func CheckMaskPointer(p string) error {
	_, err := parseMaskPointer(p)
	return err
}

// maskInput returns input with every pointer's value removed, and the
// pointers that were present, in OPA's "erased" form (/input/...). Pointers
// that lead nowhere are skipped silently: a mask names fields that may be
// there, and absence is the common case.
//
// input is shared with the decision cache and with other readers, so it is
// never modified: every map and slice on the way to a removed value is
// copied (copy-on-write along the masked paths), and untouched subtrees are
// shared with the original. That gives the guarantee of a deep copy — the
// original is unchanged and the result owns everything that differs — for
// the price of the paths actually masked.
func maskInput(input any, ptrs []maskPointer) (any, []string) {
	if len(ptrs) == 0 || input == nil || input == cache.NullInput {
		return input, nil // nothing to mask; a null input stays null, not none
	}
	input = genericJSON(input)
	var erased []string
	for _, p := range ptrs {
		if out, ok := removeAt(input, p.segs); ok {
			input = out
			erased = append(erased, "/input"+p.raw)
		}
	}
	return input, erased
}

// genericJSON makes sure the input is made of map[string]any and []any, the
// shapes the masking walks. The engine hands over decoded JSON already; any
// other value (a struct, json.RawMessage) is converted through JSON, which
// is also a deep copy. A value that cannot be encoded is returned as is and
// the encoder reports it when the event is written.
func genericJSON(v any) any {
	switch v.(type) {
	case map[string]any, []any, string, bool, float64, json.Number, nil:
		return v
	}
	b, err := json.Marshal(v)
	if err != nil {
		return v
	}
	var out any
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&out); err != nil {
		return v
	}
	return out
}

// removeAt returns a copy of v without the value at segs, and whether there
// was one. Only the containers on the path are copied.
func removeAt(v any, segs []string) (any, bool) {
	if len(segs) == 0 {
		return v, false
	}
	key, rest := segs[0], segs[1:]
	switch c := v.(type) {
	case map[string]any:
		child, ok := c[key]
		if !ok {
			return v, false
		}
		cp := make(map[string]any, len(c))
		for k, x := range c {
			cp[k] = x
		}
		if len(rest) == 0 {
			delete(cp, key)
			return cp, true
		}
		nc, ok := removeAt(child, rest)
		if !ok {
			return v, false
		}
		cp[key] = nc
		return cp, true
	case []any:
		i, err := strconv.Atoi(key)
		// An RFC 6901 index is digits only, without a leading zero: the
		// number's canonical form. Atoi also takes a sign (+1, -0) and
		// leading zeros, which name no element.
		if err != nil || i < 0 || i >= len(c) || strconv.Itoa(i) != key {
			return v, false
		}
		cp := make([]any, len(c))
		copy(cp, c)
		if len(rest) == 0 {
			// Removing an element would shift the ones after it and change
			// what the other pointers (and a reader of the log) take each
			// index to mean, so the element is erased in place: set to null.
			cp[i] = nil
			return cp, true
		}
		nc, ok := removeAt(c[i], rest)
		if !ok {
			return v, false
		}
		cp[i] = nc
		return cp, true
	}
	return v, false
}
