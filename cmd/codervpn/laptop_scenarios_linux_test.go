package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/codervpn/codervpn/vpnlib"
	"github.com/codervpn/codervpn/vpnlib/vpntest"
)

// outage is how long the laptop's uplink stays down in the link-down
// scenario.
const outage = 10 * time.Second

// laptopScenario changes the laptop's network under a running tunnel.
// change returns the moment the path to the agent is back (or, when the
// change takes a path away for good, the moment it took effect: the tunnel
// must answer over what is left).
type laptopScenario struct {
	name string
	// back names the moment change returns, in the logs.
	back   string
	change func(ctx context.Context, t *testing.T, l *laptop, u uplink, lt *laptopTunnel) time.Time
	// after, if set, runs once the agent has answered a new connection;
	// at is what change returned.
	after func(ctx context.Context, t *testing.T, l *laptop, u uplink, lt *laptopTunnel, agent *vpntest.Agent, at time.Time)
}

var laptopScenarios = []laptopScenario{
	{name: "uplink down 10s", back: "link up", change: func(_ context.Context, t *testing.T, l *laptop, u uplink, _ *laptopTunnel) time.Time {
		l.ip("link", "set", u.guest, "down")
		time.Sleep(outage) // the outage itself
		l.ip("link", "set", u.guest, "up")
		// Taking the link down deleted its routes; put the default back as
		// a laptop's network manager does when the link returns.
		l.ip("route", "replace", "default", "via", u.gw.String(), "dev", u.guest)
		return time.Now()
	}},
	{name: "address change", back: "new uplink", change: func(_ context.Context, t *testing.T, l *laptop, u uplink, _ *laptopTunnel) time.Time {
		nu := l.addUplink()
		l.ip("route", "replace", "default", "via", nu.gw.String(), "dev", nu.guest)
		ipRun(t, "link", "delete", u.host)
		return time.Now()
	}, after: newUplinkNoted},
	{name: "direct UDP blocked", back: "UDP blocked", change: blockUDP, after: unblockUDP},
}

// TestLaptopNetworkChange runs the tunnel process in a laptop namespace
// reaching the deployment over a veth, changes the laptop's network under
// it, and checks what a person would: an open TCP connection to the agent
// still works, and a new one succeeds. How long the agent took to answer
// once the path was back is logged, not asserted.
func TestLaptopNetworkChange(t *testing.T) {
	requireRoot(t)
	requireTools(t, "ip")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	server := newInternetAddr(t)
	d := vpntest.New(t, vpntest.Options{ListenAddr: netip.AddrPortFrom(server, 0).String()})
	agent, err := d.AddRunningAgent(ctx, "dev", "main")
	if err != nil {
		t.Fatal(err)
	}
	page := netip.AddrPortFrom(agent.Addr, agent.HTTPPort)
	for _, sc := range laptopScenarios {
		t.Run(sc.name, func(t *testing.T) {
			l, u := newLaptop(t)
			lt := startLaptopTunnel(ctx, t, l, d)
			s, err := l.openStream(ctx, page)
			if err != nil {
				t.Fatalf("%v\n%s", err, lt.logs())
			}
			defer s.Close()
			if err := s.get(time.Now().Add(10 * time.Second)); err != nil {
				t.Fatalf("before the change: %v", err)
			}
			back := sc.change(ctx, t, l, u, lt)
			// The open connection and new ones, at the same time: neither
			// waits for the other to have repaired the path.
			kept := make(chan error, 1)
			var keptAt time.Time
			go func() {
				err := s.get(time.Now().Add(30 * time.Second))
				keptAt = time.Now()
				kept <- err
			}()
			wctx, wcancel := context.WithTimeout(ctx, time.Minute)
			answered, err := l.waitAgent(wctx, page)
			wcancel()
			if err != nil {
				t.Errorf("after the change: %v\n%s", err, lt.logs())
			} else {
				t.Logf("%s → agent answering a new connection: %v", sc.back, answered.Sub(back).Round(time.Millisecond))
			}
			if err := <-kept; err != nil {
				t.Fatalf("the connection opened before the change did not survive: %v\n%s", err, lt.logs())
			}
			t.Logf("%s → the connection opened before the change answering: %v", sc.back, keptAt.Sub(back).Round(time.Millisecond))
			if alarms := lt.warningsWith("another VPN"); len(alarms) > 0 {
				t.Errorf("%s: the tunnel warned that another VPN took its route: %v", sc.name, alarms)
			}
			if t.Failed() {
				return
			}
			if sc.after != nil {
				sc.after(ctx, t, l, u, lt, agent, back)
			}
			lt.stop(ctx, t)
		})
	}
}

// newUplinkNoted checks that the tunnel noted the move of the
// deployment's route to the new uplink as news (info), not as another VPN
// (the loop's check: no such warning).
func newUplinkNoted(ctx context.Context, t *testing.T, l *laptop, _ uplink, lt *laptopTunnel, _ *vpntest.Agent, switched time.Time) {
	nu := fmt.Sprintf("%sl%d", l.stem, l.n-1)
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	tick := time.NewTicker(attemptEvery)
	defer tick.Stop()
	for {
		if noted := lt.linesWith("moved to another network device: "+nu, "info"); len(noted) > 0 {
			t.Logf("new uplink → the tunnel noted the route's move: %v\n%s", noted[0].at.Sub(switched).Round(time.Millisecond), noted[0].text)
			return
		}
		select {
		case <-wctx.Done():
			t.Fatalf("the tunnel never noted that the route to the deployment moved to %s\n%s", nu, lt.logs())
		case <-tick.C:
		}
	}
}

// blockUDP makes the laptop refuse to send UDP (an ip rule, as a strict
// firewall would), which takes the direct path away while DERP, over TCP,
// stays. It checks that the rule does that.
func blockUDP(_ context.Context, t *testing.T, l *laptop, u uplink, _ *laptopTunnel) time.Time {
	l.ip("rule", "add", "ipproto", "udp", "prohibit")
	blocked := time.Now()
	var werr error
	if err := l.do(func() {
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(u.gw, 9)))
		if err != nil {
			werr = err
			return
		}
		defer c.Close()
		_, werr = c.Write([]byte("x"))
	}); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(werr, syscall.EACCES) {
		t.Fatalf("with the rule a UDP send from the laptop gave %v, want EACCES: the rule does not block UDP", werr)
	}
	return blocked
}

// unblockUDP checks that the tunnel pinged the agent over DERP while UDP
// was blocked, removes the rule, and waits for the path to go direct
// again: as the agent sees it (its current address for the laptop, polled)
// and as the tunnel reports it (a ping with did_p2p, one per ping
// interval).
func unblockUDP(ctx context.Context, t *testing.T, l *laptop, u uplink, lt *laptopTunnel, agent *vpntest.Agent, blocked time.Time) {
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	at, err := lt.pings.wait(wctx, blocked, false)
	if err != nil {
		t.Fatalf("no ping of the agent over DERP after UDP was blocked: %v\n%s", err, lt.logs())
	}
	t.Logf("UDP blocked → first ping over DERP: %v", at.Sub(blocked).Round(time.Millisecond))
	if agentDirectTo(agent, u.addr) {
		t.Fatalf("the agent still has a direct path to %v with UDP blocked", u.addr)
	}
	l.ip("rule", "del", "ipproto", "udp", "prohibit")
	back := time.Now()
	tick := time.NewTicker(attemptEvery)
	defer tick.Stop()
	for !agentDirectTo(agent, u.addr) {
		select {
		case <-wctx.Done():
			t.Fatalf("the agent had no direct path to the laptop within a minute of UDP coming back\n%s", lt.logs())
		case <-tick.C:
		}
	}
	t.Logf("UDP back → the agent's path to the laptop direct: %v", time.Since(back).Round(time.Millisecond))
	at, err = lt.pings.wait(wctx, back, true)
	if err != nil {
		t.Fatalf("the tunnel's pings did not go direct again within a minute of UDP coming back: %v\n%s", err, lt.logs())
	}
	t.Logf("UDP back → the tunnel's first direct ping: %v (it pings every %v)", at.Sub(back).Round(time.Millisecond), vpnlib.DefaultPingInterval)
}

// agentDirectTo says whether the agent's engine currently sends to a peer
// directly at addr.
func agentDirectTo(agent *vpntest.Agent, addr netip.Addr) bool {
	for _, p := range agent.Conn().Status().Peer {
		if ap, err := netip.ParseAddrPort(p.CurAddr); err == nil && ap.Addr() == addr {
			return true
		}
	}
	return false
}

// secondVPNs are the ways another VPN takes the laptop's traffic: the
// default route replaced (a full-tunnel WireGuard), or OpenVPN's two
// halves (def1), which leave the default route alone and win on length.
var secondVPNs = []struct {
	name string
	take func(l *laptop, dev string)
}{
	{name: "default route", take: func(l *laptop, dev string) { l.ip("route", "replace", "default", "dev", dev) }},
	{name: "OpenVPN halves", take: func(l *laptop, dev string) {
		l.ip("route", "add", "0.0.0.0/1", "dev", dev)
		l.ip("route", "add", "128.0.0.0/1", "dev", dev)
	}},
}

// TestLaptopSecondVPN: after Start, another VPN's TUN in the laptop (up,
// nobody reading it, so what is routed there vanishes) takes the route to
// the deployment. The tunnel must say so at once, naming the other VPN's
// device and the route it had, without waiting for its control connection
// to fail; the delay from the route change is logged.
func TestLaptopSecondVPN(t *testing.T) {
	requireRoot(t)
	requireTools(t, "ip")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	server := newInternetAddr(t)
	d := vpntest.New(t, vpntest.Options{ListenAddr: netip.AddrPortFrom(server, 0).String()})
	if _, err := d.AddRunningAgent(ctx, "dev", "main"); err != nil {
		t.Fatal(err)
	}
	for _, vpn := range secondVPNs {
		t.Run(vpn.name, func(t *testing.T) {
			l, u := newLaptop(t)
			lt := startLaptopTunnel(ctx, t, l, d)
			other := l.otherVPN()
			vpn.take(l, other)
			taken := time.Now()

			wctx, wcancel := context.WithTimeout(ctx, time.Minute)
			defer wcancel()
			tick := time.NewTicker(attemptEvery)
			defer tick.Stop()
			var warned []loggedLine
			for warned = lt.warningsWith(other); len(warned) == 0; warned = lt.warningsWith(other) {
				select {
				case <-wctx.Done():
					t.Fatalf("within a minute of %s taking the route to the deployment the tunnel did not warn naming it\n%s", other, lt.logs())
				case <-tick.C:
				}
			}
			w := warned[0]
			// The warning of the route watch, not of a failed redial (whose
			// text is "... cannot be reached that way").
			if !strings.Contains(w.text, "another VPN or route took") || !strings.Contains(w.text, u.guest) {
				t.Fatalf("the first warning naming %s is not the route watch's naming both devices (%s before): %s", other, u.guest, w.text)
			}
			t.Logf("%s took the route to the deployment → the tunnel's warning: %v\n%s", other, w.at.Sub(taken).Round(time.Millisecond), w.text)
			if len(warned) > 1 {
				t.Errorf("more than one warning about the change:\n%v", warned)
			}
			lt.stop(ctx, t)
		})
	}
}
