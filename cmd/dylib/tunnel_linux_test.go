package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/codervpn/codervpn/internal/dlhost"
	vpnpb "github.com/codervpn/codervpn/proto"
	"github.com/codervpn/codervpn/vpnlib/hosttest"
	"github.com/codervpn/codervpn/vpnlib/vpntest"
)

const testTimeout = 2 * time.Minute

// world is a deployment with one workspace and one agent.
type world struct {
	d     *vpntest.Deployment
	agent *vpntest.Agent
}

func newWorld(ctx context.Context, t *testing.T) world {
	t.Helper()
	d := vpntest.New(t, vpntest.Options{})
	agent, err := d.AddRunningAgent(ctx, "dev", "main")
	if err != nil {
		t.Fatal(err)
	}
	return world{d: d, agent: agent}
}

// session is a manager (a hosttest.Host: the protocol and a userspace IP
// stack on the utun socketpair) driving one tunnel in the C host.
type session struct {
	h      *hosttest.Host
	handle int32
}

// open starts a tunnel in the C host on the Host's fds, then handshakes
// and starts it against w's deployment, as the NetworkExtension does.
func open(ctx context.Context, t *testing.T, host *dlHost, w world) session {
	t.Helper()
	h := hosttest.New(t, hosttest.Options{})
	tun, rd, wr := h.TunnelFiles()
	handle := host.start(tun, rd, wr)
	if handle < 0 {
		t.Fatalf("coderStartVPN = %d", handle)
	}
	h.CloseTunnelEnds()
	if err := h.Connect(ctx); err != nil {
		t.Fatalf("handshake with the library: %v", err)
	}
	resp, err := h.Start(ctx, &vpnpb.StartRequest{CoderUrl: w.d.URL.String(), ApiToken: w.d.Token})
	if err != nil || !resp.GetSuccess() {
		t.Fatalf("StartRequest: %v %v", resp, err)
	}
	if _, err := h.WaitPeerUpdate(ctx, func(s *hosttest.PeerState) bool { return s.Agent("dev", "main") != nil }); err != nil {
		t.Fatal(err)
	}
	return session{h: h, handle: handle}
}

// get fetches the agent's page through the tunnel.
func (s session) get(ctx context.Context, t *testing.T, w world) {
	t.Helper()
	body, err := s.h.HTTPGet(ctx, netip.AddrPortFrom(w.agent.Addr, w.agent.HTTPPort), "/")
	if err != nil || !strings.Contains(body, "hello from agent main") {
		t.Fatalf("agent answered %q (%v)", body, err)
	}
}

// close stops the tunnel the way the NetworkExtension's stopTunnel does:
// StopRequest, StopResponse, EOF, then coderStopVPN.
func (s session) close(ctx context.Context, t *testing.T, host *dlHost) {
	t.Helper()
	resp, err := s.h.Stop(ctx)
	if err != nil || !resp.GetSuccess() {
		t.Fatalf("StopRequest: %v %v", resp, err)
	}
	select {
	case <-s.h.Done():
	case <-ctx.Done():
		t.Fatal("the manager read no EOF after StopResponse")
	}
	if rc := host.stop(s.handle); rc != 0 {
		t.Fatalf("coderStopVPN(%d) = %d", s.handle, rc)
	}
	if rc := host.stop(s.handle); rc != -6 {
		t.Fatalf("second coderStopVPN(%d) = %d, want -6", s.handle, rc)
	}
	s.h.Close()
}

// cycles is how many start → traffic → stop rounds TestCycles runs in one
// host process; CODERVPN_ABI_CYCLES overrides it.
func cycles(t *testing.T) int {
	if v := os.Getenv("CODERVPN_ABI_CYCLES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 2 {
			t.Fatalf("CODERVPN_ABI_CYCLES=%q: want an integer >= 2", v)
		}
		return n
	}
	return 100
}

// One C host process, many tunnels one after another, each carrying
// traffic: every cycle works, the host's fd count comes back to what it was
// after the first cycle, and its memory levels off.
func TestCycles(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	w := newWorld(ctx, t)
	host := startDLHost(t)
	before := host.stats()
	n := cycles(t)
	var first, tenth dlhost.Stats
	began := time.Now()
	for i := 1; i <= n; i++ {
		s := open(ctx, t, host, w)
		s.get(ctx, t, w)
		s.close(ctx, t, host)
		switch i {
		case 1:
			first = host.stats()
		case 10:
			tenth = host.stats()
		}
		if i > 1 {
			host.waitFDs(first.FDs, fmt.Sprintf("after cycle %d", i))
		}
	}
	last := host.stats()
	t.Logf("%d cycles in %s (%.0f ms each)", n, time.Since(began).Round(time.Millisecond),
		float64(time.Since(began).Milliseconds())/float64(n))
	t.Logf("C host before: %d fds, RSS %d KiB", before.FDs, before.RSSKB)
	t.Logf("after cycle 1: %d fds, RSS %d KiB", first.FDs, first.RSSKB)
	t.Logf("after cycle 10: %d fds, RSS %d KiB", tenth.FDs, tenth.RSSKB)
	t.Logf("after cycle %d: %d fds, RSS %d KiB (anonymous %d KiB), peak RSS %d KiB", n, last.FDs, last.RSSKB, last.AnonKB, last.HWMKB)
	// Bounded growth: what cycles 11..n add must be small next to what the
	// first ten cost; a leak of even one tunnel's engine per cycle would
	// add megabytes each time.
	if grow := last.RSSKB - tenth.RSSKB; grow > 16*1024 {
		t.Fatalf("RSS grew by %d KiB over cycles 11..%d", grow, n)
	}
}

// Two tunnels at once in one process are independent: both carry traffic,
// and stopping one leaves the other working.
func TestTwoTunnels(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	w := newWorld(ctx, t)
	host := startDLHost(t)
	a := open(ctx, t, host, w)
	b := open(ctx, t, host, w)
	if a.handle == b.handle {
		t.Fatalf("both tunnels got handle %d", a.handle)
	}
	a.get(ctx, t, w)
	b.get(ctx, t, w)
	a.close(ctx, t, host)
	b.get(ctx, t, w)
	b.close(ctx, t, host)
}

// The host dies without a word (its pipe ends closed): the tunnel ends on
// its own, and coderStopVPN still returns 0 and releases everything.
func TestManagerHangUp(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	w := newWorld(ctx, t)
	host := startDLHost(t)
	base := host.warm()
	s := open(ctx, t, host, w)
	s.get(ctx, t, w)
	s.h.HangUp()
	// The library drops every fd of the session by itself, stop or no stop.
	host.waitFDs(base, "after the manager hung up")
	if rc := host.stop(s.handle); rc != 0 {
		t.Fatalf("coderStopVPN after hang-up = %d", rc)
	}
	host.waitFDs(base, "after coderStopVPN")
}
