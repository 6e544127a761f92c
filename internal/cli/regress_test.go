package cli

import (
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

// compare must judge benchmarks whatever GOMAXPROCS suffix they carry, and
// must fail, not pass, when the baseline shares no benchmark with the input.
func TestRegressCompareMatching(t *testing.T) {
	t.Setenv("REGRESSION_THRESHOLD_PERCENT", "")
	t.Setenv("GITHUB_SHA", "")
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
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			store := filepath.Join(dir, "history")
			base := regressWrite(t, dir, "base.txt", tc.baseline)
			in := regressWrite(t, dir, "new.txt", tc.input)
			if out, code, err := perfRun(t, "regress", "record", "--store", store, "--input", base, "--commit", "aaa"); code != 0 {
				t.Fatalf("record: exit %d %v\n%s", code, err, out)
			}
			out, code, err := perfRun(t, "regress", "compare", "--store", store, "--input", in, "--commit", "bbb")
			if code != tc.code {
				t.Fatalf("exit %d (%v), want %d\n%s", code, err, tc.code, out)
			}
			if err != nil {
				out += "\nerror: " + err.Error()
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

// A damaged newest record (empty after a crash, or not benchmark format)
// must be skipped, and named, not taken as a baseline that passes
// everything; with nothing but damaged records compare fails.
func TestRegressCompareDamagedBaseline(t *testing.T) {
	t.Setenv("REGRESSION_THRESHOLD_PERCENT", "")
	t.Setenv("GITHUB_SHA", "")
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
		{"only damaged records", map[string]string{"2026-11-20T10-00-00Z_bbb.txt": ""},
			1, []string{"skipped 2026-11-20T10-00-00Z_bbb.txt", "no usable baseline"}},
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
			out, code, err := perfRun(t, "regress", "compare", "--store", store, "--input", in, "--commit", "ccc")
			if err != nil {
				out += "\nerror: " + err.Error()
			}
			if code != tc.code {
				t.Fatalf("exit %d, want %d\n%s", code, tc.code, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			out, code, err = perfRun(t, "regress", "trend", "--store", store, "--days", "36500")
			wantRecords := fmt.Sprintf("%d record(s)", len(tc.records)-1)
			if code != 0 || !strings.Contains(out, wantRecords) || !strings.Contains(out, "skipped 2026-11-20T10-00-00Z_bbb.txt") {
				t.Errorf("trend: exit %d %v, want %s and the damaged record skipped\n%s", code, err, wantRecords, out)
			}
		})
	}
}
