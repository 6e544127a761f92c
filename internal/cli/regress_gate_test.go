package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// gateBench renders n rounds of benches acgs-bench-like benchmarks (sec/op,
// req/s and a constant 0 errors each), all slow times slower, without ties.
func gateBench(n, benches int, slow float64) string {
	var b strings.Builder
	for r := range n {
		for i := range benches {
			ns := slow * 1e6 * (1 + 0.01*float64(r) + 0.001*float64(i))
			fmt.Fprintf(&b, "BenchmarkHTTP/b=%d\t100\t%.0f ns/op\t%.3f req/s\t0 errors\n", i, ns, 1e9/ns)
		}
	}
	return b.String()
}

// regressGateRun records base as commit aaa and compares input with it.
func regressGateRun(t *testing.T, base, input string, args ...string) (string, int) {
	t.Helper()
	regressEnv(t)
	dir, store := regressBaseline(t, base)
	out, code, err := perfRun(t, append([]string{"regress", "compare", "--store", store, "--input", regressWrite(t, dir, "new.txt", input), "--commit", "bbb"}, args...)...)
	if err != nil {
		out += "\nerror: " + err.Error()
	}
	return out, code
}

// Holm over m gated metrics needs a p below alpha/m; when the samples cannot
// give one, a 5x slowdown passed (exit 0). It must be exit 2, naming the
// rounds needed.
func TestRegressHolmCannotJudge(t *testing.T) {
	for _, tc := range []struct {
		name          string
		rounds, bench int
		args          []string
		code          int
		want          string
	}{
		{"6+6, 24 gated (bench -concurrency 10,50,100)", 6, 12, nil, 2, "against the baseline's 6 rounds run 7 "},
		{"6+6, every unit of 12 benchmarks", 6, 12, []string{"--gate-units", "all"}, 2, "against the baseline's 6 rounds run 7 "},
		{"5+5, 8 gated", 5, 4, nil, 2, "against the baseline's 5 rounds run 6 "},
		{"6+6, 22 gated", 6, 11, nil, 1, "performance regression(s)"},
		{"7+7, 24 gated", 7, 12, nil, 1, "performance regression(s)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, code := regressGateRun(t, gateBench(tc.rounds, tc.bench, 1), gateBench(tc.rounds, tc.bench, 5), tc.args...)
			if code != tc.code || !strings.Contains(out, tc.want) {
				t.Fatalf("everything 5x slower: exit %d, want %d and %q\n%s", code, tc.code, tc.want, out)
			}
		})
	}
}

// --gate-units is tidied as the input is (ns/op is sec/op, MB/s is B/s), and
// a gate judging no metric is exit 2: --gate-units ns/op or a typo gated
// nothing and passed a 5x slowdown.
func TestRegressGateUnitsTidiedAndUsed(t *testing.T) {
	mbps := func(v float64) string {
		var b strings.Builder
		for r := range 6 {
			fmt.Fprintf(&b, "BenchmarkCopy\t100\t%.0f ns/op\t%.2f MB/s\n", 1e6*v*(1+0.01*float64(r)), 100/v*(1+0.01*float64(r)))
		}
		return b.String()
	}
	for _, tc := range []struct {
		name, base, input string
		gate              string
		code              int
		want              string
	}{
		{"ns/op is sec/op", gateBench(6, 2, 1), gateBench(6, 2, 5), "ns/op", 1, "performance regression(s)"},
		{"MB/s is B/s", mbps(1), mbps(5), "MB/s", 1, "performance regression(s)"},
		{"a typo gates nothing", gateBench(6, 2, 1), gateBench(6, 2, 5), "sec/opp", 2, "the gate judged nothing"},
		{"a unit not emitted", gateBench(6, 2, 1), gateBench(6, 2, 5), "allocs/op", 2, "the gate judged nothing"},
		{"a typo beside a real unit is named", gateBench(6, 2, 1), gateBench(6, 2, 5), "sec/op,sec/opp", 1, "--gate-units sec/opp matches no metric"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, code := regressGateRun(t, tc.base, tc.input, "--gate-units", tc.gate)
			if code != tc.code || !strings.Contains(out, tc.want) {
				t.Fatalf("5x slower, --gate-units %s: exit %d, want %d and %q\n%s", tc.gate, code, tc.code, tc.want, out)
			}
		})
	}
}

type regressFailWriter struct{}

func (regressFailWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

// regressRunFailingOut runs the command with a stdout that fails every write.
func regressRunFailingOut(t *testing.T, args ...string) (string, int) {
	t.Helper()
	root := NewRoot()
	var errOut bytes.Buffer
	root.SetOut(regressFailWriter{})
	root.SetErr(&errOut)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	if err != nil {
		errOut.WriteString("\nerror: " + err.Error())
	}
	return errOut.String(), exitCode(err)
}

// Exit 1 is a regression's: an extra argument, or a report that could not be
// written, is exit 2, and a write failure does not hide the verdict (it
// was checked before the verdict and returned as a plain error, exit 1).
func TestRegressErrorsAreExit2(t *testing.T) {
	badMD := filepath.Join(t.TempDir(), "no-such-dir", "report.md")
	for _, tc := range []struct {
		name, input string
		args        []string
		want        string
	}{
		{"extra argument", gateBench(6, 2, 5), []string{"extra-arg"}, "unknown command"},
		{"markdown not writable, regression", gateBench(6, 2, 5), []string{"--markdown", badMD}, "verdict: 4 performance regression(s)"},
		{"markdown not writable, no regression", gateBench(6, 2, 1), []string{"--markdown", badMD}, "verdict: no regression"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, code := regressGateRun(t, gateBench(6, 2, 1), tc.input, tc.args...)
			if code != 2 || !strings.Contains(out, tc.want) {
				t.Fatalf("exit %d, want 2 and %q\n%s", code, tc.want, out)
			}
		})
	}
	regressEnv(t)
	dir, store := regressBaseline(t, gateBench(6, 2, 1))
	in := regressWrite(t, dir, "new.txt", gateBench(6, 2, 5))
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"stdout not writable, regression", []string{"--store", store}, "verdict: 4 performance regression(s)"},
		{"stdout not writable, --json", []string{"--store", store, "--json"}, "verdict: 4 performance regression(s)"},
		{"stdout not writable, --json, no baseline", []string{"--store", filepath.Join(dir, "empty"), "--json"}, "nothing to compare"},
		{"stdout not writable, empty history allowed", []string{"--store", filepath.Join(dir, "empty"), "--allow-empty-history"}, "verdict: no baseline"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, code := regressRunFailingOut(t, append([]string{"regress", "compare", "--input", in, "--commit", "bbb"}, tc.args...)...)
			if code != 2 || !strings.Contains(out, tc.want) {
				t.Fatalf("exit %d, want 2 and %q\n%s", code, tc.want, out)
			}
		})
	}
}
