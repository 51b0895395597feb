//go:build !linux

package dbustest

import "os/exec"

// dieWithParent does nothing where the kernel has no parent-death signal;
// the test's cleanup is the only thing that stops the daemon there.
func dieWithParent(*exec.Cmd) {}
