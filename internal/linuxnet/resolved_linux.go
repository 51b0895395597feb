package linuxnet

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/godbus/dbus/v5"
)

// The systemd-resolved D-Bus API (org.freedesktop.resolve1(5)).
const (
	resolvedName   = "org.freedesktop.resolve1"
	resolvedPath   = dbus.ObjectPath("/org/freedesktop/resolve1")
	resolvedIface  = "org.freedesktop.resolve1.Manager"
	resolvedCallTO = 5 * time.Second
)

// Resolved configures split DNS through systemd-resolved: the tunnel's server
// becomes the link's DNS server and each match domain a routing-only domain
// ("~coder"), so only names under it are sent through the tunnel and the rest
// of the machine's resolution is untouched. RevertLink undoes all of it, and
// resolved forgets the link by itself if the TUN disappears first.
type Resolved struct {
	conn *dbus.Conn
	kill context.CancelFunc // ends the connection's lifetime context
}

// ConnectResolved connects to the D-Bus at address ("" for the system bus)
// and checks that systemd-resolved is running there. It never starts
// resolved through bus activation: on a machine that does not use resolved,
// starting it would change how every name resolves.
//
// When resolved is not available it returns NoDNS with the reason, so the
// caller always gets a usable configurator; the error return is only for a
// context that ended.
func ConnectResolved(ctx context.Context, address string) (DNSConfigurator, error) {
	// godbus ties a connection's life to the context it is made with and
	// ignores contexts during the handshake: a bus that accepts but never
	// answers Hello would hang us. So the connection gets a lifetime of its
	// own, cut short if the handshake outlasts resolvedCallTO or ctx ends,
	// and ended by Close.
	lifetime, kill := context.WithCancel(context.Background())
	timer := time.AfterFunc(resolvedCallTO, kill)
	stopWatch := context.AfterFunc(ctx, kill)
	var (
		conn *dbus.Conn
		err  error
	)
	if address == "" {
		conn, err = dbus.ConnectSystemBus(dbus.WithContext(lifetime))
	} else {
		conn, err = dbus.Connect(address, dbus.WithContext(lifetime))
	}
	inTime := timer.Stop()
	watching := stopWatch()
	if err == nil && (!inTime || !watching) {
		conn.Close()
		err = errors.New("the bus did not complete the connection handshake in time")
	}
	if err != nil {
		kill()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return NoDNS{Reason: fmt.Sprintf("the system D-Bus is not reachable (%v), so systemd-resolved cannot be asked", err)}, nil
	}
	var running bool
	cctx, cancel := context.WithTimeout(ctx, resolvedCallTO)
	defer cancel()
	err = conn.BusObject().CallWithContext(cctx, "org.freedesktop.DBus.NameHasOwner", 0, resolvedName).Store(&running)
	if err != nil || !running {
		conn.Close()
		kill()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		reason := "systemd-resolved is not running"
		if err != nil {
			reason = fmt.Sprintf("could not ask D-Bus whether systemd-resolved is running (%v)", err)
		}
		return NoDNS{Reason: reason}, nil
	}
	return &Resolved{conn: conn, kill: kill}, nil
}

// Close closes the D-Bus connection.
func (r *Resolved) Close() error {
	err := r.conn.Close()
	r.kill()
	return err
}

type resolvedAddr struct {
	Family  int32
	Address []byte
}

type resolvedDomain struct {
	Domain      string
	RoutingOnly bool
}

func (r *Resolved) call(ctx context.Context, method string, args ...any) error {
	ctx, cancel := context.WithTimeout(ctx, resolvedCallTO)
	defer cancel()
	return r.conn.Object(resolvedName, resolvedPath).CallWithContext(ctx, resolvedIface+"."+method, 0, args...).Err
}

// SetDNS implements DNSConfigurator. If resolved refuses (for example polkit
// denies an unprivileged caller), nothing is left half-configured and the
// refusal is reported as a NotConfiguredError, so the tunnel keeps working
// by IP address.
func (r *Resolved) SetDNS(ctx context.Context, link Link, s DNSSettings) error {
	idx := int32(link.Index) //nolint:gosec // interface indexes are small positive ints
	addrs := make([]resolvedAddr, 0, len(s.Servers))
	for _, a := range s.Servers {
		fam := int32(10) // AF_INET6
		if a.Is4() {
			fam = 2 // AF_INET
		}
		addrs = append(addrs, resolvedAddr{Family: fam, Address: a.AsSlice()})
	}
	doms := make([]resolvedDomain, 0, len(s.Domains)+len(s.Search))
	for _, d := range s.Domains {
		doms = append(doms, resolvedDomain{Domain: d, RoutingOnly: true})
	}
	for _, d := range s.Search {
		doms = append(doms, resolvedDomain{Domain: d, RoutingOnly: false})
	}
	fail := func(step string, err error) error {
		// Best effort: leave the link as resolved had it.
		_ = r.call(ctx, "RevertLink", idx)
		servers := make([]string, 0, len(s.Servers))
		for _, a := range s.Servers {
			servers = append(servers, a.String())
		}
		return &NotConfiguredError{
			Reason:  fmt.Sprintf("systemd-resolved refused %s for %s: %v", step, link.Name, err),
			Servers: servers, Domains: s.Domains,
		}
	}
	if err := r.call(ctx, "SetLinkDNS", idx, addrs); err != nil {
		return fail("the DNS server", err)
	}
	if err := r.call(ctx, "SetLinkDomains", idx, doms); err != nil {
		return fail("the routing domains", err)
	}
	// Not the default route: queries outside the domains keep going to the
	// machine's usual servers. Resolved before v240 lacks the method; there
	// a link with only routing domains is not a default route anyway.
	if err := r.call(ctx, "SetLinkDefaultRoute", idx, false); err != nil && !unknownMethod(err) {
		return fail("the default-route setting", err)
	}
	return nil
}

// RevertDNS implements DNSConfigurator.
func (r *Resolved) RevertDNS(ctx context.Context, link Link) error {
	err := r.call(ctx, "RevertLink", int32(link.Index)) //nolint:gosec // small positive int
	if dbusErrorName(err) == "org.freedesktop.resolve1.NoSuchLink" {
		return nil // the link is gone, and resolved forgot it with it
	}
	if err != nil {
		return fmt.Errorf("revert systemd-resolved settings for %s: %w", link.Name, err)
	}
	return nil
}

func unknownMethod(err error) bool {
	return dbusErrorName(err) == "org.freedesktop.DBus.Error.UnknownMethod"
}

// dbusErrorName is the D-Bus error name of a method call's failure, or "".
// godbus returns remote errors as dbus.Error values, and some local ones as
// *dbus.Error.
func dbusErrorName(err error) string {
	var de dbus.Error
	if errors.As(err, &de) {
		return de.Name
	}
	var pde *dbus.Error
	if errors.As(err, &pde) && pde != nil {
		return pde.Name
	}
	return ""
}
