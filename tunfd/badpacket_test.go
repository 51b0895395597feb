package tunfd

import (
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// Each bad frame is followed by a good packet: Read must skip the bad one,
// count it in exactly the expected counter, and return the good one.
func TestReadDropsBadFrames(t *testing.T) {
	v4 := ipv4Packet(64, 1)
	v6 := ipv6Packet(64, 2)
	big := ipv4Packet(1400, 3)
	withVersion := func(p []byte, ver byte) []byte {
		q := append([]byte(nil), p...)
		q[0] = ver<<4 | q[0]&0x0f
		return q
	}
	const bufSize = 1000 // the engine's buffer for this test: smaller than `big`
	tests := []struct {
		name    string
		framing Framing
		frame   []byte
		counter func(Stats) uint64
	}{
		{"utun/empty datagram", FramingUTun, []byte{}, func(s Stats) uint64 { return s.ShortFrames }},
		{"utun/one byte", FramingUTun, []byte{0}, func(s Stats) uint64 { return s.ShortFrames }},
		{"utun/three bytes", FramingUTun, []byte{0, 0, 0}, func(s Stats) uint64 { return s.ShortFrames }},
		{"utun/header only", FramingUTun, []byte{0, 0, 0, 2}, func(s Stats) uint64 { return s.ShortFrames }},
		{"utun/family 0", FramingUTun, utunFrame(0, v4), func(s Stats) uint64 { return s.UnknownFamily }},
		{"utun/linux AF_INET6 10", FramingUTun, utunFrame(10, v6), func(s Stats) uint64 { return s.UnknownFamily }},
		{"utun/family in high byte", FramingUTun, utunFrame(2<<24, v4), func(s Stats) uint64 { return s.UnknownFamily }},
		{"utun/family 0xffffffff", FramingUTun, utunFrame(0xffffffff, v4), func(s Stats) uint64 { return s.UnknownFamily }},
		{"utun/ip version 0", FramingUTun, utunFrame(2, withVersion(v4, 0)), func(s Stats) uint64 { return s.BadIPVersion }},
		{"utun/ip version 5", FramingUTun, utunFrame(2, withVersion(v4, 5)), func(s Stats) uint64 { return s.BadIPVersion }},
		{"utun/ip version 15 on AF_INET6", FramingUTun, utunFrame(30, withVersion(v6, 15)), func(s Stats) uint64 { return s.BadIPVersion }},
		{"utun/AF_INET carrying IPv6", FramingUTun, utunFrame(2, v6), func(s Stats) uint64 { return s.FamilyMismatch }},
		{"utun/AF_INET6 carrying IPv4", FramingUTun, utunFrame(30, v4), func(s Stats) uint64 { return s.FamilyMismatch }},
		{"utun/larger than buffer", FramingUTun, utunFrame(2, big), func(s Stats) uint64 { return s.Oversize }},
		{"none/empty datagram", FramingNone, []byte{}, func(s Stats) uint64 { return s.ShortFrames }},
		{"none/ip version 0", FramingNone, withVersion(v4, 0), func(s Stats) uint64 { return s.BadIPVersion }},
		{"none/ip version 5", FramingNone, withVersion(v4, 5), func(s Stats) uint64 { return s.BadIPVersion }},
		{"none/one byte version 7", FramingNone, []byte{0x70}, func(s Stats) uint64 { return s.BadIPVersion }},
		{"none/larger than buffer", FramingNone, big, func(s Stats) uint64 { return s.Oversize }},
	}
	for _, tt := range tests {
		for _, offset := range []int{engineOffset, 0} {
			name := tt.name
			if offset == 0 {
				name += "/offset0"
			}
			t.Run(name, func(t *testing.T) {
				devFd, peer := socketpair(t, unix.SOCK_DGRAM)
				d := newDevice(t, devFd, Options{Framing: tt.framing})
				mustWrite(t, peer, tt.frame)
				mustWrite(t, peer, frameFor(tt.framing, v6))

				bufs, sizes := makeBufs(1, offset+bufSize)
				n, err := d.Read(bufs, sizes, offset)
				if err != nil || n != 1 {
					t.Fatalf("Read = %d, %v; want the good packet after the bad frame", n, err)
				}
				checkPacket(t, "packet after bad frame", bufs[0][offset:offset+sizes[0]], v6)
				s := d.Stats()
				if got := tt.counter(s); got != 1 {
					t.Fatalf("expected counter = %d, want 1 (stats %v)", got, s)
				}
				if s.Dropped() != 1 || s.PacketsIn != 1 {
					t.Fatalf("want exactly one drop and one delivered packet, got %v", s)
				}
			})
		}
	}
}

// A run of nothing but garbage followed by one good packet: a single Read
// skips all of it (the engine never sees an empty read).
func TestReadSkipsManyBadFrames(t *testing.T) {
	devFd, peer := socketpair(t, unix.SOCK_DGRAM)
	d := newDevice(t, devFd, Options{})
	for i := range 9 { // max_dgram_qlen is 10 on a default Linux
		mustWrite(t, peer, []byte{byte(i)})
	}
	good := ipv4Packet(40, 9)
	mustWrite(t, peer, utunFrame(2, good))
	bufs, sizes := makeBufs(1, engineOffset+1500)
	n, err := d.Read(bufs, sizes, engineOffset)
	if err != nil || n != 1 {
		t.Fatalf("Read = %d, %v", n, err)
	}
	checkPacket(t, "good packet", bufs[0][engineOffset:engineOffset+sizes[0]], good)
	if s := d.Stats(); s.ShortFrames != 9 {
		t.Fatalf("ShortFrames = %d, want 9", s.ShortFrames)
	}
}

// Write drops packets it cannot label, counts them, and still writes the rest
// of the batch.
func TestWriteDropsBadPackets(t *testing.T) {
	for _, framing := range []Framing{FramingUTun, FramingNone} {
		for _, offset := range []int{engineOffset, 0} {
			t.Run(framing.String()+map[int]string{0: "/offset0", engineOffset: ""}[offset], func(t *testing.T) {
				devFd, peer := socketpair(t, unix.SOCK_DGRAM)
				d := newDevice(t, devFd, Options{Framing: framing})
				good1, good2 := ipv4Packet(50, 1), ipv6Packet(70, 2)
				pkts := [][]byte{good1, {0x50, 1, 2, 3}, {}, {0x00}, good2, {0xf0}}
				bufs := make([][]byte, len(pkts))
				for i, p := range pkts {
					bufs[i] = append(make([]byte, offset), p...)
				}
				n, err := d.Write(bufs, offset)
				if err != nil || n != len(bufs) {
					t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(bufs))
				}
				checkPacket(t, "first frame", mustRecv(t, peer), frameFor(framing, good1))
				checkPacket(t, "second frame", mustRecv(t, peer), frameFor(framing, good2))
				if pending(t, peer) {
					t.Fatal("a bad packet reached the fd")
				}
				if s := d.Stats(); s.WriteBadIPVersion != 4 || s.PacketsOut != 2 {
					t.Fatalf("stats %v; want 4 write drops and 2 packets out", s)
				}
			})
		}
	}
}

// Writes from many goroutines (the engine writes from one per peer) each
// arrive whole.
func TestConcurrentWrites(t *testing.T) {
	for _, offset := range []int{engineOffset, 0} {
		t.Run(map[int]string{0: "offset0", engineOffset: "offset16"}[offset], func(t *testing.T) {
			devFd, peer := socketpair(t, unix.SOCK_SEQPACKET)
			d := newDevice(t, devFd, Options{})
			const writers, each = 4, 50
			var wg sync.WaitGroup
			errs := make(chan error, writers)
			for w := range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range each {
						buf := append(make([]byte, offset), ipv4Packet(100+w, byte(i))...)
						if _, err := d.Write([][]byte{buf}, offset); err != nil {
							errs <- err
							return
						}
					}
				}()
			}
			// Each writer's packets arrive whole and in that writer's order.
			next := make([]int, writers)
			for range writers * each {
				f := mustRecv(t, peer)
				w := len(f) - 4 - 100
				if w < 0 || w >= writers || next[w] >= each {
					t.Fatalf("unexpected frame of %d bytes: %x", len(f), head(f))
				}
				checkPacket(t, "frame", f, utunFrame(2, ipv4Packet(100+w, byte(next[w]))))
				next[w]++
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatalf("Write: %v", err)
			}
		})
	}
}
