package vpntest

import (
	"fmt"
	"net/http"
	"time"

	"tailscale.com/derp/derphttp"
	"tailscale.com/tailcfg"

	"github.com/coder/coder/v2/tailnet"
)

const (
	// EmbeddedRegionID is the DERP region the deployment serves itself, the
	// same id coderd uses for its built-in relay by default.
	EmbeddedRegionID = 999
	// derpMapUpdateFrequency is how often StreamDERPMaps re-checks the map.
	// The map never changes, so this only bounds a goroutine's wake-ups.
	derpMapUpdateFrequency = 5 * time.Second
)

// embeddedDERPMap describes the deployment's own relay the way coderd
// describes its embedded one: a region marked EmbeddedRelay whose node is the
// access URL's host and port over plain HTTP. Clients that rewrite the
// embedded region to their access URL (tailnet.RewriteDERPMapDefaultRelay)
// end up with the same values. STUN is disabled (port -1): clients measure
// latency with /derp/latency-check instead, and nothing listens for UDP.
func embeddedDERPMap(port int) *tailcfg.DERPMap {
	return &tailcfg.DERPMap{
		Regions: map[int]*tailcfg.DERPRegion{
			EmbeddedRegionID: {
				EmbeddedRelay: true,
				RegionID:      EmbeddedRegionID,
				RegionCode:    "coder",
				RegionName:    "Coder Embedded Relay",
				Nodes: []*tailcfg.DERPNode{{
					Name:      fmt.Sprintf("%db", EmbeddedRegionID),
					RegionID:  EmbeddedRegionID,
					HostName:  "127.0.0.1",
					IPv4:      "127.0.0.1",
					IPv6:      "none",
					DERPPort:  port,
					STUNPort:  -1,
					ForceHTTP: true,
				}},
			},
		},
	}
}

// derpHandler serves DERP over "Upgrade: derp" and over websockets (the
// "derp" subprotocol), as coderd's /derp route does.
func (d *Deployment) derpHandler() http.Handler {
	h, closeWS := tailnet.WithWebsocketSupport(d.derpServer, derphttp.Handler(d.derpServer))
	d.handlerMu.Lock()
	d.derpWSClose = closeWS
	d.handlerMu.Unlock()
	return h
}
