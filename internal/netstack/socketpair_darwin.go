package netstack

import (
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// utunSocketpair returns the two ends of a packet socketpair standing in for a
// utun device. macOS has no SOCK_SEQPACKET for AF_UNIX, so this uses
// SOCK_DGRAM, which is also what a real utun control socket is.
func utunSocketpair() (host, tunnel *os.File, err error) {
	syscall.ForkLock.RLock()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM, 0)
	if err == nil {
		unix.CloseOnExec(fds[0])
		unix.CloseOnExec(fds[1])
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		return nil, nil, fmt.Errorf("create the utun socketpair: %w", err)
	}
	return finishSocketpair(fds)
}
