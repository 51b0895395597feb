//go:build unix

package netstack

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// socketBufferBytes sizes both socket buffers so that a burst of full-size
// packets (a TCP window) fits without the writer blocking.
const socketBufferBytes = 4 << 20

// finishSocketpair sizes the buffers and wraps both ends. The host end is made
// non-blocking so that reads go through the runtime poller and Close wakes a
// pending Read; the tunnel end is left as created (blocking), as a real utun
// fd would be handed over, and whoever uses it decides.
func finishSocketpair(fds [2]int) (host, tunnel *os.File, err error) {
	for _, fd := range fds {
		// Best effort: the kernel caps the values, and smaller buffers only cost speed.
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, socketBufferBytes)
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, socketBufferBytes)
	}
	if err := unix.SetNonblock(fds[0], true); err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return nil, nil, fmt.Errorf("make the host end of the utun socketpair non-blocking: %w", err)
	}
	return os.NewFile(uintptr(fds[0]), "utun-host"), os.NewFile(uintptr(fds[1]), "utun-tunnel"), nil
}
