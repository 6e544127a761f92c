package testenv

import (
	"context"
	"os/exec"
)

// ChildCommand is exec.CommandContext for a process a test starts and owns
// (a service on a port): on Linux the kernel kills it when the test binary
// dies without running its cleanups, as on a test timeout's panic, so that
// it does not outlive the test holding its port. Elsewhere it is
// exec.CommandContext alone.
func ChildCommand(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.SysProcAttr = childProcAttr()
	return cmd
}
