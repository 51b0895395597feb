package vpntest

import (
	"fmt"
	"net/http"
	"net/netip"
	"time"

	"tailscale.com/derp"
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
func embeddedDERPMap(at netip.AddrPort) *tailcfg.DERPMap {
	ipv4, ipv6 := at.Addr().String(), "none"
	if at.Addr().Is6() {
		ipv4, ipv6 = "none", at.Addr().String()
	}
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
					HostName:  at.Addr().String(),
					IPv4:      ipv4,
					IPv6:      ipv6,
					DERPPort:  int(at.Port()),
					STUNPort:  -1,
					ForceHTTP: true,
				}},
			},
		},
	}
}

// relay is one incarnation of the deployment's DERP server. RestartDERP
// replaces it; the /derp route always serves the current one.
type relay struct {
	server  *derp.Server
	handler http.Handler
	closeWS func()
}

func (d *Deployment) newRelay() *relay {
	s := derp.NewServer(d.derpKey, tailnet.Logger(d.logger.Named("derp")))
	h, closeWS := tailnet.WithWebsocketSupport(s, derphttp.Handler(s))
	return &relay{server: s, handler: h, closeWS: closeWS}
}

// close ends every connection to the relay, over websockets or not, and
// waits for their handlers.
func (r *relay) close() error {
	r.closeWS()
	return r.server.Close()
}

// derpHandler serves DERP over "Upgrade: derp" and over websockets (the
// "derp" subprotocol), as coderd's /derp route does.
func (d *Deployment) derpHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d.relay.Load().handler.ServeHTTP(w, r)
	})
}
