package vpnlib

import (
	"context"
	"net"
	"net/netip"
	"net/url"
	"slices"

	"tailscale.com/tailcfg"

	"cdr.dev/slog/v3"
	"github.com/coder/coder/v2/tailnet"
)

// Why the deployment's own addresses are excluded from the tunnel:
//
// The tunnel routes fd60:627a:a42b::/48 (tailnet.CoderServicePrefix) into
// the TUN. When coder_url, or a DERP relay the deployment names, resolves
// to an address inside that prefix (a deployment reached through another
// Coder tunnel, or a workspace address equal to the deployment's), the
// host would route the control connection and DERP into our own TUN: the
// engine's packets to the deployment would come back to the engine, a
// routing loop that silently kills the tunnel. Each such address goes to
// the host as an excluded route (NEIPv6Settings.excludedRoutes on macOS),
// so it keeps the route it had before the tunnel started.

// hostResolver resolves a host name to its addresses.
type hostResolver func(ctx context.Context, host string) ([]netip.Addr, error)

func defaultResolver(ctx context.Context, host string) ([]netip.Addr, error) {
	return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
}

// tunnelRoutes are the routes the engine gives the TUN (configmaps.go:
// router.Config.Routes is CoderServicePrefix only).
var tunnelRoutes = []netip.Prefix{tailnet.CoderServicePrefix.AsNetip()}

// deploymentHosts lists the hosts the engine and the controllers connect
// to: coder_url's host and every DERP node's host name and fixed addresses.
func deploymentHosts(u *url.URL, derp *tailcfg.DERPMap) []string {
	hosts := []string{u.Hostname()}
	if derp != nil {
		for _, r := range derp.Regions {
			if r == nil {
				continue
			}
			for _, n := range r.Nodes {
				if n == nil {
					continue
				}
				for _, h := range []string{n.HostName, n.IPv4, n.IPv6} {
					if h != "" && h != "none" {
						hosts = append(hosts, h)
					}
				}
			}
		}
	}
	slices.Sort(hosts)
	return slices.Compact(hosts)
}

// excludedFromTunnel returns, as host routes, the addresses of hosts that
// fall inside routes, and every address the hosts resolved to. A host that
// does not resolve is skipped (the connection to it fails on its own, with
// its own error).
func excludedFromTunnel(ctx context.Context, resolve hostResolver, hosts []string, routes []netip.Prefix, logger slog.Logger) (out []netip.Prefix, all []netip.Addr) {
	for _, h := range hosts {
		addrs := []netip.Addr(nil)
		if a, err := netip.ParseAddr(h); err == nil {
			addrs = append(addrs, a)
		} else if resolved, err := resolve(ctx, h); err == nil {
			addrs = resolved
		} else {
			logger.Debug(ctx, "could not resolve a deployment host to check it against the tunnel's routes",
				slog.F("host", h), slog.Error(err))
			continue
		}
		for _, a := range addrs {
			a = a.Unmap().WithZone("")
			if !slices.Contains(all, a) {
				all = append(all, a)
			}
			for _, r := range routes {
				if !r.Contains(a) {
					continue
				}
				p := netip.PrefixFrom(a, a.BitLen())
				if !slices.Contains(out, p) {
					out = append(out, p)
					logger.Warn(ctx, "a deployment address is inside the tunnel's route; it is excluded from the tunnel "+
						"so that the control connection and DERP keep their own route (an agent at that address is unreachable)",
						slog.F("host", h), slog.F("address", a.String()), slog.F("route", r.String()))
				}
			}
		}
	}
	return out, all
}
