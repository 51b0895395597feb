package vpnlib

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"tailscale.com/net/dns"
	"tailscale.com/util/dnsname"
	"tailscale.com/wgengine/router"

	"cdr.dev/slog/v3"
	"github.com/coder/coder/v2/tailnet"

	vpnpb "github.com/codervpn/codervpn/proto"
	"github.com/codervpn/codervpn/tunfd"
)

func TestBuildSettingsRequest(t *testing.T) {
	t.Parallel()
	self := netip.MustParsePrefix("fd60:627a:a42b:1:2:3:4:5/128")
	coderDNS := dns.OSConfig{
		Nameservers:   []netip.Addr{netip.MustParseAddr("fd60:627a:a42b::53")},
		MatchDomains:  []dnsname.FQDN{"coder."},
		SearchDomains: []dnsname.FQDN{"search.example."},
	}
	tests := []struct {
		name   string
		router router.Config
		dns    *dns.OSConfig
		want   *vpnpb.NetworkSettingsRequest
	}{
		{
			name:   "engine config",
			router: router.Config{LocalAddrs: []netip.Prefix{self}, Routes: []netip.Prefix{tailnet.CoderServicePrefix.AsNetip()}},
			dns:    &coderDNS,
			want: &vpnpb.NetworkSettingsRequest{
				Mtu: 1280,
				Ipv6Settings: &vpnpb.NetworkSettingsRequest_IPv6Settings{
					Addrs:          []string{"fd60:627a:a42b:1:2:3:4:5"},
					PrefixLengths:  []uint32{128},
					IncludedRoutes: []*vpnpb.NetworkSettingsRequest_IPv6Settings_IPv6Route{{Destination: "fd60:627a:a42b::", PrefixLength: 48}},
				},
				DnsSettings: &vpnpb.NetworkSettingsRequest_DNSSettings{
					Servers:       []string{"fd60:627a:a42b::53"},
					SearchDomains: []string{"search.example"},
					MatchDomains:  []string{"coder"},
					DomainName:    "coder",
				},
			},
		},
		{
			name:   "no dns yet",
			router: router.Config{LocalAddrs: []netip.Prefix{self}},
			want: &vpnpb.NetworkSettingsRequest{
				Mtu: 1280,
				Ipv6Settings: &vpnpb.NetworkSettingsRequest_IPv6Settings{
					Addrs: []string{"fd60:627a:a42b:1:2:3:4:5"}, PrefixLengths: []uint32{128},
				},
			},
		},
		{
			name:   "empty dns config is no dns",
			router: router.Config{LocalAddrs: []netip.Prefix{self}},
			dns:    &dns.OSConfig{},
			want: &vpnpb.NetworkSettingsRequest{
				Mtu: 1280,
				Ipv6Settings: &vpnpb.NetworkSettingsRequest_IPv6Settings{
					Addrs: []string{"fd60:627a:a42b:1:2:3:4:5"}, PrefixLengths: []uint32{128},
				},
			},
		},
		{
			name: "ipv4 and excluded routes",
			router: router.Config{
				LocalAddrs:  []netip.Prefix{netip.MustParsePrefix("100.64.0.1/32")},
				Routes:      []netip.Prefix{netip.MustParsePrefix("100.64.1.7/10")},
				LocalRoutes: []netip.Prefix{netip.MustParsePrefix("192.168.0.0/16"), netip.MustParsePrefix("fd00::/8")},
				NewMTU:      9000,
			},
			want: &vpnpb.NetworkSettingsRequest{
				Mtu: 1280,
				Ipv4Settings: &vpnpb.NetworkSettingsRequest_IPv4Settings{
					Addrs:          []string{"100.64.0.1"},
					SubnetMasks:    []string{"255.255.255.255"},
					IncludedRoutes: []*vpnpb.NetworkSettingsRequest_IPv4Settings_IPv4Route{{Destination: "100.64.0.0", Mask: "255.192.0.0"}},
					ExcludedRoutes: []*vpnpb.NetworkSettingsRequest_IPv4Settings_IPv4Route{{Destination: "192.168.0.0", Mask: "255.255.0.0"}},
				},
				Ipv6Settings: &vpnpb.NetworkSettingsRequest_IPv6Settings{
					ExcludedRoutes: []*vpnpb.NetworkSettingsRequest_IPv6Settings_IPv6Route{{Destination: "fd00::", PrefixLength: 8}},
				},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := buildSettingsRequest(&tc.router, tc.dns, "coder")
			if !proto.Equal(got, tc.want) {
				t.Fatalf("got  %v\nwant %v", got, tc.want)
			}
		})
	}
}

// recordingApplier records requests and answers with the configured error.
type recordingApplier struct {
	mu   sync.Mutex
	reqs []*vpnpb.NetworkSettingsRequest
	err  error
}

func (r *recordingApplier) apply(_ context.Context, req *vpnpb.NetworkSettingsRequest) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reqs = append(r.reqs, req)
	return r.err
}

func (r *recordingApplier) requests() []*vpnpb.NetworkSettingsRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*vpnpb.NetworkSettingsRequest(nil), r.reqs...)
}

func TestNetSettingsMergesAndDedupes(t *testing.T) {
	t.Parallel()
	rec := &recordingApplier{}
	n := newNetSettings(rec.apply, time.Second, "coder", nil, slog.Make())
	dnsCfg := dns.OSConfig{Nameservers: []netip.Addr{netip.MustParseAddr("fd60:627a:a42b::53")}, MatchDomains: []dnsname.FQDN{"coder."}}

	// DNS before the router has nothing to apply yet.
	if err := n.SetDNS(dnsCfg); err != nil {
		t.Fatal(err)
	}
	if got := len(rec.requests()); got != 0 {
		t.Fatalf("%d requests before the router config", got)
	}
	rc := &router.Config{LocalAddrs: []netip.Prefix{netip.MustParsePrefix("fd60:627a:a42b::1/128")}}
	if err := n.Set(rc); err != nil {
		t.Fatal(err)
	}
	if err := <-n.firstResult; err != nil {
		t.Fatalf("first result %v", err)
	}
	// The same config again sends nothing.
	if err := n.Set(rc); err != nil {
		t.Fatal(err)
	}
	if err := n.SetDNS(dnsCfg); err != nil {
		t.Fatal(err)
	}
	reqs := rec.requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests, want 1: %v", len(reqs), reqs)
	}
	if reqs[0].GetIpv6Settings() == nil || reqs[0].GetDnsSettings() == nil || reqs[0].Mtu != tunfd.TunnelMTU {
		t.Fatalf("first request is not complete: %v", reqs[0])
	}
	// A DNS change resends everything, addresses included.
	if err := n.SetDNS(dns.OSConfig{}); err != nil {
		t.Fatal(err)
	}
	reqs = rec.requests()
	if len(reqs) != 2 || reqs[1].GetIpv6Settings() == nil || reqs[1].GetDnsSettings() != nil {
		t.Fatalf("after clearing DNS: %v", reqs)
	}
	// After shutdown nothing is sent.
	n.shutdown()
	if err := n.Set(&router.Config{}); err != nil {
		t.Fatal(err)
	}
	if got := len(rec.requests()); got != 2 {
		t.Fatalf("%d requests after shutdown", got)
	}
}

func TestNetSettingsRefused(t *testing.T) {
	t.Parallel()
	rec := &recordingApplier{err: settingsError("interface is busy")}
	n := newNetSettings(rec.apply, time.Second, "coder", nil, slog.Make())
	err := n.Set(&router.Config{LocalAddrs: []netip.Prefix{netip.MustParsePrefix("fd60:627a:a42b::1/128")}})
	if err == nil {
		t.Fatal("Set succeeded")
	}
	first := <-n.firstResult
	if first == nil || !strings.Contains(first.Error(), "the host refused the network settings: interface is busy") {
		t.Fatalf("first result %v", first)
	}
	// A failed request is not remembered: the same config is sent again.
	rec.mu.Lock()
	rec.err = nil
	rec.mu.Unlock()
	if err := n.Set(&router.Config{LocalAddrs: []netip.Prefix{netip.MustParsePrefix("fd60:627a:a42b::1/128")}}); err != nil {
		t.Fatal(err)
	}
	if got := len(rec.requests()); got != 2 {
		t.Fatalf("%d requests, want 2", got)
	}
}

func TestNetSettingsTimeout(t *testing.T) {
	t.Parallel()
	n := newNetSettings(func(ctx context.Context, _ *vpnpb.NetworkSettingsRequest) error {
		<-ctx.Done()
		return ctx.Err()
	}, 20*time.Millisecond, "coder", nil, slog.Make())
	err := n.Set(&router.Config{LocalAddrs: []netip.Prefix{netip.MustParsePrefix("fd60:627a:a42b::1/128")}})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
}

// The DNS sent early stands in for the engine's empty DNS until the engine
// has servers of its own: the engine's first reconfiguration (router, no
// DNS) and its DNS at the first workspace update send nothing when they
// match what was sent early. From then on the engine's DNS is what counts,
// so clearing it is sent.
func TestNetSettingsSendsDNSEarly(t *testing.T) {
	t.Parallel()
	rec := &recordingApplier{}
	n := newNetSettings(rec.apply, time.Second, "coder", nil, slog.Make())
	rc := &router.Config{LocalAddrs: []netip.Prefix{netip.MustParsePrefix("fd60:627a:a42b::1/128")}}
	ahead := dns.OSConfig{Nameservers: []netip.Addr{netip.MustParseAddr("fd60:627a:a42b::53")}, MatchDomains: []dnsname.FQDN{"coder."}}
	n.sendEarly(rc, &ahead)
	if err := <-n.firstResult; err != nil {
		t.Fatalf("first result %v", err)
	}
	n.early.Wait()
	reqs := rec.requests()
	if len(reqs) != 1 || reqs[0].GetIpv6Settings() == nil || !slices.Equal(reqs[0].GetDnsSettings().GetServers(), []string{"fd60:627a:a42b::53"}) {
		t.Fatalf("early requests %v, want one with the router and the DNS", reqs)
	}
	// The engine's first reconfiguration, then the one after the first
	// workspace update, each as Reconfig makes them: router, then DNS.
	for _, oc := range []dns.OSConfig{{}, ahead} {
		if err := n.Set(rc); err != nil {
			t.Fatal(err)
		}
		if err := n.SetDNS(oc); err != nil {
			t.Fatal(err)
		}
	}
	if got := len(rec.requests()); got != 1 {
		t.Fatalf("%d requests after the engine's own configurations equal to the early one, want 1: %v", got, rec.requests())
	}
	if err := n.SetDNS(dns.OSConfig{}); err != nil {
		t.Fatal(err)
	}
	reqs = rec.requests()
	if len(reqs) != 2 || reqs[1].GetDnsSettings() != nil {
		t.Fatalf("after the engine cleared its DNS: %v", reqs)
	}
	n.shutdown()
}

// An early DNS that differs from the engine's is replaced by the engine's
// as soon as the engine has servers.
func TestNetSettingsEarlyDNSReplaced(t *testing.T) {
	t.Parallel()
	rec := &recordingApplier{}
	n := newNetSettings(rec.apply, time.Second, "coder", nil, slog.Make())
	rc := &router.Config{LocalAddrs: []netip.Prefix{netip.MustParsePrefix("fd60:627a:a42b::1/128")}}
	n.sendEarly(rc, &dns.OSConfig{Nameservers: []netip.Addr{netip.MustParseAddr("fd60:627a:a42b::53")}, MatchDomains: []dnsname.FQDN{"coder."}})
	n.early.Wait()
	if err := n.SetDNS(dns.OSConfig{Nameservers: []netip.Addr{netip.MustParseAddr("fd60:627a:a42b::54")}, MatchDomains: []dnsname.FQDN{"coder."}}); err != nil {
		t.Fatal(err)
	}
	reqs := rec.requests()
	if len(reqs) != 2 || !slices.Equal(reqs[1].GetDnsSettings().GetServers(), []string{"fd60:627a:a42b::54"}) {
		t.Fatalf("requests %v, want the early one, then the engine's DNS", reqs)
	}
	n.shutdown()
}
