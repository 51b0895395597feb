package coderd

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// lookupRoute asks the kernel (RTM_GETROUTE, as `ip route get` does) how
// packets to addr leave this network namespace.
func lookupRoute(addr netip.Addr) (route, error) {
	routes, err := netlink.RouteGet(addr.AsSlice())
	if err != nil {
		return route{}, fmt.Errorf("ip route get %s: %w", addr, err)
	}
	if len(routes) == 0 {
		return route{}, fmt.Errorf("ip route get %s: no route", addr)
	}
	link, err := netlink.LinkByIndex(routes[0].LinkIndex)
	if err != nil {
		return route{}, fmt.Errorf("the device of the route to %s (index %d): %w", addr, routes[0].LinkIndex, err)
	}
	r := route{To: addr, Dev: link.Attrs().Name, Tunnel: isTunnelLink(link)}
	if gw, ok := netip.AddrFromSlice(routes[0].Gw); ok {
		r.Gw = gw.Unmap()
	}
	return r, nil
}

// isTunnelLink says whether a device is of a kind VPNs use: a TUN or TAP
// (OpenVPN, Tailscale, most VPN clients), WireGuard, PPP, or an IP tunnel.
func isTunnelLink(l netlink.Link) bool {
	switch l.Type() {
	case "tuntap", "wireguard", "ipip", "gre", "gretap", "ip6tnl", "ip6gre", "sit", "vti", "vti6", "xfrm":
		return true
	}
	encap := l.Attrs().EncapType
	return encap == "ppp" || encap == "none" // a TUN opened without netlink's help reads "none"
}
