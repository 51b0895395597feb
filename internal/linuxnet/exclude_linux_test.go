package linuxnet

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/codervpn/codervpn/internal/fdtest"
	vpnpb "github.com/codervpn/codervpn/proto"
)

const (
	exclUnderlay = "cvh-ul0"
	exclTUN      = "cvh-tun0"
	// The deployment's addresses that the test puts inside the tunnel's
	// routes, and addresses of agents that must stay in the tunnel.
	deployA  = "fd60:627a:a42b:ffff::1"
	deployB  = "fd60:627a:a42b:eeee::1"
	deploy4  = "100.64.5.5"
	agent6   = "fd60:627a:a42b:1::5"
	agent4   = "100.64.0.7"
	outside6 = "2001:db8:5::1"
)

// underlayNetns is a namespace whose "underlay" is a veth pair (cvh-ul0 and
// its peer, both up) with 2001:db8:1::1/64 and 192.0.2.1/24, and, when
// defaults is set, default routes via 2001:db8:1::fe and 192.0.2.254 on it.
// The TUN cvh-tun0 lives there too.
func underlayNetns(t *testing.T, defaults bool) (*netlink.Handle, func()) {
	t.Helper()
	ns, nl := newNetns(t)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: exclUnderlay}, PeerName: "cvh-ul1"}
	if err := nl.LinkAdd(veth); err != nil {
		t.Fatalf("add veth: %v", err)
	}
	for _, name := range []string{exclUnderlay, "cvh-ul1"} {
		l, err := nl.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := nl.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	ul, err := nl.LinkByName(exclUnderlay)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"2001:db8:1::1/64", "192.0.2.1/24"} {
		if err := nl.AddrAdd(ul, addrOf(netip.MustParsePrefix(a))); err != nil {
			t.Fatalf("address %s: %v", a, err)
		}
	}
	if defaults {
		for _, gw := range []string{"2001:db8:1::fe", "192.0.2.254"} {
			r := &netlink.Route{LinkIndex: ul.Attrs().Index, Gw: net.ParseIP(gw)}
			if err := nl.RouteAdd(r); err != nil {
				t.Fatalf("default route via %s: %v", gw, err)
			}
		}
	}
	tun, err := CreateTUNIn(ns, exclTUN)
	if err != nil {
		t.Fatal(err)
	}
	return nl, func() { tun.Close() }
}

// routeVia is the device the kernel sends dst through, and its gateway.
func routeVia(t *testing.T, nl *netlink.Handle, dst string) string {
	t.Helper()
	rs, err := nl.RouteGet(net.ParseIP(dst))
	if err != nil {
		return "unreachable (" + err.Error() + ")"
	}
	l, err := nl.LinkByIndex(rs[0].LinkIndex)
	if err != nil {
		t.Fatal(err)
	}
	if rs[0].Gw != nil {
		return l.Attrs().Name + " via " + rs[0].Gw.String()
	}
	return l.Attrs().Name
}

// underlayHostRoutes lists the /128 and /32 routes on the underlay in table
// main: the pins.
func underlayHostRoutes(t *testing.T, nl *netlink.Handle) []string {
	t.Helper()
	l, err := nl.LinkByName(exclUnderlay)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := nl.RouteList(l, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range rs {
		if r.Dst == nil || r.Table != unix.RT_TABLE_MAIN {
			continue
		}
		if ones, bits := r.Dst.Mask.Size(); ones == bits {
			out = append(out, r.Dst.String())
		}
	}
	return out
}

// exclusionRequest is the tunnel's interface settings (the /48 and an IPv4
// /10, as a tunnel with IPv4 would send) with the given excluded routes.
func exclusionRequest(excluded ...string) *vpnpb.NetworkSettingsRequest {
	req := tunnelRouterRequest("fd60:627a:a42b:1::2")
	req.Ipv4Settings = &vpnpb.NetworkSettingsRequest_IPv4Settings{
		Addrs: []string{"100.64.0.9"}, SubnetMasks: []string{"255.255.255.255"},
		IncludedRoutes: []*vpnpb.NetworkSettingsRequest_IPv4Settings_IPv4Route{{Destination: "100.64.0.0", Mask: "255.192.0.0"}},
	}
	for _, e := range excluded {
		p := netip.MustParsePrefix(e)
		if p.Addr().Is4() {
			req.Ipv4Settings.ExcludedRoutes = append(req.Ipv4Settings.ExcludedRoutes,
				&vpnpb.NetworkSettingsRequest_IPv4Settings_IPv4Route{Destination: p.Addr().String(), Mask: net.IP(net.CIDRMask(p.Bits(), 32)).String()})
			continue
		}
		req.Ipv6Settings.ExcludedRoutes = append(req.Ipv6Settings.ExcludedRoutes,
			&vpnpb.NetworkSettingsRequest_IPv6Settings_IPv6Route{Destination: p.Addr().String(), PrefixLength: uint32(p.Bits())})
	}
	return req
}

// The deployment's address inside the tunnel's route keeps leaving through
// the underlay it used before the tunnel, while agents go into the TUN; a
// request with other exclusions moves the pins, and Close leaves nothing.
func TestExcludedRoutesKeepTheUnderlay(t *testing.T) {
	requireRoot(t)
	fds := fdtest.Take(t)
	t.Cleanup(func() { fds.Check(t, kernelFDs, "the test") })
	nl, closeTUN := underlayNetns(t, true)
	defer closeTUN()
	const ul6, ul4 = exclUnderlay + " via 2001:db8:1::fe", exclUnderlay + " via 192.0.2.254"

	c, err := New(Config{Link: exclTUN, Netlink: nl})
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name  string
		req   *vpnpb.NetworkSettingsRequest
		route map[string]string // destination → what the kernel does with it
		pins  int
	}{
		{
			name: "excluded addresses inside the /48 and the /10 stay on the underlay",
			req:  exclusionRequest(deployA+"/128", deploy4+"/32"),
			route: map[string]string{deployA: ul6, deploy4: ul4, deployB: exclTUN,
				agent6: exclTUN, agent4: exclTUN, outside6: ul6},
			pins: 2,
		},
		{
			// deployB is new while our /48 is installed: the kernel's own
			// choice is the TUN, so the main table is searched without it.
			name:  "a changed exclusion replaces the old one",
			req:   exclusionRequest(deployB + "/128"),
			route: map[string]string{deployA: exclTUN, deployB: ul6, deploy4: exclTUN, agent6: exclTUN},
			pins:  1,
		},
		{
			name:  "no exclusions remove every pin",
			req:   exclusionRequest(),
			route: map[string]string{deployA: exclTUN, deployB: exclTUN, deploy4: exclTUN},
			pins:  0,
		},
		{
			name:  "an exclusion outside every included route needs no route",
			req:   exclusionRequest(outside6+"/128", "192.168.0.0/16"),
			route: map[string]string{outside6: ul6, deployA: exclTUN},
			pins:  0,
		},
		{
			name:  "exclusions back again",
			req:   exclusionRequest(deployA+"/128", deploy4+"/32"),
			route: map[string]string{deployA: ul6, deploy4: ul4, agent6: exclTUN},
			pins:  2,
		},
	}
	for _, s := range steps {
		if err := c.Apply(context.Background(), s.req); err != nil {
			t.Fatalf("%s: apply: %v", s.name, err)
		}
		for dst, want := range s.route {
			if got := routeVia(t, nl, dst); got != want {
				t.Errorf("%s: %s goes through %s, want %s", s.name, dst, got, want)
			}
		}
		if got := underlayHostRoutes(t, nl); len(got) != s.pins {
			t.Errorf("%s: host routes on the underlay %v, want %d", s.name, got, s.pins)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if got := underlayHostRoutes(t, nl); len(got) != 0 {
		t.Errorf("after close the underlay still has host routes %v", got)
	}
	for _, dst := range []string{deployA, agent6} {
		if got := routeVia(t, nl, dst); got != ul6 {
			t.Errorf("after close %s goes through %s, want the default route %s", dst, got, ul6)
		}
	}
}

// An excluded address with no route but the tunnel's is refused with a
// message naming it, and our routes do not go in on top of it.
func TestExcludedRouteWithoutUnderlay(t *testing.T) {
	requireRoot(t)
	tests := []struct {
		name string
		// first is applied (and must succeed) before the request under test.
		first *vpnpb.NetworkSettingsRequest
		want  string
		// elsewhere: the tunnel's process is in another namespace, so the
		// problem is a notice and the settings are applied.
		elsewhere bool
	}{
		{name: "no route at all", want: "network is unreachable"},
		{name: "exclusion added while our routes are the only ones", first: exclusionRequest(), want: "the only route is through " + exclTUN},
		{name: "tunnel in another namespace", want: "network is unreachable", elsewhere: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			nl, closeTUN := underlayNetns(t, false)
			defer closeTUN()
			var notes []string
			c, err := New(Config{Link: exclTUN, Netlink: nl, TunnelElsewhere: tc.elsewhere,
				Notify: func(m string) { notes = append(notes, m) }})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if tc.first != nil {
				if err := c.Apply(context.Background(), tc.first); err != nil {
					t.Fatal(err)
				}
			}
			err = c.Apply(context.Background(), exclusionRequest(deployA+"/128"))
			msg := strings.Join(notes, "\n")
			switch {
			case tc.elsewhere && err != nil:
				t.Fatalf("apply: %v; want the settings applied and a notice", err)
			case tc.elsewhere:
				if got := readKernel(t, nl, exclTUN).routes; len(got) == 0 {
					t.Error("the tunnel's routes were not installed")
				}
			case err == nil:
				t.Fatalf("apply succeeded; %s goes through %s", deployA, routeVia(t, nl, deployA))
			default:
				msg = err.Error()
			}
			if testing.Verbose() {
				t.Log(msg)
			}
			for _, w := range []string{deployA + "/128", "no route outside " + exclTUN, tc.want, "ip route add"} {
				if !strings.Contains(msg, w) {
					t.Errorf("message %q does not contain %q", msg, w)
				}
			}
			if tc.first == nil && !tc.elsewhere {
				if got := readKernel(t, nl, exclTUN).routes; len(got) != 0 {
					t.Errorf("routes %v installed although the exclusion could not be kept out of them", got)
				}
			}
		})
	}
}

// A route the user already has for exactly the excluded address keeps it out
// of the tunnel; it is not ours, so Close leaves it.
func TestExcludedRouteUsersOwnRouteSurvives(t *testing.T) {
	requireRoot(t)
	nl, closeTUN := underlayNetns(t, true)
	defer closeTUN()
	ul, err := nl.LinkByName(exclUnderlay)
	if err != nil {
		t.Fatal(err)
	}
	own := &netlink.Route{LinkIndex: ul.Attrs().Index, Dst: prefixNet(netip.MustParsePrefix(deployA + "/128")), Gw: net.ParseIP("2001:db8:1::fd")}
	if err := nl.RouteAdd(own); err != nil {
		t.Fatal(err)
	}
	c, err := New(Config{Link: exclTUN, Netlink: nl})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Apply(context.Background(), exclusionRequest(deployA+"/128")); err != nil {
		t.Fatal(err)
	}
	const users = exclUnderlay + " via 2001:db8:1::fd"
	if got := routeVia(t, nl, deployA); got != users {
		t.Errorf("%s goes through %s, want the user's route %s", deployA, got, users)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if got := routeVia(t, nl, deployA); got != users {
		t.Errorf("after close %s goes through %s, want the user's route %s kept", deployA, got, users)
	}
}
