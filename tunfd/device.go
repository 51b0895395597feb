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
	"errors"
	"fmt"
	"io"
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
	// DefaultMTU is the tunnel MTU Coder uses everywhere (and tells the host).
	DefaultMTU = 1280
	// maxBatch bounds Options.BatchSize; the engine allocates one 64 KiB
	// buffer per batch slot, so larger batches cost memory for little gain.
	maxBatch = 128
)

// Options tunes New and Open. The zero value is what the tunnel wants.
type Options struct {
	// MTU reported to the engine; 0 means DefaultMTU.
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
	restore  int // dup used to clear O_NONBLOCK again after Close; -1 if none
	closeErr error
	closeMu  sync.Mutex

	rmu      sync.Mutex // serialises Read; guards rd and rscratch
	rd       readCall
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
		mtu = DefaultMTU
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
	d := &Device{framing: opts.Framing, mtu: mtu, batch: batch, restore: -1}
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
	if flags&unix.O_NONBLOCK == 0 {
		// Keep a second reference outside the poller so Close can put the
		// shared file back in blocking mode once our reads have drained.
		if d.restore, err = unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0); err != nil {
			unix.Close(own)
			return nil, fmt.Errorf("tunfd: dup fd %d: %w", fd, err)
		}
	}
	// O_NONBLOCK must be set before os.NewFile, which only hands
	// non-blocking fds to the netpoller.
	if err := unix.SetNonblock(own, true); err != nil {
		d.closeRestore()
		unix.Close(own)
		return nil, fmt.Errorf("tunfd: make fd %d non-blocking: %w", fd, err)
	}
	d.fd = own
	d.file = os.NewFile(uintptr(own), d.name)
	if d.rc, err = d.file.SyscallConn(); err != nil {
		d.file.Close()
		d.closeRestore()
		return nil, fmt.Errorf("tunfd: fd %d: %w", fd, err)
	}
	d.readFn = d.readSome
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
	d.closeRestore()
	close(d.events)
	return d.closeErr
}

func (d *Device) closeRestore() {
	if d.restore < 0 {
		return
	}
	_ = unix.SetNonblock(d.restore, false)
	_ = unix.Close(d.restore)
	d.restore = -1
}

// Read reads up to min(len(bufs), len(sizes)) packets into bufs[i][offset:],
// blocking until at least one valid packet arrives. Malformed frames are
// dropped, counted and skipped. With utun framing and offset >= 4 the header
// is read into the headroom in front of offset, so nothing is copied.
func (d *Device) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if d.closed.Load() {
		return 0, d.errClosed("read")
	}
	limit := min(len(bufs), len(sizes))
	if limit == 0 {
		return 0, nil
	}
	if offset < 0 {
		return 0, fmt.Errorf("tunfd %s: read: negative offset %d", d.name, offset)
	}
	for _, b := range bufs[:limit] {
		if len(b) <= offset {
			return 0, fmt.Errorf("tunfd %s: read: buffer of %d bytes leaves no room after offset %d", d.name, len(b), offset)
		}
	}
	d.rmu.Lock()
	defer d.rmu.Unlock()
	d.rd = readCall{bufs: bufs, sizes: sizes, offset: offset, limit: limit}
	// Fast path: when packets are already queued, take them with a direct
	// non-blocking syscall, skipping the poller's bookkeeping. Only when
	// nothing is queued do we go through the RawConn, which re-arms the
	// poller, tries again and parks until the fd is readable.
	var err error
	if !d.enter() {
		err = os.ErrClosed
	} else {
		done := d.readSome(uintptr(d.fd))
		d.exit()
		if !done {
			err = d.rc.Read(d.readFn)
		}
	}
	n, rerr := d.rd.n, d.rd.err
	d.rd = readCall{}
	if n > 0 {
		d.stats.packetsIn.Add(uint64(n))
	}
	if err != nil {
		if d.closed.Load() {
			return n, d.errClosed("read")
		}
		return n, fmt.Errorf("tunfd %s: read: %w", d.name, err)
	}
	if rerr != nil {
		if rerr == io.EOF {
			return n, fmt.Errorf("tunfd %s: read: the host closed its end of the tunnel: %w", d.name, io.EOF)
		}
		return n, fmt.Errorf("tunfd %s: read: %w", d.name, rerr)
	}
	return n, nil
}

// readSome is the RawConn callback of Read: it returns false to wait for the
// fd to become readable again, true when Read should return.
func (d *Device) readSome(fd uintptr) bool {
	r := &d.rd
	for r.n < r.limit {
		buf := r.bufs[r.n]
		var target []byte
		direct := true
		switch {
		case d.framing == FramingNone:
			target = buf[r.offset:]
		case r.offset >= utunHeaderLen:
			target = buf[r.offset-utunHeaderLen:]
		default:
			target = d.readScratch(len(buf) - r.offset + utunHeaderLen)
			direct = false
		}
		m, trunc, errno := recvPacket(int(fd), target, d.sock)
		switch errno {
		case 0:
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			// Nothing (more) queued: wait if we have nothing to return yet.
			return r.n > 0
		default:
			if r.n == 0 {
				r.err = errno
			}
			return true
		}
		if m == 0 && !d.dgram {
			// On a tun or a SOCK_SEQPACKET socket a zero read is end of file;
			// only a datagram socket can carry an empty packet.
			if r.n == 0 {
				r.err = io.EOF
			}
			return true
		}
		if trunc {
			d.stats.oversize.Add(1)
			continue
		}
		frame := target[:m]
		pkt := frame
		var v verdict
		if d.framing == FramingNone {
			v = checkRaw(frame)
		} else {
			v = checkUTun(frame)
			if v == verdictOK {
				pkt = frame[utunHeaderLen:]
			}
		}
		if v != verdictOK {
			d.stats.drop(v)
			continue
		}
		if !direct {
			copy(buf[r.offset:], pkt)
		}
		r.sizes[r.n] = len(pkt)
		r.n++
	}
	return true
}

// enter admits a direct syscall on d.fd unless the device is closing; every
// successful enter must be paired with exit.
func (d *Device) enter() bool {
	d.inflight.Add(1)
	if d.closed.Load() {
		d.inflight.Add(-1)
		return false
	}
	return true
}

func (d *Device) exit() { d.inflight.Add(-1) }

func (d *Device) readScratch(n int) []byte {
	if cap(d.rscratch) < n {
		d.rscratch = make([]byte, n)
	}
	return d.rscratch[:n]
}

// Write writes each bufs[i][offset:] as one packet. With utun framing the
// header is chosen from the IP version nibble and, when offset >= 4, written
// into the headroom in front of offset (so bufs[i][offset-4:offset] is
// overwritten). Packets that are neither IPv4 nor IPv6, or that the kernel
// refuses one by one, are dropped and counted; the rest of the batch is still
// written and they count as written in the result.
func (d *Device) Write(bufs [][]byte, offset int) (int, error) {
	if d.closed.Load() {
		return 0, d.errClosed("write")
	}
	if offset < 0 {
		return 0, fmt.Errorf("tunfd %s: write: negative offset %d", d.name, offset)
	}
	var written uint64
	defer func() {
		if written > 0 {
			d.stats.packetsOut.Add(written)
		}
	}()
	for i, buf := range bufs {
		if offset > len(buf) {
			return i, fmt.Errorf("tunfd %s: write: offset %d beyond the %d-byte buffer", d.name, offset, len(buf))
		}
		pkt := buf[offset:]
		if v := ipVersion(pkt); v != 4 && v != 6 {
			d.stats.writeBadVersion.Add(1)
			continue
		}
		var err error
		switch {
		case d.framing == FramingNone:
			err = d.writeFrame(pkt)
		case offset >= utunHeaderLen:
			frame := buf[offset-utunHeaderLen:]
			putUTunHeader(frame, pkt)
			err = d.writeFrame(frame)
		default:
			err = d.writeCopied(pkt)
		}
		if err != nil {
			if d.closed.Load() || errors.Is(err, os.ErrClosed) {
				return i, d.errClosed("write")
			}
			if packetRefused(err) {
				d.stats.writeErrors.Add(1)
				continue
			}
			return i, fmt.Errorf("tunfd %s: write: %w", d.name, err)
		}
		written++
	}
	return len(bufs), nil
}

// writeFrame writes one frame: first with a direct non-blocking syscall, and
// only if the fd is full (or the call was interrupted) through os.File, which
// waits in the poller for room.
func (d *Device) writeFrame(frame []byte) error {
	if d.enter() {
		errno := sendPacket(d.fd, frame)
		d.exit()
		switch errno {
		case 0:
			return nil
		case unix.EAGAIN, unix.EINTR:
		default:
			return errno
		}
	}
	_, err := d.file.Write(frame)
	return err
}

// writeCopied frames pkt in a scratch buffer, for callers that left less than
// 4 bytes of headroom.
func (d *Device) writeCopied(pkt []byte) error {
	d.wmu.Lock()
	defer d.wmu.Unlock()
	n := utunHeaderLen + len(pkt)
	if cap(d.wscratch) < n {
		d.wscratch = make([]byte, n)
	}
	frame := d.wscratch[:n]
	putUTunHeader(frame, pkt)
	copy(frame[utunHeaderLen:], pkt)
	return d.writeFrame(frame)
}

// packetRefused reports write errors that concern one packet rather than the
// fd: the next packet may well go through.
func packetRefused(err error) bool {
	return errors.Is(err, unix.EMSGSIZE) || errors.Is(err, unix.EINVAL) ||
		errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.EAFNOSUPPORT)
}
