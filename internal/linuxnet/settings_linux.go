package linuxnet

import (
	"fmt"
	"net"
	"net/netip"
	"slices"

	vpnpb "github.com/codervpn/codervpn/proto"
)

// settings is a NetworkSettingsRequest checked and converted to what the
// kernel takes. The tunnel sends the interface part (addresses, routes, MTU)
// and the DNS part in separate requests, so each part records whether the
// request carried it: an absent part leaves the current state alone.
type settings struct {
	// hasIface is set when the request carries MTU or IPv4/IPv6 settings.
	// Then addrs and routes are the complete desired sets (a missing family
	// means "none of that family").
	hasIface bool
	mtu      int // 0: leave the MTU alone
	addrs    []netip.Prefix
	routes   []netip.Prefix
	// excluded are the routes the tunnel wants kept outside it (both
	// families); see exclude_linux.go for what the kernel gets.
	excluded []netip.Prefix
	hasDNS   bool
	dns      DNSSettings
}

// DNSSettings is the resolver part of a NetworkSettingsRequest, checked:
// which servers answer for which domains. It is what a DNSConfigurator gets.
type DNSSettings struct {
	// Servers are the tunnel's resolvers, e.g. fd60:627a:a42b::53.
	Servers []netip.Addr
	// Domains are routing-only (resolved's "~domain"): only names under them
	// go to Servers, and they are never appended to single-label names, so
	// the VPN cannot change how unrelated short names resolve. Without a
	// trailing dot, sorted, unique.
	Domains []string
	// Search are search domains (also routed to Servers). Sorted, unique.
	Search []string
}

// parseSettings validates a request. Every error names the field and value,
// because it goes back to the tunnel and into its log as the reason the
// settings were refused.
func parseSettings(req *vpnpb.NetworkSettingsRequest) (settings, error) {
	var s settings
	if req == nil {
		return s, fmt.Errorf("empty network settings request")
	}
	v4, v6 := req.GetIpv4Settings(), req.GetIpv6Settings()
	s.hasIface = req.GetMtu() != 0 || v4 != nil || v6 != nil
	if m := req.GetMtu(); m != 0 {
		// 68 is IPv4's minimum; the kernel refuses less. More than 65535 cannot
		// be an IP MTU.
		if m < 68 || m > 65535 {
			return s, fmt.Errorf("MTU %d is outside 68..65535", m)
		}
		s.mtu = int(m)
	}
	for i, a := range v4.GetAddrs() {
		ip, err := netip.ParseAddr(a)
		if err != nil || !ip.Is4() {
			return s, fmt.Errorf("IPv4 address %d %q is not an IPv4 address", i, a)
		}
		bits := 32
		if masks := v4.GetSubnetMasks(); i < len(masks) {
			if bits, err = maskBits(masks[i]); err != nil {
				return s, fmt.Errorf("IPv4 address %s: %w", a, err)
			}
		}
		s.addrs = append(s.addrs, netip.PrefixFrom(ip, bits))
	}
	for i, r := range v4.GetIncludedRoutes() {
		ip, err := netip.ParseAddr(r.GetDestination())
		if err != nil || !ip.Is4() {
			return s, fmt.Errorf("IPv4 route %d destination %q is not an IPv4 address", i, r.GetDestination())
		}
		bits := 32
		if r.GetMask() != "" {
			if bits, err = maskBits(r.GetMask()); err != nil {
				return s, fmt.Errorf("IPv4 route %s: %w", r.GetDestination(), err)
			}
		}
		s.routes = append(s.routes, netip.PrefixFrom(ip, bits).Masked())
	}
	for i, a := range v6.GetAddrs() {
		ip, err := netip.ParseAddr(a)
		if err != nil || !ip.Is6() || ip.Is4In6() {
			return s, fmt.Errorf("IPv6 address %d %q is not an IPv6 address", i, a)
		}
		bits := 128
		if pls := v6.GetPrefixLengths(); i < len(pls) {
			if pls[i] > 128 {
				return s, fmt.Errorf("IPv6 address %s: prefix length %d is over 128", a, pls[i])
			}
			bits = int(pls[i])
		}
		s.addrs = append(s.addrs, netip.PrefixFrom(ip.WithZone(""), bits))
	}
	for i, r := range v6.GetIncludedRoutes() {
		ip, err := netip.ParseAddr(r.GetDestination())
		if err != nil || !ip.Is6() || ip.Is4In6() {
			return s, fmt.Errorf("IPv6 route %d destination %q is not an IPv6 address", i, r.GetDestination())
		}
		if r.GetPrefixLength() > 128 {
			return s, fmt.Errorf("IPv6 route %s: prefix length %d is over 128", r.GetDestination(), r.GetPrefixLength())
		}
		s.routes = append(s.routes, netip.PrefixFrom(ip.WithZone(""), int(r.GetPrefixLength())).Masked())
	}
	for i, r := range v4.GetExcludedRoutes() {
		ip, err := netip.ParseAddr(r.GetDestination())
		if err != nil || !ip.Is4() {
			return s, fmt.Errorf("IPv4 excluded route %d destination %q is not an IPv4 address", i, r.GetDestination())
		}
		bits := 32
		if r.GetMask() != "" {
			if bits, err = maskBits(r.GetMask()); err != nil {
				return s, fmt.Errorf("IPv4 excluded route %s: %w", r.GetDestination(), err)
			}
		}
		s.excluded = append(s.excluded, netip.PrefixFrom(ip, bits).Masked())
	}
	for i, r := range v6.GetExcludedRoutes() {
		ip, err := netip.ParseAddr(r.GetDestination())
		if err != nil || !ip.Is6() || ip.Is4In6() {
			return s, fmt.Errorf("IPv6 excluded route %d destination %q is not an IPv6 address", i, r.GetDestination())
		}
		if r.GetPrefixLength() > 128 {
			return s, fmt.Errorf("IPv6 excluded route %s: prefix length %d is over 128", r.GetDestination(), r.GetPrefixLength())
		}
		s.excluded = append(s.excluded, netip.PrefixFrom(ip.WithZone(""), int(r.GetPrefixLength())).Masked())
	}
	s.addrs = dedupe(s.addrs)
	s.routes = dedupe(s.routes)
	s.excluded = dedupe(s.excluded)

	if d := req.GetDnsSettings(); d != nil {
		s.hasDNS = true
		for i, srv := range d.GetServers() {
			ip, err := netip.ParseAddr(srv)
			if err != nil {
				return s, fmt.Errorf("DNS server %d %q is not an IP address", i, srv)
			}
			s.dns.Servers = append(s.dns.Servers, ip.Unmap())
		}
		for _, dom := range d.GetMatchDomains() {
			if err := checkDomain(dom); err != nil {
				return s, fmt.Errorf("DNS match domain: %w", err)
			}
			s.dns.Domains = append(s.dns.Domains, trimDot(dom))
		}
		for _, dom := range d.GetSearchDomains() {
			if err := checkDomain(dom); err != nil {
				return s, fmt.Errorf("DNS search domain: %w", err)
			}
			s.dns.Search = append(s.dns.Search, trimDot(dom))
		}
		s.dns.Domains = slices.Compact(slices.Sorted(slices.Values(s.dns.Domains)))
		s.dns.Search = slices.Compact(slices.Sorted(slices.Values(s.dns.Search)))
	}
	return s, nil
}

// maskBits converts a dotted-decimal netmask ("255.255.255.0") to a prefix
// length, refusing non-contiguous masks the kernel cannot express.
func maskBits(mask string) (int, error) {
	ip := net.ParseIP(mask).To4()
	if ip == nil {
		return 0, fmt.Errorf("subnet mask %q is not a dotted-decimal IPv4 mask", mask)
	}
	ones, bits := net.IPMask(ip).Size()
	if bits == 0 {
		return 0, fmt.Errorf("subnet mask %q is not contiguous", mask)
	}
	return ones, nil
}

func checkDomain(d string) error {
	t := trimDot(d)
	if t == "" || len(t) > 253 {
		return fmt.Errorf("%q is not a domain name", d)
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		ok := c == '-' || c == '.' || c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if !ok {
			return fmt.Errorf("%q is not a domain name (byte %d is %q)", d, i, c)
		}
	}
	return nil
}

func trimDot(d string) string {
	for len(d) > 0 && d[len(d)-1] == '.' {
		d = d[:len(d)-1]
	}
	return d
}

func dedupe(ps []netip.Prefix) []netip.Prefix {
	slices.SortFunc(ps, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	return slices.Compact(ps)
}
