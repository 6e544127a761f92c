package cache

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestOpenBoundsTheEnvelope: an L2 value longer than the envelope of the
// largest entry Set stores (MaxEntryBytes of JSON) is refused before its
// MAC is computed, so that a Redis holding huge values costs each reader
// no hashing of them; a value at the bound opens.
func TestOpenBoundsTheEnvelope(t *testing.T) {
	s := newSigner(testKey1, nil)
	const rk = "acgs:d:1:00"
	sealed := func(jsonLen int) []byte {
		body := strings.Repeat("x", jsonLen-2)
		b, err := s.seal(rk, Value{Defined: true, Result: body, JSON: []byte(`"` + body + `"`)}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := []struct {
		name  string
		entry []byte
		want  error // nil: opens
	}{
		{"signed, JSON at the bound", sealed(MaxEntryBytes), nil},
		{"signed, JSON one byte over", sealed(MaxEntryBytes + 1), errEnvelopeLong},
		// Refused as too long, not as failing its MAC: the length is checked first.
		{"unsigned, 1 MiB", bytes.Repeat([]byte{envelopeVersion}, 1<<20), errEnvelopeLong},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := s.open(rk, tt.entry)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("open of %d bytes: %v, want %v", len(tt.entry), err, tt.want)
			}
		})
	}
}
