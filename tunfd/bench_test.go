package tunfd

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// benchPacketSize is the tunnel MTU: what the engine moves at full load.
const benchPacketSize = 1280

// benchChunk is how many packets run between switching from the raw baseline
// to the device, so both see the same machine conditions within one run.
const benchChunk = 4096

// BenchmarkDeviceRead moves 1280-byte packets host → engine: the host end of
// a socketpair writes a frame, Device.Read delivers the packet. The baseline
// is a raw write+read of the same frame on a second socketpair, timed in
// interleaved chunks; ratio-vs-raw = raw time / device time (1 = no overhead).
func BenchmarkDeviceRead(b *testing.B) {
	for _, framing := range []Framing{FramingUTun, FramingNone} {
		b.Run(framing.String(), func(b *testing.B) {
			devFd, peer := socketpair(b, unix.SOCK_DGRAM)
			d := newDevice(b, devFd, Options{Framing: framing})
			frame := frameFor(framing, ipv4Packet(benchPacketSize, 1))
			bufs, sizes := makeBufs(1, engineOffset+65535) // as the engine allocates them
			rawA, rawB := socketpair(b, unix.SOCK_DGRAM)
			rawBuf := make([]byte, 65535)

			device := func(n int) {
				for range n {
					if _, err := unix.Write(peer, frame); err != nil {
						b.Fatal(err)
					}
					if n, err := d.Read(bufs, sizes, engineOffset); err != nil || n != 1 || sizes[0] != benchPacketSize {
						b.Fatalf("Read = %d, %v (size %d)", n, err, sizes[0])
					}
				}
			}
			raw := func(n int) {
				for range n {
					if _, err := unix.Write(rawA, frame); err != nil {
						b.Fatal(err)
					}
					if m, err := unix.Read(rawB, rawBuf); err != nil || m != len(frame) {
						b.Fatalf("raw read = %d, %v", m, err)
					}
				}
			}
			runInterleaved(b, device, raw)
		})
	}
}

// BenchmarkDeviceWrite moves 1280-byte packets engine → host: Device.Write
// frames the packet, the host end of the socketpair reads it. Baseline and
// metric as in BenchmarkDeviceRead.
func BenchmarkDeviceWrite(b *testing.B) {
	for _, framing := range []Framing{FramingUTun, FramingNone} {
		b.Run(framing.String(), func(b *testing.B) {
			devFd, peer := socketpair(b, unix.SOCK_DGRAM)
			d := newDevice(b, devFd, Options{Framing: framing})
			pkt := ipv4Packet(benchPacketSize, 2)
			wbuf := append(make([]byte, engineOffset), pkt...)
			wbufs := [][]byte{wbuf}
			frame := frameFor(framing, pkt)
			peerBuf := make([]byte, 65535)
			rawA, rawB := socketpair(b, unix.SOCK_DGRAM)

			device := func(n int) {
				for range n {
					if _, err := d.Write(wbufs, engineOffset); err != nil {
						b.Fatal(err)
					}
					if m, err := unix.Read(peer, peerBuf); err != nil || m != len(frame) {
						b.Fatalf("peer read = %d, %v", m, err)
					}
				}
			}
			raw := func(n int) {
				for range n {
					if _, err := unix.Write(rawA, frame); err != nil {
						b.Fatal(err)
					}
					if m, err := unix.Read(rawB, peerBuf); err != nil || m != len(frame) {
						b.Fatalf("raw read = %d, %v", m, err)
					}
				}
			}
			runInterleaved(b, device, raw)
		})
	}
}

// runInterleaved runs device (under the benchmark timer, so ns/op and
// allocs/op are the device's) and raw (with the timer stopped) in alternating
// chunks, b.N packets each. The ratio is computed from wall-clock time taken
// around each chunk, so both sides pay the same for the stop-the-world that
// Start/StopTimer do between chunks.
func runInterleaved(b *testing.B, device, raw func(n int)) {
	b.Helper()
	b.SetBytes(benchPacketSize)
	b.ReportAllocs()
	device(16) // warm up: first-use buffers, poller registration
	raw(16)
	b.ResetTimer()
	var rawTime, devTime time.Duration
	for done := 0; done < b.N; {
		n := min(benchChunk, b.N-done)
		b.StopTimer()
		start := time.Now()
		raw(n)
		rawTime += time.Since(start)
		b.StartTimer()
		start = time.Now()
		device(n)
		devTime += time.Since(start)
		done += n
	}
	b.StopTimer()
	b.ReportMetric(float64(rawTime.Nanoseconds())/float64(b.N), "raw-ns/op")
	if devTime > 0 {
		b.ReportMetric(float64(rawTime)/float64(devTime), "ratio-vs-raw")
	}
}

// The steady path allocates nothing: not per Read, not per Write, in either
// framing, with the engine's headroom and without it.
func TestZeroAllocsPerPacket(t *testing.T) {
	for _, framing := range []Framing{FramingUTun, FramingNone} {
		for _, offset := range []int{engineOffset, 0} {
			t.Run(framing.String()+map[int]string{0: "/offset0", engineOffset: "/offset16"}[offset], func(t *testing.T) {
				devFd, peer := socketpair(t, unix.SOCK_DGRAM)
				d := newDevice(t, devFd, Options{Framing: framing, BatchSize: 4})
				pkt := ipv6Packet(benchPacketSize, 5)
				frame := frameFor(framing, pkt)
				bufs, sizes := makeBufs(4, offset+65535)
				wbufs := [][]byte{append(make([]byte, offset), pkt...)}
				peerBuf := make([]byte, 65535)
				var failed error
				readOne := func() {
					if _, err := unix.Write(peer, frame); err != nil {
						failed = err
					}
					if n, err := d.Read(bufs, sizes, offset); err != nil || n != 1 {
						failed = err
					}
				}
				writeOne := func() {
					if _, err := d.Write(wbufs, offset); err != nil {
						failed = err
					}
					if _, err := unix.Read(peer, peerBuf); err != nil {
						failed = err
					}
				}
				readOne() // first use may size scratch buffers
				writeOne()
				if a := testing.AllocsPerRun(200, readOne); a != 0 {
					t.Errorf("Read: %v allocations per packet, want 0", a)
				}
				if a := testing.AllocsPerRun(200, writeOne); a != 0 {
					t.Errorf("Write: %v allocations per packet, want 0", a)
				}
				if failed != nil {
					t.Fatal(failed)
				}
				if s := d.Stats(); s.Dropped() != 0 {
					t.Fatalf("unexpected drops: %v", s)
				}
			})
		}
	}
}
