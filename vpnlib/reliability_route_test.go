package vpnlib_test

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/codervpn/codervpn/vpnlib"
	"github.com/codervpn/codervpn/vpnlib/vpntest"
)

// TestDeploymentInsideTunnelRoute starts a tunnel whose coder_url names a
// host that resolves inside fd60:627a:a42b::/48, the route the tunnel gives
// its TUN (a deployment reached through another Coder tunnel). The host must
// be told to keep that address out of the TUN, or the control connection
// and DERP would loop into our own tunnel; the tunnel works and says why.
func TestDeploymentInsideTunnelRoute(t *testing.T) {
	inside := netip.MustParseAddr("fd60:627a:a42b:ffff::c0de")
	r := newRig(t, rigOptions{
		deployment: &vpntest.Options{},
		config: func(c *vpnlib.TunnelConfig) {
			vpnlib.SetResolver(c, func(ctx context.Context, host string) ([]netip.Addr, error) {
				if host == "localhost" {
					return []netip.Addr{netip.MustParseAddr("127.0.0.1"), inside}, nil
				}
				return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
			})
		},
	})
	// The engine and the REST client dial localhost for real (loopback);
	// only the check against the routes sees the address inside.
	u := *r.d.URL
	u.Host = net.JoinHostPort("localhost", u.Port())
	_, agent := r.startWithAgent(u.String())

	cfg, ok := r.h.Applied()
	if !ok {
		t.Fatal("no network settings applied")
	}
	want := netip.PrefixFrom(inside, 128)
	if !slices.Contains(cfg.ExcludedRoutes, want) {
		t.Fatalf("excluded routes %v, want %v (the deployment's address inside the tunnel's route)", cfg.ExcludedRoutes, want)
	}
	if text, ok := logsContain(r.h, "inside the tunnel's route"); !ok || !strings.Contains(text, inside.String()) {
		t.Errorf("no Log naming the excluded deployment address (got %q)", text)
	}
	waitTraffic(r.ctx, t, r.h, agent, time.Now())
	r.stop()
}
