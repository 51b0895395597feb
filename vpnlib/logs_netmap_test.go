package vpnlib

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"tailscale.com/tailcfg"
	"tailscale.com/types/key"
	"tailscale.com/types/netmap"
)

func testNetmap(peers int) *netmap.NetworkMap {
	nm := &netmap.NetworkMap{
		NodeKey:   key.NewNode().Public(),
		Addresses: []netip.Prefix{netip.MustParsePrefix("fd60:627a:a42b::1/128")},
	}
	for i := range peers {
		nm.Peers = append(nm.Peers, &tailcfg.Node{
			ID:        tailcfg.NodeID(i + 1),
			Key:       key.NewNode().Public(),
			Addresses: []netip.Prefix{netip.MustParsePrefix(fmt.Sprintf("fd60:627a:a42b::%x/128", i+2))},
			DERP:      "127.3.3.40:999",
			Endpoints: []string{"192.0.2.1:41641"},
		})
	}
	return nm
}

// The engine's network map is logged as a bounded summary: small maps name
// every peer, large ones stop inside the field cap and say how many peers
// were left out, instead of being rendered whole and then cut.
func TestNetmapLogSummary(t *testing.T) {
	tests := []struct {
		name     string
		peers    int
		wantMore bool
	}{
		{"no peers", 0, false},
		{"three peers", 3, false},
		{"two thousand peers", 2000, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			nm := testNetmap(tc.peers)
			got := formatLogValue(nm)
			if len(got) > maxLogFieldLen {
				t.Fatalf("summary is %d bytes, over the %d-byte field cap", len(got), maxLogFieldLen)
			}
			if want := fmt.Sprintf("%d peers", tc.peers); !strings.Contains(got, want) {
				t.Errorf("summary lacks %q: %.200s", want, got)
			}
			if !strings.Contains(got, nm.NodeKey.ShortString()) {
				t.Errorf("summary lacks our key: %.200s", got)
			}
			listed := strings.Count(got, "derp=")
			more := strings.Contains(got, " more")
			if more != tc.wantMore || (!tc.wantMore && listed != tc.peers) {
				t.Errorf("%d of %d peers listed, 'more' marker %v: %.200s", listed, tc.peers, more, got)
			}
			if tc.wantMore && !strings.HasSuffix(got, fmt.Sprintf("… %d more", tc.peers-listed)) {
				t.Errorf("summary does not end with the count of peers left out: …%s", got[len(got)-80:])
			}
		})
	}
	if got := summarizeNetmap(nil, maxLogFieldLen); got != "<nil>" {
		t.Errorf("nil map: %q", got)
	}
}
