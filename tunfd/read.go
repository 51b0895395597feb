package tunfd

import (
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

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
	// Fast path: when packets are likely queued, take them with a direct
	// non-blocking syscall, skipping the poller's bookkeeping; otherwise,
	// or when that finds nothing, go through the RawConn, which re-arms
	// the poller, tries the fd and parks until it is readable. Packets
	// come one at a time (small requests and their answers) when the
	// last Read had to wait for its first one and then emptied the queue:
	// then the direct try would find nothing, and the RawConn must try
	// again anyway after re-arming (a packet arriving in between would
	// otherwise be missed), a wasted system call per packet read
	// (bench/RESULTS.md, "Round-trip tail"). The direct try stays for
	// every other Read: in a stream the queue refills while the engine
	// works, and the try finds packets.
	var err error
	if d.drained {
		err = d.rc.Read(d.readFn)
	} else if !d.enter() {
		err = os.ErrClosed
	} else {
		done := d.readSome(uintptr(d.fd))
		d.exit()
		if !done {
			err = d.rc.Read(d.readFn)
		}
	}
	n, rerr := d.rd.n, d.rd.err
	d.drained = d.rd.waited && n < d.rd.limit
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
			d.stats.emptyReads.Add(1)
			if r.n == 0 {
				r.waited = true
			}
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
