package tunfd

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestReadWaitsAfterOneEmptyTry checks what a Read costs when packets come
// one at a time (a small request, its answer): the fd is found empty once
// before the wait and once at the end of the batch. The direct try the
// fast path used to make before handing over to the poller found the fd
// empty a third time, a system call per packet for nothing.
func TestReadWaitsAfterOneEmptyTry(t *testing.T) {
	devFd, peer := socketpair(t, unix.SOCK_DGRAM)
	d := newDevice(t, devFd, Options{Framing: FramingUTun, BatchSize: 8})
	bufs, sizes := makeBufs(8, engineOffset+1500)
	pkt := ipv4Packet(60, 1)
	for i := range 20 {
		before := d.Stats().EmptyReads
		type result struct {
			n   int
			err error
		}
		done := make(chan result, 1)
		go func() {
			n, err := d.Read(bufs, sizes, engineOffset)
			done <- result{n, err}
		}()
		// The Read has looked at the empty fd: the packet now comes while
		// it waits (or is about to).
		deadline := time.Now().Add(10 * time.Second)
		for d.Stats().EmptyReads == before {
			if time.Now().After(deadline) {
				t.Fatalf("packet %d: the Read never found the fd empty", i)
			}
			time.Sleep(100 * time.Microsecond) // polling the condition
		}
		mustWrite(t, peer, utunFrame(afFor(pkt), pkt))
		r := <-done
		if r.err != nil || r.n != 1 {
			t.Fatalf("packet %d: Read = %d, %v; want 1 packet", i, r.n, r.err)
		}
		checkPacket(t, "packet", bufs[0][engineOffset:engineOffset+sizes[0]], pkt)
		if got := d.Stats().EmptyReads - before; got != 2 {
			t.Fatalf("packet %d: the Read found the fd empty %d times, want 2 (before its wait, after the packet)", i, got)
		}
	}
}

// TestReadFullBatchThenEmpty checks that the direct try after a full
// batch finds the packets still queued, and that a Read after the queue
// ran dry goes to the poller and still gets a packet already queued.
func TestReadFullBatchThenEmpty(t *testing.T) {
	devFd, peer := socketpair(t, unix.SOCK_DGRAM)
	d := newDevice(t, devFd, Options{Framing: FramingUTun, BatchSize: 2})
	bufs, sizes := makeBufs(2, engineOffset+1500)
	var pkts [][]byte
	for i := range 5 {
		p := ipv4Packet(60+i, byte(i))
		pkts = append(pkts, p)
		mustWrite(t, peer, utunFrame(afFor(p), p))
	}
	for i, want := range []int{2, 2, 1} {
		n, err := d.Read(bufs, sizes, engineOffset)
		if err != nil || n != want {
			t.Fatalf("Read %d = %d, %v; want %d packets", i, n, err, want)
		}
		for j := range n {
			checkPacket(t, "packet", bufs[j][engineOffset:engineOffset+sizes[j]], pkts[2*i+j])
		}
	}
	if got := d.Stats().EmptyReads; got != 1 {
		t.Fatalf("found the fd empty %d times, want 1 (after the last packet)", got)
	}
	p := ipv4Packet(90, 9)
	mustWrite(t, peer, utunFrame(afFor(p), p))
	if n, err := d.Read(bufs, sizes, engineOffset); err != nil || n != 1 {
		t.Fatalf("Read after the queue ran dry = %d, %v; want 1 packet", n, err)
	}
	checkPacket(t, "packet", bufs[0][engineOffset:engineOffset+sizes[0]], p)
}
