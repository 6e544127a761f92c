package engine

import (
	"encoding/json"
	"slices"
	"strings"
	"sync"

	"github.com/acgs-lite/acgs/internal/jsonenc"
)

// encodeResult returns json.Marshal(v), byte for byte, for the values an
// evaluation's result is made of (what ast.JSON produces: map[string]any,
// []any, string, json.Number, bool and nil), without reflection; any other
// type inside v goes through json.Marshal. ok is false where json.Marshal
// would fail (an invalid json.Number).
//
// It is what a cache miss pays to store its decision already encoded:
// json.Marshal sorts every map's keys through reflect and allocates for each
// of them; here the keys are sorted in a pooled scratch slice. encoding/json
// (v1) is the reference: keys in byte order, strings escaped for HTML,
// invalid UTF-8 replaced by U+FFFD, U+2028 and U+2029 escaped, numbers
// written as they are. TestEncodeResultEqualsMarshal holds it to that.
func encodeResult(v any) ([]byte, bool) {
	sc := scratchPool.Get().(*scratch)
	b, ok := sc.appendValue(sc.buf[:0], v)
	var out []byte
	if ok {
		out = append([]byte(nil), b...) // exactly sized: it is kept in the cache
	}
	clear(sc.keys[:cap(sc.keys)])
	sc.keys = sc.keys[:0]
	if cap(b) <= 64<<10 {
		sc.buf = b[:0]
		scratchPool.Put(sc)
	}
	return out, ok
}

// scratch is an encoding's reusable memory: the output buffer and the keys
// of the maps being written.
type scratch struct {
	buf  []byte
	keys []string
}

var scratchPool = sync.Pool{New: func() any { return &scratch{buf: make([]byte, 0, 1024), keys: make([]string, 0, 64)} }}

func (sc *scratch) appendValue(dst []byte, v any) ([]byte, bool) {
	switch x := v.(type) {
	case nil:
		return append(dst, "null"...), true
	case bool:
		if x {
			return append(dst, "true"...), true
		}
		return append(dst, "false"...), true
	case string:
		return jsonenc.AppendString(dst, x, true), true
	case json.Number:
		s := string(x)
		if s == "" {
			s = "0"
		}
		if !validNumber(s) {
			return dst, false
		}
		return append(dst, s...), true
	case []any:
		if x == nil {
			return append(dst, "null"...), true
		}
		dst = append(dst, '[')
		for i, e := range x {
			if i > 0 {
				dst = append(dst, ',')
			}
			var ok bool
			if dst, ok = sc.appendValue(dst, e); !ok {
				return dst, false
			}
		}
		return append(dst, ']'), true
	case map[string]any:
		if x == nil {
			return append(dst, "null"...), true
		}
		// The keys of this map go on top of the scratch slice, whose lower
		// part holds the keys of the maps this one is nested in.
		base := len(sc.keys)
		for k := range x {
			sc.keys = append(sc.keys, k)
		}
		keys := sc.keys[base:]
		slices.SortFunc(keys, strings.Compare)
		dst = append(dst, '{')
		for i := base; i < len(sc.keys); i++ {
			k := sc.keys[i]
			if i > base {
				dst = append(dst, ',')
			}
			dst = jsonenc.AppendString(dst, k, true)
			dst = append(dst, ':')
			var ok bool
			if dst, ok = sc.appendValue(dst, x[k]); !ok {
				return dst, false
			}
		}
		sc.keys = sc.keys[:base]
		return append(dst, '}'), true
	default:
		b, err := json.Marshal(x)
		if err != nil {
			return dst, false
		}
		return append(dst, b...), true
	}
}

// validNumber is encoding/json's grammar of a number it writes.
func validNumber(s string) bool {
	if s == "" {
		return false
	}
	if s[0] == '-' {
		s = s[1:]
		if s == "" {
			return false
		}
	}
	switch {
	default:
		return false
	case s[0] == '0':
		s = s[1:]
	case '1' <= s[0] && s[0] <= '9':
		s = s[1:]
		for len(s) > 0 && '0' <= s[0] && s[0] <= '9' {
			s = s[1:]
		}
	}
	if len(s) >= 2 && s[0] == '.' && '0' <= s[1] && s[1] <= '9' {
		s = s[2:]
		for len(s) > 0 && '0' <= s[0] && s[0] <= '9' {
			s = s[1:]
		}
	}
	if len(s) >= 2 && (s[0] == 'e' || s[0] == 'E') {
		s = s[1:]
		if s[0] == '+' || s[0] == '-' {
			s = s[1:]
			if s == "" {
				return false
			}
		}
		for len(s) > 0 && '0' <= s[0] && s[0] <= '9' {
			s = s[1:]
		}
	}
	return s == ""
}
