package tunfd

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/tailscale/wireguard-go/tun"
	"golang.org/x/sys/unix"
)

// These tests drive FramingNone against a real Linux TUN in a network
// namespace of their own: the kernel answers pings we write into the device,
// and we read its replies back out.

var (
	tunLocal4 = [4]byte{10, 99, 0, 1} // the kernel's address on the tun
	tunPeer4  = [4]byte{10, 99, 0, 2} // "the tunnel", where replies go
	tunLocal6 = [16]byte{0xfd, 0x99, 15: 1}
	tunPeer6  = [16]byte{0xfd, 0x99, 15: 2}
)

func requireTUN(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping real-TUN test: needs root to create a network namespace and a TUN device (CI runs as root)")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("skipping real-TUN test: /dev/net/tun is not available: %v", err)
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("skipping real-TUN test: the ip command (iproute2) is not installed")
	}
}

func ipCmd(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// newNetns creates a named network namespace, removed when the test ends.
func newNetns(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("codervpn-tunfd-%d-%d", os.Getpid(), time.Now().UnixNano()%1e9)
	ipCmd(t, "netns", "add", name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	return name
}

// openTUN creates TUN device dev inside netns ns with the given IFF_* flags
// and returns its fd (closed at the end of the test). setns changes only the
// calling OS thread, so the work runs on a locked thread that is thrown away
// afterwards rather than returned to the scheduler in the wrong namespace.
func openTUN(t testing.TB, ns, dev string, flags uint16) int {
	t.Helper()
	type result struct {
		fd  int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with this goroutine
		fd, err := func() (int, error) {
			nsfd, err := unix.Open("/var/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				return -1, fmt.Errorf("open netns %s: %w", ns, err)
			}
			defer unix.Close(nsfd)
			if err := unix.Setns(nsfd, unix.CLONE_NEWNET); err != nil {
				return -1, fmt.Errorf("setns %s: %w", ns, err)
			}
			fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
			if err != nil {
				return -1, fmt.Errorf("open /dev/net/tun: %w", err)
			}
			ifr, err := unix.NewIfreq(dev)
			if err != nil {
				unix.Close(fd)
				return -1, err
			}
			ifr.SetUint16(flags)
			if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
				unix.Close(fd)
				return -1, fmt.Errorf("TUNSETIFF %s: %w", dev, err)
			}
			return fd, nil
		}()
		ch <- result{fd, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { unix.Close(r.fd) })
	return r.fd
}

// setupTUN makes a namespace with tun "cvpn0" (IFF_TUN|IFF_NO_PI) up and
// addressed, and returns the namespace and the tun fd.
func setupTUN(t *testing.T) (string, int) {
	t.Helper()
	requireTUN(t)
	ns := newNetns(t)
	fd := openTUN(t, ns, "cvpn0", unix.IFF_TUN|unix.IFF_NO_PI)
	// No link-local address: keeps the kernel's own IPv6 chatter off the tun.
	ipCmd(t, "-n", ns, "link", "set", "cvpn0", "addrgenmode", "none")
	ipCmd(t, "-n", ns, "addr", "add", "10.99.0.1/24", "dev", "cvpn0")
	ipCmd(t, "-n", ns, "addr", "add", "fd99::1/64", "dev", "cvpn0", "nodad")
	ipCmd(t, "-n", ns, "link", "set", "cvpn0", "up")
	return ns, fd
}

// reader reads the device in the background and hands over copies of packets.
type reader struct {
	pkts chan []byte
	done chan error
}

func startReader(t *testing.T, d tun.Device, bufSize int) *reader {
	t.Helper()
	r := &reader{pkts: make(chan []byte, 64), done: make(chan error, 1)}
	go func() {
		bufs, sizes := makeBufs(1, engineOffset+bufSize)
		for {
			n, err := d.Read(bufs, sizes, engineOffset)
			if err != nil {
				r.done <- err
				close(r.pkts)
				return
			}
			for i := range n {
				r.pkts <- append([]byte(nil), bufs[i][engineOffset:engineOffset+sizes[i]]...)
			}
		}
	}()
	t.Cleanup(func() {
		d.Close()
		for range r.pkts {
		}
		<-r.done
	})
	return r
}

// await returns the first packet that satisfies match, within 5 seconds.
func (r *reader) await(t *testing.T, what string, match func([]byte) bool) []byte {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case p, ok := <-r.pkts:
			if !ok {
				t.Fatalf("device stopped before %s arrived: %v", what, <-r.done)
			}
			if match(p) {
				return p
			}
		case <-timeout:
			t.Fatalf("no %s from the kernel within 5s", what)
		}
	}
}

func checksum(b []byte, sum uint32) uint16 {
	for ; len(b) >= 2; b = b[2:] {
		sum += uint32(b[0])<<8 | uint32(b[1])
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// ping4 builds an ICMPv4 echo request from tunPeer4 to tunLocal4.
func ping4(id, seq uint16, payload int) []byte {
	p := make([]byte, 28+payload)
	p[0], p[8], p[9] = 0x45, 64, unix.IPPROTO_ICMP
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	copy(p[12:], tunPeer4[:])
	copy(p[16:], tunLocal4[:])
	binary.BigEndian.PutUint16(p[10:], checksum(p[:20], 0))
	icmp := p[20:]
	icmp[0] = 8 // echo request
	binary.BigEndian.PutUint16(icmp[4:], id)
	binary.BigEndian.PutUint16(icmp[6:], seq)
	for i := 8; i < len(icmp); i++ {
		icmp[i] = byte(i)
	}
	binary.BigEndian.PutUint16(icmp[2:], checksum(icmp, 0))
	return p
}

func isEchoReply4(id, seq uint16) func([]byte) bool {
	return func(p []byte) bool {
		return len(p) >= 28 && p[0]>>4 == 4 && p[9] == unix.IPPROTO_ICMP &&
			bytes.Equal(p[12:16], tunLocal4[:]) && bytes.Equal(p[16:20], tunPeer4[:]) &&
			p[20] == 0 && binary.BigEndian.Uint16(p[24:]) == id && binary.BigEndian.Uint16(p[26:]) == seq
	}
}

// ping6 builds an ICMPv6 echo request from tunPeer6 to tunLocal6.
func ping6(id, seq uint16, payload int) []byte {
	p := make([]byte, 48+payload)
	p[0], p[6], p[7] = 0x60, unix.IPPROTO_ICMPV6, 64
	binary.BigEndian.PutUint16(p[4:], uint16(8+payload))
	copy(p[8:], tunPeer6[:])
	copy(p[24:], tunLocal6[:])
	icmp := p[40:]
	icmp[0] = 128 // echo request
	binary.BigEndian.PutUint16(icmp[4:], id)
	binary.BigEndian.PutUint16(icmp[6:], seq)
	for i := 8; i < len(icmp); i++ {
		icmp[i] = byte(i)
	}
	// Pseudo-header: source, destination, upper-layer length, next header.
	var sum uint32
	for _, w := range [][]byte{p[8:40]} {
		for i := 0; i < len(w); i += 2 {
			sum += uint32(w[i])<<8 | uint32(w[i+1])
		}
	}
	sum += uint32(len(icmp)) + unix.IPPROTO_ICMPV6
	binary.BigEndian.PutUint16(icmp[2:], checksum(icmp, sum))
	return p
}

func isEchoReply6(id, seq uint16) func([]byte) bool {
	return func(p []byte) bool {
		return len(p) >= 48 && p[0]>>4 == 6 && p[6] == unix.IPPROTO_ICMPV6 &&
			bytes.Equal(p[8:24], tunLocal6[:]) && bytes.Equal(p[24:40], tunPeer6[:]) &&
			p[40] == 129 && binary.BigEndian.Uint16(p[44:]) == id && binary.BigEndian.Uint16(p[46:]) == seq
	}
}

func writePacket(t *testing.T, d *Device, pkt []byte) {
	t.Helper()
	buf := append(make([]byte, engineOffset), pkt...)
	if n, err := d.Write([][]byte{buf}, engineOffset); err != nil || n != 1 {
		t.Fatalf("Write = %d, %v", n, err)
	}
}
