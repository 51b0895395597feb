package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/codervpn/codervpn/internal/linuxnet"
	vpnpb "github.com/codervpn/codervpn/proto"
	"github.com/codervpn/codervpn/vpnlib/manager"
)

// device is the host side of the tunnel: the fd the tunnel moves packets
// through, and whatever applies the tunnel's network settings to the stack
// behind it. The kernel TUN is the real one; the demo has a userspace one for
// machines where it is not root.
type device interface {
	// File is the fd handed to the tunnel (it dups it).
	File() *os.File
	// ApplySettings applies one NetworkSettingsRequest; the error is what
	// the tunnel is told.
	manager.SettingsApplier
	// Describe names the device for people.
	Describe() string
	// Close undoes every setting ApplySettings made and releases the
	// device. It is idempotent.
	Close() error
}

// kernelConfig says which TUN to create and where.
type kernelConfig struct {
	// Name is the interface name, e.g. coder0.
	Name string
	// NetNS is the path of the network namespace to create the TUN in; empty
	// means ours.
	NetNS string
	// DNS configures the resolver; nil means systemd-resolved when it runs
	// and the TUN is in our namespace, otherwise advice on what to do by hand.
	DNS linuxnet.DNSConfigurator
	// Notify gets things the person should know (DNS not configured...).
	Notify func(string)
}

// kernelDevice is a Linux TUN configured with netlink, possibly inside
// another network namespace.
type kernelDevice struct {
	cfg  kernelConfig
	tun  *os.File
	ns   netns.NsHandle // -1 unless cfg.NetNS is set
	nl   *netlink.Handle
	dns  linuxnet.DNSConfigurator
	conf *linuxnet.Configurator

	once     sync.Once
	closeErr error
}

// openKernelDevice creates the TUN and prepares to configure it. Nothing is
// applied until the tunnel asks. On error nothing is left behind.
func openKernelDevice(ctx context.Context, cfg kernelConfig) (_ *kernelDevice, err error) {
	d := &kernelDevice{cfg: cfg, ns: netns.None()}
	defer func() {
		if err != nil {
			_ = d.Close()
		}
	}()
	if cfg.NetNS != "" {
		if d.ns, err = netns.GetFromPath(cfg.NetNS); err != nil {
			return nil, fmt.Errorf("open network namespace %s: %w", cfg.NetNS, err)
		}
		if d.nl, err = netlink.NewHandleAt(d.ns); err != nil {
			return nil, fmt.Errorf("open a netlink socket in network namespace %s: %w", cfg.NetNS, err)
		}
		d.tun, err = linuxnet.CreateTUNIn(d.ns, cfg.Name)
	} else {
		d.tun, err = linuxnet.CreateTUN(cfg.Name)
	}
	if err != nil {
		return nil, err
	}
	d.dns = cfg.DNS
	switch {
	case d.dns != nil:
	case cfg.NetNS != "":
		d.dns = linuxnet.NoDNS{Reason: fmt.Sprintf("the TUN is in network namespace %s, which the system's resolver does not serve", cfg.NetNS)}
	default:
		if d.dns, err = linuxnet.ConnectResolved(ctx, ""); err != nil {
			return nil, fmt.Errorf("look for systemd-resolved: %w", err)
		}
	}
	// With the TUN in another namespace, the tunnel's own connections never
	// see its routes, so they cannot loop through it.
	d.conf, err = linuxnet.New(linuxnet.Config{Link: cfg.Name, Netlink: d.nl, DNS: d.dns, Notify: cfg.Notify,
		TunnelElsewhere: cfg.NetNS != ""})
	if err != nil {
		return nil, err
	}
	return d, nil
}

// File implements device.
func (d *kernelDevice) File() *os.File { return d.tun }

// ApplySettings implements device.
func (d *kernelDevice) ApplySettings(ctx context.Context, req *vpnpb.NetworkSettingsRequest) error {
	return d.conf.Apply(ctx, req)
}

// Describe implements device.
func (d *kernelDevice) Describe() string {
	if d.cfg.NetNS != "" {
		return fmt.Sprintf("TUN %s in network namespace %s", d.cfg.Name, d.cfg.NetNS)
	}
	return "TUN " + d.cfg.Name
}

// Close implements device: settings are reverted first (routes, addresses,
// resolver), then the TUN fd is closed, which deletes the interface once no
// other process holds it.
func (d *kernelDevice) Close() error {
	d.once.Do(func() {
		var errs []error
		if d.conf != nil {
			if err := d.conf.Close(); err != nil {
				errs = append(errs, fmt.Errorf("remove the network settings: %w", err))
			}
		}
		if d.dns != nil && d.cfg.DNS == nil { // a configurator we made
			_ = d.dns.Close()
		}
		if d.tun != nil {
			_ = d.tun.Close()
		}
		if d.nl != nil {
			d.nl.Close()
		}
		if d.ns.IsOpen() {
			_ = d.ns.Close()
		}
		d.closeErr = errors.Join(errs...)
	})
	return d.closeErr
}
