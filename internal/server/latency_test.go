package server

import (
	"math"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"
)

// TestAppendLatencyMS holds appendLatencyMS to strconv.AppendFloat of the
// rounded milliseconds, the formatting it replaces in the ACGS answer's
// latency_ms: every microsecond up to 10 s, and random durations up to
// the largest.
func TestAppendLatencyMS(t *testing.T) {
	check := func(lat time.Duration) {
		want := strconv.AppendFloat(nil, math.Round(float64(lat.Nanoseconds())/1e3)/1e3, 'f', -1, 64)
		if got := appendLatencyMS(nil, lat); string(got) != string(want) {
			t.Fatalf("latency %d ns: got %s, want %s", int64(lat), got, want)
		}
	}
	for us := int64(0); us <= 10_000_000; us++ {
		check(time.Duration(us * 1000))
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 1_000_000 {
		check(time.Duration(r.Int64()))
		check(time.Duration(r.Int64N(1e12)))
		check(-time.Duration(r.Int64N(1e12)))
	}
	for _, lat := range []time.Duration{0, -1, -499, -500, -501, 499, 500, 1499, 1500, math.MaxInt64, math.MinInt64, 999_999_999_999_999_499, 999_999_999_999_999_500} {
		check(lat)
	}
}
