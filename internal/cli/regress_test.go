package cli

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// regressBench renders n samples of each named benchmark (with any -N
// GOMAXPROCS suffix) at nsCenter ns/op with 1% noise.
func regressBench(seed uint64, n int, nsCenter float64, names ...string) string {
	rng := rand.New(rand.NewPCG(seed, 5))
	var b strings.Builder
	for range n {
		for _, name := range names {
			fmt.Fprintf(&b, "Benchmark%s\t1000\t%.0f ns/op\n", name, nsCenter*(1+0.01*rng.NormFloat64()))
		}
	}
	return b.String()
}

func regressWrite(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// regressEnv clears the environment regress reads (a threshold, the
// commit of the input) so the runner's cannot change a test's outcome.
func regressEnv(t *testing.T) {
	t.Helper()
	t.Setenv("REGRESSION_THRESHOLD_PERCENT", "")
	t.Setenv("GITHUB_SHA", "")
}

// regressRunWant runs the command line and fails unless it exits code with
// each of want in its output (the error appended, as Execute prints it on
// stderr). It returns that output.
func regressRunWant(t *testing.T, code int, want []string, args ...string) string {
	t.Helper()
	out, got, err := perfRun(t, args...)
	if err != nil {
		out += "\nerror: " + err.Error()
	}
	if got != code {
		t.Fatalf("exit %d, want %d\n%s", got, code, out)
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
	return out
}

// regressBaseline records content as commit aaa's in a new store: the
// temporary directory and the store in it.
func regressBaseline(t *testing.T, content string) (dir, store string) {
	t.Helper()
	dir = t.TempDir()
	store = filepath.Join(dir, "history")
	regressRecord(t, store, regressWrite(t, dir, "base.txt", content), "aaa")
	return dir, store
}

// regressRecord records input in the store as commit's, with more flags.
func regressRecord(t *testing.T, store, input, commit string, more ...string) {
	t.Helper()
	if out, code, err := perfRun(t, append([]string{"regress", "record", "--store", store, "--input", input, "--commit", commit}, more...)...); code != 0 {
		t.Fatalf("record: exit %d %v\n%s", code, err, out)
	}
}

// regressCompareReport compares input (as commit bbb) with the store's
// baseline, writing a Markdown report too, and fails unless the exit is
// code, the output holds want, and the report says "No regression" exactly
// when the exit is 0 (the PR comment says what the exit says: it said No
// regression of a run missing metrics). It returns the output.
func regressCompareReport(t *testing.T, store, input string, args []string, code int, want string) string {
	t.Helper()
	tmp := t.TempDir()
	in := regressWrite(t, tmp, "new.txt", input)
	md := filepath.Join(tmp, "r.md")
	out, got, err := perfRun(t, append([]string{"regress", "compare", "--store", store, "--input", in, "--commit", "bbb", "--markdown", md}, args...)...)
	if err != nil {
		out += "\nerror: " + err.Error()
	}
	if got != code || !strings.Contains(out, want) {
		t.Fatalf("exit %d, want %d and %q\n%s", got, code, want, out)
	}
	report, err := os.ReadFile(md)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(report), "No regression") != (got == 0) {
		t.Errorf("exit %d but the Markdown report says:\n%s", got, report)
	}
	return out
}

// compare must judge benchmarks whatever GOMAXPROCS suffix they carry, and
// must fail, not pass, when the baseline shares no benchmark with the input.
func TestRegressCompareMatching(t *testing.T) {
	regressEnv(t)
	for _, tc := range []struct {
		name, baseline, input string
		code                  int
		want                  []string
	}{
		{"-2 baseline, -4 input twice as slow", regressBench(1, 10, 1000, "Decide-2"), regressBench(2, 10, 2000, "Decide-4"),
			1, []string{"1 regression(s)", "GOMAXPROCS 2 in the baseline and 4"}},
		{"-4 baseline, GOMAXPROCS=1 input twice as slow", regressBench(1, 10, 1000, "Decide-4"), regressBench(2, 10, 2000, "Decide"),
			1, []string{"1 regression(s)", "GOMAXPROCS 4 in the baseline and 1"}},
		{"-2 baseline, -4 input, noise", regressBench(1, 10, 1000, "Decide-2"), regressBench(2, 10, 1000, "Decide-4"),
			0, []string{"0 regression(s)", "GOMAXPROCS 2 in the baseline and 4"}},
		{"no benchmark in common", regressBench(1, 10, 1000, "Old"), regressBench(2, 10, 1000, "New"),
			1, []string{"nothing compared", "1 new, 1 missing"}},
		// One sample each cannot show anything: five times as slow must
		// not pass (review: it exited 0 with "No regression").
		{"one sample, five times as slow", regressBench(1, 1, 1000, "Decide-2"), regressBench(2, 1, 5000, "Decide-2"),
			1, []string{"too few samples", "more repetitions"}},
		{"six samples against one", regressBench(1, 6, 1000, "Decide-2"), regressBench(2, 1, 5000, "Decide-2"),
			1, []string{"too few samples"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, store := regressBaseline(t, tc.baseline)
			in := regressWrite(t, dir, "new.txt", tc.input)
			regressRunWant(t, tc.code, tc.want, "regress", "compare", "--store", store, "--input", in, "--commit", "bbb")
		})
	}
}

// A damaged newest record (empty after a crash, or not benchmark format)
// must be skipped, and named, not taken as a baseline that passes
// everything; with nothing but damaged records compare fails.
func TestRegressCompareDamagedBaseline(t *testing.T) {
	regressEnv(t)
	good := regressBench(1, 10, 1000, "Decide")
	slower := regressBench(2, 10, 2000, "Decide")
	for _, tc := range []struct {
		name    string
		records map[string]string // record file name -> content
		code    int
		want    []string
	}{
		{"newest empty", map[string]string{"2026-11-01T10-00-00Z_aaa.txt": good, "2026-11-20T10-00-00Z_bbb.txt": ""},
			1, []string{"1 regression(s)", "baseline: 2026-11-01T10-00-00Z_aaa.txt", "skipped 2026-11-20T10-00-00Z_bbb.txt"}},
		{"newest headers only", map[string]string{"2026-11-01T10-00-00Z_aaa.txt": good, "2026-11-20T10-00-00Z_bbb.txt": "goos: linux\ngoarch: amd64\n"},
			1, []string{"1 regression(s)", "skipped 2026-11-20T10-00-00Z_bbb.txt"}},
		{"newest garbled", map[string]string{"2026-11-01T10-00-00Z_aaa.txt": good, "2026-11-20T10-00-00Z_bbb.txt": "<html>502</html>\n"},
			1, []string{"1 regression(s)", "skipped 2026-11-20T10-00-00Z_bbb.txt"}},
		{"newest holds a NaN sample", map[string]string{"2026-11-01T10-00-00Z_aaa.txt": good, "2026-11-20T10-00-00Z_bbb.txt": good + "BenchmarkDecide\t1000\tNaN ns/op\n"},
			1, []string{"1 regression(s)", "skipped 2026-11-20T10-00-00Z_bbb.txt", "NaN ns/op is not a measurement"}},
		{"only damaged records", map[string]string{"2026-11-20T10-00-00Z_bbb.txt": ""},
			2, []string{"skipped 2026-11-20T10-00-00Z_bbb.txt", "no usable baseline"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			store := filepath.Join(dir, "history")
			if err := os.MkdirAll(store, 0o755); err != nil {
				t.Fatal(err)
			}
			for name, content := range tc.records {
				regressWrite(t, store, name, content)
			}
			in := regressWrite(t, dir, "new.txt", slower)
			regressRunWant(t, tc.code, tc.want, "regress", "compare", "--store", store, "--input", in, "--commit", "ccc")
			out, code, err := perfRun(t, "regress", "trend", "--store", store, "--days", "36500")
			wantRecords := fmt.Sprintf("%d record(s)", len(tc.records)-1)
			if code != 0 || !strings.Contains(out, wantRecords) || !strings.Contains(out, "skipped 2026-11-20T10-00-00Z_bbb.txt") {
				t.Errorf("trend: exit %d %v, want %s and the damaged record skipped\n%s", code, err, wantRecords, out)
			}
		})
	}
}

// --json must write a JSON document, and keep the exit code, when a metric
// is new or missing (no p-value, no change) or a median is 0 (an infinite
// change): NaN and ±Inf are written as null.
func TestRegressJSONNonFinite(t *testing.T) {
	regressEnv(t)
	zeroAllocs := strings.Repeat("BenchmarkDecide\t1000\t1000 ns/op\t0 allocs/op\n", 8)
	twoAllocs := strings.Repeat("BenchmarkDecide\t1000\t1000 ns/op\t2 allocs/op\n", 8)
	for _, tc := range []struct {
		name, baseline, input string
		code                  int
		want                  []string // in the JSON
	}{
		{"new metric next to a regression", regressBench(1, 10, 1000, "Decide"), regressBench(2, 10, 2000, "Decide", "Added"),
			1, []string{`"verdict": "new"`, `"p": null`, `"verdict": "regression"`}},
		{"missing metric, no regression", regressBench(1, 10, 1000, "Decide", "Gone"), regressBench(2, 10, 1000, "Decide"),
			1, []string{`"verdict": "missing"`, `"p": null`}},
		// allocs/op is not gated by default: an informational regression.
		{"zero median before", zeroAllocs, twoAllocs, 0, []string{`"change_pct": null`, `"verdict": "regression"`, `"informational": true`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			store := filepath.Join(dir, "history")
			base := regressWrite(t, dir, "base.txt", tc.baseline)
			in := regressWrite(t, dir, "new.txt", tc.input)
			regressRecord(t, store, base, "aaa", "--time", "2026-11-01T10:00:00Z")
			out, code, err := perfRun(t, "regress", "compare", "--store", store, "--input", in, "--commit", "bbb", "--json")
			if code != tc.code {
				t.Fatalf("exit %d (%v), want %d\n%s", code, err, tc.code, out)
			}
			if err != nil && strings.Contains(err.Error(), "json") {
				t.Fatalf("JSON error: %v", err)
			}
			if !json.Valid([]byte(out)) {
				t.Fatalf("output is not JSON:\n%s", out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("JSON lacks %s:\n%s", w, out)
				}
			}
			regressRecord(t, store, in, "bbb", "--time", "2026-11-02T10:00:00Z")
			out, code, err = perfRun(t, "regress", "trend", "--store", store, "--days", "36500", "--json")
			if code != 0 || !json.Valid([]byte(out)) {
				t.Fatalf("trend --json: exit %d %v\n%s", code, err, out)
			}
		})
	}
}

// No baseline is not a pass: a mistyped --store, an evicted cache or a
// --baseline-commit or --days that matches nothing exits 2 (it could not
// judge), apart from a regression's 1, unless --allow-empty-history says an
// empty history is expected, which never covers an explicit selection.
func TestRegressCompareNoBaseline(t *testing.T) {
	regressEnv(t)
	dir := t.TempDir()
	store := filepath.Join(dir, "history")
	empty := filepath.Join(dir, "empty")
	if err := os.Mkdir(empty, 0o755); err != nil {
		t.Fatal(err)
	}
	base := regressWrite(t, dir, "base.txt", regressBench(1, 10, 1000, "Decide-2"))
	slow := regressWrite(t, dir, "slow.txt", regressBench(2, 10, 2000, "Decide-2"))
	regressRecord(t, store, base, "aaa")
	typo := store + "-typo"
	for _, tc := range []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"control: twice as slow", []string{"--store", store}, 1, []string{"1 regression(s)"}},
		{"missing store", []string{"--store", typo}, 2, []string{typo, "does not exist", "--allow-empty-history"}},
		{"missing store, allowed", []string{"--store", typo, "--allow-empty-history"}, 0, []string{"does not exist", "nothing to compare"}},
		{"empty store", []string{"--store", empty}, 2, []string{empty, "no record of another commit"}},
		{"empty store, allowed", []string{"--store", empty, "--allow-empty-history"}, 0, []string{"nothing to compare"}},
		{"only the input's own commit", []string{"--store", store, "--commit", "aaa"}, 2, []string{"none of another commit"}},
		{"unknown baseline commit", []string{"--store", store, "--baseline-commit", "aab"}, 2, []string{store, "for commit aab"}},
		{"unknown baseline commit, allowed", []string{"--store", store, "--baseline-commit", "aab", "--allow-empty-history"}, 2, []string{"for commit aab"}},
		{"nothing old enough", []string{"--store", store, "--days", "30", "--allow-empty-history"}, 2, []string{"at least 30 days old"}},
		{"missing store with a baseline commit, allowed", []string{"--store", typo, "--baseline-commit", "aaa", "--allow-empty-history"}, 2, []string{"does not exist"}},
		{"unparsable flag", []string{"--store", store, "--alpha", "x"}, 2, []string{"alpha"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"regress", "compare", "--input", slow, "--commit", "bbb"}, tc.args...)
			out := regressRunWant(t, tc.code, tc.want, args...)
			// Only the exit 2 that --allow-empty-history would pass is
			// marked: ci-validate.sh's first-run hint keys on it.
			noBaseline := map[string]bool{"missing store": true, "empty store": true, "only the input's own commit": true}
			if got := strings.Contains("\n"+out, "\nno-baseline: "); got != noBaseline[tc.name] {
				t.Errorf("no-baseline line printed: %v, want %v\n%s", got, noBaseline[tc.name], out)
			}
		})
	}
}

// A NaN alpha or threshold compares false with everything and passed a
// doubled time; an out-of-range one was quietly replaced (alpha <= 0 by
// 0.05, a negative threshold by 0, negative --days by "newest", a bad
// REGRESSION_THRESHOLD_PERCENT by 10). Each is exit 2, naming its source.
func TestRegressRejectsBadNumbers(t *testing.T) {
	t.Setenv("GITHUB_SHA", "")
	dir, store := regressBaseline(t, regressBench(1, 10, 1000, "Decide-2"))
	slow := regressWrite(t, dir, "slow.txt", regressBench(2, 10, 2000, "Decide-2"))
	for _, tc := range []struct {
		name, env string
		args      []string
		code      int
		want      string
	}{
		{"control: twice as slow", "", nil, 1, "1 performance regression(s)"},
		{"alpha NaN", "", []string{"--alpha", "NaN"}, 2, "--alpha NaN"},
		{"alpha 0", "", []string{"--alpha", "0"}, 2, "--alpha 0"},
		{"alpha negative", "", []string{"--alpha", "-0.05"}, 2, "--alpha -0.05"},
		{"alpha 1", "", []string{"--alpha", "1"}, 2, "--alpha 1"},
		{"threshold NaN", "", []string{"--threshold", "NaN"}, 2, "--threshold NaN"},
		{"threshold Inf", "", []string{"--threshold", "Inf"}, 2, "--threshold +Inf"},
		{"threshold negative", "", []string{"--threshold", "-5"}, 2, "--threshold -5"},
		{"days negative", "", []string{"--days", "-3"}, 2, "--days -3"},
		{"env threshold Inf", "Inf", nil, 2, "REGRESSION_THRESHOLD_PERCENT"},
		{"env threshold NaN", "NaN", nil, 2, "REGRESSION_THRESHOLD_PERCENT"},
		{"env threshold not a number", "ten", nil, 2, "REGRESSION_THRESHOLD_PERCENT"},
		{"env threshold negative", "-1", nil, 2, "REGRESSION_THRESHOLD_PERCENT"},
		{"flag wins over a good env", "50", []string{"--threshold", "10"}, 1, "1 performance regression(s)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("REGRESSION_THRESHOLD_PERCENT", tc.env)
			out, code, err := perfRun(t, append([]string{"regress", "compare", "--store", store, "--input", slow, "--commit", "bbb"}, tc.args...)...)
			if err != nil {
				out += "\nerror: " + err.Error()
			}
			if code != tc.code || !strings.Contains(out, tc.want) {
				t.Fatalf("exit %d, want %d and %q\n%s", code, tc.code, tc.want, out)
			}
		})
	}
	t.Run("trend refuses a bad env threshold", func(t *testing.T) {
		t.Setenv("REGRESSION_THRESHOLD_PERCENT", "Inf")
		out, code, err := perfRun(t, "regress", "trend", "--store", store, "--days", "36500")
		if code == 0 || err == nil || !strings.Contains(err.Error(), "REGRESSION_THRESHOLD_PERCENT") {
			t.Fatalf("exit %d %v, want an error naming REGRESSION_THRESHOLD_PERCENT\n%s", code, err, out)
		}
	})
}

// A benchmark of the baseline missing from the run (crashed, dropped from
// the suite) fails unless --allow-missing says it went on purpose: listing
// it as "missing" and passing let a crashed scenario through.
func TestRegressMissingMetricFails(t *testing.T) {
	regressEnv(t)
	_, store := regressBaseline(t, regressBench(1, 10, 1000, "Decide-2", "Other-2"))
	for _, tc := range []struct {
		name, input string
		args        []string
		code        int
		want        string
	}{
		{"both present, noise", regressBench(3, 10, 1000, "Decide-2", "Other-2"), nil, 0, "0 regression(s)"},
		{"one missing", regressBench(3, 10, 1000, "Decide-2"), nil, 1, "1 metric(s) of the baseline"},
		{"one missing, allowed", regressBench(3, 10, 1000, "Decide-2"), []string{"--allow-missing"}, 0, "missing"},
		{"one missing, one renamed, allowed", regressBench(3, 10, 1000, "Decide-2", "Renamed-2"), []string{"--allow-missing"}, 0, "new"},
		{"one missing and the other slower", regressBench(3, 10, 2000, "Decide-2"), nil, 1, "1 performance regression(s)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := regressCompareReport(t, store, tc.input, tc.args, tc.code, tc.want)
			if tc.code == 1 && !strings.Contains(out, "Other") {
				t.Errorf("the error does not name the missing benchmark:\n%s", out)
			}
		})
	}
}

// compare --json writes a JSON document when there is no baseline too,
// with "baseline": null, whether an empty history is allowed or an error
// (it printed plain text, which broke a JSON reader).
func TestRegressJSONWithoutBaseline(t *testing.T) {
	regressEnv(t)
	dir := t.TempDir()
	in := regressWrite(t, dir, "new.txt", regressBench(1, 10, 1000, "Decide"))
	missing := filepath.Join(dir, "no-such-store")
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		passed bool
		text   string // in the note or the error
	}{
		{"allowed empty history", []string{"--allow-empty-history"}, 0, true, "--allow-empty-history allows"},
		{"missing store", nil, 2, false, "does not exist"},
		{"missing store, baseline commit", []string{"--baseline-commit", "abcd", "--allow-empty-history"}, 2, false, "does not exist"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := NewRoot()
			var stdout, stderr strings.Builder
			root.SetOut(&stdout)
			root.SetErr(&stderr)
			root.SetArgs(append([]string{"regress", "compare", "--store", missing, "--input", in, "--json"}, tc.args...))
			err := root.Execute()
			if code := exitCode(err); code != tc.code {
				t.Fatalf("exit %d (%v), want %d\n%s", code, err, tc.code, stdout.String())
			}
			var doc map[string]any
			if err := json.Unmarshal([]byte(stdout.String()), &doc); err != nil {
				t.Fatalf("stdout is not one JSON document: %v\n%s", err, stdout.String())
			}
			if b, ok := doc["baseline"]; !ok || b != nil {
				t.Errorf("baseline %v (present %v), want null", b, ok)
			}
			if doc["passed"] != tc.passed || doc["store"] != missing {
				t.Errorf("passed %v store %v, want %v %s", doc["passed"], doc["store"], tc.passed, missing)
			}
			if msg := fmt.Sprint(doc["note"], doc["error"]); !strings.Contains(msg, tc.text) {
				t.Errorf("note/error %q lacks %q", msg, tc.text)
			}
		})
	}
}

// Only the gated units (default sec/op and req/s) fail the gate, and their
// p-values are Holm-adjusted: CI's 48 metrics each tested at alpha failed
// about a third of noise-only runs (TestFamilyWiseFalseAlarms).
func TestRegressGatesPrimaryUnits(t *testing.T) {
	regressEnv(t)
	rows := func(seed uint64, ns, allocs float64) string {
		rng := rand.New(rand.NewPCG(seed, 3))
		var b strings.Builder
		for range 6 {
			fmt.Fprintf(&b, "BenchmarkDecide\t1000\t%.0f ns/op\t%.0f allocs/op\n", ns*(1+0.01*rng.NormFloat64()), allocs*(1+0.01*rng.NormFloat64()))
		}
		return b.String()
	}
	_, store := regressBaseline(t, rows(1, 1000, 1000))
	for _, tc := range []struct {
		name, input string
		args        []string
		code        int
		want        string
	}{
		{"allocs doubled: informational", rows(2, 1000, 2000), nil, 0, "regression (informational)"},
		{"allocs doubled, every unit gated", rows(2, 1000, 2000), []string{"--gate-units", "all"}, 1, "1 performance regression(s)"},
		{"allocs doubled, allocs gated", rows(2, 1000, 2000), []string{"--gate-units", "allocs/op"}, 1, "1 performance regression(s)"},
		{"time doubled", rows(2, 2000, 1000), nil, 1, "Holm-adjusted"},
		{"time doubled, without Holm", rows(2, 2000, 1000), []string{"--holm=false"}, 1, "1 performance regression(s)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			regressCompareReport(t, store, tc.input, tc.args, tc.code, tc.want)
		})
	}
}
