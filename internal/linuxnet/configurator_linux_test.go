package linuxnet

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/codervpn/codervpn/internal/fdtest"
	vpnpb "github.com/codervpn/codervpn/proto"
)

// kernelState is what the kernel reports for the link, in comparable form.
type kernelState struct {
	up     bool
	mtu    int
	addrs  []string // global addresses, "addr/bits"
	routes []string // routes through the link, "dst/bits", link-local excluded
}

func readKernel(t *testing.T, nl *netlink.Handle, name string) kernelState {
	t.Helper()
	link, err := nl.LinkByName(name)
	if err != nil {
		t.Fatalf("link %s: %v", name, err)
	}
	st := kernelState{up: link.Attrs().Flags&net.FlagUp != 0, mtu: link.Attrs().MTU}
	addrs, err := nl.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if a.IP.IsLinkLocalUnicast() {
			continue
		}
		st.addrs = append(st.addrs, a.IPNet.String())
	}
	routes, err := nl.RouteList(link, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		if r.Dst == nil || r.Dst.IP.IsLinkLocalUnicast() || r.Table != unix.RT_TABLE_MAIN {
			continue
		}
		ones, _ := r.Dst.Mask.Size()
		if ones == 128 || ones == 32 { // the kernel's own host routes for our addresses live in table local
			continue
		}
		st.routes = append(st.routes, r.Dst.String())
	}
	slices.Sort(st.addrs)
	slices.Sort(st.routes)
	return st
}

func TestConfiguratorApplyAndTeardown(t *testing.T) {
	requireRoot(t)
	fds := fdtest.Take(t)
	// Registered first, so it runs after the namespace's cleanups.
	t.Cleanup(func() { fds.Check(t, kernelFDs, "the test") })
	ns, nl := newNetns(t)
	tun, err := CreateTUNIn(ns, "cvpntest0")
	if err != nil {
		t.Fatal(err)
	}
	before := readKernel(t, nl, "cvpntest0")
	if before.up || len(before.addrs) != 0 {
		t.Fatalf("fresh TUN is not down and empty: %+v", before)
	}

	var notes []string
	h, err := New(Config{Link: "cvpntest0", Netlink: nl, Notify: func(m string) { notes = append(notes, m) }})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	steps := []struct {
		name string
		req  *vpnpb.NetworkSettingsRequest
		want kernelState
	}{
		{
			name: "tunnel settings",
			req:  tunnelRouterRequest("fd60:627a:a42b:1::2"),
			want: kernelState{up: true, mtu: 1280, addrs: []string{"fd60:627a:a42b:1::2/128"}, routes: []string{"fd60:627a:a42b::/48"}},
		},
		{
			name: "DNS only changes nothing in the kernel",
			req:  tunnelDNSRequest(),
			want: kernelState{up: true, mtu: 1280, addrs: []string{"fd60:627a:a42b:1::2/128"}, routes: []string{"fd60:627a:a42b::/48"}},
		},
		{
			name: "new address and an IPv4 route replace the old ones",
			req: &vpnpb.NetworkSettingsRequest{
				Mtu: 1300,
				Ipv4Settings: &vpnpb.NetworkSettingsRequest_IPv4Settings{
					Addrs: []string{"100.64.0.9"}, SubnetMasks: []string{"255.255.255.255"},
					IncludedRoutes: []*vpnpb.NetworkSettingsRequest_IPv4Settings_IPv4Route{{Destination: "100.64.0.0", Mask: "255.192.0.0"}},
				},
				Ipv6Settings: &vpnpb.NetworkSettingsRequest_IPv6Settings{Addrs: []string{"fd60:627a:a42b:1::3"}, PrefixLengths: []uint32{128}},
			},
			want: kernelState{up: true, mtu: 1300, addrs: []string{"100.64.0.9/32", "fd60:627a:a42b:1::3/128"}, routes: []string{"100.64.0.0/10"}},
		},
	}
	for _, s := range steps {
		if err := h.Apply(ctx, s.req); err != nil {
			t.Fatalf("%s: apply: %v", s.name, err)
		}
		got := readKernel(t, nl, "cvpntest0")
		if got.up != s.want.up || got.mtu != s.want.mtu || !slices.Equal(got.addrs, s.want.addrs) || !slices.Equal(got.routes, s.want.routes) {
			t.Fatalf("%s: kernel has %+v, want %+v", s.name, got, s.want)
		}
	}
	if len(notes) != 1 || !strings.Contains(notes[0], "DNS names are not configured") ||
		!strings.Contains(notes[0], "dig @fd60:627a:a42b::53") || !strings.Contains(notes[0], ".coder") {
		t.Errorf("want one notice explaining how to query the tunnel's resolver, got %q", notes)
	}

	// Something the user added to the same link must survive teardown. (An
	// IPv4 address: the kernel itself flushes IPv6 addresses and routes when
	// a link goes down.)
	link, err := nl.LinkByIndex(h.Index())
	if err != nil {
		t.Fatal(err)
	}
	if err := nl.AddrAdd(link, &netlink.Addr{IPNet: prefixNet(netip.MustParsePrefix("192.0.2.1/24"))}); err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	after := readKernel(t, nl, "cvpntest0")
	if after.up || after.mtu != before.mtu || !slices.Equal(after.addrs, []string{"192.0.2.1/24"}) ||
		slices.Contains(after.routes, "100.64.0.0/10") || slices.Contains(after.routes, "fd60:627a:a42b::/48") {
		t.Fatalf("after teardown kernel has %+v; want down, MTU %d, only the user's address, none of our routes", after, before.mtu)
	}
	if err := h.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if err := h.Apply(ctx, tunnelRouterRequest("fd60:627a:a42b:1::2")); err == nil {
		t.Fatal("apply after close succeeded")
	}

	if err := tun.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := nl.LinkByName("cvpntest0"); err == nil {
		t.Fatal("TUN still exists after its only fd was closed")
	}
}

func TestConfiguratorCloseAfterDeviceGone(t *testing.T) {
	requireRoot(t)
	ns, nl := newNetns(t)
	tun, err := CreateTUNIn(ns, "cvpntest1")
	if err != nil {
		t.Fatal(err)
	}
	h, err := New(Config{Link: "cvpntest1", Netlink: nl})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Apply(context.Background(), tunnelRouterRequest("fd60:627a:a42b:1::2")); err != nil {
		t.Fatal(err)
	}
	tun.Close() // the tunnel exited first: the kernel removed everything
	if err := h.Close(); err != nil {
		t.Fatalf("close after the device vanished should be a no-op, got %v", err)
	}
}

func TestConfiguratorRejectsBadSettings(t *testing.T) {
	requireRoot(t)
	ns, nl := newNetns(t)
	tun, err := CreateTUNIn(ns, "cvpntest2")
	if err != nil {
		t.Fatal(err)
	}
	defer tun.Close()
	h, err := New(Config{Link: "cvpntest2", Netlink: nl})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	err = h.Apply(context.Background(), &vpnpb.NetworkSettingsRequest{Mtu: 1280, Ipv6Settings: &vpnpb.NetworkSettingsRequest_IPv6Settings{Addrs: []string{"nope"}}})
	if err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Fatalf("err = %v, want it to name the bad address", err)
	}
	if st := readKernel(t, nl, "cvpntest2"); st.up || st.mtu == 1280 {
		t.Errorf("a refused request changed the link: %+v", st)
	}
}

func TestCreateTUNErrors(t *testing.T) {
	requireRoot(t)
	ns, _ := newNetns(t)
	tests := []struct {
		name    string
		tunName string
		want    string
	}{
		{"name too long", strings.Repeat("x", 16), "1 to 15 bytes"},
		{"empty name", "", "1 to 15 bytes"},
		{"existing non-TUN interface", "lo", "not a TUN device"},
	}
	fds := fdtest.Take(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := CreateTUNIn(ns, tc.tunName)
			if err == nil {
				f.Close()
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
	fds.Check(t, kernelFDs, "failed creates")
}

func TestNewUnknownLink(t *testing.T) {
	requireRoot(t)
	_, nl := newNetns(t)
	_, err := New(Config{Link: "nosuch0", Netlink: nl})
	if err == nil || !strings.Contains(err.Error(), "nosuch0") {
		t.Fatalf("err = %v, want it to name the interface", err)
	}
}

// A link that was already up stays up, so this proves teardown deletes our
// addresses and routes itself rather than relying on the kernel flushing
// them when the link goes down.
func TestConfiguratorTeardownOnLinkThatWasUp(t *testing.T) {
	requireRoot(t)
	ns, nl := newNetns(t)
	tun, err := CreateTUNIn(ns, "cvpntest3")
	if err != nil {
		t.Fatal(err)
	}
	defer tun.Close()
	link, err := nl.LinkByName("cvpntest3")
	if err != nil {
		t.Fatal(err)
	}
	if err := nl.LinkSetUp(link); err != nil {
		t.Fatal(err)
	}
	h, err := New(Config{Link: "cvpntest3", Netlink: nl})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Apply(context.Background(), tunnelRouterRequest("fd60:627a:a42b:1::2")); err != nil {
		t.Fatal(err)
	}
	if st := readKernel(t, nl, "cvpntest3"); len(st.addrs) != 1 || len(st.routes) != 1 {
		t.Fatalf("settings not applied: %+v", st)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if st := readKernel(t, nl, "cvpntest3"); !st.up || len(st.addrs) != 0 || len(st.routes) != 0 || st.mtu != 1500 {
		t.Fatalf("after teardown: %+v; want still up, MTU 1500, no addresses or routes", st)
	}
}
