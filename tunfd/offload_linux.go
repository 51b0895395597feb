package tunfd

import (
	"fmt"
	"sync"

	"github.com/tailscale/wireguard-go/tun"
	"golang.org/x/sys/unix"
)

// offloadBatch is how many packets the engine takes per read from an
// offloading TUN. The kernel hands over TCP segments of up to 64 KiB, which
// the engine's device splits into one packet per MSS: 54 at the tunnel's
// MTU of 1280, so 64 slots always suffice (a read that needs more drops the
// segment), and each slot costs the engine a 64 KiB buffer: the engine's own
// default of 128 would double that for nothing.
const offloadBatch = 64

// OpenDevice opens fd as the device the engine reads and writes, whatever
// kind of tunnel fd the host handed over. A Linux TUN opened with
// IFF_VNET_HDR gets the engine's own Linux device, which turns on the
// kernel's TCP (and, from Linux 6.2, UDP) segmentation offloads: a read
// returns up to 64 KiB of one TCP stream, and writes of one stream are
// coalesced into one, so a bulk transfer costs a few syscalls per 64 KiB
// instead of one per 1,280-byte packet (BenchmarkKernelTUNOffload:
// several times the throughput at a fifth of the CPU per byte). Every other
// fd gets Open's Device. The caller keeps its fd either way.
func OpenDevice(fd int, opts Options) (tun.Device, error) {
	if ifc := probeIface(fd); ifc.linuxTun && ifc.flags&unix.IFF_VNET_HDR != 0 && ifc.flags&unix.IFF_TUN != 0 {
		return openOffload(fd, opts)
	}
	return Open(fd, opts)
}

// offloadDevice is the engine's Linux TUN device with what tunfd promises
// on top: the MTU from Options (the engine's asks the kernel by interface
// name, which fails when the TUN lives in another network namespace),
// EventUp once, and the caller's fd back in blocking mode after Close if it
// was. The embedded device keeps its other methods (the engine switches UDP
// GRO off through one of them on kernels that mishandle it).
type offloadDevice struct {
	*tun.NativeTun
	mtu       int
	events    chan tun.Event
	restore   blockingRestore
	closeOnce sync.Once
	closeErr  error
}

func openOffload(fd int, opts Options) (tun.Device, error) {
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return nil, fmt.Errorf("tunfd: read flags of fd %d: %w", fd, err)
	}
	d := &offloadDevice{mtu: opts.MTU}
	if d.mtu == 0 {
		d.mtu = TunnelMTU
	}
	if d.restore, err = keepBlocking(fd, flags); err != nil {
		return nil, err
	}
	own, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		d.restore.restore()
		return nil, fmt.Errorf("tunfd: dup fd %d: %w", fd, err)
	}
	// Non-blocking before the engine's device wraps own in an os.File, so
	// that reads park in the netpoller and Close wakes them. Once wrapped, a
	// failure leaves that os.File out of our reach: its finalizer closes own,
	// so it must not be closed here too.
	if err := unix.SetNonblock(own, true); err != nil {
		unix.Close(own)
		d.restore.restore()
		return nil, fmt.Errorf("tunfd: make fd %d non-blocking: %w", fd, err)
	}
	dev, _, err := tun.CreateUnmonitoredTUNFromFD(own)
	if err != nil {
		d.restore.restore()
		return nil, fmt.Errorf("tunfd: enable offloads on TUN fd %d: %w (open it without IFF_VNET_HDR to do without)", fd, err)
	}
	nt, ok := dev.(*tun.NativeTun)
	if !ok {
		dev.Close()
		d.restore.restore()
		return nil, fmt.Errorf("tunfd: the engine's TUN device is a %T, not *tun.NativeTun", dev)
	}
	d.NativeTun = nt
	d.events = make(chan tun.Event, 1)
	d.events <- tun.EventUp
	return d, nil
}

// MTU implements tun.Device: the MTU from Options.
func (d *offloadDevice) MTU() (int, error) { return d.mtu, nil }

// Events implements tun.Device: EventUp once; Close closes the channel.
func (d *offloadDevice) Events() <-chan tun.Event { return d.events }

// BatchSize implements tun.Device (see offloadBatch).
func (d *offloadDevice) BatchSize() int { return offloadBatch }

// Close closes the device's dup, which wakes a blocked Read, and puts the
// caller's fd back in blocking mode if it was. Later calls return the first
// result.
func (d *offloadDevice) Close() error {
	d.closeOnce.Do(func() {
		if err := d.NativeTun.Close(); err != nil {
			d.closeErr = fmt.Errorf("tunfd: close: %w", err)
		}
		d.restore.restore()
		close(d.events)
	})
	return d.closeErr
}
