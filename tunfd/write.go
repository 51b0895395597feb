package tunfd

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

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
