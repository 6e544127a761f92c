package testenv

import "syscall"

// childProcAttr makes the kernel kill a service if the test binary dies
// without running its cleanups, so no redis-server outlives a crashed test.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
