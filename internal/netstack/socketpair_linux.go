package netstack

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// utunSocketpair returns the two ends of a packet socketpair standing in for a
// utun device. Linux uses SOCK_SEQPACKET: it keeps packet boundaries like
// utun's SOCK_DGRAM, is not limited to net.unix.max_dgram_qlen (10 by default)
// queued packets, and reports EOF when the other end is closed.
func utunSocketpair() (host, tunnel *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("create the utun socketpair: %w", err)
	}
	return finishSocketpair(fds)
}
