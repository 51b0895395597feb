package vpnlib

import (
	"context"
	"net/netip"
	"testing"

	"tailscale.com/net/interfaces"

	"cdr.dev/slog/v3/sloggers/slogtest"
)

// state is an interfaces.State with the given addresses per interface.
func state(ifs map[string][]string) *interfaces.State {
	st := &interfaces.State{InterfaceIPs: map[string][]netip.Prefix{}, Interface: map[string]interfaces.Interface{}}
	for name, addrs := range ifs {
		for _, a := range addrs {
			st.InterfaceIPs[name] = append(st.InterfaceIPs[name], netip.MustParsePrefix(a))
		}
	}
	return st
}

// TestAddrWatchRebindsWhenAnAddressGoes is issue 17's cause in small: a
// deleted interface (another test's veth) took with it the address the
// engine's direct path used, the engine did not count that as a major
// change, and for 6.5 s every packet to that peer was lost. The tunnel
// rebinds the engine when an address goes, and only then.
func TestAddrWatchRebindsWhenAnAddressGoes(t *testing.T) {
	ctx := context.Background()
	base := map[string][]string{
		"lo":   {"127.0.0.1/8", "::1/128"},
		"eth0": {"192.0.2.2/24", "fd00::2/64", "fe80::1/64"},
	}
	withVeth := map[string][]string{
		"lo":     base["lo"],
		"eth0":   base["eth0"],
		"cvl1h0": {"10.213.97.1/24", "fe80::2/64"},
		"utun4":  {"fd60:627a:a42b:1::1/128"}, // the tunnel's own address
	}
	tests := []struct {
		name       string
		before     map[string][]string
		after      map[string][]string
		wantRebind int
	}{
		{"an interface appears", base, withVeth, 0},
		{"an interface is deleted", withVeth, base, 1},
		{"nothing changes", withVeth, withVeth, 0},
		{"one address of an interface goes", base, map[string][]string{"lo": base["lo"], "eth0": {"192.0.2.2/24", "fe80::1/64"}}, 1},
		{"only link-local, loopback and tailnet addresses go", map[string][]string{
			"lo": base["lo"], "eth0": base["eth0"], "utun4": {"fd60:627a:a42b:1::1/128"}, "x": {"fe80::9/64"},
		}, map[string][]string{"eth0": base["eth0"]}, 0},
		{"the machine loses every address", withVeth, map[string][]string{}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rebinds := 0
			w := &addrWatch{rebind: func() { rebinds++ }, logger: slogtest.Make(t, nil)}
			w.last = localAddrs(state(tt.before))
			w.check(ctx, state(tt.after))
			if rebinds != tt.wantRebind {
				t.Errorf("rebinds = %d, want %d (before %v, after %v)", rebinds, tt.wantRebind, tt.before, tt.after)
			}
			// The next report without a change must not rebind again.
			w.check(ctx, state(tt.after))
			if rebinds != tt.wantRebind {
				t.Errorf("a second report of the same state rebound again: %d rebinds", rebinds)
			}
		})
	}
}

// TestLocalAddrs checks which addresses the watch compares.
func TestLocalAddrs(t *testing.T) {
	got := localAddrs(state(map[string][]string{
		"lo":    {"127.0.0.1/8", "::1/128"},
		"eth0":  {"192.0.2.2/24", "fe80::1/64", "fd00::2/64"},
		"eth1":  {"192.0.2.2/24"}, // the same address twice counts once
		"utun4": {"fd60:627a:a42b:1::1/128", "fd7a:115c:a1e0::1/128"},
	}))
	want := []netip.Addr{netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("fd00::2")}
	if len(got) != len(want) {
		t.Fatalf("localAddrs = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("localAddrs = %v, want %v", got, want)
		}
	}
}
