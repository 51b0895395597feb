package abi

import (
	"os"
	"runtime/debug"

	"golang.org/x/sys/unix"
)

// SetCrashOutput is coderSetCrashOutput: the trace of a fatal error (an
// unrecovered panic in any goroutine of the library, which ends the host
// process: the tunnel's state is unknown by then) is written to fd as well
// as to stderr, which an extension never sees. The runtime keeps a
// duplicate, so the caller may close fd at once. -1 turns the extra output
// off. It returns 0, or CodeBadCrashFD (nothing changed).
func SetCrashOutput(fd int) int32 {
	if fd == -1 {
		if debug.SetCrashOutput(nil, debug.CrashOptions{}) != nil {
			return CodeInternal
		}
		return 0
	}
	if !fdAccess(fd, unix.O_WRONLY) {
		return CodeBadCrashFD
	}
	// os.NewFile on the caller's own fd would close it when collected.
	d, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return CodeBadCrashFD
	}
	f := os.NewFile(uintptr(d), "codervpn-crash-output")
	defer f.Close()
	if debug.SetCrashOutput(f, debug.CrashOptions{}) != nil {
		return CodeBadCrashFD
	}
	return 0
}
