package netstack

import (
	"errors"
	"net/netip"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
	"google.golang.org/protobuf/proto"

	vpnpb "github.com/codervpn/codervpn/proto"
)

// FuzzParseFrame: any datagram is either a packet of the protocol its header
// names, with the IP version that protocol implies, or a malformed frame.
func FuzzParseFrame(f *testing.F) {
	f.Add([]byte{0, 0, 0, 30, 0x60, 0, 0, 0})
	f.Add([]byte{0, 0, 0, 2, 0x45, 0, 0, 20})
	f.Add([]byte{0, 0, 0, 10, 0x60})
	f.Add([]byte{0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		proto, pkt, err := parseFrame(b)
		if err != nil {
			if !errors.Is(err, errFrame) {
				t.Fatalf("error %v does not wrap errFrame", err)
			}
			return
		}
		if len(pkt) != len(b)-utunHeaderLen || len(pkt) == 0 {
			t.Fatalf("packet of %d bytes from a %d-byte frame", len(pkt), len(b))
		}
		again, ok := appendFrame(nil, proto)
		if !ok || string(again) != string(b[:utunHeaderLen]) {
			t.Fatalf("header %x does not round-trip (got %x)", b[:utunHeaderLen], again)
		}
	})
}

// FuzzParseSettings: ParseSettings never panics, and what it accepts a
// Stack can hold.
func FuzzParseSettings(f *testing.F) {
	// What our tunnel sends: its /128, the Coder prefix, the DNS server with
	// the suffix as match domain, MTU 1280.
	v6, _ := proto.Marshal(&vpnpb.NetworkSettingsRequest{Mtu: 1280,
		Ipv6Settings: &vpnpb.NetworkSettingsRequest_IPv6Settings{Addrs: []string{hostAddr.String()}, PrefixLengths: []uint32{128},
			IncludedRoutes: []*vpnpb.NetworkSettingsRequest_IPv6Settings_IPv6Route{{Destination: prefix48.Addr().String(), PrefixLength: 48}}},
		DnsSettings: &vpnpb.NetworkSettingsRequest_DNSSettings{Servers: []string{dnsAddr.String()}, MatchDomains: []string{"coder"}},
	})
	f.Add(v6)
	v4, _ := proto.Marshal(&vpnpb.NetworkSettingsRequest{Ipv4Settings: &vpnpb.NetworkSettingsRequest_IPv4Settings{
		Addrs: []string{"100.64.0.1"}, SubnetMasks: []string{"255.255.255.0"},
		IncludedRoutes: []*vpnpb.NetworkSettingsRequest_IPv4Settings_IPv4Route{{Destination: "100.64.0.0", Mask: "255.192.0.0"}},
	}})
	f.Add(v4)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		var req vpnpb.NetworkSettingsRequest
		if proto.Unmarshal(b, &req) != nil {
			return
		}
		cfg, err := ParseSettings(&req)
		if err != nil {
			return
		}
		if cfg.MTU < 576 || cfg.MTU > 65535 {
			t.Fatalf("accepted MTU %d", cfg.MTU)
		}
		for _, p := range append(append([]netip.Prefix(nil), cfg.Addrs...), cfg.Routes...) {
			if !p.IsValid() {
				t.Fatalf("accepted invalid prefix %v", p)
			}
		}
		for _, r := range cfg.Routes {
			if r != r.Masked() {
				t.Fatalf("route %v is not masked", r)
			}
		}
	})
}

// FuzzParseDNSReply: a reply is accepted only if it answers our question.
func FuzzParseDNSReply(f *testing.F) {
	name := dnsmessage.MustNewName("main.ws.me.coder.")
	reply := dnsmessage.Message{
		Header:    dnsmessage.Header{ID: 7, Response: true},
		Questions: []dnsmessage.Question{{Name: name, Type: dnsmessage.TypeAAAA, Class: dnsmessage.ClassINET}},
		Answers: []dnsmessage.Resource{{
			Header: dnsmessage.ResourceHeader{Name: name, Type: dnsmessage.TypeAAAA, Class: dnsmessage.ClassINET},
			Body:   &dnsmessage.AAAAResource{AAAA: agentAddr.As16()},
		}},
	}
	b, _ := reply.Pack()
	f.Add(b)
	f.Add(b[:len(b)-3])
	f.Fuzz(func(t *testing.T, b []byte) {
		msg, err := parseDNSReply(b, 7, name, dnsmessage.TypeAAAA)
		if err != nil {
			return
		}
		if !msg.Response || msg.ID != 7 || len(msg.Questions) != 1 {
			t.Fatalf("accepted %+v", msg.Header)
		}
		_ = aaaaAnswers(msg)
	})
}
