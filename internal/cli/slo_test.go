package cli

import (
	"path/filepath"
	"strings"
	"testing"
)

// An objective that is NaN compares false with every measurement and passed
// whatever the service did; one out of range (a rate above 1, a negative
// latency) is a typo. Each is refused, naming its flag or variable.
func TestSLORejectsBadObjectives(t *testing.T) {
	url := perfServeFile(t, filepath.Join("..", "loadgen", "testdata", "metrics.txt")) + "/metrics"
	for _, tc := range []struct {
		name string
		env  string // PERFORMANCE_TARGET_P99_MS
		args []string
		want string // in the error; "" for a pass
	}{
		{"control: defaults pass", "", nil, ""},
		{"NaN everywhere", "", []string{"--p99-ms", "NaN", "--error-rate", "NaN", "--cache-hit-rate", "NaN"}, "--p99-ms NaN"},
		{"p99 Inf", "", []string{"--p99-ms", "Inf"}, "--p99-ms +Inf"},
		{"p95 negative", "", []string{"--p95-ms", "-1"}, "--p95-ms -1"},
		{"error rate NaN", "", []string{"--error-rate", "NaN"}, "--error-rate NaN"},
		{"error rate above 1", "", []string{"--error-rate", "1.5"}, "--error-rate 1.5"},
		{"refused rate negative", "", []string{"--max-refused-rate", "-0.1"}, "--max-refused-rate -0.1"},
		{"cache hit rate NaN", "", []string{"--cache-hit-rate", "NaN"}, "--cache-hit-rate NaN"},
		{"cache hit rate in percent", "", []string{"--cache-hit-rate", "95"}, "--cache-hit-rate 95"},
		{"warn fraction 0", "", []string{"--warn-fraction", "0"}, "--warn-fraction 0"},
		{"env p99 Inf", "Inf", nil, "PERFORMANCE_TARGET_P99_MS"},
		{"env p99 not a number", "five", nil, "PERFORMANCE_TARGET_P99_MS"},
		{"env p99 NaN", "NaN", nil, "PERFORMANCE_TARGET_P99_MS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("PERFORMANCE_TARGET_P99_MS", tc.env)
			out, code, err := perfRun(t, append([]string{"slo", "--metrics-url", url}, tc.args...)...)
			if tc.want == "" {
				if code != 0 {
					t.Fatalf("exit %d (%v), want 0\n%s", code, err, out)
				}
				return
			}
			if code == 0 || err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("exit %d, error %v: want an error naming %q\n%s", code, err, tc.want, out)
			}
		})
	}
}
