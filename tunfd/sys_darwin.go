package tunfd

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// recvPacket reads one packet from a non-blocking fd into p. On a socket (a
// utun is a kernel-control datagram socket) recvmsg reports MSG_TRUNC when the
// datagram did not fit; the returned length is then what was copied.
func recvPacket(fd int, p []byte, sock bool) (int, bool, unix.Errno) {
	if sock {
		n, _, flags, _, err := unix.Recvmsg(fd, p, nil, 0)
		if err != nil {
			return 0, false, toErrno(err)
		}
		return n, flags&unix.MSG_TRUNC != 0, 0
	}
	// Not a socket (not a utun): a tun-like device that truncates silently,
	// so trust the IP header's length when the packet fills p exactly.
	n, err := unix.Read(fd, p)
	if err != nil {
		return 0, false, toErrno(err)
	}
	return n, n == len(p) && ipDeclaredLen(p) > n, 0
}

func toErrno(err error) unix.Errno {
	if e, ok := err.(unix.Errno); ok {
		return e
	}
	return unix.EIO
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

// Darwin's <net/if_utun.h>: getsockopt(fd, SYSPROTO_CONTROL, UTUN_OPT_IFNAME).
const (
	sysprotoControl = 2
	utunOptIfname   = 2
)

// probeIface asks a utun socket for its interface name (utunN).
func probeIface(fd int) iface {
	name, err := unix.GetsockoptString(fd, sysprotoControl, utunOptIfname)
	if err != nil || name == "" {
		return iface{}
	}
	return iface{name: name}
}

func checkIface(iface, Framing) error { return nil }

// defaultName is the name reported for an fd the kernel could not name.
func defaultName(fd int, framing Framing) string {
	if framing == FramingUTun {
		return "utun"
	}
	return fmt.Sprintf("fd%d", fd)
}
