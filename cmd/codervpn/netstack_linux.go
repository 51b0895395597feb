package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"

	"github.com/codervpn/codervpn/internal/netstack"
	vpnpb "github.com/codervpn/codervpn/proto"
	"github.com/codervpn/codervpn/tunfd"
)

// userspaceDevice stands in for a TUN where we may not make one (not root):
// the tunnel gets one end of a packet socketpair, and a userspace TCP/IP
// stack in this process sits on the other end and plays the kernel. On a
// socketpair the tunnel frames packets as on a macOS utun (tunfd.Open), and
// applies settings as a NetworkExtension does, so the stack is the one the
// tests' host uses.
type userspaceDevice struct {
	tunEnd *os.File // given to the tunnel
	stack  *netstack.Stack

	mu   sync.Mutex
	dns  []netip.Addr
	once sync.Once
}

func newUserspaceDevice() (*userspaceDevice, error) {
	s, tunEnd, err := netstack.NewSocketpair(tunfd.TunnelMTU)
	if err != nil {
		return nil, fmt.Errorf("create the socketpair standing in for a TUN: %w", err)
	}
	return &userspaceDevice{tunEnd: tunEnd, stack: s}, nil
}

// File implements device.
func (d *userspaceDevice) File() *os.File { return d.tunEnd }

// Describe implements device.
func (d *userspaceDevice) Describe() string {
	return "a socketpair with a userspace TCP/IP stack (no TUN)"
}

// ApplySettings implements device: like a NetworkExtension, the stack
// replaces its whole configuration with each request; the DNS servers are
// remembered for lookups.
func (d *userspaceDevice) ApplySettings(_ context.Context, req *vpnpb.NetworkSettingsRequest) error {
	cfg, err := netstack.ParseSettings(req)
	if err != nil {
		return fmt.Errorf("invalid network settings: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.stack.Apply(cfg); err != nil {
		return fmt.Errorf("apply network settings to the userspace stack: %w", err)
	}
	d.dns = cfg.DNSServers
	return nil
}

// dnsServers are the tunnel's resolvers, once it has said which.
func (d *userspaceDevice) dnsServers() []netip.Addr {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]netip.Addr(nil), d.dns...)
}

// lookupAAAA resolves host with the tunnel's first DNS server, through the
// stack. An IP address is returned as it is.
func (d *userspaceDevice) lookupAAAA(ctx context.Context, host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a}, nil
	}
	servers := d.dnsServers()
	if len(servers) == 0 {
		return nil, errors.New("the tunnel has not sent a DNS server yet")
	}
	addrs, err := d.stack.LookupAAAA(ctx, servers[0], host)
	if err != nil {
		return nil, err
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("dns server %s has no AAAA record for %q", servers[0], host)
	}
	return addrs, nil
}

// Close implements device.
func (d *userspaceDevice) Close() error {
	var err error
	d.once.Do(func() {
		err = d.stack.Close()
		d.tunEnd.Close()
	})
	return err
}
