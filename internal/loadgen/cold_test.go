package loadgen

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// TestColdBodiesDifferInWhatThePolicyReads: a unique (cold) body changes
// every decimal fraction of the request below its printed precision, as
// well as the varied ids, so that a cache keyed on the fields the policy
// reads still misses; without a suffix the body is the request itself.
func TestColdBodiesDifferInWhatThePolicyReads(t *testing.T) {
	w, err := DefaultWorkload()
	if err != nil {
		t.Fatal(err)
	}
	for i := range w.Scenarios {
		s := &w.Scenarios[i]
		t.Run(s.Name, func(t *testing.T) {
			plain := s.AppendBody(nil, 3, "")
			var want, got map[string]any
			dec := func(b []byte, v any) {
				d := json.NewDecoder(bytes.NewReader(b))
				d.UseNumber()
				if err := d.Decode(v); err != nil {
					t.Fatalf("%s: %v", b, err)
				}
			}
			dec(s.Request, &want)
			dec(plain, &got)
			// Only the varied ids differ from the written request.
			a, b := s.AppendBody(nil, 3, "-x1"), s.AppendBody(nil, 3, "-x2")
			if bytes.Equal(a, b) {
				t.Fatalf("two suffixes gave the same body")
			}
			var ca, cb map[string]any
			dec(a, &ca)
			dec(b, &cb)
			if !s.Varies() {
				t.Fatalf("no slot to make a cold body from")
			}
			if strings.Contains(string(s.Request), ".") {
				if !strings.Contains(string(a), "000000000") {
					t.Errorf("no fraction perturbed: %s", a)
				}
			}
			lua := s.AppendBody(nil, 3, "-@UNIQ@")
			if strings.Contains(string(s.Request), ".") && !strings.Contains(string(lua), UniqueDigitsMarker) {
				t.Errorf("the wrk marker was not written: %s", lua)
			}
			if len(got) != len(want) {
				t.Errorf("plain body has %d fields, request %d", len(got), len(want))
			}
		})
	}
}
