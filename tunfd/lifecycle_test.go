package tunfd

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/codervpn/codervpn/internal/fdtest"
)

// waitParkedInRead waits until some goroutine is parked in the netpoller
// under Device.Read, so Close really races a blocked read.
func waitParkedInRead(t *testing.T) { t.Helper(); waitParkedIn(t, "Read") }

// waitParkedIn waits until a goroutine is parked in the netpoller under
// Device.<method>.
func waitParkedIn(t *testing.T, method string) {
	t.Helper()
	frame := "tunfd.(*Device)." + method
	deadline := time.Now().Add(5 * time.Second)
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		for _, g := range strings.Split(string(buf[:n]), "\n\n") {
			if strings.Contains(g, frame) && strings.Contains(g, "runtime_pollWait") {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no goroutine parked in Device.%s after 5s:\n%s", method, buf[:n])
		}
		runtime.Gosched()
	}
}

func TestCloseUnblocksRead(t *testing.T) {
	for _, framing := range []Framing{FramingUTun, FramingNone} {
		t.Run(framing.String(), func(t *testing.T) {
			devFd, _ := socketpair(t, unix.SOCK_DGRAM)
			d := newDevice(t, devFd, Options{Framing: framing})
			done := make(chan error, 1)
			go func() {
				bufs, sizes := makeBufs(1, engineOffset+1500)
				_, err := d.Read(bufs, sizes, engineOffset)
				done <- err
			}()
			waitParkedInRead(t)

			start := time.Now()
			if err := d.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			select {
			case err := <-done:
				if !errors.Is(err, os.ErrClosed) {
					t.Fatalf("blocked Read returned %v, want an os.ErrClosed error", err)
				}
				t.Logf("Read returned %v after %v", err, time.Since(start))
			case <-time.After(5 * time.Second):
				t.Fatal("Read still blocked 5s after Close")
			}
		})
	}
}

func TestAfterClose(t *testing.T) {
	devFd, _ := socketpair(t, unix.SOCK_DGRAM)
	d := newDevice(t, devFd, Options{})
	<-d.Events() // EventUp
	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("second Close: %v, want nil (idempotent)", err)
	}
	if _, ok := <-d.Events(); ok {
		t.Fatal("Events channel still open after Close")
	}
	bufs, sizes := makeBufs(1, engineOffset+1500)
	if _, err := d.Read(bufs, sizes, engineOffset); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Read after Close = %v, want os.ErrClosed", err)
	}
	w := append(make([]byte, engineOffset), ipv4Packet(40, 0)...)
	if _, err := d.Write([][]byte{w}, engineOffset); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Write after Close = %v, want os.ErrClosed", err)
	}
}

// Close closes only the device's dup: the caller's fd keeps working, and is
// back in blocking mode.
func TestCallerFdSurvivesClose(t *testing.T) {
	devFd, peer := socketpair(t, unix.SOCK_DGRAM)
	d := newDevice(t, devFd, Options{})
	if fl, _ := unix.FcntlInt(uintptr(devFd), unix.F_GETFL, 0); fl&unix.O_NONBLOCK == 0 {
		t.Fatal("expected the shared file to be non-blocking while the device runs")
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	fl, err := unix.FcntlInt(uintptr(devFd), unix.F_GETFL, 0)
	if err != nil {
		t.Fatalf("caller's fd is no longer valid after Close: %v", err)
	}
	if fl&unix.O_NONBLOCK != 0 {
		t.Fatal("caller's fd left non-blocking after Close; it was blocking before New")
	}
	mustWrite(t, devFd, []byte("hello"))
	checkPacket(t, "via caller's fd", mustRecv(t, peer), []byte("hello"))
	mustWrite(t, peer, []byte("back"))
	checkPacket(t, "to caller's fd", mustRecv(t, devFd), []byte("back"))
}

// A caller that already had the fd non-blocking keeps it that way.
func TestNonblockingCallerFdStaysNonblocking(t *testing.T) {
	devFd, _ := socketpair(t, unix.SOCK_DGRAM)
	if err := unix.SetNonblock(devFd, true); err != nil {
		t.Fatal(err)
	}
	d := newDevice(t, devFd, Options{})
	d.Close()
	if fl, _ := unix.FcntlInt(uintptr(devFd), unix.F_GETFL, 0); fl&unix.O_NONBLOCK == 0 {
		t.Fatal("Close cleared O_NONBLOCK the caller had set")
	}
}

// The caller may close its own fd at once: the device runs on its dup.
func TestCallerMayCloseItsFd(t *testing.T) {
	fds, err := rawSocketpair(unix.SOCK_DGRAM)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[1])
	d, err := New(fds[0], Options{})
	if err != nil {
		unix.Close(fds[0])
		t.Fatal(err)
	}
	defer d.Close()
	unix.Close(fds[0])

	p := ipv4Packet(60, 4)
	mustWrite(t, fds[1], utunFrame(2, p))
	bufs, sizes := makeBufs(1, engineOffset+1500)
	if n, err := d.Read(bufs, sizes, engineOffset); err != nil || n != 1 {
		t.Fatalf("Read after the caller closed its fd = %d, %v", n, err)
	}
	checkPacket(t, "packet", bufs[0][engineOffset:engineOffset+sizes[0]], p)
}

func TestNoFdLeak(t *testing.T) {
	before := fdtest.Take(t)
	for _, typ := range []int{unix.SOCK_DGRAM, unix.SOCK_SEQPACKET} {
		fds, err := rawSocketpair(typ)
		if err != nil {
			t.Fatal(err)
		}
		for range 3 { // start → stop → start again on the same fd
			d, err := New(fds[0], Options{})
			if err != nil {
				t.Fatal(err)
			}
			p := ipv6Packet(90, 1)
			mustWrite(t, fds[1], utunFrame(30, p))
			bufs, sizes := makeBufs(1, engineOffset+1500)
			if n, err := d.Read(bufs, sizes, engineOffset); err != nil || n != 1 {
				t.Fatalf("Read = %d, %v", n, err)
			}
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
		}
		unix.Close(fds[0])
		unix.Close(fds[1])
	}
	before.Check(t, fdtest.Sockets, "three devices on each socketpair")
}

// When the host closes a SOCK_SEQPACKET end, Read reports end of file instead
// of spinning on empty reads.
func TestPeerCloseSeqpacketIsEOF(t *testing.T) {
	fds, err := rawSocketpair(unix.SOCK_SEQPACKET)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	d := newDevice(t, fds[0], Options{})
	unix.Close(fds[1])
	bufs, sizes := makeBufs(1, engineOffset+1500)
	_, err = d.Read(bufs, sizes, engineOffset)
	if !errors.Is(err, io.EOF) {
		t.Fatalf("Read after peer close = %v, want io.EOF", err)
	}
}

func TestReadArgumentErrors(t *testing.T) {
	devFd, _ := socketpair(t, unix.SOCK_DGRAM)
	d := newDevice(t, devFd, Options{})
	tests := []struct {
		name   string
		bufs   [][]byte
		offset int
	}{
		{"negative offset", [][]byte{make([]byte, 100)}, -1},
		{"offset fills buffer", [][]byte{make([]byte, 16)}, 16},
		{"offset beyond buffer", [][]byte{make([]byte, 8)}, 16},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := d.Read(tt.bufs, make([]int, len(tt.bufs)), tt.offset); err == nil {
				t.Fatal("Read accepted bad arguments")
			}
		})
	}
	if n, err := d.Read(nil, nil, 0); n != 0 || err != nil {
		t.Fatalf("Read with no buffers = %d, %v; want 0, nil", n, err)
	}
	if _, err := d.Write([][]byte{make([]byte, 4)}, 8); err == nil {
		t.Fatal("Write accepted an offset beyond the buffer")
	}
}

// waitParkedInWrite waits until a goroutine is parked in the netpoller under
// Device.Write (the peer's queue is full).
func waitParkedInWrite(t *testing.T) { t.Helper(); waitParkedIn(t, "Write") }

// smallSendBuffer shrinks fd's send buffer to the kernel's minimum, so that a
// few dozen unread packets fill it. (Linux applies max_dgram_qlen only
// between unconnected datagram sockets, not to a socketpair, so the buffer
// is what makes a writer wait.)
func smallSendBuffer(t *testing.T, fd int) {
	t.Helper()
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 1); err != nil {
		t.Fatalf("shrink SO_SNDBUF: %v", err)
	}
}

// When the host is slow, Write waits for room instead of failing or dropping,
// and every packet arrives once the host reads.
func TestWriteWaitsForRoom(t *testing.T) {
	devFd, peer := socketpair(t, unix.SOCK_DGRAM)
	smallSendBuffer(t, devFd) // the device's dup shares the socket
	d := newDevice(t, devFd, Options{})
	const count = 40 // several times what the minimum buffer holds
	done := make(chan error, 1)
	go func() {
		for i := range count {
			buf := append(make([]byte, engineOffset), ipv4Packet(200, byte(i))...)
			if _, err := d.Write([][]byte{buf}, engineOffset); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	waitParkedInWrite(t)
	for i := range count {
		checkPacket(t, fmt.Sprintf("frame %d", i), mustRecv(t, peer), utunFrame(2, ipv4Packet(200, byte(i))))
	}
	if err := <-done; err != nil {
		t.Fatalf("Write: %v", err)
	}
	if s := d.Stats(); s.PacketsOut != count || s.Dropped() != 0 {
		t.Fatalf("stats %v", s)
	}
}

func TestCloseUnblocksWrite(t *testing.T) {
	devFd, _ := socketpair(t, unix.SOCK_DGRAM)
	smallSendBuffer(t, devFd)
	d := newDevice(t, devFd, Options{})
	done := make(chan error, 1)
	go func() {
		buf := append(make([]byte, engineOffset), ipv4Packet(200, 1)...)
		for {
			if _, err := d.Write([][]byte{buf}, engineOffset); err != nil {
				done <- err
				return
			}
		}
	}()
	waitParkedInWrite(t)
	d.Close()
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrClosed) {
			t.Fatalf("blocked Write returned %v, want os.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Write still blocked 5s after Close")
	}
}
