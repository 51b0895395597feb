package main

import (
	"context"
	"errors"
	"net"
	"net/netip"
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
	name   string
	change func(ctx context.Context, t *testing.T, l *laptop, u uplink, lt *laptopTunnel) time.Time
	// after, if set, runs once the agent has answered a new connection.
	after func(ctx context.Context, t *testing.T, l *laptop, lt *laptopTunnel)
}

var laptopScenarios = []laptopScenario{
	{name: "uplink down 10s", change: func(_ context.Context, t *testing.T, l *laptop, u uplink, _ *laptopTunnel) time.Time {
		l.ip("link", "set", u.guest, "down")
		time.Sleep(outage) // the outage itself
		l.ip("link", "set", u.guest, "up")
		// Taking the link down deleted its routes; put the default back as
		// a laptop's network manager does when the link returns.
		l.ip("route", "replace", "default", "via", u.gw.String(), "dev", u.guest)
		return time.Now()
	}},
	{name: "address change", change: func(_ context.Context, t *testing.T, l *laptop, u uplink, _ *laptopTunnel) time.Time {
		nu := l.addUplink()
		l.ip("route", "replace", "default", "via", nu.gw.String(), "dev", nu.guest)
		ipRun(t, "link", "delete", u.host)
		return time.Now()
	}},
	{name: "direct UDP blocked", change: blockUDP, after: unblockUDP},
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
			wctx, wcancel := context.WithTimeout(ctx, time.Minute)
			answered, err := l.waitAgent(wctx, page)
			wcancel()
			if err != nil {
				t.Fatalf("after the change: %v\n%s", err, lt.logs())
			}
			t.Logf("path back → agent answering a new connection: %v", answered.Sub(back).Round(time.Millisecond))
			start := time.Now()
			if err := s.get(time.Now().Add(30 * time.Second)); err != nil {
				t.Fatalf("the connection opened before the change did not survive: %v\n%s", err, lt.logs())
			}
			t.Logf("the connection opened before the change answered again in %v", time.Since(start).Round(time.Millisecond))
			if sc.after != nil {
				sc.after(ctx, t, l, lt)
			}
			lt.stop(ctx, t)
		})
	}
}

// blockUDP makes the laptop refuse to send UDP (an ip rule, as a captive
// network or a strict firewall would), which takes the direct path away
// while DERP, over TCP, stays. It checks the rule does that, then waits
// for the tunnel to ping the agent over DERP.
func blockUDP(ctx context.Context, t *testing.T, l *laptop, u uplink, lt *laptopTunnel) time.Time {
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
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	at, err := lt.pings.wait(wctx, blocked, false)
	if err != nil {
		t.Fatalf("no ping of the agent over DERP after UDP was blocked: %v\n%s", err, lt.logs())
	}
	t.Logf("UDP blocked → first ping over DERP: %v", at.Sub(blocked).Round(time.Millisecond))
	return blocked
}

// unblockUDP removes the rule and waits for a ping that went direct.
func unblockUDP(ctx context.Context, t *testing.T, l *laptop, lt *laptopTunnel) {
	l.ip("rule", "del", "ipproto", "udp", "prohibit")
	back := time.Now()
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	at, err := lt.pings.wait(wctx, back, true)
	if err != nil {
		t.Fatalf("the path did not go direct again within a minute of UDP coming back: %v\n%s", err, lt.logs())
	}
	t.Logf("UDP back → first direct ping: %v (pings every %v)", at.Sub(back).Round(time.Millisecond), vpnlib.DefaultPingInterval)
}
