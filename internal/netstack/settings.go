package netstack

import (
	"fmt"
	"net/netip"
	"strings"

	vpnpb "github.com/codervpn/codervpn/proto"
)

// InitialMTU is the link MTU of a utun before the tunnel's settings set one,
// and what a NetworkSettingsRequest with mtu 0 leaves it at: macOS gives a
// utun interface 1500 unless told otherwise. A tunnel that forgets to send
// 1280 thus gets packets too big for its path, as it would on a real Mac.
const InitialMTU = 1500

// Config is a NetworkSettingsRequest as the host's network stack applies
// it: parsed, validated, and without the parts a Stack has no use for.
type Config struct {
	// Addrs are the interface addresses with their on-link prefix lengths.
	Addrs []netip.Prefix
	// Routes are the included routes: traffic to them goes into the tunnel.
	Routes []netip.Prefix
	// ExcludedRoutes are recorded for assertions; a Stack has no other
	// interface to send them to.
	ExcludedRoutes []netip.Prefix
	// DNSServers answer queries for MatchDomains (every name when empty).
	DNSServers []netip.Addr
	// MatchDomains are the DNS suffixes routed to DNSServers, without the
	// trailing dot.
	MatchDomains []string
	// MTU of the link; InitialMTU when the request said 0.
	MTU uint32
}

// ParseSettings validates req the way a careful host would before applying
// it and returns what to apply. Its errors name the offending field, so that
// the tunnel, and a test whose Start failed, learn what the tunnel got wrong.
func ParseSettings(req *vpnpb.NetworkSettingsRequest) (Config, error) {
	cfg := Config{MTU: req.GetMtu()}
	if cfg.MTU == 0 {
		cfg.MTU = InitialMTU
	}
	if cfg.MTU < 576 || cfg.MTU > 65535 {
		return Config{}, fmt.Errorf("mtu %d is outside 576..65535", cfg.MTU)
	}
	if v6 := req.GetIpv6Settings(); v6 != nil {
		if len(v6.Addrs) != len(v6.PrefixLengths) {
			return Config{}, fmt.Errorf("ipv6_settings has %d addrs but %d prefix_lengths", len(v6.Addrs), len(v6.PrefixLengths))
		}
		for i, s := range v6.Addrs {
			p, err := prefix6(s, v6.PrefixLengths[i])
			if err != nil {
				return Config{}, fmt.Errorf("ipv6_settings.addrs[%d]: %w", i, err)
			}
			cfg.Addrs = append(cfg.Addrs, p)
		}
		for i, r := range v6.IncludedRoutes {
			p, err := prefix6(r.Destination, r.PrefixLength)
			if err != nil {
				return Config{}, fmt.Errorf("ipv6_settings.included_routes[%d]: %w", i, err)
			}
			cfg.Routes = append(cfg.Routes, p.Masked())
		}
		for i, r := range v6.ExcludedRoutes {
			p, err := prefix6(r.Destination, r.PrefixLength)
			if err != nil {
				return Config{}, fmt.Errorf("ipv6_settings.excluded_routes[%d]: %w", i, err)
			}
			cfg.ExcludedRoutes = append(cfg.ExcludedRoutes, p.Masked())
		}
	}
	if v4 := req.GetIpv4Settings(); v4 != nil {
		if len(v4.Addrs) != len(v4.SubnetMasks) {
			return Config{}, fmt.Errorf("ipv4_settings has %d addrs but %d subnet_masks", len(v4.Addrs), len(v4.SubnetMasks))
		}
		for i, s := range v4.Addrs {
			p, err := prefix4(s, v4.SubnetMasks[i])
			if err != nil {
				return Config{}, fmt.Errorf("ipv4_settings.addrs[%d]: %w", i, err)
			}
			cfg.Addrs = append(cfg.Addrs, p)
		}
		for i, r := range v4.IncludedRoutes {
			p, err := prefix4(r.Destination, r.Mask)
			if err != nil {
				return Config{}, fmt.Errorf("ipv4_settings.included_routes[%d]: %w", i, err)
			}
			cfg.Routes = append(cfg.Routes, p.Masked())
		}
		for i, r := range v4.ExcludedRoutes {
			p, err := prefix4(r.Destination, r.Mask)
			if err != nil {
				return Config{}, fmt.Errorf("ipv4_settings.excluded_routes[%d]: %w", i, err)
			}
			cfg.ExcludedRoutes = append(cfg.ExcludedRoutes, p.Masked())
		}
	}
	if dns := req.GetDnsSettings(); dns != nil {
		for i, s := range dns.Servers {
			a, err := netip.ParseAddr(s)
			if err != nil {
				return Config{}, fmt.Errorf("dns_settings.servers[%d] %q is not an IP address", i, s)
			}
			cfg.DNSServers = append(cfg.DNSServers, a)
		}
		for i, d := range dns.MatchDomains {
			d = strings.TrimSuffix(d, ".")
			if d == "" && len(dns.MatchDomains) > 1 {
				return Config{}, fmt.Errorf("dns_settings.match_domains[%d] is empty", i)
			}
			cfg.MatchDomains = append(cfg.MatchDomains, d)
		}
		if len(cfg.DNSServers) == 0 && len(cfg.MatchDomains) > 0 {
			return Config{}, fmt.Errorf("dns_settings has match_domains %v but no servers", cfg.MatchDomains)
		}
	}
	return cfg, nil
}

func prefix6(addr string, bits uint32) (netip.Prefix, error) {
	a, err := netip.ParseAddr(addr)
	if err != nil || !a.Is6() || a.Is4In6() {
		return netip.Prefix{}, fmt.Errorf("%q is not an IPv6 address", addr)
	}
	if bits > 128 {
		return netip.Prefix{}, fmt.Errorf("prefix length %d of %s is over 128", bits, addr)
	}
	return netip.PrefixFrom(a, int(bits)), nil
}

func prefix4(addr, mask string) (netip.Prefix, error) {
	a, err := netip.ParseAddr(addr)
	if err != nil || !a.Is4() {
		return netip.Prefix{}, fmt.Errorf("%q is not an IPv4 address", addr)
	}
	m, err := netip.ParseAddr(mask)
	if err != nil || !m.Is4() {
		return netip.Prefix{}, fmt.Errorf("subnet mask %q of %s is not dotted decimal", mask, addr)
	}
	b := m.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	ones := 0
	for v&(1<<31) != 0 {
		ones++
		v <<= 1
	}
	if v != 0 {
		return netip.Prefix{}, fmt.Errorf("subnet mask %q of %s is not contiguous", mask, addr)
	}
	return netip.PrefixFrom(a, ones), nil
}
