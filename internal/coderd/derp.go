package coderd

import (
	"context"
	"net/url"

	"tailscale.com/tailcfg"

	"cdr.dev/slog/v3"
	"github.com/coder/coder/v2/tailnet"
)

// DERPRewriter points the deployment's embedded relay at the URL we reached
// the deployment by: the DERP map names the deployment's own idea of its
// address, which may not be reachable from here. It is the DERP
// controller's rewriter, and the tunnel applies it to the first map too.
type DERPRewriter struct {
	Logger    slog.Logger
	AccessURL *url.URL
}

// RewriteDERPMap implements tailnet.DERPMapRewriter.
func (d DERPRewriter) RewriteDERPMap(m *tailcfg.DERPMap) {
	tailnet.RewriteDERPMapDefaultRelay(context.Background(), d.Logger, m, d.AccessURL)
}
