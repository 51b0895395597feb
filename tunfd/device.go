// Package tunfd turns a file descriptor handed over by the host into the
// tun.Device the tailnet engine consumes.
//
// Two framings exist. On macOS the host gives us a utun socket: every packet
// carries a 4-byte header holding the address family. On Linux the host gives
// us a tun opened with IFF_TUN|IFF_NO_PI: raw IP packets. The utun framing
// works over any datagram fd, so tests on Linux drive the macOS packet path
// through a socketpair.
//
// The device owns a dup of the fd, switched to non-blocking mode so reads
// park in Go's netpoller and Close can wake them at once. Malformed packets
// are dropped and counted (see Stats), never returned as errors: the engine
// stops reading from a device on the first Read error.
package tunfd

import (
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/tailscale/wireguard-go/tun"
	"golang.org/x/sys/unix"
)

// Framing says how packets are delimited and labelled on the fd.
type Framing int

const (
	// FramingUTun is macOS utun framing: a 4-byte big-endian address family
	// (AF_INET = 2, AF_INET6 = 30, Darwin's values on every OS) before each packet.
	FramingUTun Framing = iota
	// FramingNone is a Linux tun opened with IFF_TUN|IFF_NO_PI: raw IP packets.
	// (A tun opened without IFF_NO_PI cannot always be detected — TUNGETIFF
	// reports IFF_NOFILTER in the same bit — and its packets would all be
	// dropped as BadIPVersion, since each starts with a 4-byte info header.)
	FramingNone
)

func (f Framing) String() string {
	switch f {
	case FramingUTun:
		return "utun"
	case FramingNone:
		return "none"
	}
	return fmt.Sprintf("Framing(%d)", int(f))
}

const (
	// TunnelMTU is the MTU of a CoderVPN tunnel device, and the MTU the
	// tunnel asks the host to set on its interface: a 1280-byte IPv6 packet
	// wrapped in WireGuard still fits a 1500-byte path, and 1280 is IPv6's
	// minimum.
	TunnelMTU = 1280
	// maxBatch bounds Options.BatchSize; the engine allocates one 64 KiB
	// buffer per batch slot, so larger batches cost memory for little gain.
	maxBatch = 128
)

// Options tunes New and Open. The zero value is what the tunnel wants.
type Options struct {
	// MTU reported to the engine; 0 means TunnelMTU.
	MTU int
	// Name reported by Name(); empty means ask the kernel (utunN on macOS,
	// the interface name of a Linux tun) or fall back to "utun" / "fd<N>".
	Name string
	// Framing used by New; Open detects it and ignores this field.
	Framing Framing
	// BatchSize is what BatchSize() reports: the engine then offers that many
	// buffers per Read and Read drains up to that many queued packets per
	// call. 0 means 1.
	BatchSize int
}

// iface is what the kernel told us about the fd (see probeIface).
type iface struct {
	name     string // kernel interface name; "" when unknown
	linuxTun bool   // a Linux tun character device
	flags    uint16 // Linux tun flags (IFF_*) when linuxTun
}

// Device is a tun.Device over a file descriptor. Read must be called from one
// goroutine at a time (as the engine does); Write, Stats and Close are safe
// from any goroutine.
type Device struct {
	file     *os.File
	rc       syscall.RawConn
	fd       int          // file's descriptor, for the direct fast path
	inflight atomic.Int32 // direct syscalls on fd in progress; Close waits for 0
	framing  Framing
	sock     bool // fd is a socket: recvPacket can ask for MSG_TRUNC
	dgram    bool // SOCK_DGRAM: an empty read is an empty datagram, not EOF
	name     string
	mtu      int
	batch    int
	events   chan tun.Event
	closed   atomic.Bool
	stats    counters
	restore  blockingRestore
	closeErr error
	closeMu  sync.Mutex

	rmu sync.Mutex // serialises Read; guards rd, drained and rscratch
	rd  readCall
	// drained is set when the last Read found the fd empty before its
	// first packet and ended with the fd empty again (and at the start):
	// packets come one at a time, and the next Read goes to the poller
	// without a direct try.
	drained  bool
	readFn   func(uintptr) bool // d.readSome, bound once so Read does not allocate
	rscratch []byte             // utun frames when the caller left < 4 bytes of headroom

	wmu      sync.Mutex // guards wscratch
	wscratch []byte
}

// readCall is the state of the Read in progress, kept in the Device so the
// RawConn callback needs no closure allocation per call.
type readCall struct {
	bufs   [][]byte
	sizes  []int
	offset int
	limit  int
	n      int
	waited bool // the fd was found empty before the first packet
	err    error
}

var _ tun.Device = (*Device)(nil)

// New wraps fd with the framing in opts. It dups fd (the caller keeps its own
// and may close it at any time) and sets the dup non-blocking — which, as
// O_NONBLOCK belongs to the shared open file, the caller's fd sees too until
// Close restores blocking mode.
func New(fd int, opts Options) (*Device, error) {
	if fd < 0 {
		return nil, fmt.Errorf("tunfd: invalid file descriptor %d", fd)
	}
	if opts.Framing != FramingUTun && opts.Framing != FramingNone {
		return nil, fmt.Errorf("tunfd: unknown framing %v", opts.Framing)
	}
	mtu := opts.MTU
	if mtu == 0 {
		mtu = TunnelMTU
	}
	if mtu < 576 || mtu > 65535 {
		return nil, fmt.Errorf("tunfd: MTU %d out of range 576..65535", mtu)
	}
	batch := opts.BatchSize
	if batch == 0 {
		batch = 1
	}
	if batch < 1 || batch > maxBatch {
		return nil, fmt.Errorf("tunfd: batch size %d out of range 1..%d", batch, maxBatch)
	}

	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("tunfd: file descriptor %d is not usable (the host must pass an open tunnel fd): %w", fd, err)
	}
	d := &Device{framing: opts.Framing, mtu: mtu, batch: batch}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFIFO:
		return nil, fmt.Errorf("tunfd: fd %d is a pipe, which loses packet boundaries; pass a tun/utun fd or a SOCK_DGRAM/SOCK_SEQPACKET socket", fd)
	case unix.S_IFREG, unix.S_IFDIR:
		return nil, fmt.Errorf("tunfd: fd %d is a regular file or directory, not a tunnel device", fd)
	case unix.S_IFSOCK:
		typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
		if err != nil {
			return nil, fmt.Errorf("tunfd: query socket type of fd %d: %w", fd, err)
		}
		if typ != unix.SOCK_DGRAM && typ != unix.SOCK_SEQPACKET {
			return nil, fmt.Errorf("tunfd: fd %d is a stream socket, which loses packet boundaries; use SOCK_DGRAM or SOCK_SEQPACKET", fd)
		}
		d.sock, d.dgram = true, typ == unix.SOCK_DGRAM
	}
	ifc := probeIface(fd)
	if err := checkIface(ifc, opts.Framing); err != nil {
		return nil, fmt.Errorf("tunfd: %w", err)
	}
	switch {
	case opts.Name != "":
		d.name = opts.Name
	case ifc.name != "":
		d.name = ifc.name
	default:
		d.name = defaultName(fd, opts.Framing)
	}

	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return nil, fmt.Errorf("tunfd: read flags of fd %d: %w", fd, err)
	}
	own, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("tunfd: dup fd %d: %w", fd, err)
	}
	// Close puts the shared file back in blocking mode once our reads have
	// drained.
	if d.restore, err = keepBlocking(fd, flags); err != nil {
		unix.Close(own)
		return nil, err
	}
	// O_NONBLOCK must be set before os.NewFile, which only hands
	// non-blocking fds to the netpoller.
	if err := unix.SetNonblock(own, true); err != nil {
		d.restore.restore()
		unix.Close(own)
		return nil, fmt.Errorf("tunfd: make fd %d non-blocking: %w", fd, err)
	}
	d.fd = own
	d.file = os.NewFile(uintptr(own), d.name)
	if d.rc, err = d.file.SyscallConn(); err != nil {
		d.file.Close()
		d.restore.restore()
		return nil, fmt.Errorf("tunfd: fd %d: %w", fd, err)
	}
	d.readFn = d.readSome
	d.drained = true
	d.events = make(chan tun.Event, 1)
	d.events <- tun.EventUp
	return d, nil
}

// File returns the device's own dup of the fd.
func (d *Device) File() *os.File { return d.file }

// Framing reports how packets are framed on the fd (what Open detected).
func (d *Device) Framing() Framing { return d.framing }

// MTU returns the MTU from Options (default 1280).
func (d *Device) MTU() (int, error) { return d.mtu, nil }

// Name returns the interface name (see Options.Name).
func (d *Device) Name() (string, error) { return d.name, nil }

// Events delivers EventUp once; Close closes the channel.
func (d *Device) Events() <-chan tun.Event { return d.events }

// BatchSize returns Options.BatchSize (default 1).
func (d *Device) BatchSize() int { return d.batch }

// Stats returns a snapshot of the counters.
func (d *Device) Stats() Stats { return d.stats.snapshot() }

func (d *Device) errClosed(op string) error {
	return fmt.Errorf("tunfd %s: %s: %w", d.name, op, os.ErrClosed)
}

// Close closes the device's dup (never the caller's fd), wakes a blocked Read
// at once, puts the shared file back in blocking mode if it was, and closes
// the Events channel. Later calls do nothing and return the first result.
func (d *Device) Close() error {
	d.closeMu.Lock()
	defer d.closeMu.Unlock()
	if !d.closed.CompareAndSwap(false, true) {
		return d.closeErr
	}
	// No new direct syscall can start now; let the running ones (they never
	// block) finish before the descriptor number can be reused. Then
	// os.File.Close evicts waiters from the poller and returns only after
	// in-flight reads and writes through it have left the fd.
	for d.inflight.Load() != 0 {
		runtime.Gosched()
	}
	if err := d.file.Close(); err != nil {
		d.closeErr = fmt.Errorf("tunfd %s: close: %w", d.name, err)
	}
	d.restore.restore()
	close(d.events)
	return d.closeErr
}
