package vpnlib_test

import (
	"context"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/codervpn/codervpn/internal/fdtest"
	vpnpb "github.com/codervpn/codervpn/proto"
	"github.com/codervpn/codervpn/vpnlib"
	"github.com/codervpn/codervpn/vpnlib/hosttest"
	"github.com/codervpn/codervpn/vpnlib/vpntest"
)

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
	checkNoLeaks(t)
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
		{"negative read fd", tun, -1, wr, vpnlib.CodeBadReadFD},
		{"closed read fd", tun, closedFD, wr, vpnlib.CodeBadReadFD},
		{"read fd open for writing only", tun, wr, wr, vpnlib.CodeBadReadFD},
		{"negative write fd", tun, rd, -3, vpnlib.CodeBadWriteFD},
		{"closed write fd", tun, rd, closedFD, vpnlib.CodeBadWriteFD},
		{"write fd open for reading only", tun, rd, rd, vpnlib.CodeBadWriteFD},
		{"tun fd -2", -2, rd, wr, vpnlib.CodeBadTunFD},
		{"closed tun fd", closedFD, rd, wr, vpnlib.CodeBadTunFD},
		{"read-only tun fd", rd, rd, wr, vpnlib.CodeBadTunFD},
		{"absurd tun fd", 1 << 30, rd, wr, vpnlib.CodeBadTunFD},
	}
	var reg vpnlib.Registry
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
		if got := reg.Stop(h); got != vpnlib.CodeUnknownHandle {
			t.Errorf("Stop(%d) = %d, want %d", h, got, vpnlib.CodeUnknownHandle)
		}
	}
}

// Tunnels that never hear from a manager still count; the ninth is refused,
// and stopping them all (each mid-handshake) releases everything.
func TestRegistryLimit(t *testing.T) {
	checkNoLeaks(t)
	var reg vpnlib.Registry
	var handles []int32
	for range vpnlib.MaxTunnels {
		r, _ := pipe(t)
		_, w := pipe(t)
		h := reg.Start(-1, int(r.Fd()), int(w.Fd()))
		if h < 0 {
			t.Fatalf("Start = %d", h)
		}
		handles = append(handles, h)
	}
	r, w := pipe(t)
	if got := reg.Start(-1, int(r.Fd()), int(w.Fd())); got != vpnlib.CodeTooManyTunnels {
		t.Fatalf("Start beyond the limit = %d, want %d", got, vpnlib.CodeTooManyTunnels)
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
		case vpnlib.CodeUnknownHandle:
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

// The registry path end to end, the way the C ABI uses it: the caller's fds
// are closed right after Start, the tunnel works on the registry's copies,
// and Stop leaves no fd or goroutine behind. Once with the tun fd given to
// Start, once with -1 and the fd in the StartRequest.
func TestRegistryTunnel(t *testing.T) {
	for _, fromRequest := range []bool{false, true} {
		name := "tun fd from Start"
		if fromRequest {
			name = "tun fd from StartRequest"
		}
		t.Run(name, func(t *testing.T) {
			checkNoLeaks(t)
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			d := vpntest.New(t, vpntest.Options{})
			agent, err := d.AddRunningAgent(ctx, "dev", "main")
			if err != nil {
				t.Fatal(err)
			}
			h := hosttest.New(t, hosttest.Options{SendTunFD: fromRequest})
			tunFD, rd, wr := h.TunnelFDs()
			// What the tunnel's end of the utun socketpair looks like in
			// /proc, to count the copies of it that stay open.
			tunTarget := fdtest.Take(t)[tunFD]
			hostCopies := 0
			if fromRequest {
				tunFD = -1
				hostCopies = 1 // the fd named in the request stays the host's
			}
			var reg vpnlib.Registry
			handle := reg.Start(tunFD, rd, wr)
			if handle < 0 {
				t.Fatalf("Start = %d", handle)
			}
			if !fromRequest {
				h.CloseTunnelEnds() // the caller may close its fds at once
			} else {
				// The request names the host's fd: keep the tun end, close
				// only the pipe ends the registry copied.
				_, read, write := h.TunnelFiles()
				read.Close()
				write.Close()
			}
			if err := h.Connect(ctx); err != nil {
				t.Fatal(err)
			}
			resp, err := h.Start(ctx, &vpnpb.StartRequest{CoderUrl: d.URL.String(), ApiToken: d.Token})
			if err != nil || !resp.Success {
				t.Fatalf("Start: %v %v", resp, err)
			}
			if _, err := h.WaitPeerUpdate(ctx, func(s *hosttest.PeerState) bool { return s.Agent("dev", "main") != nil }); err != nil {
				t.Fatal(err)
			}
			body := httpGet(ctx, t, h, netip.AddrPortFrom(agent.Addr, agent.HTTPPort))
			if !strings.Contains(body, "hello from agent main") {
				t.Fatalf("agent answered %q", body)
			}
			if resp, err := h.Stop(ctx); err != nil || !resp.Success {
				t.Fatalf("Stop: %v %v", resp, err)
			}
			select {
			case <-h.Done(): // EOF: the registry's copy of the write end is closed
			case <-ctx.Done():
				t.Fatal("no EOF after StopResponse")
			}
			// The session is over: the registry's tun duplicate goes without
			// waiting for Stop (the host's utun can disappear).
			waitFDCopies(t, tunTarget, hostCopies)
			if rc := reg.Stop(handle); rc != 0 {
				t.Fatalf("Stop(%d) = %d", handle, rc)
			}
			if rc := reg.Stop(handle); rc != vpnlib.CodeUnknownHandle {
				t.Fatalf("second Stop(%d) = %d, want %d", handle, rc, vpnlib.CodeUnknownHandle)
			}
		})
	}
}

// waitFDCopies waits until exactly want fds of this process point at target
// (a "socket:[inode]" from /proc), and fails the test if they never do.
func waitFDCopies(t *testing.T, target string, want int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := 0
		for _, tg := range fdtest.Take(t) {
			if tg == target {
				n++
			}
		}
		if n == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d fds still point at %s, want %d", n, target, want)
		}
		time.Sleep(20 * time.Millisecond) // polling /proc: there is nothing to wait on
	}
}

// Stop without any StopRequest (the NetworkExtension torn down by the
// system): the running engine goes, and the manager reads EOF.
func TestRegistryStopWhileRunning(t *testing.T) {
	checkNoLeaks(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	d := vpntest.New(t, vpntest.Options{})
	h := hosttest.New(t, hosttest.Options{})
	var reg vpnlib.Registry
	handle := reg.Start(h.TunnelFDs())
	if handle < 0 {
		t.Fatalf("Start = %d", handle)
	}
	h.CloseTunnelEnds()
	if err := h.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	if resp, err := h.Start(ctx, &vpnpb.StartRequest{CoderUrl: d.URL.String(), ApiToken: d.Token}); err != nil || !resp.Success {
		t.Fatalf("Start: %v %v", resp, err)
	}
	start := time.Now()
	if rc := reg.Stop(handle); rc != 0 {
		t.Fatalf("Stop = %d", rc)
	}
	t.Logf("Stop of a running tunnel took %s", time.Since(start))
	select {
	case <-h.Done():
	case <-ctx.Done():
		t.Fatal("the manager saw no EOF after Stop")
	}
}
