package coderd

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"sync"

	"cdr.dev/slog/v3"
)

// route is the kernel's answer to "how do packets reach this address": the
// device they leave by and the gateway, if any.
type route struct {
	To  netip.Addr
	Dev string
	Gw  netip.Addr // invalid when the address is on the device's link
	// Tunnel says the device is a VPN's kind of device (a TUN, WireGuard,
	// PPP, an IP tunnel), not an uplink.
	Tunnel bool
}

func (r route) String() string {
	s := r.To.String()
	if r.Gw.IsValid() {
		s += " via " + r.Gw.String()
	}
	return s + " dev " + r.Dev
}

// routeWatch remembers the route by which each of the deployment's
// addresses (the control host's, the DERP relays') was last reached, so
// that when the kernel routes them through another device we can tell a
// person, as it happens, instead of only "cannot reach the deployment"
// once the next dial failed: typically another VPN came up and took the
// default route, or a route covering the deployment. Where the kernel
// cannot be asked (lookupRoute is unsupported) it says nothing.
type routeWatch struct {
	lookup func(netip.Addr) (route, error)

	mu   sync.Mutex
	good map[netip.Addr]route // by address: the route it was last reached by
	// told holds the device changes (before, now) reported, at the level
	// they were reported at; a change that is over is forgotten, so that it
	// is reported again if it comes back.
	told map[[2]string]slog.Level
}

func newRouteWatch() *routeWatch {
	return &routeWatch{lookup: lookupRoute, good: map[netip.Addr]route{}, told: map[[2]string]slog.Level{}}
}

// connected records the route to a connection's remote address: the
// deployment was reachable by it.
func (w *routeWatch) connected(remote net.Addr) {
	tcp, ok := remote.(*net.TCPAddr)
	if !ok {
		return
	}
	w.reached(tcp.AddrPort().Addr().Unmap())
}

// reached records addr's current route as a good one.
func (w *routeWatch) reached(addr netip.Addr) {
	r, err := w.lookup(addr)
	if err != nil {
		return
	}
	w.mu.Lock()
	w.good[addr] = r
	w.mu.Unlock()
}

// why a check runs: the network changed, or a dial to the deployment failed.
type checkReason int

const (
	networkChanged checkReason = iota
	dialFailed
)

// moved is the addresses whose route left one device for another.
type moved struct {
	before, now route // of the first address
	addrs       []string
}

// check compares the route of every address reached before with the
// kernel's current one and reports each change of device once: a warning
// when the new device is a VPN's (another VPN took the deployment's
// traffic) or when a dial failed since; otherwise (a new uplink: a dock, a
// Wi-Fi network) an info line, since the tunnel follows on its own.
func (w *routeWatch) check(ctx context.Context, logger slog.Logger, why checkReason) {
	w.mu.Lock()
	good := make([]route, 0, len(w.good))
	for _, r := range w.good {
		good = append(good, r)
	}
	w.mu.Unlock()
	slices.SortFunc(good, func(a, b route) int { return a.To.Compare(b.To) })

	changes := map[[2]string]*moved{}
	var order [][2]string
	for _, g := range good {
		now, err := w.lookup(g.To)
		if err != nil {
			logger.Debug(ctx, "look up the route to the deployment", slog.F("address", g.To.String()), slog.Error(err))
			continue
		}
		if now.Dev == g.Dev {
			continue
		}
		key := [2]string{g.Dev, now.Dev}
		m := changes[key]
		if m == nil {
			m = &moved{before: g, now: now}
			changes[key] = m
			order = append(order, key)
		}
		m.addrs = append(m.addrs, g.To.String())
	}

	w.mu.Lock()
	var report []*moved
	var levels []slog.Level
	for key := range w.told {
		if changes[key] == nil {
			delete(w.told, key) // over: the route went back, or away
		}
	}
	for _, key := range order {
		m := changes[key]
		lvl := slog.LevelInfo
		if m.now.Tunnel || why == dialFailed {
			lvl = slog.LevelWarn
		}
		if prev, ok := w.told[key]; ok && prev >= lvl {
			continue
		}
		w.told[key] = lvl
		report = append(report, m)
		levels = append(levels, lvl)
	}
	w.mu.Unlock()

	for i, m := range report {
		fields := []slog.Field{slog.F("route_now", m.now.String()), slog.F("route_before", m.before.String()), slog.F("addresses", m.addrs)}
		switch {
		case why == dialFailed:
			logger.Warn(ctx, "the route to the deployment changed: its address now goes through "+m.now.Dev+
				", not "+m.before.Dev+" as when the tunnel last reached it, and the deployment cannot be reached that way. "+
				"If another VPN took the route, let the deployment's address bypass it (split tunnel) or stop it; the tunnel keeps retrying",
				fields...)
		case levels[i] == slog.LevelWarn:
			logger.Warn(ctx, "another VPN or route took the deployment's traffic: the deployment's addresses now go through "+m.now.Dev+
				", not "+m.before.Dev+" as when the tunnel last reached them, and the tunnel may stop reaching the deployment "+
				"(its control connection and DERP relays). If that VPN cannot reach the deployment, let the deployment's addresses bypass it (split tunnel) or stop it",
				fields...)
		default:
			logger.Info(ctx, "the route to the deployment moved to another network device: "+m.now.Dev+", before "+m.before.Dev+
				"; the tunnel reconnects through it", fields...)
		}
	}
}
