package main

import (
	"testing"

	vpnpb "github.com/codervpn/codervpn/proto"
)

func TestDescribeSettings(t *testing.T) {
	t.Parallel()
	tests := []struct {
		req  *vpnpb.NetworkSettingsRequest
		want string
	}{
		{&vpnpb.NetworkSettingsRequest{}, "nothing to change"},
		{&vpnpb.NetworkSettingsRequest{
			Mtu: 1280,
			Ipv6Settings: &vpnpb.NetworkSettingsRequest_IPv6Settings{
				Addrs: []string{"fd60:627a:a42b:1::2"}, PrefixLengths: []uint32{128},
				IncludedRoutes: []*vpnpb.NetworkSettingsRequest_IPv6Settings_IPv6Route{{Destination: "fd60:627a:a42b::", PrefixLength: 48}},
			},
			Ipv4Settings: &vpnpb.NetworkSettingsRequest_IPv4Settings{
				Addrs:          []string{"100.64.0.2"},
				IncludedRoutes: []*vpnpb.NetworkSettingsRequest_IPv4Settings_IPv4Route{{Destination: "100.64.0.0", Mask: "255.192.0.0"}},
			},
		}, "address 100.64.0.2, fd60:627a:a42b:1::2/128; route 100.64.0.0/255.192.0.0, fd60:627a:a42b::/48; MTU 1280"},
		{&vpnpb.NetworkSettingsRequest{DnsSettings: &vpnpb.NetworkSettingsRequest_DNSSettings{
			Servers: []string{"fd60:627a:a42b::53"}, MatchDomains: []string{"coder"},
		}}, "DNS fd60:627a:a42b::53 for .coder"},
		{&vpnpb.NetworkSettingsRequest{DnsSettings: &vpnpb.NetworkSettingsRequest_DNSSettings{}}, "no DNS"},
	}
	for _, tc := range tests {
		if got := describeSettings(tc.req); got != tc.want {
			t.Errorf("describeSettings = %q, want %q", got, tc.want)
		}
	}
}
