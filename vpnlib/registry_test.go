package vpnlib_test

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/codervpn/codervpn/internal/abi"
	"github.com/codervpn/codervpn/internal/fdtest"
	vpnpb "github.com/codervpn/codervpn/proto"
	"github.com/codervpn/codervpn/vpnlib/hosttest"
	"github.com/codervpn/codervpn/vpnlib/vpntest"
)

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
			var reg abi.Registry
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
			if rc := reg.Stop(handle); rc != abi.CodeUnknownHandle {
				t.Fatalf("second Stop(%d) = %d, want %d", handle, rc, abi.CodeUnknownHandle)
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
	var reg abi.Registry
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
