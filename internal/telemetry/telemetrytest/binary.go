package telemetrytest

import (
	"os"
	"os/exec"
	"testing"
)

// RequireBinary returns the path of an external tool a test needs. Without it
// the test is skipped, unless ACGS_REQUIRE_SERVICES=1 (CI), where a missing
// tool is a failure: CI must not pass by skipping. It has the behaviour of
// internal/testenv.RequireBinary, which another change adds; callers move to
// that one once it is in.
func RequireBinary(tb testing.TB, name, debPackage string) string {
	tb.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	msg := name + " not found on PATH (apt-get install -y " + debPackage + ")"
	if os.Getenv("ACGS_REQUIRE_SERVICES") == "1" {
		tb.Fatal(msg)
	}
	tb.Skip(msg)
	return ""
}
