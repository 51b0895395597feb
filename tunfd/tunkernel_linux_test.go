package tunfd

import (
	"errors"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/codervpn/codervpn/internal/fdtest"
)

func TestLinuxTUN(t *testing.T) {
	requireTUN(t)
	// Registered first, so it runs after every other cleanup: by then each
	// device, tun fd and helper fd this test opened must be closed again.
	before := fdtest.Take(t)
	t.Cleanup(func() { before.Check(t, fdtest.Any(isTUN, fdtest.Sockets), "the test") })
	ns, fd := setupTUN(t)

	t.Run("Open detects a real tun", func(t *testing.T) {
		d, err := Open(fd, Options{Framing: FramingUTun}) // ignored by Open
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		defer d.Close()
		if d.Framing() != FramingNone {
			t.Fatalf("Open chose %v for a Linux tun, want none", d.Framing())
		}
		if name, _ := d.Name(); name != "cvpn0" {
			t.Fatalf("Name() = %q, want the kernel's name cvpn0", name)
		}
	})

	t.Run("utun framing refused on a tun", func(t *testing.T) {
		d, err := New(fd, Options{Framing: FramingUTun})
		if err == nil {
			d.Close()
			t.Fatal("New accepted utun framing on a Linux tun")
		}
		t.Log(err)
	})

	t.Run("kernel answers IPv4 ping", func(t *testing.T) {
		d := newDevice(t, fd, Options{Framing: FramingNone})
		r := startReader(t, d, 65535)
		writePacket(t, d, ping4(0x1234, 1, 56))
		reply := r.await(t, "ICMPv4 echo reply", isEchoReply4(0x1234, 1))
		if len(reply) != 84 {
			t.Fatalf("echo reply is %d bytes, want 84", len(reply))
		}
	})

	t.Run("kernel answers IPv6 ping", func(t *testing.T) {
		d := newDevice(t, fd, Options{Framing: FramingNone})
		r := startReader(t, d, 65535)
		writePacket(t, d, ping6(0x4321, 7, 56))
		reply := r.await(t, "ICMPv6 echo reply", isEchoReply6(0x4321, 7))
		if len(reply) != 104 {
			t.Fatalf("echo reply is %d bytes, want 104", len(reply))
		}
	})

	// The tun hands over packets larger than the buffer truncated but tells
	// us their real length; the device must drop and count them, then go on.
	t.Run("oversize reply dropped, reading continues", func(t *testing.T) {
		d := newDevice(t, fd, Options{Framing: FramingNone})
		r := startReader(t, d, 300)
		writePacket(t, d, ping4(0x55, 1, 1000)) // 1028-byte reply: too big
		writePacket(t, d, ping4(0x55, 2, 8))    // 36-byte reply: fits
		r.await(t, "small echo reply", isEchoReply4(0x55, 2))
		// The tun queue is FIFO: the big reply was read (and dropped) first.
		if s := d.Stats(); s.Oversize != 1 {
			t.Fatalf("Oversize = %d, want 1 (stats %v)", s.Oversize, s)
		}
	})

	t.Run("reply exactly filling the buffer delivered", func(t *testing.T) {
		d := newDevice(t, fd, Options{Framing: FramingNone})
		r := startReader(t, d, 36)
		writePacket(t, d, ping4(0x66, 1, 8)) // 36-byte reply
		if reply := r.await(t, "echo reply", isEchoReply4(0x66, 1)); len(reply) != 36 {
			t.Fatalf("reply is %d bytes, want 36", len(reply))
		}
		if s := d.Stats(); s.Oversize != 0 {
			t.Fatalf("a packet that fits was counted oversize: %v", s)
		}
	})

	t.Run("bad version not written to the kernel", func(t *testing.T) {
		d := newDevice(t, fd, Options{Framing: FramingNone})
		bad := ping4(1, 1, 8)
		bad[0] = 0x55
		writePacket(t, d, bad)
		if s := d.Stats(); s.WriteBadIPVersion != 1 || s.PacketsOut != 0 {
			t.Fatalf("stats %v: want the packet dropped before the kernel", s)
		}
	})

	t.Run("Close unblocks a blocked Read", func(t *testing.T) {
		d := newDevice(t, fd, Options{Framing: FramingNone})
		done := make(chan error, 1)
		go func() {
			bufs, sizes := makeBufs(1, engineOffset+1500)
			for {
				if _, err := d.Read(bufs, sizes, engineOffset); err != nil {
					done <- err
					return
				}
			}
		}()
		waitParkedInRead(t)
		d.Close()
		select {
		case err := <-done:
			if !errors.Is(err, os.ErrClosed) {
				t.Fatalf("Read returned %v, want os.ErrClosed", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Read on the tun still blocked 5s after Close")
		}
	})

	t.Run("tap refused", func(t *testing.T) {
		fd3 := openTUN(t, ns, "cvpn2", unix.IFF_TAP|unix.IFF_NO_PI)
		d, err := New(fd3, Options{Framing: FramingNone})
		if err == nil {
			d.Close()
			t.Fatal("New accepted a TAP device")
		}
		t.Log(err)
	})

	t.Run("vnet header refused", func(t *testing.T) {
		fd4 := openTUN(t, ns, "cvpn3", unix.IFF_TUN|unix.IFF_NO_PI|unix.IFF_VNET_HDR)
		d, err := Open(fd4, Options{})
		if err == nil {
			d.Close()
			t.Fatal("Open accepted a tun with IFF_VNET_HDR")
		}
		t.Log(err)
	})

	t.Run("no fd leak per device", func(t *testing.T) {
		before := fdtest.Take(t)
		for seq := range uint16(3) {
			d, err := New(fd, Options{Framing: FramingNone})
			if err != nil {
				t.Fatal(err)
			}
			r := startReader(t, d, 65535)
			writePacket(t, d, ping4(0x77, seq, 8))
			r.await(t, "echo reply", isEchoReply4(0x77, seq))
			d.Close()
			for range r.pkts {
			}
		}
		before.Check(t, isTUN, "three devices on the tun")
	})
}

// isTUN is the fds of TUN devices.
func isTUN(_ int, target string) bool { return target == "/dev/net/tun" }
