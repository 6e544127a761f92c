package cache

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// stdDecode is the reference: encoding/json with UseNumber.
func stdDecode(tb testing.TB, j []byte) any {
	tb.Helper()
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		tb.Fatalf("decode %q: %v", j, err)
	}
	return v
}

// decodeStored reads every document as encoding/json does, by its own
// reader or by encoding/json.
func TestDecodeStoredIsEncodingJSON(t *testing.T) {
	for _, doc := range []string{
		`{"allow":true,"compliance_score":0.96,"constitutional_hash":"cdd01ef066bc6cf2","evaluation_details":{"accountability":1,"action_category":"data","autonomy":1.0,"trust_level":0.9},"policy":"constitutional","reasons":[]}`,
		`{}`, `[]`, `[[],{},[{}]]`, `""`, `"x"`, `0`, `-0.5e-3`, `1E+2`, `true`, `false`, `null`,
		` { "a" : [ 1 , "b" , null , true , false ] , "c" : { } } `,
		`{"a":1,"a":2}`, `{"":""}`,
		`"\u00e9"`, `"é"`, `"a\"b"`, `{"k\n":"\ud800"}`, "\"\xff\"",
		`[` + strings.Repeat(`{"n":[1,2,{"m":"x"}],"s":"y"},`, 50) + `0]`,
	} {
		if !json.Valid([]byte(doc)) && doc != "\"\xff\"" {
			t.Fatalf("test document %q is not JSON", doc)
		}
		want := stdDecode(t, []byte(doc))
		if got := decodeStored([]byte(doc)); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: got %#v, want %#v", doc, got, want)
		}
	}
	if _, ok := decodeASCII([]byte(`{"allow":true,"n":[1,"x"]}`)); !ok {
		t.Error("a document of ASCII without escapes is not read by the fast reader")
	}
}

// A decoded value does not share the memory of the JSON it came from.
func TestDecodeStoredCopies(t *testing.T) {
	j := []byte(`{"k":"value"}`)
	v := decodeStored(j)
	copy(j, `{"x":"XXXXX"}`)
	if s := v.(map[string]any)["k"]; s != "value" {
		t.Fatalf("decoded value changed with its JSON: %v", s)
	}
}

func FuzzDecodeStored(f *testing.F) {
	f.Add([]byte(`{"allow":true,"compliance_score":0.96,"reasons":["a",1,null,[]],"d":{"x":-1e5}}`))
	f.Add([]byte(` [ "a" , { "b" : false } ] `))
	f.Fuzz(func(t *testing.T, doc []byte) {
		if !json.Valid(doc) {
			decodeASCII(doc) // never given such a document (intern stores valid JSON only), but it must not crash
			return
		}
		want := stdDecode(t, doc)
		if got := decodeStored(doc); !reflect.DeepEqual(got, want) {
			t.Fatalf("%q: got %#v, want %#v", doc, got, want)
		}
	})
}

func BenchmarkDecodeStored(b *testing.B) {
	j := trustDecision(b, "0.9000001").JSON
	b.ReportAllocs()
	for b.Loop() {
		decodeStored(j)
	}
}
