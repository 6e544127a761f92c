package faults

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// OutEnv names the directory where scenario reports are written
// (scripts/faults.sh sets it); without it they go to the test's temp dir.
const OutEnv = "ACGS_FAULTS_OUT"

// Check is one pass/fail criterion of a scenario.
type Check struct {
	Name  string `json:"name"`
	OK    bool   `json:"ok"`
	Value string `json:"value"`
	Want  string `json:"want"`
	// Timing marks a latency target: it fails the test only in the
	// full-length runs of scripts/faults.sh (ACGS_FAULTS=1). The short
	// versions in the default suite (80 samples a phase, often under the
	// race detector on a shared machine) report it without asserting it.
	Timing bool `json:"timing,omitempty"`
}

// Report is the outcome of one scenario run.
type Report struct {
	Scenario  string         `json:"scenario"`
	Command   string         `json:"command"`
	StartedAt time.Time      `json:"started_at"`
	Seconds   float64        `json:"seconds"`
	Machine   Machine        `json:"machine"`
	Settings  map[string]any `json:"settings"`
	Phases    []PhaseStats   `json:"phases"`
	Events    []string       `json:"events,omitempty"`
	Checks    []Check        `json:"checks"`
	Pass      bool           `json:"pass"`

	tb        testing.TB
	stopMach  func() Machine
	startWall time.Time
}

// NewReport starts a report (and the load-average sampler).
func NewReport(tb testing.TB, scenario string, settings map[string]any) *Report {
	cmd := "scripts/faults.sh " + scenario
	if os.Getenv("ACGS_FAULTS") != "1" {
		cmd = "go test ./internal/faults -run " + tb.Name() + " (short version)"
	}
	return &Report{Scenario: scenario, Command: cmd, StartedAt: time.Now().UTC(), Settings: settings,
		tb: tb, stopMach: sampleMachine(), startWall: time.Now()}
}

// Event records something that happened, with its offset into the load.
func (r *Report) Event(l *Load, format string, args ...any) {
	off := ""
	if l != nil {
		off = fmt.Sprintf("t=%6.2fs ", time.Since(l.Start).Seconds())
	}
	msg := off + fmt.Sprintf(format, args...)
	r.Events = append(r.Events, msg)
	r.tb.Log(msg)
}

// Check records a criterion; a failed one fails the test when the report
// is finished.
func (r *Report) Check(name string, ok bool, value, want string) {
	r.Checks = append(r.Checks, Check{Name: name, OK: ok, Value: value, Want: want})
}

// TimingCheck records a latency criterion (see Check.Timing).
func (r *Report) TimingCheck(name string, ok bool, value, want string) {
	r.Checks = append(r.Checks, Check{Name: name, OK: ok, Value: value, Want: want, Timing: true})
}

// Finish writes the report as JSON and Markdown, logs the table and fails
// the test for every failed check.
func (r *Report) Finish() {
	r.tb.Helper()
	r.Machine = r.stopMach()
	r.Seconds = time.Since(r.startWall).Seconds()
	r.Pass = true
	for _, c := range r.Checks {
		r.Pass = r.Pass && c.OK
	}
	dir := os.Getenv(OutEnv)
	if dir == "" {
		dir = r.tb.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		r.tb.Fatal(err)
	}
	b, _ := json.MarshalIndent(r, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, r.Scenario+".json"), append(b, '\n'), 0o644); err != nil {
		r.tb.Fatal(err)
	}
	md := r.Markdown()
	if err := os.WriteFile(filepath.Join(dir, r.Scenario+".md"), []byte(md), 0o644); err != nil {
		r.tb.Fatal(err)
	}
	r.tb.Log("\n" + md)
	enforceTiming := os.Getenv("ACGS_FAULTS") == "1"
	for _, c := range r.Checks {
		switch {
		case c.OK:
		case c.Timing && !enforceTiming:
			r.tb.Logf("%s: %s: got %s, want %s (latency target: enforced only by scripts/faults.sh)", r.Scenario, c.Name, c.Value, c.Want)
		default:
			r.tb.Errorf("%s: %s: got %s, want %s", r.Scenario, c.Name, c.Value, c.Want)
		}
	}
}

// Markdown renders the report for docs/reliability.md.
func (r *Report) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "#### %s\n\n", r.Scenario)
	fmt.Fprintf(&b, "`%s` — %s, %.0f s; machine: %d CPUs, %s, kernel %s, load average (1 min) %.2f at start, mean %.2f, max %.2f during the run (shared machine).\n\n",
		r.Command, r.StartedAt.Format(time.RFC3339), r.Seconds, r.Machine.NProc, r.Machine.MemTotal, r.Machine.Kernel,
		r.Machine.Load1Start, r.Machine.Load1Mean, r.Machine.Load1Max)
	keys := make([]string, 0, len(r.Settings))
	for k := range r.Settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%v", k, r.Settings[k]))
	}
	fmt.Fprintf(&b, "Settings: %s\n\n", strings.Join(parts, ", "))
	b.WriteString("| phase | from–to (s) | sent | failed | wrong | p50 ms | p99 ms | max ms | revisions | cache tiers |\n")
	b.WriteString("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |\n")
	for _, p := range r.Phases {
		fmt.Fprintf(&b, "| %s | %.0f–%.0f | %d | %d | %d | %.2f | %.2f | %.2f | %s | %s |\n",
			p.Name, p.FromS, p.ToS, p.Sent, p.Failed, p.Wrong, p.P50Ms, p.P99Ms, p.MaxMs, counts(p.Revisions), counts(p.Tiers))
	}
	b.WriteString("\n| check | result | value | target |\n| --- | --- | --- | --- |\n")
	for _, c := range r.Checks {
		res := "pass"
		if !c.OK {
			res = "**FAIL**"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", c.Name, res, c.Value, c.Want)
	}
	if len(r.Events) > 0 {
		b.WriteString("\nEvents:\n\n")
		for _, e := range r.Events {
			fmt.Fprintf(&b, "- %s\n", e)
		}
	}
	for _, p := range r.Phases {
		if len(p.Errors) > 0 && p.Name != "total" {
			fmt.Fprintf(&b, "\nFirst errors in %s: %s\n", p.Name, strings.Join(p.Errors, "; "))
		}
		if len(p.WrongWhy) > 0 && p.Name != "total" {
			fmt.Fprintf(&b, "\nFirst wrong decisions in %s: %s\n", p.Name, strings.Join(p.WrongWhy, "; "))
		}
	}
	return b.String()
}

func counts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s:%d", k, m[k]))
	}
	return strings.Join(parts, " ")
}
