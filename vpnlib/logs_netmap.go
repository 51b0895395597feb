package vpnlib

import (
	"fmt"
	"strings"

	"tailscale.com/types/netmap"
)

// summarizeNetmap renders the engine's network map for a log line in at most
// about limit bytes: our node, the peer count, then one short entry per
// peer until the budget is spent.
//
// Why not its String method: the engine logs the whole map on every change,
// and String renders every peer before our cap could cut it. With two
// thousand agents that is ~100 KiB of text per line, hundreds of times
// during a start, nearly all of it thrown away.
// netmapEntryRoom is kept free at the end of the budget for one more peer
// entry and the count of those left out, so the summary is never cut.
const netmapEntryRoom = 256

func summarizeNetmap(nm *netmap.NetworkMap, limit int) string {
	if nm == nil {
		return "<nil>"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "netmap: self %s %v, %d peers", nm.NodeKey.ShortString(), nm.Addresses, len(nm.Peers))
	for i, p := range nm.Peers {
		if b.Len() >= limit-netmapEntryRoom {
			fmt.Fprintf(&b, "; … %d more", len(nm.Peers)-i)
			break
		}
		fmt.Fprintf(&b, "; %s %v derp=%s endpoints=%d", p.Key.ShortString(), p.Addresses, p.DERP, len(p.Endpoints))
	}
	return b.String()
}
