package tunfd

import (
	"bytes"
	"encoding/binary"
	"testing"

	"golang.org/x/sys/unix"
)

// fuzzBufSize is the packet capacity the fuzzed device is given: inputs
// longer than this exercise the oversize path.
const fuzzBufSize = 2048

// fuzzMaxInput keeps inputs under what one AF_UNIX datagram can carry.
const fuzzMaxInput = 60000

// sentinel is a valid packet queued after every fuzz input, so each Read
// returns (never blocks) and proves that reading continued past the input.
var sentinel = ipv4Packet(33, 0xa5)

// expectUTun is an independent statement of the utun rules: which counter a
// frame must land in, or "" if it must be delivered.
func expectUTun(frame []byte) string {
	if len(frame) > fuzzBufSize+4 {
		return "Oversize"
	}
	if len(frame) < 5 {
		return "ShortFrames"
	}
	af := uint32(frame[0])<<24 | uint32(frame[1])<<16 | uint32(frame[2])<<8 | uint32(frame[3])
	if af != 2 && af != 30 {
		return "UnknownFamily"
	}
	v := frame[4] >> 4
	switch {
	case v != 4 && v != 6:
		return "BadIPVersion"
	case (af == 2) != (v == 4):
		return "FamilyMismatch"
	}
	return ""
}

func expectRaw(pkt []byte) string {
	switch {
	case len(pkt) > fuzzBufSize:
		return "Oversize"
	case len(pkt) == 0:
		return "ShortFrames"
	case pkt[0]>>4 != 4 && pkt[0]>>4 != 6:
		return "BadIPVersion"
	}
	return ""
}

func counterByName(s Stats, name string) uint64 {
	return map[string]uint64{
		"ShortFrames": s.ShortFrames, "UnknownFamily": s.UnknownFamily, "BadIPVersion": s.BadIPVersion,
		"FamilyMismatch": s.FamilyMismatch, "Oversize": s.Oversize,
	}[name]
}

// fuzzRead writes data as one datagram, then the sentinel, and checks one Read
// against the expectation: data delivered intact (then the sentinel) or
// dropped into exactly the expected counter (then only the sentinel).
func fuzzRead(t *testing.T, d *Device, peer int, framing Framing, data []byte, offset int, expect func([]byte) string) {
	if len(data) > fuzzMaxInput {
		t.Skip("larger than one AF_UNIX datagram")
	}
	before := d.Stats()
	mustWrite(t, peer, data)
	mustWrite(t, peer, frameFor(framing, sentinel))
	bufs, sizes := makeBufs(2, offset+fuzzBufSize)
	n, err := d.Read(bufs, sizes, offset)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	got := func(i int) []byte { return bufs[i][offset : offset+sizes[i]] }
	after := d.Stats()
	reason := expect(data)
	if reason == "" {
		want := data
		if framing == FramingUTun {
			want = data[4:]
		}
		if n != 2 {
			t.Fatalf("valid frame: Read returned %d packets, want 2 (stats %v)", n, after)
		}
		checkPacket(t, "fuzzed packet", got(0), want)
		checkPacket(t, "sentinel", got(1), sentinel)
		if after.Dropped() != before.Dropped() {
			t.Fatalf("valid frame counted as dropped: %v", after)
		}
		return
	}
	if n != 1 {
		t.Fatalf("invalid frame (%s): Read returned %d packets, want only the sentinel", reason, n)
	}
	checkPacket(t, "sentinel", got(0), sentinel)
	if c := counterByName(after, reason) - counterByName(before, reason); c != 1 {
		t.Fatalf("invalid frame: %s went up by %d, want 1 (stats %v)", reason, c, after)
	}
	if after.Dropped()-before.Dropped() != 1 {
		t.Fatalf("one bad frame, but %d drops counted", after.Dropped()-before.Dropped())
	}
}

// FuzzUTunRead: arbitrary bytes arriving on a utun never panic or stall the
// device; valid frames come out intact, invalid ones land in their counter.
func FuzzUTunRead(f *testing.F) {
	f.Add(utunFrame(2, ipv4Packet(20, 0)), uint8(16))
	f.Add(utunFrame(30, ipv6Packet(40, 0)), uint8(0))
	f.Add([]byte{0, 0, 0, 2}, uint8(16))
	devFd, peer := socketpair(f, unix.SOCK_DGRAM)
	d := newDevice(f, devFd, Options{BatchSize: 2})
	f.Fuzz(func(t *testing.T, data []byte, offset uint8) {
		fuzzRead(t, d, peer, FramingUTun, data, int(offset%24), expectUTun)
	})
}

// FuzzRawRead is FuzzUTunRead for unframed (Linux tun) packets.
func FuzzRawRead(f *testing.F) {
	f.Add(ipv4Packet(20, 0), uint8(16))
	f.Add(ipv6Packet(40, 0), uint8(0))
	f.Add([]byte{0x50}, uint8(16))
	devFd, peer := socketpair(f, unix.SOCK_DGRAM)
	d := newDevice(f, devFd, Options{Framing: FramingNone, BatchSize: 2})
	f.Fuzz(func(t *testing.T, data []byte, offset uint8) {
		fuzzRead(t, d, peer, FramingNone, data, int(offset%24), expectRaw)
	})
}

// FuzzUTunWrite: Write labels any IPv4/IPv6 packet with the right header and
// drops everything else without emitting a frame.
func FuzzUTunWrite(f *testing.F) {
	f.Add(ipv4Packet(20, 0), uint8(16))
	f.Add(ipv6Packet(40, 0), uint8(2))
	f.Add([]byte{}, uint8(4))
	devFd, peer := socketpair(f, unix.SOCK_DGRAM)
	d := newDevice(f, devFd, Options{})
	f.Fuzz(func(t *testing.T, pkt []byte, offset uint8) {
		if len(pkt) > fuzzMaxInput {
			t.Skip("larger than one AF_UNIX datagram")
		}
		off := int(offset % 24)
		buf := append(make([]byte, off), pkt...)
		before := d.Stats()
		if n, err := d.Write([][]byte{buf}, off); err != nil || n != 1 {
			t.Fatalf("Write = %d, %v", n, err)
		}
		after := d.Stats()
		var af uint32
		switch {
		case len(pkt) > 0 && pkt[0]>>4 == 4:
			af = 2
		case len(pkt) > 0 && pkt[0]>>4 == 6:
			af = 30
		default:
			if pending(t, peer) {
				t.Fatal("a packet that is neither IPv4 nor IPv6 reached the fd")
			}
			if after.WriteBadIPVersion-before.WriteBadIPVersion != 1 {
				t.Fatalf("bad packet not counted: %v", after)
			}
			return
		}
		frame := mustRecv(t, peer)
		if len(frame) != 4+len(pkt) || binary.BigEndian.Uint32(frame) != af || !bytes.Equal(frame[4:], pkt) {
			t.Fatalf("frame %x..., want family %d + the %d-byte packet", head(frame), af, len(pkt))
		}
		if after.PacketsOut-before.PacketsOut != 1 {
			t.Fatalf("PacketsOut went up by %d, want 1", after.PacketsOut-before.PacketsOut)
		}
	})
}
