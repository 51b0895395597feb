package hosttest

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/codervpn/codervpn/internal/netstack"
	vpnpb "github.com/codervpn/codervpn/proto"
)

// Coder's own tunnel sends its routes and its DNS in separate requests;
// with MergeSettings each keeps what the other applied.
func TestMergeSettings(t *testing.T) {
	addr := netip.MustParsePrefix("fd60::1/128")
	route := netip.MustParsePrefix("fd60::/16")
	dns := netip.MustParseAddr("fd60::53")
	prev := &NetConfig{Addrs: []netip.Prefix{addr}, Routes: []netip.Prefix{route},
		DNSServers: []netip.Addr{dns}, MatchDomains: []string{"coder"}, MTU: 1280}
	tests := []struct {
		name       string
		prev       *NetConfig
		req        *vpnpb.NetworkSettingsRequest
		cfg        netstack.Config
		wantRoutes []netip.Prefix
		wantDNS    []netip.Addr
		wantMTU    uint32
	}{
		{"nothing before: as parsed", nil, &vpnpb.NetworkSettingsRequest{}, netstack.Config{MTU: 1500}, nil, nil, 1500},
		{"DNS only keeps the routes", prev,
			&vpnpb.NetworkSettingsRequest{DnsSettings: &vpnpb.NetworkSettingsRequest_DNSSettings{}},
			netstack.Config{MTU: netstack.InitialMTU}, []netip.Prefix{route}, nil, 1280},
		{"routes only keep the DNS", prev,
			&vpnpb.NetworkSettingsRequest{Mtu: 1400, Ipv6Settings: &vpnpb.NetworkSettingsRequest_IPv6Settings{}},
			netstack.Config{MTU: 1400}, nil, []netip.Addr{dns}, 1400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := mergeSettings(tc.prev, tc.req, tc.cfg)
			if !slices.Equal(got.Routes, tc.wantRoutes) || !slices.Equal(got.DNSServers, tc.wantDNS) || got.MTU != tc.wantMTU {
				t.Errorf("mergeSettings = routes %v DNS %v MTU %d; want %v %v %d",
					got.Routes, got.DNSServers, got.MTU, tc.wantRoutes, tc.wantDNS, tc.wantMTU)
			}
		})
	}
}
