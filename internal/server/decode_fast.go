package server

import (
	"encoding/json"

	"github.com/valyala/fastjson"
)

// parsers are reused: a fastjson.Parser keeps its value tree's memory
// between parses.
var parsers fastjson.ParserPool

// decodeFast decodes b, which checkDepth found plain (no string with an
// escape or a control character) and within the bounds, into the same
// value encoding/json with UseNumber gives, about three times faster
// (BenchmarkDecodeJSON): fastjson validates the JSON strictly and builds a
// tree in pooled memory; the value is copied out of it. ok is false when b
// is not valid JSON or has a duplicate key (keys are compared as written,
// which for strings without escapes is as decoded); decodeStd then words
// the refusal. Why fastjson and not a faster decoder into interfaces:
// fastjson's strict validator and its raw number text give exactly
// encoding/json's acceptance and json.Number, and it needs neither cgo nor
// assembly (bytedance/sonic does).
func decodeFast(b []byte, keys int) (any, bool) {
	if fastjson.ValidateBytes(b) != nil {
		return nil, false
	}
	p := parsers.Get()
	defer parsers.Put(p)
	v, err := p.ParseBytes(b)
	if err != nil {
		return nil, false
	}
	out, n, ok := copyValue(v)
	if !ok || n != keys {
		return nil, false
	}
	return out, true
}

// copyValue copies a fastjson value out of the parser's memory; n counts
// the object entries kept, so a duplicate key (an entry the map absorbed)
// shows as fewer than the keys written.
func copyValue(v *fastjson.Value) (out any, n int, ok bool) {
	switch v.Type() {
	case fastjson.TypeObject:
		o, _ := v.Object()
		m := make(map[string]any, o.Len())
		ok = true
		o.Visit(func(k []byte, e *fastjson.Value) {
			if !ok {
				return
			}
			val, c, good := copyValue(e)
			if !good {
				ok = false
				return
			}
			m[string(k)] = val
			n += c
		})
		return m, n + len(m), ok
	case fastjson.TypeArray:
		items, _ := v.Array()
		a := make([]any, len(items))
		for i, e := range items {
			val, c, good := copyValue(e)
			if !good {
				return nil, 0, false
			}
			a[i], n = val, n+c
		}
		return a, n, true
	case fastjson.TypeString:
		sb, _ := v.StringBytes()
		return string(sb), 0, true
	case fastjson.TypeNumber:
		var scratch [64]byte // checkDepth bounds a number to 100 characters; most fit
		return json.Number(v.MarshalTo(scratch[:0])), 0, true
	case fastjson.TypeTrue:
		return true, 0, true
	case fastjson.TypeFalse:
		return false, 0, true
	case fastjson.TypeNull:
		return nil, 0, true
	}
	return nil, 0, false
}
