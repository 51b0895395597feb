package vpnlib

import (
	"context"
	"errors"
	"net/netip"
	"net/url"
	"slices"
	"testing"

	"tailscale.com/tailcfg"
	"tailscale.com/wgengine/router"

	"cdr.dev/slog/v3"
)

func TestExcludedFromTunnel(t *testing.T) {
	t.Parallel()
	names := map[string][]netip.Addr{
		"inside.example":  {netip.MustParseAddr("fd60:627a:a42b:ffff::1"), netip.MustParseAddr("192.0.2.1")},
		"outside.example": {netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("192.0.2.2")},
	}
	resolve := func(_ context.Context, host string) ([]netip.Addr, error) {
		if a, ok := names[host]; ok {
			return a, nil
		}
		return nil, errors.New("no such host")
	}
	cases := []struct {
		name  string
		hosts []string
		want  []string
	}{
		{name: "loopback and public addresses stay", hosts: []string{"127.0.0.1", "2001:db8::5", "outside.example"}},
		{name: "an address literal inside the prefix", hosts: []string{"fd60:627a:a42b::9"}, want: []string{"fd60:627a:a42b::9/128"}},
		{name: "a name resolving inside and outside", hosts: []string{"inside.example"}, want: []string{"fd60:627a:a42b:ffff::1/128"}},
		{name: "the same address twice", hosts: []string{"inside.example", "fd60:627a:a42b:ffff::1"}, want: []string{"fd60:627a:a42b:ffff::1/128"}},
		{name: "an unresolvable name is skipped", hosts: []string{"nowhere.example", "fd60:627a:a42b::9"}, want: []string{"fd60:627a:a42b::9/128"}},
		{name: "a zone is dropped", hosts: []string{"fd60:627a:a42b::9%eth0"}, want: []string{"fd60:627a:a42b::9/128"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, _ := excludedFromTunnel(context.Background(), resolve, tc.hosts, tunnelRoutes, slog.Make())
			var gotS []string
			for _, p := range got {
				gotS = append(gotS, p.String())
			}
			if !slices.Equal(gotS, tc.want) {
				t.Fatalf("excluded %v, want %v", gotS, tc.want)
			}
		})
	}
}

// The route watch gets every address the hosts resolved to, once each,
// inside the tunnel's route or not; unresolvable names add none.
func TestDeploymentAddresses(t *testing.T) {
	t.Parallel()
	resolve := func(_ context.Context, host string) ([]netip.Addr, error) {
		if host == "relay.example" {
			return []netip.Addr{netip.MustParseAddr("::ffff:192.0.2.7"), netip.MustParseAddr("fd60:627a:a42b::9")}, nil
		}
		return nil, errors.New("no such host")
	}
	_, all := excludedFromTunnel(context.Background(), resolve, []string{"192.0.2.7", "nowhere.example", "relay.example"}, tunnelRoutes, slog.Make())
	want := []netip.Addr{netip.MustParseAddr("192.0.2.7"), netip.MustParseAddr("fd60:627a:a42b::9")}
	if !slices.Equal(all, want) {
		t.Fatalf("addresses %v, want %v", all, want)
	}
}

func TestDeploymentHosts(t *testing.T) {
	t.Parallel()
	u, _ := url.Parse("https://coder.example:8443/")
	derp := &tailcfg.DERPMap{Regions: map[int]*tailcfg.DERPRegion{
		1: {Nodes: []*tailcfg.DERPNode{{HostName: "coder.example"}, {HostName: "relay.example", IPv4: "192.0.2.7", IPv6: "none"}}},
		2: nil,
	}}
	got := deploymentHosts(u, derp)
	want := []string{"192.0.2.7", "coder.example", "relay.example"}
	if !slices.Equal(got, want) {
		t.Fatalf("hosts %v, want %v", got, want)
	}
}

// The exclusions travel in every NetworkSettingsRequest as IPv6 excluded
// routes, beside the route they carve a hole in.
func TestSettingsCarryExclusions(t *testing.T) {
	t.Parallel()
	rc := &router.Config{
		LocalAddrs: []netip.Prefix{netip.MustParsePrefix("fd60:627a:a42b::1/128")},
		Routes:     tunnelRoutes,
	}
	req := buildSettingsRequest(rc, nil, "coder", netip.MustParsePrefix("fd60:627a:a42b:ffff::1/128"))
	ex := req.GetIpv6Settings().GetExcludedRoutes()
	if len(ex) != 1 || ex[0].GetDestination() != "fd60:627a:a42b:ffff::1" || ex[0].GetPrefixLength() != 128 {
		t.Fatalf("excluded routes %v, want fd60:627a:a42b:ffff::1/128", ex)
	}
	if in := req.GetIpv6Settings().GetIncludedRoutes(); len(in) != 1 || in[0].GetPrefixLength() != 48 {
		t.Fatalf("included routes %v, want the /48", in)
	}
}
