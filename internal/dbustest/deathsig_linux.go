package dbustest

import (
	"os/exec"
	"syscall"
)

// dieWithParent has the kernel kill the daemon when the test binary dies: a
// binary killed by its timeout runs no cleanup, and the daemon must not
// outlive the run.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
