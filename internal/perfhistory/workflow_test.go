package perfhistory

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// The CI workflow that runs scripts/ci-validate.sh must stay valid YAML with
// the triggers, toolchain and steps the performance gate relies on; GitHub
// reports a broken workflow only when a pull request is already open.
func TestPerformanceWorkflow(t *testing.T) {
	path := filepath.Join("..", "..", ".github", "workflows", "performance-validation.yml")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var wf struct {
		Name string `yaml:"name"`
		On   struct {
			PullRequest struct {
				Paths []string `yaml:"paths"`
			} `yaml:"pull_request"`
		} `yaml:"on"`
		Permissions map[string]string `yaml:"permissions"`
		Jobs        map[string]struct {
			RunsOn string `yaml:"runs-on"`
			Steps  []struct {
				Name string            `yaml:"name"`
				Uses string            `yaml:"uses"`
				Run  string            `yaml:"run"`
				If   string            `yaml:"if"`
				With map[string]string `yaml:"with"`
				Env  map[string]string `yaml:"env"`
			} `yaml:"steps"`
		} `yaml:"jobs"`
	}
	if err := yaml.Unmarshal(b, &wf); err != nil {
		t.Fatalf("%s is not valid YAML for a workflow: %v", path, err)
	}
	for _, p := range []string{"cmd/**", "internal/**", "policies/**", "go.mod", "go.sum", "scripts/**", "third_party/**"} {
		if !slices.Contains(wf.On.PullRequest.Paths, p) {
			t.Errorf("pull_request paths lack %q: %v", p, wf.On.PullRequest.Paths)
		}
	}
	if wf.Permissions["pull-requests"] != "write" {
		t.Errorf("the PR comment needs pull-requests: write, got %v", wf.Permissions)
	}
	if len(wf.Jobs) == 0 {
		t.Fatal("no jobs")
	}
	var goVersion, runsScript, apt, upload, comment bool
	for name, job := range wf.Jobs {
		if job.RunsOn == "" {
			t.Errorf("job %s has no runs-on", name)
		}
		for _, s := range job.Steps {
			switch {
			case strings.HasPrefix(s.Uses, "actions/setup-go@"):
				goVersion = s.With["go-version"] == "1.26"
			case strings.Contains(s.Run, "scripts/ci-validate.sh"):
				runsScript = true
			case strings.Contains(s.Run, "apt-get install") && strings.Contains(s.Run, "redis-server") && strings.Contains(s.Run, "wrk"):
				apt = true
			case strings.HasPrefix(s.Uses, "actions/upload-artifact@"):
				upload = strings.Contains(s.With["path"], "ci-validation-results") && strings.HasPrefix(s.If, "always()")
			case strings.HasPrefix(s.Uses, "marocchino/sticky-pull-request-comment@"), strings.HasPrefix(s.Uses, "actions/github-script@"):
				comment = strings.Contains(s.With["path"]+s.With["script"], "summary.md")
			}
		}
	}
	for what, ok := range map[string]bool{
		"setup-go with go-version 1.26":               goVersion,
		"a step running scripts/ci-validate.sh":       runsScript,
		"apt-get install of redis-server and wrk":     apt,
		"artifact upload of ci-validation-results":    upload,
		"pull-request comment of the markdown report": comment,
	} {
		if !ok {
			t.Errorf("workflow lacks %s", what)
		}
	}
	if _, err := os.Stat(filepath.Join("..", "..", "scripts", "ci-validate.sh")); err != nil {
		t.Errorf("the workflow runs scripts/ci-validate.sh: %v", err)
	}
}

// A run becomes the history's next baseline only when its regression gates
// passed: ci-validate.sh recorded every run and the workflow saved the
// history with if: always(), so a regression pushed to main was the
// baseline of the next run, which then passed. Static checks of the script
// and workflow text: the record is guarded by RECORD_BLOCKED, which gate()
// sets for bench and the regress gates, and the save step is not always().
func TestHistoryRecordedOnlyWhenGatesPass(t *testing.T) {
	script, err := os.ReadFile(filepath.Join("..", "..", "scripts", "ci-validate.sh"))
	if err != nil {
		t.Fatal(err)
	}
	wf, err := os.ReadFile(filepath.Join("..", "..", ".github", "workflows", "performance-validation.yml"))
	if err != nil {
		t.Fatal(err)
	}
	sc := string(script)
	record := strings.Index(sc, `regress record --store "$HISTORY"`)
	guard := strings.LastIndex(sc[:max(record, 0)], `if [ -z "$RECORD_BLOCKED" ]`)
	var doc struct {
		Jobs map[string]struct {
			Steps []struct {
				Name string `yaml:"name"`
				Uses string `yaml:"uses"`
				If   string `yaml:"if"`
			} `yaml:"steps"`
		} `yaml:"jobs"`
	}
	if err := yaml.Unmarshal(wf, &doc); err != nil {
		t.Fatal(err)
	}
	saveIf := "(no save step)"
	for _, job := range doc.Jobs {
		for _, s := range job.Steps {
			if strings.HasPrefix(s.Uses, "actions/cache/save@") {
				saveIf = s.If
			}
		}
	}
	for _, tc := range []struct {
		what string
		ok   bool
	}{
		{"the script records the history", record >= 0},
		{"the record is inside if [ -z \"$RECORD_BLOCKED\" ]", guard >= 0 && !strings.Contains(sc[guard:record], "\nfi\n")},
		{"gate() blocks the record on bench and the regress gates", strings.Contains(sc, `bench | regress | regress-history) [ "$2" -ne 0 ] && RECORD_BLOCKED=`)},
		{"the record comes after the regress-history gate", record > strings.Index(sc, "gate regress-history")},
		{"the save step does not run always()", !strings.Contains(saveIf, "always()") && strings.Contains(saveIf, "!cancelled()")},
	} {
		if !tc.ok {
			t.Errorf("%s: no (save step if: %q)", tc.what, saveIf)
		}
	}
}

// A first run by hand with no history: regress-history exits 2, which keeps
// the run out of the history, so every later run failed the same way, and
// the error named --allow-empty-history, which the script does not take.
// Between the history compare and its gate, the script must name its own
// switch, PERF_HISTORY_ALLOW_EMPTY=1, when the compare exits 2.
func TestHistoryGateNamesAllowEmptySwitch(t *testing.T) {
	script, err := os.ReadFile(filepath.Join("..", "..", "scripts", "ci-validate.sh"))
	if err != nil {
		t.Fatal(err)
	}
	sc := string(script)
	from := strings.Index(sc, `regress compare --store "$HISTORY"`)
	to := strings.Index(sc, "gate regress-history")
	if from < 0 || to < from {
		t.Fatalf("no history compare followed by its gate (compare at %d, gate at %d)", from, to)
	}
	seg := sc[from:to]
	for _, want := range []string{`-eq 2`, `"${PERF_HISTORY_ALLOW_EMPTY:-}" != 1`, "run again with PERF_HISTORY_ALLOW_EMPTY=1"} {
		if !strings.Contains(seg, want) {
			t.Errorf("the script does not, on exit 2 of the history compare, name PERF_HISTORY_ALLOW_EMPTY=1: %q missing between the compare and its gate", want)
		}
	}
	// Only for the no-baseline case: exit 2 also means Holm out of reach,
	// nothing gated, a damaged store or a report not written, where the
	// hint misleads. compare marks the case with a stderr line beginning
	// "no-baseline:" (TestRegressCompareNoBaseline pins it).
	cond := ""
	for _, line := range strings.Split(seg, "\n") {
		if strings.Contains(line, "-eq 2") && strings.HasPrefix(strings.TrimSpace(line), "if ") {
			cond = line
		}
	}
	if !strings.Contains(cond, `grep -q '^no-baseline:' "$OUT/regress-history.err"`) || !strings.Contains(seg, `2>"$OUT/regress-history.err"`) {
		t.Errorf("the first-run hint is not keyed on compare's no-baseline line (stderr to $OUT/regress-history.err): %q", cond)
	}
}

// A PR that renames or drops a benchmark fails the gates (a missing metric
// fails regress compare) unless REGRESS_ALLOW_MISSING=1, which the workflow
// never set: such a PR could not pass. The workflow must set it from a run
// by hand's allow_missing input and from the PR's perf-allow-missing label.
func TestWorkflowCanAllowMissing(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", ".github", "workflows", "performance-validation.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var wf struct {
		On struct {
			Dispatch struct {
				Inputs map[string]struct {
					Type string `yaml:"type"`
				} `yaml:"inputs"`
			} `yaml:"workflow_dispatch"`
		} `yaml:"on"`
		Jobs map[string]struct {
			Steps []struct {
				ID  string            `yaml:"id"`
				If  string            `yaml:"if"`
				Run string            `yaml:"run"`
				Env map[string]string `yaml:"env"`
			} `yaml:"steps"`
		} `yaml:"jobs"`
		Permissions map[string]string `yaml:"permissions"`
	}
	if err := yaml.Unmarshal(b, &wf); err != nil {
		t.Fatal(err)
	}
	if p := wf.Permissions["pull-requests"]; p != "read" && p != "write" {
		t.Errorf("permissions: pull-requests is %q; the push's label lookup needs read", p)
	}
	if in, ok := wf.On.Dispatch.Inputs["allow_missing"]; !ok || in.Type != "boolean" {
		t.Errorf("workflow_dispatch lacks a boolean allow_missing input: %v", wf.On.Dispatch.Inputs)
	}
	env, lookupID, lookup := "", "", ""
	for _, job := range wf.Jobs {
		for _, s := range job.Steps {
			if strings.Contains(s.Run, "scripts/ci-validate.sh") {
				env = s.Env["REGRESS_ALLOW_MISSING"]
			}
			// On a push (a merged PR) the event has no labels: the PR's
			// are looked up, or main fails on the renamed benchmarks.
			if strings.Contains(s.Run, "commits/$GITHUB_SHA/pulls") {
				lookupID, lookup = s.ID, s.Run
				if !strings.Contains(s.If, "push") || s.Env["GH_TOKEN"] == "" || !strings.Contains(s.Run, "perf-allow-missing") {
					t.Errorf("the label lookup step runs on %q with GH_TOKEN %q:\n%s", s.If, s.Env["GH_TOKEN"], s.Run)
				}
			}
		}
	}
	if lookup == "" || lookupID == "" {
		t.Fatal("no step with an id looks up the labels of the pushed commit's pull requests (gh api repos/$GITHUB_REPOSITORY/commits/$GITHUB_SHA/pulls)")
	}
	// A failed lookup fails soft: the step passes, warns, and sets nothing.
	// Run as GitHub runs it, with no gh on the PATH.
	dir := t.TempDir()
	ghOut := filepath.Join(dir, "github_output")
	cmd := exec.Command("bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", lookup)
	cmd.Env = []string{"PATH=" + dir, "GITHUB_OUTPUT=" + ghOut, "GITHUB_REPOSITORY=o/r", "GITHUB_SHA=abc"}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "::warning") {
		t.Errorf("the label lookup without gh: %v, want exit 0 and a warning:\n%s", err, out)
	}
	if b, _ := os.ReadFile(ghOut); len(b) != 0 {
		t.Errorf("a failed lookup set outputs: %s", b)
	}
	for _, want := range []string{"inputs.allow_missing", "contains(github.event.pull_request.labels.*.name, 'perf-allow-missing')", "steps." + lookupID + ".outputs.allow_missing == '1'", "'1'"} {
		if !strings.Contains(env, want) {
			t.Errorf("the ci-validate step's REGRESS_ALLOW_MISSING %q lacks %s", env, want)
		}
	}
	script, err := os.ReadFile(filepath.Join("..", "..", "scripts", "ci-validate.sh"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(script), `[ "${REGRESS_ALLOW_MISSING:-}" = 1 ] && ALLOW_MISSING=(--allow-missing)`) {
		t.Error("ci-validate.sh no longer turns REGRESS_ALLOW_MISSING=1 into --allow-missing")
	}
}
