package tunfd

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

// socketpair returns two connected AF_UNIX sockets of the given type, closed
// at the end of the test. Both SOCK_DGRAM and SOCK_SEQPACKET keep message
// boundaries, which is what lets them stand in for a utun.
func socketpair(t testing.TB, typ int) (devSide, peer int) {
	t.Helper()
	fds, err := rawSocketpair(typ)
	if err != nil {
		t.Fatalf("socketpair: %v", err)
	}
	t.Cleanup(func() {
		unix.Close(fds[0])
		unix.Close(fds[1])
	})
	return fds[0], fds[1]
}

// rawSocketpair is unix.Socketpair(AF_UNIX, typ) with both ends close-on-exec
// (Darwin has no SOCK_CLOEXEC), for tests that manage the fds themselves.
func rawSocketpair(typ int) ([2]int, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, typ, 0)
	if err != nil {
		return fds, err
	}
	unix.CloseOnExec(fds[0])
	unix.CloseOnExec(fds[1])
	return fds, nil
}

// newDevice wraps fd and closes the device at the end of the test.
func newDevice(t testing.TB, fd int, opts Options) *Device {
	t.Helper()
	d, err := New(fd, opts)
	if err != nil {
		t.Fatalf("New(%d, %+v): %v", fd, opts, err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// ipv4Packet builds a syntactically plausible IPv4 packet of total length n
// (n >= 20) whose payload bytes are derived from seed.
func ipv4Packet(n int, seed byte) []byte {
	p := make([]byte, n)
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(n))
	p[8] = 64
	p[9] = unix.IPPROTO_UDP
	copy(p[12:16], []byte{10, 0, 0, 1})
	copy(p[16:20], []byte{10, 0, 0, 2})
	for i := 20; i < n; i++ {
		p[i] = seed + byte(i)
	}
	return p
}

// ipv6Packet builds an IPv6 packet of total length n (n >= 40).
func ipv6Packet(n int, seed byte) []byte {
	p := make([]byte, n)
	p[0] = 0x60
	binary.BigEndian.PutUint16(p[4:], uint16(n-40))
	p[6] = unix.IPPROTO_UDP
	p[7] = 64
	p[8], p[23] = 0xfd, 1
	p[24], p[39] = 0xfd, 2
	for i := 40; i < n; i++ {
		p[i] = seed + byte(i)
	}
	return p
}

// utunFrame prepends the utun header for pkt's IP version.
func utunFrame(af uint32, pkt []byte) []byte {
	f := make([]byte, 4, 4+len(pkt))
	binary.BigEndian.PutUint32(f, af)
	return append(f, pkt...)
}

func afFor(pkt []byte) uint32 {
	if pkt[0]>>4 == 6 {
		return 30
	}
	return 2
}

// frameFor is how a packet looks on the fd in the given framing.
func frameFor(framing Framing, pkt []byte) []byte {
	if framing == FramingNone {
		return append([]byte(nil), pkt...)
	}
	return utunFrame(afFor(pkt), pkt)
}

func mustWrite(t testing.TB, fd int, b []byte) {
	t.Helper()
	n, err := unix.Write(fd, b)
	if err != nil || n != len(b) {
		t.Fatalf("write %d bytes to fd %d: n=%d err=%v", len(b), fd, n, err)
	}
}

// mustRecv reads one message from a blocking socket.
func mustRecv(t testing.TB, fd int) []byte {
	t.Helper()
	buf := make([]byte, 70000)
	n, err := unix.Read(fd, buf)
	if err != nil {
		t.Fatalf("read fd %d: %v", fd, err)
	}
	return buf[:n]
}

// pending reports whether a message is waiting on fd (without consuming it).
func pending(t testing.TB, fd int) bool {
	t.Helper()
	buf := make([]byte, 1)
	_, _, err := unix.Recvfrom(fd, buf, unix.MSG_PEEK|unix.MSG_DONTWAIT)
	if errors.Is(err, unix.EAGAIN) {
		return false
	}
	if err != nil {
		t.Fatalf("peek fd %d: %v", fd, err)
	}
	return true
}

// makeBufs returns n buffers of size each, as the engine offers them.
func makeBufs(n, size int) ([][]byte, []int) {
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, size)
	}
	return bufs, make([]int, n)
}

func checkPacket(t testing.TB, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: got %d bytes %x..., want %d bytes %x...", what, len(got), head(got), len(want), head(want))
	}
}

func head(b []byte) []byte { return b[:min(len(b), 24)] }
