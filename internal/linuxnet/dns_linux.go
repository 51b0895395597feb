package linuxnet

import (
	"context"
	"fmt"
	"strings"
)

// Link names the interface whose resolver settings change.
type Link struct {
	Index int
	Name  string
}

// DNSConfigurator points the system resolver at the tunnel's DNS server for
// the tunnel's domains. Implementations must undo exactly what they set.
type DNSConfigurator interface {
	// SetDNS replaces the link's DNS configuration. A *NotConfiguredError
	// means "nothing was changed, and here is why and what to do instead";
	// the Configurator reports it to the person and does not fail the request.
	SetDNS(ctx context.Context, link Link, s DNSSettings) error
	// RevertDNS removes what SetDNS configured for the link.
	RevertDNS(ctx context.Context, link Link) error
	// Close releases the configurator's resources (not the settings: the
	// Configurator reverts those before its owner closes this one).
	Close() error
}

// NotConfiguredError says DNS names were not configured, why, and how to
// query the tunnel's resolver by hand. It is advice, not a failure.
type NotConfiguredError struct {
	Reason  string
	Servers []string
	Domains []string
}

func (e *NotConfiguredError) Error() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "DNS names are not configured: %s. ", e.Reason)
	doms := e.Domains
	if len(doms) == 0 {
		doms = []string{"coder"}
	}
	fmt.Fprintf(&sb, "Names under .%s will not resolve through the system resolver; ", strings.Join(doms, ", ."))
	if len(e.Servers) > 0 {
		srv := e.Servers[0]
		fmt.Fprintf(&sb, "query the tunnel's resolver directly, e.g. `dig @%s <agent>.<workspace>.me.%s AAAA` "+
			"or `nslookup <agent>.<workspace>.me.%s %s`, or connect by IP address (see the table)", srv, doms[0], doms[0], srv)
	} else {
		sb.WriteString("connect by IP address (see the table)")
	}
	return sb.String()
}

// NoDNS is the configurator for machines without a resolver we can program:
// it changes nothing and explains. /etc/resolv.conf is deliberately never
// rewritten: it is shared by everything on the machine, and a crashed VPN
// would leave the machine unable to resolve anything.
type NoDNS struct {
	// Reason says why there is no resolver integration.
	Reason string
}

// SetDNS implements DNSConfigurator.
func (n NoDNS) SetDNS(_ context.Context, _ Link, s DNSSettings) error {
	reason := n.Reason
	if reason == "" {
		reason = "no supported resolver (systemd-resolved) is running"
	}
	e := &NotConfiguredError{Reason: reason, Domains: s.Domains}
	for _, a := range s.Servers {
		e.Servers = append(e.Servers, a.String())
	}
	return e
}

// RevertDNS implements DNSConfigurator.
func (NoDNS) RevertDNS(context.Context, Link) error { return nil }

// Close implements DNSConfigurator.
func (NoDNS) Close() error { return nil }
