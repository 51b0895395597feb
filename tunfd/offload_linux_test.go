package tunfd

import (
	"fmt"
	"os"
	"os/exec"
	"testing"

	"github.com/tailscale/wireguard-go/tun"
	"golang.org/x/sys/unix"

	"github.com/codervpn/codervpn/internal/fdtest"
)

// OpenDevice hands a TUN opened with IFF_VNET_HDR to the engine's device
// with the offloads on, and keeps tunfd's promises: the MTU asked for,
// EventUp, the kernel's packets both ways, Close waking Read, the caller's
// fd back in blocking mode, no fd left. A plain TUN still gets our Device.
func TestOpenDeviceOffload(t *testing.T) {
	requireTUN(t)
	before := fdtest.Take(t)
	t.Cleanup(func() { before.Check(t, fdtest.Any(isTUN, fdtest.Sockets), "the test") })
	ns := fmt.Sprintf("cvh-tunfd-%d", os.Getpid())
	ipCmd(t, "netns", "add", ns)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	vnet := openTUN(t, ns, "cvh-v0", unix.IFF_TUN|unix.IFF_NO_PI|unix.IFF_VNET_HDR)
	plain := openTUN(t, ns, "cvh-p0", unix.IFF_TUN|unix.IFF_NO_PI)
	ipCmd(t, "-n", ns, "link", "set", "cvh-v0", "addrgenmode", "none")
	ipCmd(t, "-n", ns, "addr", "add", "10.99.0.1/24", "dev", "cvh-v0")
	ipCmd(t, "-n", ns, "link", "set", "cvh-v0", "up")

	t.Run("plain TUN gets our device", func(t *testing.T) {
		d, err := OpenDevice(plain, Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		if _, ok := d.(*Device); !ok {
			t.Fatalf("OpenDevice gave a %T for a TUN without IFF_VNET_HDR, want *Device", d)
		}
	})

	t.Run("vnet TUN gets the engine's device", func(t *testing.T) {
		d, err := OpenDevice(vnet, Options{MTU: 1300})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := d.(*offloadDevice); !ok {
			d.Close()
			t.Fatalf("OpenDevice gave a %T for a TUN with IFF_VNET_HDR, want the offloading device", d)
		}
		if mtu, err := d.MTU(); err != nil || mtu != 1300 {
			t.Errorf("MTU() = %d, %v; want 1300 from Options", mtu, err)
		}
		if name, err := d.Name(); err != nil || name != "cvh-v0" {
			t.Errorf("Name() = %q, %v; want cvh-v0", name, err)
		}
		if b := d.BatchSize(); b != offloadBatch {
			t.Errorf("BatchSize() = %d, want %d", b, offloadBatch)
		}
		if ev := <-d.Events(); ev != tun.EventUp {
			t.Errorf("first event %v, want EventUp", ev)
		}
		r := startReader(t, d, 65535)
		for seq := range uint16(3) {
			buf := append(make([]byte, engineOffset), ping4(0x99, seq, 56)...)
			if _, err := d.Write([][]byte{buf}, engineOffset); err != nil {
				t.Fatalf("write ping %d: %v", seq, err)
			}
			if reply := r.await(t, "ICMPv4 echo reply", isEchoReply4(0x99, seq)); len(reply) != 84 {
				t.Fatalf("echo reply is %d bytes, want 84", len(reply))
			}
		}
		if err := d.Close(); err != nil {
			t.Fatalf("close: %v", err)
		}
		if err := <-r.done; err == nil {
			t.Fatal("Read returned no error after Close")
		}
		r.done <- nil // for startReader's cleanup
		if err := d.Close(); err != nil {
			t.Errorf("second close: %v", err)
		}
		if _, ok := <-d.Events(); ok {
			t.Error("Events not closed after Close")
		}
		flags, err := unix.FcntlInt(uintptr(vnet), unix.F_GETFL, 0)
		if err != nil || flags&unix.O_NONBLOCK != 0 {
			t.Errorf("the caller's fd is left non-blocking (flags %#x, %v)", flags, err)
		}
	})
}
