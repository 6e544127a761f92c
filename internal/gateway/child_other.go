//go:build !unix

package gateway

import (
	"os"
	"os/exec"
	"syscall"
)

// ownGroup does nothing where there are no process groups to signal.
func ownGroup(*exec.Cmd) {}

// signalGroup sends sig to p alone (SIGKILL: Kill).
func signalGroup(p *os.Process, sig syscall.Signal) error {
	if sig == syscall.SIGKILL {
		return p.Kill()
	}
	return p.Signal(sig)
}

// groupAlive is false: only p is signalled.
func groupAlive(*os.Process) bool { return false }
