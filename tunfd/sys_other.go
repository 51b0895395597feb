//go:build unix && !linux && !darwin

package tunfd

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// recvPacket reads one packet with read(2). Without a portable way to learn a
// datagram's real length, a packet that fills p exactly is taken as truncated
// when its IP header claims more.
func recvPacket(fd int, p []byte, _ bool) (int, bool, unix.Errno) {
	n, err := unix.Read(fd, p)
	if err != nil {
		if e, ok := err.(unix.Errno); ok {
			return 0, false, e
		}
		return 0, false, unix.EIO
	}
	return n, n == len(p) && ipDeclaredLen(p) > n, 0
}

// sendPacket writes one frame with a single non-blocking write(2).
func sendPacket(fd int, p []byte) unix.Errno {
	if _, err := unix.Write(fd, p); err != nil {
		if e, ok := err.(unix.Errno); ok {
			return e
		}
		return unix.EIO
	}
	return 0
}

func probeIface(int) iface { return iface{} }

func checkIface(iface, Framing) error { return nil }

func defaultName(fd int, _ Framing) string { return fmt.Sprintf("fd%d", fd) }
