package coderd

import (
	"context"
	"net"
	"net/netip"
	"sync"

	"cdr.dev/slog/v3"
)

// route is the kernel's answer to "how do packets reach this address": the
// device they leave by and the gateway, if any.
type route struct {
	To  netip.Addr
	Dev string
	Gw  netip.Addr // invalid when the address is on the device's link
}

func (r route) String() string {
	s := r.To.String()
	if r.Gw.IsValid() {
		s += " via " + r.Gw.String()
	}
	return s + " dev " + r.Dev
}

// routeWatch remembers the route by which the deployment was last reached,
// so that when the control connection cannot be dialed again we can tell a
// person that the route changed under us (typically: another VPN came up
// and took the default route, or a route covering the deployment) instead
// of only "cannot reach the deployment". Where the kernel cannot be asked
// (lookupRoute is unsupported), it says nothing.
type routeWatch struct {
	lookup func(netip.Addr) (route, error)

	mu     sync.Mutex
	good   route              // the route of the last successful dial
	warned map[[2]string]bool // (good device, current device) pairs already reported
}

func newRouteWatch() *routeWatch {
	return &routeWatch{lookup: lookupRoute, warned: map[[2]string]bool{}}
}

// connected records the route to a connection's remote address: the
// deployment was reachable by it.
func (w *routeWatch) connected(remote net.Addr) {
	tcp, ok := remote.(*net.TCPAddr)
	if !ok {
		return
	}
	r, err := w.lookup(tcp.AddrPort().Addr().Unmap())
	if err != nil {
		return
	}
	w.mu.Lock()
	w.good = r
	w.mu.Unlock()
}

// check is called when a dial to the deployment failed: if the kernel now
// routes the deployment's address through another device than the last
// successful dial did, it warns once per such change, naming both routes.
func (w *routeWatch) check(ctx context.Context, logger slog.Logger) {
	w.mu.Lock()
	good := w.good
	w.mu.Unlock()
	if good.Dev == "" {
		return
	}
	now, err := w.lookup(good.To)
	if err != nil {
		logger.Debug(ctx, "look up the route to the deployment", slog.Error(err))
		return
	}
	if now.Dev == good.Dev {
		return
	}
	key := [2]string{good.Dev, now.Dev}
	w.mu.Lock()
	seen := w.warned[key]
	w.warned[key] = true
	w.mu.Unlock()
	if seen {
		return
	}
	logger.Warn(ctx, "the route to the deployment changed: its address now goes through "+now.Dev+
		", not "+good.Dev+" as when the tunnel last reached it, and the deployment cannot be reached that way. "+
		"If another VPN took the route, let the deployment's address bypass it (split tunnel) or stop it; the tunnel keeps retrying",
		slog.F("route_now", now.String()), slog.F("route_before", good.String()))
}
