package server

import (
	"encoding/json"

	"github.com/valyala/fastjson"

	"github.com/acgs-lite/acgs/internal/telemetry"
)

// parsers are reused: a fastjson.Parser keeps its value tree's memory
// between parses.
var parsers fastjson.ParserPool

// decodeFastSized decodes b, which checkDepth found plain (no string with an
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
//
// size is the value's size as the decision log counts it
// (telemetry.ValueSize), counted as the value is copied.
func decodeFastSized(b []byte, keys int) (v any, size int64, ok bool) {
	if fastjson.ValidateBytes(b) != nil {
		return nil, 0, false
	}
	p := parsers.Get()
	defer parsers.Put(p)
	pv, err := p.ParseBytes(b)
	if err != nil {
		return nil, 0, false
	}
	out, n, ok := copyValue(pv, &size)
	if !ok || n != keys {
		return nil, 0, false
	}
	return out, size, true
}

// copyValue copies a fastjson value out of the parser's memory; n counts
// the object entries kept, so a duplicate key (an entry the map absorbed)
// shows as fewer than the keys written. It adds to size what
// telemetry.ValueSize counts of the copy (a duplicate key's entry too,
// which only counts more).
func copyValue(v *fastjson.Value, size *int64) (out any, n int, ok bool) {
	switch v.Type() {
	case fastjson.TypeObject:
		o, _ := v.Object()
		m := make(map[string]any, o.Len())
		*size += telemetry.SizeMap
		ok = true
		o.Visit(func(k []byte, e *fastjson.Value) {
			if !ok {
				return
			}
			*size += telemetry.SizeEntry + int64(len(k))
			val, c, good := copyValue(e, size)
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
		*size += telemetry.SizeArray
		for i, e := range items {
			val, c, good := copyValue(e, size)
			if !good {
				return nil, 0, false
			}
			a[i], n = val, n+c
		}
		return a, n, true
	case fastjson.TypeString:
		sb, _ := v.StringBytes()
		*size += telemetry.SizeScalar + int64(len(sb))
		return string(sb), 0, true
	case fastjson.TypeNumber:
		var scratch [64]byte // checkDepth bounds a number to 100 characters; most fit
		num := v.MarshalTo(scratch[:0])
		*size += telemetry.SizeScalar + int64(len(num))
		return json.Number(num), 0, true
	case fastjson.TypeTrue:
		*size += telemetry.SizeScalar
		return true, 0, true
	case fastjson.TypeFalse:
		*size += telemetry.SizeScalar
		return false, 0, true
	case fastjson.TypeNull:
		*size += telemetry.SizeScalar
		return nil, 0, true
	}
	return nil, 0, false
}
