package linuxnet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	vpnpb "github.com/codervpn/codervpn/proto"
)

// Config says which interface a Configurator configures and how.
type Config struct {
	// Link is the interface name, e.g. the TUN from CreateTUN.
	Link string
	// Netlink is the handle every kernel change goes through. Bind it to
	// another network namespace (netlink.NewHandleAt) to configure a device
	// that lives there. Nil uses a handle on the caller's namespace, which
	// the Configurator owns and closes.
	Netlink *netlink.Handle
	// DNS applies the resolver part of the settings. Nil means no resolver
	// integration: DNS settings are accepted and Notify explains how to query
	// the tunnel's resolver by hand (see NoDNS).
	DNS DNSConfigurator
	// Notify receives things the person running the host should know, such as
	// DNS not being configured. It is called synchronously from Apply.
	Notify func(msg string)
	// TunnelElsewhere says the tunnel's own connections (control, DERP, UDP)
	// do not use this namespace's routes: the TUN was created in another
	// network namespace than the tunnel's process. Our routes then cannot
	// loop the tunnel's traffic, so an excluded route with no route outside
	// the TUN is reported through Notify instead of refusing the settings.
	TunnelElsewhere bool
}

// Configurator applies NetworkSettingsRequests to one interface and
// remembers exactly what it changed, so that Close can undo it without
// touching anything the system or the user set up. Safe for concurrent use.
type Configurator struct {
	cfg      Config
	nl       *netlink.Handle
	ownsNL   bool
	ifindex  int
	origMTU  int
	origUp   bool
	mu       sync.Mutex
	closed   bool
	setMTU   bool
	setUp    bool
	addrs    []netip.Prefix // installed by us
	routes   []netip.Prefix // installed by us
	pins     []pin          // routes keeping excluded prefixes out (exclude_linux.go)
	dnsSet   bool
	lastNote string
}

// New looks up the interface and records its current MTU and state so that
// Close can restore them.
func New(cfg Config) (*Configurator, error) {
	c := &Configurator{cfg: cfg, nl: cfg.Netlink}
	if c.nl == nil {
		nl, err := netlink.NewHandle()
		if err != nil {
			return nil, fmt.Errorf("open netlink socket: %w", err)
		}
		c.nl, c.ownsNL = nl, true
	}
	link, err := c.nl.LinkByName(cfg.Link)
	if err != nil {
		if c.ownsNL {
			c.nl.Close()
		}
		return nil, fmt.Errorf("find interface %s: %w", cfg.Link, err)
	}
	attrs := link.Attrs()
	c.ifindex = attrs.Index
	c.origMTU = attrs.MTU
	c.origUp = attrs.Flags&net.FlagUp != 0
	if c.cfg.DNS == nil {
		c.cfg.DNS = NoDNS{}
	}
	return c, nil
}

// Apply makes the interface match req. The interface part (MTU, addresses,
// routes) is reconciled: what we installed earlier and req no longer lists is
// removed. The DNS part goes to the DNSConfigurator. The returned error is
// what the manager reports back to the tunnel (success=false).
func (c *Configurator) Apply(ctx context.Context, req *vpnpb.NetworkSettingsRequest) error {
	s, err := parseSettings(req)
	if err != nil {
		return fmt.Errorf("invalid network settings: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return fmt.Errorf("network settings for %s arrived after teardown", c.cfg.Link)
	}
	if s.hasIface {
		if err := c.applyIface(s); err != nil {
			return err
		}
	}
	if s.hasDNS {
		if err := c.applyDNS(ctx, s.dns); err != nil {
			return err
		}
	}
	return nil
}

func (c *Configurator) link() netlink.Link {
	// The netlink calls below only use the index, so a bare attrs-only link
	// avoids a lookup round trip per call.
	return &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: c.ifindex, Name: c.cfg.Link}}
}

func (c *Configurator) applyIface(s settings) error {
	link := c.link()
	// MTU first: IPv6 is disabled on links under 1280 bytes, so addresses can
	// only be added once the MTU allows them.
	if s.mtu != 0 {
		if err := c.nl.LinkSetMTU(link, s.mtu); err != nil {
			return fmt.Errorf("set MTU %d on %s: %w", s.mtu, c.cfg.Link, err)
		}
		c.setMTU = true
	}
	if err := c.nl.LinkSetUp(link); err != nil {
		return fmt.Errorf("bring %s up: %w", c.cfg.Link, err)
	}
	c.setUp = true

	for _, p := range c.addrs {
		if !contains(s.addrs, p) {
			if err := c.nl.AddrDel(link, addrOf(p)); err != nil && !gone(err) {
				return fmt.Errorf("remove address %s from %s: %w", p, c.cfg.Link, err)
			}
		}
	}
	c.addrs = keep(c.addrs, s.addrs)
	for _, p := range s.addrs {
		if err := c.nl.AddrReplace(link, addrOf(p)); err != nil {
			return fmt.Errorf("add address %s to %s: %w", p, c.cfg.Link, err)
		}
		if !contains(c.addrs, p) {
			c.addrs = append(c.addrs, p)
		}
	}

	// Old routes go first and the holes are pinned before any new route is
	// installed: a route we install must never capture an excluded prefix,
	// not even for a moment.
	for _, p := range c.routes {
		if !contains(s.routes, p) {
			if err := c.nl.RouteDel(c.routeOf(p)); err != nil && !gone(err) {
				return fmt.Errorf("remove route %s via %s: %w", p, c.cfg.Link, err)
			}
		}
	}
	c.routes = keep(c.routes, s.routes)
	if err := c.applyExclusions(s); err != nil {
		return err
	}
	for _, p := range s.routes {
		if err := c.nl.RouteReplace(c.routeOf(p)); err != nil {
			return fmt.Errorf("add route %s via %s: %w", p, c.cfg.Link, err)
		}
		if !contains(c.routes, p) {
			c.routes = append(c.routes, p)
		}
	}
	return nil
}

func (c *Configurator) applyDNS(ctx context.Context, d DNSSettings) error {
	link := Link{Index: c.ifindex, Name: c.cfg.Link}
	if len(d.Servers) == 0 {
		if c.dnsSet {
			if err := c.cfg.DNS.RevertDNS(ctx, link); err != nil {
				return err
			}
			c.dnsSet = false
		}
		return nil
	}
	if err := c.cfg.DNS.SetDNS(ctx, link, d); err != nil {
		var nc *NotConfiguredError
		if errors.As(err, &nc) {
			// Not a failure of the tunnel's request: the machine just has no
			// resolver we can program. Tell the person, once per change.
			if msg := nc.Error(); msg != c.lastNote {
				c.lastNote = msg
				if c.cfg.Notify != nil {
					c.cfg.Notify(msg)
				}
			}
			return nil
		}
		return err
	}
	c.dnsSet = true
	return nil
}

// Close undoes everything Apply did: DNS reverted, routes and addresses
// removed, MTU and link state restored. It is idempotent. Changes the kernel
// already dropped (the TUN went away with its last fd) count as undone.
func (c *Configurator) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	var errs []error
	if c.dnsSet {
		// Bounded by the D-Bus call timeout inside the configurator.
		if err := c.cfg.DNS.RevertDNS(context.Background(), Link{Index: c.ifindex, Name: c.cfg.Link}); err != nil {
			errs = append(errs, err)
		}
	}
	link := c.link()
	for _, p := range c.routes {
		if err := c.nl.RouteDel(c.routeOf(p)); err != nil && !gone(err) {
			errs = append(errs, fmt.Errorf("remove route %s via %s: %w", p, c.cfg.Link, err))
		}
	}
	errs = append(errs, c.removePins()...)
	for _, p := range c.addrs {
		if err := c.nl.AddrDel(link, addrOf(p)); err != nil && !gone(err) {
			errs = append(errs, fmt.Errorf("remove address %s from %s: %w", p, c.cfg.Link, err))
		}
	}
	if c.setMTU && c.origMTU != 0 {
		if err := c.nl.LinkSetMTU(link, c.origMTU); err != nil && !gone(err) {
			errs = append(errs, fmt.Errorf("restore MTU %d on %s: %w", c.origMTU, c.cfg.Link, err))
		}
	}
	if c.setUp && !c.origUp {
		if err := c.nl.LinkSetDown(link); err != nil && !gone(err) {
			errs = append(errs, fmt.Errorf("bring %s down: %w", c.cfg.Link, err))
		}
	}
	c.addrs, c.routes = nil, nil
	if c.ownsNL {
		c.nl.Close()
	}
	return errors.Join(errs...)
}

func addrOf(p netip.Prefix) *netlink.Addr {
	a := &netlink.Addr{IPNet: prefixNet(p)}
	if p.Addr().Is6() {
		// Skip duplicate address detection: on a point-to-point TUN there is
		// nobody to collide with, and a tentative address cannot be used as a
		// source for the second or two DAD takes.
		a.Flags = unix.IFA_F_NODAD
	}
	return a
}

func (c *Configurator) routeOf(p netip.Prefix) *netlink.Route {
	return &netlink.Route{LinkIndex: c.ifindex, Dst: prefixNet(p), Scope: netlink.SCOPE_LINK}
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// gone reports errors meaning the thing to remove no longer exists.
func gone(err error) bool {
	var lnf netlink.LinkNotFoundError
	return errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENODEV) ||
		errors.Is(err, unix.EADDRNOTAVAIL) || errors.Is(err, unix.ENOENT) || errors.As(err, &lnf)
}

func contains(ps []netip.Prefix, p netip.Prefix) bool {
	for _, q := range ps {
		if q == p {
			return true
		}
	}
	return false
}

// keep returns the elements of have that are also in want.
func keep(have, want []netip.Prefix) []netip.Prefix {
	out := have[:0]
	for _, p := range have {
		if contains(want, p) {
			out = append(out, p)
		}
	}
	return out
}
