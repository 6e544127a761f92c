package server

import (
	"testing"

	"github.com/acgs-lite/acgs/internal/apierror"
)

// FuzzDecode fuzzes the request decoder and the ACGS envelope check alone
// (no evaluation), so the fuzzer spends its time in the code that parses
// untrusted bytes: every failure must be a 4xx apierror, never a panic.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"type":"constitutional_evaluation","constitutional_hash":"cdd01ef066bc6cf2","action":"data.read_public","context":{}}`,
		`{"input":{"a":[1,2,{"b":null}]}}`, `{`, `[]`, `"\u0000"`, `{"a":1} x`, "\xff", `[[[[[[[[[[]]]]]]]]]]`,
		`{"type":"x","constitutional_hash":"cdd01ef066bc6cf2","context":[],"data_request":1}`, `1e400`, `{"a":"\"}\\"}`,
	} {
		f.Add([]byte(s))
	}
	s := &Server{hash: "cdd01ef066bc6cf2", d: Deps{}}
	s.d.Metrics = nil
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := decodeJSON(b, 16)
		if err != nil {
			if st := apierror.As(err).Code.Status(); st >= 500 {
				t.Fatalf("decode error with status %d: %v", st, err)
			}
			return
		}
		_, err = s.validateEnvelope(v)
		if err != nil && apierror.As(err).Code.Status() >= 500 {
			t.Fatalf("validation error with status %d: %v", apierror.As(err).Code.Status(), err)
		}
	})
}
