package tunfd

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// recvPacket reads one packet from a non-blocking fd into p and reports
// whether it did not fit. On a socket it asks for the real datagram length
// with MSG_TRUNC (AF_UNIX honours it since Linux 3.4). A Linux tun silently
// truncates to the buffer, so there a packet that fills p exactly and whose IP
// header claims more than that is taken as truncated.
func recvPacket(fd int, p []byte, sock bool) (int, bool, unix.Errno) {
	var ptr unsafe.Pointer
	if len(p) > 0 {
		ptr = unsafe.Pointer(&p[0])
	} else {
		ptr = unsafe.Pointer(&zeroByte)
	}
	var r uintptr
	var e unix.Errno
	if sock {
		r, _, e = unix.Syscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(ptr), uintptr(len(p)), unix.MSG_TRUNC, 0, 0)
	} else {
		r, _, e = unix.Syscall(unix.SYS_READ, uintptr(fd), uintptr(ptr), uintptr(len(p)))
	}
	if e != 0 {
		return 0, false, e
	}
	n := int(r)
	if sock {
		return n, n > len(p), 0
	}
	return n, n == len(p) && ipDeclaredLen(p) > n, 0
}

var zeroByte byte

// sendPacket writes one frame with a single non-blocking write(2).
func sendPacket(fd int, p []byte) unix.Errno {
	ptr := unsafe.Pointer(&zeroByte)
	if len(p) > 0 {
		ptr = unsafe.Pointer(&p[0])
	}
	_, _, e := unix.Syscall(unix.SYS_WRITE, uintptr(fd), uintptr(ptr), uintptr(len(p)))
	return e
}

// probeIface asks the kernel whether fd is a Linux tun and, if so, for its
// interface name and flags. Any failure just means "not a tun".
func probeIface(fd int) iface {
	ifr, err := unix.NewIfreq("")
	if err != nil {
		return iface{}
	}
	if err := unix.IoctlIfreq(fd, unix.TUNGETIFF, ifr); err != nil {
		return iface{}
	}
	return iface{name: ifr.Name(), linuxTun: true, flags: ifr.Uint16()}
}

// checkIface refuses the tun configurations whose packets we would misparse.
func checkIface(ifc iface, framing Framing) error {
	if !ifc.linuxTun {
		return nil
	}
	switch {
	case ifc.flags&unix.IFF_TUN == 0:
		return fmt.Errorf("%s is a TAP device (Ethernet frames); open it with IFF_TUN|IFF_NO_PI", ifc.name)
	case ifc.flags&unix.IFF_NO_PI == 0:
		// TUNGETIFF also reports IFF_NOFILTER (no socket filter attached) in
		// this very bit, so a set bit proves nothing; a clear bit, though,
		// does prove the tun prepends packet info.
		return fmt.Errorf("%s was opened without IFF_NO_PI, so every packet carries a 4-byte packet-info header; open it with IFF_TUN|IFF_NO_PI", ifc.name)
	case ifc.flags&unix.IFF_VNET_HDR != 0:
		return fmt.Errorf("%s was opened with IFF_VNET_HDR, which this device does not parse; use OpenDevice, or open it with IFF_TUN|IFF_NO_PI only", ifc.name)
	case framing != FramingNone:
		return fmt.Errorf("%s is a Linux tun, which carries raw IP packets; use FramingNone (or Open), not utun framing", ifc.name)
	}
	return nil
}

// defaultName is the name reported for an fd the kernel could not name.
func defaultName(fd int, _ Framing) string { return fmt.Sprintf("fd%d", fd) }
