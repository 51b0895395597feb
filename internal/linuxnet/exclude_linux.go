package linuxnet

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Excluded routes on Linux.
//
// The tunnel lists as excluded routes the deployment's own addresses that
// fall inside the tunnel's route (fd60:627a:a42b::/48): coder_url or a DERP
// relay reached through another VPN, say. Were our /48 installed alone, the
// kernel would send the engine's own packets to the deployment into our TUN,
// back to the engine: a routing loop that silently kills the tunnel. macOS
// carves such holes itself (NEIPv6Settings.excludedRoutes); the Linux kernel
// has no "not through this device" route, so for each hole we pin the path
// the kernel used before our routes existed: a more specific route for the
// excluded prefix with the same gateway and device. Longest prefix wins, so
// the pin beats our /48, and the deployment keeps the route it had at Start.

// pin is a route we added so that an excluded prefix keeps its path outside
// the tunnel. route is exactly what was added, so that removing it can never
// hit a route someone else made.
type pin struct {
	dst   netip.Prefix
	route *netlink.Route
}

// holes returns the excluded prefixes that an included route would capture:
// those strictly inside one. An exclusion no included route covers already
// stays outside the tunnel and needs no kernel state.
func holes(excluded, included []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, e := range excluded {
		for _, r := range included {
			if r.Addr().BitLen() == e.Addr().BitLen() && r.Bits() < e.Bits() && r.Contains(e.Addr()) {
				out = append(out, e)
				break
			}
		}
	}
	return out
}

// applyExclusions makes the pins match the holes s needs: pins no longer
// needed are removed, new holes get a pin through the route the kernel uses
// for them now. It runs before the included routes are installed, so that a
// new hole is looked up before our routes can capture it.
func (c *Configurator) applyExclusions(s settings) error {
	want := holes(s.excluded, s.routes)
	kept := c.pins[:0]
	for _, p := range c.pins {
		if slices.Contains(want, p.dst) {
			kept = append(kept, p)
			continue
		}
		if err := c.nl.RouteDel(p.route); err != nil && !gone(err) {
			return fmt.Errorf("remove the route that kept excluded %s outside %s: %w", p.dst, c.cfg.Link, err)
		}
	}
	c.pins = kept
	for _, dst := range want {
		if slices.ContainsFunc(c.pins, func(p pin) bool { return p.dst == dst }) {
			continue
		}
		r, err := c.underlayRoute(dst)
		if err != nil && c.cfg.TunnelElsewhere {
			// Only this namespace's own traffic to dst goes into the TUN.
			if c.cfg.Notify != nil {
				c.cfg.Notify(err.Error())
			}
			continue
		}
		if err != nil {
			return err
		}
		if r == nil {
			continue
		}
		if err := c.nl.RouteAdd(r); err != nil {
			if errors.Is(err, unix.EEXIST) {
				// A route for exactly this prefix exists and is not ours: it
				// already beats our shorter routes, and it is not ours to
				// remove later.
				continue
			}
			return fmt.Errorf("add a route keeping excluded %s outside %s (via %s): %w", dst, c.cfg.Link, c.describeRoute(r), err)
		}
		c.pins = append(c.pins, pin{dst: dst, route: r})
	}
	return nil
}

// underlayRoute is the route to pin for dst: the gateway and device the
// kernel picks for it, as long as that is not our own TUN. Nil means dst is
// an address of this machine (table local, which our routes never override).
func (c *Configurator) underlayRoute(dst netip.Prefix) (*netlink.Route, error) {
	routes, err := c.nl.RouteGet(net.IP(dst.Addr().AsSlice()))
	if err != nil {
		return nil, c.noRoute(dst, err)
	}
	if len(routes) == 0 {
		return nil, c.noRoute(dst, errors.New("the kernel returned no route"))
	}
	r := routes[0]
	if r.Type == unix.RTN_LOCAL {
		return nil, nil
	}
	gw, dev := r.Gw, r.LinkIndex
	if dev == c.ifindex {
		// Our routes are already installed and capture dst (the exclusion is
		// new in this request): find what the main table would pick without
		// them.
		var ok bool
		if gw, dev, ok = c.mainRouteAvoidingTUN(dst); !ok {
			return nil, c.noRoute(dst, fmt.Errorf("the only route is through %s itself", c.cfg.Link))
		}
	}
	return &netlink.Route{Dst: prefixNet(dst), Gw: gw, LinkIndex: dev}, nil
}

// mainRouteAvoidingTUN does the main table's longest-prefix match for dst,
// skipping routes through our TUN; among equally specific routes the lowest
// metric wins. Policy routing rules are not consulted: only a request that
// adds an exclusion while our routes are installed gets here, and the
// tunnel sends the same exclusions from its first request on.
func (c *Configurator) mainRouteAvoidingTUN(dst netip.Prefix) (net.IP, int, bool) {
	family := netlink.FAMILY_V6
	if dst.Addr().Is4() {
		family = netlink.FAMILY_V4
	}
	routes, err := c.nl.RouteListFiltered(family, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, 0, false
	}
	best, bestBits := -1, -1
	for i, r := range routes {
		if r.Type != unix.RTN_UNICAST || r.LinkIndex == c.ifindex && len(r.MultiPath) == 0 {
			continue
		}
		bits := 0
		if r.Dst != nil {
			p, ok := netipPrefix(r.Dst)
			if !ok || !p.Contains(dst.Addr()) {
				continue
			}
			bits = p.Bits()
		}
		if bits > bestBits || bits == bestBits && r.Priority < routes[best].Priority {
			best, bestBits = i, bits
		}
	}
	if best < 0 {
		return nil, 0, false
	}
	r := routes[best]
	if len(r.MultiPath) > 0 {
		for _, nh := range r.MultiPath {
			if nh.LinkIndex != c.ifindex {
				return nh.Gw, nh.LinkIndex, true
			}
		}
		return nil, 0, false
	}
	return r.Gw, r.LinkIndex, true
}

// noRoute is the error for an excluded prefix with nowhere to go but the
// tunnel: installing our routes would then loop the deployment's traffic
// (unless the tunnel runs in another namespace: Config.TunnelElsewhere).
func (c *Configurator) noRoute(dst netip.Prefix, err error) error {
	if c.cfg.TunnelElsewhere {
		return fmt.Errorf("excluded route %s (kept outside the tunnel, but inside its routes) has no route outside %s in its namespace: %w; "+
			"connections from that namespace to %s go into the tunnel (the tunnel's own do not: it runs in another namespace). "+
			"If they must not, add a route there (e.g. `ip route add %s via GATEWAY`)",
			dst, c.cfg.Link, err, dst.Addr(), dst)
	}
	return fmt.Errorf("excluded route %s (kept outside the tunnel, but inside its routes) has no route outside %s: %w; "+
		"the tunnel's routes would capture it and loop its own traffic. Add a route to %s through your network "+
		"(e.g. `ip route add %s via GATEWAY`), or reach the deployment at an address outside the tunnel's routes",
		dst, c.cfg.Link, err, dst.Addr(), dst)
}

// removePins deletes every pin, for Close.
func (c *Configurator) removePins() []error {
	var errs []error
	for _, p := range c.pins {
		if err := c.nl.RouteDel(p.route); err != nil && !gone(err) {
			errs = append(errs, fmt.Errorf("remove the route that kept excluded %s outside %s: %w", p.dst, c.cfg.Link, err))
		}
	}
	c.pins = nil
	return errs
}

// describeRoute names a route's next hop the way `ip route` does.
func (c *Configurator) describeRoute(r *netlink.Route) string {
	name := fmt.Sprintf("ifindex %d", r.LinkIndex)
	if l, err := c.nl.LinkByIndex(r.LinkIndex); err == nil {
		name = l.Attrs().Name
	}
	if r.Gw != nil {
		return fmt.Sprintf("%s dev %s", r.Gw, name)
	}
	return "dev " + name
}

func netipPrefix(n *net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	a = a.Unmap()
	return netip.PrefixFrom(a, ones), true
}
