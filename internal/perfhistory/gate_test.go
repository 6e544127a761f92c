package perfhistory

import (
	"bytes"
	"strings"
	"testing"
)

// The Markdown report (the pull-request comment) and compare's exit code
// come from one verdict: the report said "No regression" of a gate that
// judged nothing (exit 2) and of a run missing metrics (exit 1).
func TestMarkdownHeadlineIsTheVerdict(t *testing.T) {
	for _, tc := range []struct {
		name         string
		old, cur     string
		gate         []string
		allowMissing bool
		want         int
		headline     string
	}{
		{"same", reachBench(6, 3, 1), reachBench(6, 3, 1), DefaultGateUnits, false, GatePass, "No regression"},
		{"5x slower", reachBench(6, 3, 1), reachBench(6, 3, 5), DefaultGateUnits, false, GateFail, "regression(s)**"},
		{"gate units judge nothing", reachBench(6, 3, 1), reachBench(6, 3, 1), []string{"allocs/op"}, false, GateCannotJudge, "Cannot judge"},
		{"Holm unreachable", reachBench(6, 12, 1), reachBench(6, 12, 5), DefaultGateUnits, false, GateCannotJudge, "Cannot judge"},
		{"metrics missing", reachBench(6, 3, 1), reachBench(6, 2, 1), DefaultGateUnits, false, GateFail, "Gate failed"},
		{"metrics missing, allowed", reachBench(6, 3, 1), reachBench(6, 2, 1), DefaultGateUnits, true, GatePass, "No regression"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := DefaultCompareOptions()
			opts.Gate, opts.Holm, opts.AllowMissing = tc.gate, true, tc.allowMissing
			c := Compare(mustSet(t, []byte(tc.old)), mustSet(t, []byte(tc.cur)), opts)
			c.Baseline = &RecordMeta{Name: "b.txt", Commit: "b"}
			v := c.Verdict("new.txt")
			if v.Code != tc.want {
				t.Fatalf("verdict %d (%s), want %d", v.Code, v, tc.want)
			}
			var md bytes.Buffer
			if err := WriteCompareMarkdown(&md, c); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(md.String(), tc.headline) {
				t.Errorf("markdown lacks %q:\n%s", tc.headline, md.String())
			}
			if strings.Contains(md.String(), "No regression") != v.Passed() {
				t.Errorf("markdown says No regression: %v, verdict passed: %v:\n%s", strings.Contains(md.String(), "No regression"), v.Passed(), md.String())
			}
			for _, r := range v.Reasons {
				if !strings.Contains(md.String(), strings.ReplaceAll(r, "new.txt", "this run")) {
					t.Errorf("markdown lacks the reason %q", r)
				}
			}
		})
	}
}
