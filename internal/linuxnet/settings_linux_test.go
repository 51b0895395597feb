package linuxnet

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	vpnpb "github.com/codervpn/codervpn/proto"
)

// tunnelRouterRequest is the interface part the tunnel sends: its own /128,
// the tailnet route and MTU 1280.
func tunnelRouterRequest(addr string) *vpnpb.NetworkSettingsRequest {
	return &vpnpb.NetworkSettingsRequest{
		Mtu: 1280,
		Ipv6Settings: &vpnpb.NetworkSettingsRequest_IPv6Settings{
			Addrs:         []string{addr},
			PrefixLengths: []uint32{128},
			IncludedRoutes: []*vpnpb.NetworkSettingsRequest_IPv6Settings_IPv6Route{
				{Destination: "fd60:627a:a42b::", PrefixLength: 48},
			},
		},
	}
}

func tunnelDNSRequest() *vpnpb.NetworkSettingsRequest {
	return &vpnpb.NetworkSettingsRequest{DnsSettings: &vpnpb.NetworkSettingsRequest_DNSSettings{
		Servers: []string{"fd60:627a:a42b::53"}, MatchDomains: []string{"coder.", "coder"},
	}}
}

func TestParseSettings(t *testing.T) {
	t.Parallel()
	pfx := netip.MustParsePrefix
	tests := []struct {
		name    string
		req     *vpnpb.NetworkSettingsRequest
		want    settings
		wantErr string
	}{
		{
			name: "tunnel's interface settings",
			req:  tunnelRouterRequest("fd60:627a:a42b:1::2"),
			want: settings{hasIface: true, mtu: 1280,
				addrs:  []netip.Prefix{pfx("fd60:627a:a42b:1::2/128")},
				routes: []netip.Prefix{pfx("fd60:627a:a42b::/48")}},
		},
		{
			name: "DNS only leaves the interface alone",
			req:  tunnelDNSRequest(),
			want: settings{hasDNS: true, dns: DNSSettings{
				Servers: []netip.Addr{netip.MustParseAddr("fd60:627a:a42b::53")}, Domains: []string{"coder"}}},
		},
		{
			name: "IPv4 with masks, route masked, duplicates dropped",
			req: &vpnpb.NetworkSettingsRequest{Ipv4Settings: &vpnpb.NetworkSettingsRequest_IPv4Settings{
				Addrs: []string{"100.64.0.5", "100.64.0.5"}, SubnetMasks: []string{"255.255.255.0", "255.255.255.0"},
				IncludedRoutes: []*vpnpb.NetworkSettingsRequest_IPv4Settings_IPv4Route{
					{Destination: "100.64.1.7", Mask: "255.192.0.0"}, {Destination: "10.1.2.3"},
				},
			}},
			want: settings{hasIface: true,
				addrs:  []netip.Prefix{pfx("100.64.0.5/24")},
				routes: []netip.Prefix{pfx("10.1.2.3/32"), pfx("100.64.0.0/10")}},
		},
		{
			name: "missing IPv6 prefix length means /128",
			req:  &vpnpb.NetworkSettingsRequest{Ipv6Settings: &vpnpb.NetworkSettingsRequest_IPv6Settings{Addrs: []string{"fd00::1"}}},
			want: settings{hasIface: true, addrs: []netip.Prefix{pfx("fd00::1/128")}},
		},
		{
			name: "excluded routes of both families, masked and deduplicated",
			req: &vpnpb.NetworkSettingsRequest{
				Ipv4Settings: &vpnpb.NetworkSettingsRequest_IPv4Settings{
					ExcludedRoutes: []*vpnpb.NetworkSettingsRequest_IPv4Settings_IPv4Route{{Destination: "192.168.7.9", Mask: "255.255.0.0"}},
				},
				Ipv6Settings: &vpnpb.NetworkSettingsRequest_IPv6Settings{
					ExcludedRoutes: []*vpnpb.NetworkSettingsRequest_IPv6Settings_IPv6Route{
						{Destination: "fd60:627a:a42b:ffff::1", PrefixLength: 128}, {Destination: "fd60:627a:a42b:ffff::1", PrefixLength: 128},
					},
				},
			},
			want: settings{hasIface: true, excluded: []netip.Prefix{pfx("192.168.0.0/16"), pfx("fd60:627a:a42b:ffff::1/128")}},
		},
		{
			name: "IPv4 excluded route in IPv6 settings",
			req: &vpnpb.NetworkSettingsRequest{Ipv6Settings: &vpnpb.NetworkSettingsRequest_IPv6Settings{
				ExcludedRoutes: []*vpnpb.NetworkSettingsRequest_IPv6Settings_IPv6Route{{Destination: "10.0.0.1", PrefixLength: 128}}}},
			wantErr: `IPv6 excluded route 0 destination "10.0.0.1"`,
		},
		{name: "nil", req: nil, wantErr: "empty"},
		{name: "MTU too small", req: &vpnpb.NetworkSettingsRequest{Mtu: 20}, wantErr: "MTU 20"},
		{
			name:    "IPv4 address in IPv6 settings",
			req:     &vpnpb.NetworkSettingsRequest{Ipv6Settings: &vpnpb.NetworkSettingsRequest_IPv6Settings{Addrs: []string{"10.0.0.1"}}},
			wantErr: `IPv6 address 0 "10.0.0.1"`,
		},
		{
			name:    "non-contiguous mask",
			req:     &vpnpb.NetworkSettingsRequest{Ipv4Settings: &vpnpb.NetworkSettingsRequest_IPv4Settings{Addrs: []string{"10.0.0.1"}, SubnetMasks: []string{"255.0.255.0"}}},
			wantErr: "not contiguous",
		},
		{
			name: "prefix over 128",
			req: &vpnpb.NetworkSettingsRequest{Ipv6Settings: &vpnpb.NetworkSettingsRequest_IPv6Settings{
				IncludedRoutes: []*vpnpb.NetworkSettingsRequest_IPv6Settings_IPv6Route{{Destination: "fd00::", PrefixLength: 129}}}},
			wantErr: "prefix length 129",
		},
		{
			name:    "bad DNS server",
			req:     &vpnpb.NetworkSettingsRequest{DnsSettings: &vpnpb.NetworkSettingsRequest_DNSSettings{Servers: []string{"dns.example"}}},
			wantErr: `DNS server 0 "dns.example"`,
		},
		{
			name:    "domain with a space",
			req:     &vpnpb.NetworkSettingsRequest{DnsSettings: &vpnpb.NetworkSettingsRequest_DNSSettings{MatchDomains: []string{"co der"}}},
			wantErr: "not a domain name",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := parseSettings(tc.req)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.hasIface != tc.want.hasIface || got.mtu != tc.want.mtu || got.hasDNS != tc.want.hasDNS ||
				!slices.Equal(got.addrs, tc.want.addrs) || !slices.Equal(got.routes, tc.want.routes) ||
				!slices.Equal(got.excluded, tc.want.excluded) || !slices.Equal(got.dns.Servers, tc.want.dns.Servers) || !slices.Equal(got.dns.Domains, tc.want.dns.Domains) ||
				!slices.Equal(got.dns.Search, tc.want.dns.Search) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// FuzzParseSettings feeds arbitrary encoded requests to the parser: it must
// never panic, and whatever it accepts must be something the kernel can take.
func FuzzParseSettings(f *testing.F) {
	for _, r := range []*vpnpb.NetworkSettingsRequest{tunnelRouterRequest("fd60:627a:a42b:1::2"), tunnelDNSRequest()} {
		b, err := proto.Marshal(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var req vpnpb.NetworkSettingsRequest
		if proto.Unmarshal(b, &req) != nil {
			return
		}
		s, err := parseSettings(&req)
		if err != nil {
			return
		}
		if s.mtu != 0 && (s.mtu < 68 || s.mtu > 65535) {
			t.Fatalf("accepted MTU %d", s.mtu)
		}
		for _, p := range slices.Concat(s.addrs, s.routes, s.excluded) {
			if !p.IsValid() || p.Addr().Zone() != "" {
				t.Fatalf("accepted invalid prefix %v", p)
			}
		}
		for _, d := range append(slices.Clone(s.dns.Domains), s.dns.Search...) {
			if d == "" || strings.HasSuffix(d, ".") {
				t.Fatalf("accepted domain %q", d)
			}
		}
	})
}
