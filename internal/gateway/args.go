package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/acgs-lite/acgs/internal/jsonenc"
)

// Limits on a call's arguments, as `acgs serve` has on request bodies (the
// MCP transport already bounds the message size).
const (
	maxArgumentDepth  = 64
	maxNumberLiteral  = 100
	maxNumberExponent = 1000
)

// decodeArguments decodes a call's raw arguments into the engine's input
// values (map[string]any, []any, json.Number, string, bool, nil). The raw
// bytes are what the upstream receives, so anything two JSON parsers could
// read differently is refused: an object that repeats a key (the policy
// would judge one value and the upstream might use the other), data after
// the value, nesting deeper than 64, and number literals that OPA's decimal
// arithmetic could not finish quickly. Absent arguments decode to absent
// (ok false).
//
// Its errors say where in the arguments, as a JSON pointer whose object
// member names are * (memberAt) and array elements their index: a member
// name can be a secret (headers or a map keyed by a token), and the error
// goes to the agent and into the decision log, which no mask reaches.
func decodeArguments(raw json.RawMessage) (v any, ok bool, err error) {
	raw = bytes.Trim(raw, jsonSpace)
	if len(raw) == 0 {
		return nil, false, nil
	}
	if string(raw) == "{}" {
		// No arguments, the commonest call of a tool that takes none: no
		// decoder (a bytes.Reader, a json.Decoder and its buffer).
		return map[string]any{}, true, nil
	}
	// Fast path: one byte scan (members and depth), the standard decoder,
	// one walk of the value. A repeated key shows as fewer members decoded
	// than scanned; the slow path then names it.
	members, depth := scanJSON(raw)
	if depth > maxArgumentDepth {
		return nil, false, fmt.Errorf("arguments nest deeper than %d", maxArgumentDepth)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return nil, false, fmt.Errorf("arguments are not valid JSON: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, false, errors.New("data after the arguments' JSON value")
	}
	n, err := checkValue(v, "")
	if err != nil {
		return nil, false, err
	}
	if n != members {
		return decodeArgumentsStrict(raw)
	}
	return v, true, nil
}

// scanJSON counts the object members of a JSON text (the colons outside
// strings) and its deepest nesting.
func scanJSON(b []byte) (members, maxDepth int) {
	depth := 0
	var strs jsonenc.Strings
	for _, c := range b {
		if !strs.Outside(c) {
			continue
		}
		switch c {
		case ':':
			members++
		case '{', '[':
			depth++
			maxDepth = max(maxDepth, depth)
		case '}', ']':
			depth--
		}
	}
	return members, maxDepth
}

// checkValue counts the members of every object in v and checks its
// number literals.
func checkValue(v any, at string) (int, error) {
	switch x := v.(type) {
	case map[string]any:
		n := len(x)
		for k, e := range x {
			if err := checkKey(k, at); err != nil {
				return 0, err
			}
			m, err := checkValue(e, memberAt(at))
			if err != nil {
				return 0, err
			}
			n += m
		}
		return n, nil
	case []any:
		n := 0
		for i, e := range x {
			m, err := checkValue(e, fmt.Sprintf("%s/%d", at, i))
			if err != nil {
				return 0, err
			}
			n += m
		}
		return n, nil
	case json.Number:
		if err := checkNumber(string(x)); err != nil {
			return 0, fmt.Errorf("arguments: %w at %q", err, at)
		}
	}
	return 0, nil
}

// decodeArgumentsStrict decodes token by token, naming a repeated key.
func decodeArgumentsStrict(raw json.RawMessage) (any, bool, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	v, err := decodeValue(dec, 0, "")
	if err != nil {
		return nil, false, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, false, errors.New("data after the arguments' JSON value")
	}
	return v, true, nil
}

// jsonSpace is JSON's whitespace (RFC 8259), less than unicode.IsSpace.
const jsonSpace = " \t\n\r"

func decodeValue(dec *json.Decoder, depth int, at string) (any, error) {
	if depth > maxArgumentDepth {
		return nil, fmt.Errorf("arguments nest deeper than %d at %q", maxArgumentDepth, at)
	}
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("arguments are not valid JSON: %w", err)
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			m := map[string]any{}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, fmt.Errorf("arguments are not valid JSON: %w", err)
				}
				k := kt.(string)
				if err := checkKey(k, at); err != nil {
					return nil, err
				}
				if _, dup := m[k]; dup {
					return nil, fmt.Errorf("arguments repeat a key at %q", memberAt(at))
				}
				v, err := decodeValue(dec, depth+1, memberAt(at))
				if err != nil {
					return nil, err
				}
				m[k] = v
			}
			_, err := dec.Token() // }
			return m, err
		case '[':
			a := []any{}
			for i := 0; dec.More(); i++ {
				v, err := decodeValue(dec, depth+1, fmt.Sprintf("%s/%d", at, i))
				if err != nil {
					return nil, err
				}
				a = append(a, v)
			}
			_, err := dec.Token() // ]
			return a, err
		}
		return nil, fmt.Errorf("arguments are not valid JSON: unexpected %v", t)
	case json.Number:
		if err := checkNumber(string(t)); err != nil {
			return nil, fmt.Errorf("arguments: %w at %q", err, at)
		}
		return t, nil
	default:
		return t, nil // string, bool, nil
	}
}

// foldsToASCII are the two characters that Unicode case folding maps to
// ASCII letters: the long s (ſ, to s) and the Kelvin sign (K, to k). A
// server that decodes arguments into Go structs with encoding/json (which
// matches field names case-insensitively, with folding) reads "ſource" as
// "source", while the constitution's argument rules, which lower-case
// names, do not: such a name would pass the rules as another argument.
const foldsToASCII = "\u017f\u212a"

// checkKey refuses an argument name the rules could read as another name
// than an upstream does (at is its object's place).
func checkKey(k, at string) error {
	if strings.ContainsAny(k, foldsToASCII) {
		return fmt.Errorf("an argument name at %q holds a character that some servers read as an ASCII letter (U+017F or U+212A)", memberAt(at))
	}
	return nil
}

// memberAt is the place of a member of the object at at, as errors say
// it: its name is not quoted (decodeArguments).
func memberAt(at string) string { return at + "/*" }

func checkNumber(s string) error {
	if len(s) > maxNumberLiteral {
		return fmt.Errorf("a number literal longer than %d characters", maxNumberLiteral)
	}
	if i := strings.IndexAny(s, "eE"); i >= 0 {
		exp := strings.TrimLeft(s[i+1:], "+-")
		exp = strings.TrimLeft(exp, "0")
		if len(exp) > 4 || (len(exp) == 4 && exp > "1000") {
			return fmt.Errorf("a number with an exponent beyond ±%d", maxNumberExponent)
		}
	}
	return nil
}
