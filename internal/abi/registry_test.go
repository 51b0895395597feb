package abi

import (
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

// TestMain fails the package if a goroutine outlives the tests: every
// tunnel a Registry started must be gone once it is stopped.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// checkNoFDLeak fails the test if, once its cleanups ran, more fds are open
// than when it began. A stopped tunnel's fds are closed by the time Stop
// returns; the wait only covers a pipe read that is still returning.
func checkNoFDLeak(t *testing.T) {
	t.Helper()
	count := func() int {
		entries, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Skipf("cannot count fds without /proc: %v", err)
		}
		return len(entries)
	}
	before := count()
	t.Cleanup(func() {
		for deadline := time.Now().Add(10 * time.Second); count() > before; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Errorf("%d fds open after the test, %d before", count(), before)
				return
			}
		}
	})
}

// pipe returns both ends of a new pipe, closed at cleanup.
func pipe(t *testing.T) (r, w *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	return r, w
}

func TestRegistryRejectsBadFDs(t *testing.T) {
	checkNoFDLeak(t)
	r, w := pipe(t)
	sock, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(sock[0]); unix.Close(sock[1]) })
	closed, _ := pipe(t)
	closedFD := int(closed.Fd()) // nothing opens an fd after this, so it stays free
	closed.Close()
	rd, wr, tun := int(r.Fd()), int(w.Fd()), sock[0]

	cases := []struct {
		name           string
		tun, read, wrt int
		want           int32
	}{
		{"negative read fd", tun, -1, wr, CodeBadReadFD},
		{"closed read fd", tun, closedFD, wr, CodeBadReadFD},
		{"read fd open for writing only", tun, wr, wr, CodeBadReadFD},
		{"negative write fd", tun, rd, -3, CodeBadWriteFD},
		{"closed write fd", tun, rd, closedFD, CodeBadWriteFD},
		{"write fd open for reading only", tun, rd, rd, CodeBadWriteFD},
		{"tun fd -2", -2, rd, wr, CodeBadTunFD},
		{"closed tun fd", closedFD, rd, wr, CodeBadTunFD},
		{"read-only tun fd", rd, rd, wr, CodeBadTunFD},
		{"absurd tun fd", 1 << 30, rd, wr, CodeBadTunFD},
	}
	var reg Registry
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := reg.Start(tc.tun, tc.read, tc.wrt); got != tc.want {
				t.Fatalf("Start(%d, %d, %d) = %d, want %d", tc.tun, tc.read, tc.wrt, got, tc.want)
			}
		})
	}
	if n := reg.Len(); n != 0 {
		t.Fatalf("%d tunnels registered after only bad starts", n)
	}
	for _, h := range []int32{-1, 0, 1, 1 << 30} {
		if got := reg.Stop(h); got != CodeUnknownHandle {
			t.Errorf("Stop(%d) = %d, want %d", h, got, CodeUnknownHandle)
		}
	}
}

// Tunnels that never hear from a manager still count; the ninth is refused,
// and stopping them all (each mid-handshake) releases everything.
func TestRegistryLimit(t *testing.T) {
	checkNoFDLeak(t)
	var reg Registry
	var handles []int32
	for range MaxTunnels {
		r, _ := pipe(t)
		_, w := pipe(t)
		h := reg.Start(-1, int(r.Fd()), int(w.Fd()))
		if h < 0 {
			t.Fatalf("Start = %d", h)
		}
		handles = append(handles, h)
	}
	r, w := pipe(t)
	if got := reg.Start(-1, int(r.Fd()), int(w.Fd())); got != CodeTooManyTunnels {
		t.Fatalf("Start beyond the limit = %d, want %d", got, CodeTooManyTunnels)
	}
	// Concurrent stops of the same handle: exactly one wins.
	var wg sync.WaitGroup
	results := make(chan int32, 2*len(handles))
	for _, h := range handles {
		for range 2 {
			wg.Go(func() { results <- reg.Stop(h) })
		}
	}
	wg.Wait()
	close(results)
	var ok, unknown int
	for rc := range results {
		switch rc {
		case 0:
			ok++
		case CodeUnknownHandle:
			unknown++
		default:
			t.Errorf("Stop returned %d", rc)
		}
	}
	if ok != len(handles) || unknown != len(handles) {
		t.Fatalf("%d stops succeeded and %d were unknown, want %d each", ok, unknown, len(handles))
	}
	if h := reg.Start(-1, int(r.Fd()), int(w.Fd())); h < 0 {
		t.Fatalf("Start after stopping everything = %d", h)
	} else if rc := reg.Stop(h); rc != 0 {
		t.Fatalf("Stop = %d", rc)
	}
}
