package vpnlib

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"tailscale.com/net/dns"
	"tailscale.com/wgengine/router"

	"cdr.dev/slog/v3"

	vpnpb "github.com/codervpn/codervpn/proto"
	"github.com/codervpn/codervpn/tunfd"
)

// settingsRequester asks the host (the manager) to apply one
// NetworkSettingsRequest and returns nil only if it answered success.
type settingsRequester func(ctx context.Context, req *vpnpb.NetworkSettingsRequest) error

// netSettings turns the engine's router and DNS configuration into
// NetworkSettingsRequests. It is both the engine's router.Router and its
// dns.OSConfigurator: the host applies a NetworkSettingsRequest like
// NEPacketTunnelNetworkSettings, as a whole, so every request we send carries
// the complete current state (addresses, routes, MTU and DNS), never a part
// that would wipe the rest.
type netSettings struct {
	request     settingsRequester
	timeout     time.Duration
	domainName  string
	exclude     []netip.Prefix // the deployment's addresses inside our routes (exclude.go)
	logger      slog.Logger
	firstResult chan error // receives the outcome of the first request with addresses
	ctx         context.Context
	cancel      context.CancelFunc // aborts a request in flight at shutdown

	sendMu sync.Mutex     // serializes requests so the manager sees them in order
	early  sync.WaitGroup // sendEarly's request in flight

	mu       sync.Mutex // guards the fields below; never held while sending
	router   *router.Config
	dns      *dns.OSConfig
	ahead    *dns.OSConfig // sendEarly's DNS, until the engine has DNS of its own
	lastSent *vpnpb.NetworkSettingsRequest
	reported bool
	closed   bool
}

func newNetSettings(request settingsRequester, timeout time.Duration, domainName string, exclude []netip.Prefix, logger slog.Logger) *netSettings {
	ctx, cancel := context.WithCancel(context.Background())
	return &netSettings{
		ctx:         ctx,
		cancel:      cancel,
		request:     request,
		timeout:     timeout,
		domainName:  domainName,
		exclude:     exclude,
		logger:      logger,
		firstResult: make(chan error, 1),
	}
}

// Up implements router.Router. The host brings its interface up itself.
func (*netSettings) Up() error { return nil }

// Set implements router.Router.
func (n *netSettings) Set(cfg *router.Config) error {
	if cfg == nil {
		return nil
	}
	c := *cfg
	n.mu.Lock()
	n.router = &c
	n.mu.Unlock()
	return n.push()
}

// SetDNS implements dns.OSConfigurator. Until the engine hands us DNS
// servers of its own, the DNS part sent early (sendEarly) stands in for the
// empty configuration it starts with; from its first servers on, the
// engine's configuration is what the host gets.
func (n *netSettings) SetDNS(cfg dns.OSConfig) error {
	n.mu.Lock()
	n.dns = &cfg
	if len(cfg.Nameservers) > 0 {
		n.ahead = nil
	}
	n.mu.Unlock()
	return n.push()
}

// SupportsSplitDNS implements dns.OSConfigurator: every host we serve (the
// macOS NetworkExtension, our Linux CLI) can resolve only the match domain
// through the tunnel.
func (*netSettings) SupportsSplitDNS() bool { return true }

// GetBaseConfig implements dns.OSConfigurator; with split DNS it is never
// needed.
func (*netSettings) GetBaseConfig() (dns.OSConfig, error) {
	return dns.OSConfig{}, dns.ErrGetBaseConfigNotSupported
}

// Close implements both interfaces. The host removes its settings when the
// tunnel ends, so there is nothing to undo here.
func (*netSettings) Close() error { return nil }

// shutdown makes every later Set/SetDNS a no-op, so tearing the engine down
// never sends the manager a request it would have to answer while it waits
// for our StopResponse. It returns once sendEarly's request has ended.
func (n *netSettings) shutdown() {
	n.mu.Lock()
	n.closed = true
	n.mu.Unlock()
	n.cancel()
	n.early.Wait()
}

// sendEarly sends rc, the router configuration the engine is known to
// start with, and oc, the DNS configuration it is known to reach at the
// first workspace update (nil if unknown), in one request from a goroutine
// of its own, without waiting for the engine.
//
// Why: the engine sends its first configuration from its first
// reconfiguration, 5 to 30 ms after it was created on a loaded machine, and
// waits for the host's answer inside it, holding its WireGuard lock; the
// StartResponse waits for that answer too. Sent as the engine starts, the
// round trip to the host runs beside the engine's start and the control
// connection's dial, and when the engine's identical configuration comes it
// is not sent again (push sends nothing that equals the last request).
// Should the engine's differ, it is sent as any change is: the host gets a
// complete request either way.
//
// The DNS part likewise: the engine starts with no DNS (it has no names
// yet) and sets the host's DNS in the reconfiguration that follows the
// first workspace update, waiting for the host's answer inside it while
// the agents' peers wait behind it. Sent here, that answer is in before
// the control connection is up, and the engine's identical configuration
// sends nothing. Until then the host asks the engine's resolver for names
// under the match domain that it cannot answer yet; before the first
// workspace update there are no such names anywhere.
func (n *netSettings) sendEarly(rc *router.Config, oc *dns.OSConfig) {
	n.mu.Lock()
	if n.dns == nil || len(n.dns.Nameservers) == 0 {
		n.ahead = oc
	}
	n.mu.Unlock()
	n.early.Go(func() { _ = n.Set(rc) }) // a failure is reported by push, on firstResult
}

func (n *netSettings) push() error {
	n.sendMu.Lock()
	defer n.sendMu.Unlock()

	n.mu.Lock()
	if n.closed || n.router == nil {
		// Until the engine has told us our address there is nothing the
		// host could apply; the DNS part travels with the first full request.
		n.mu.Unlock()
		return nil
	}
	oc := n.dns
	if n.ahead != nil {
		oc = n.ahead
	}
	req := buildSettingsRequest(n.router, oc, n.domainName, n.exclude...)
	if n.lastSent != nil && proto.Equal(req, n.lastSent) {
		n.mu.Unlock()
		return nil
	}
	n.mu.Unlock()

	ctx, cancel := context.WithTimeout(n.ctx, n.timeout)
	err := n.request(ctx, req)
	cancel()

	n.mu.Lock()
	if err == nil {
		n.lastSent = req
	}
	first := !n.reported
	n.reported = true
	n.mu.Unlock()
	if first {
		n.firstResult <- err
	}
	if err != nil {
		n.logger.Error(context.Background(), "the host did not apply the network settings", slog.Error(err))
	}
	return err
}

// buildSettingsRequest converts the engine's configuration into the request
// the host applies. MTU is always tunfd.TunnelMTU: the engine leaves
// router.Config.NewMTU at zero, which a host would take as "unchanged".
//
// exclude are further excluded routes: the deployment's addresses that fall
// inside the routes (exclude.go).
func buildSettingsRequest(rc *router.Config, oc *dns.OSConfig, domainName string, exclude ...netip.Prefix) *vpnpb.NetworkSettingsRequest {
	req := &vpnpb.NetworkSettingsRequest{Mtu: tunfd.TunnelMTU}
	var v4 vpnpb.NetworkSettingsRequest_IPv4Settings
	var v6 vpnpb.NetworkSettingsRequest_IPv6Settings
	for _, p := range rc.LocalAddrs {
		if p.Addr().Is4() {
			v4.Addrs = append(v4.Addrs, p.Addr().String())
			v4.SubnetMasks = append(v4.SubnetMasks, ipv4Mask(p.Bits()))
		} else {
			v6.Addrs = append(v6.Addrs, p.Addr().String())
			v6.PrefixLengths = append(v6.PrefixLengths, uint32(p.Bits()))
		}
	}
	for _, p := range rc.Routes {
		addRoute(&v4.IncludedRoutes, &v6.IncludedRoutes, p)
	}
	for _, p := range rc.LocalRoutes {
		addRoute(&v4.ExcludedRoutes, &v6.ExcludedRoutes, p)
	}
	for _, p := range exclude {
		if !slices.Contains(rc.LocalRoutes, p) {
			addRoute(&v4.ExcludedRoutes, &v6.ExcludedRoutes, p)
		}
	}
	if len(v4.Addrs)+len(v4.IncludedRoutes)+len(v4.ExcludedRoutes) > 0 {
		req.Ipv4Settings = &v4
	}
	if len(v6.Addrs)+len(v6.IncludedRoutes)+len(v6.ExcludedRoutes) > 0 {
		req.Ipv6Settings = &v6
	}
	if oc != nil && len(oc.Nameservers) > 0 {
		d := &vpnpb.NetworkSettingsRequest_DNSSettings{DomainName: domainName}
		for _, ns := range oc.Nameservers {
			d.Servers = append(d.Servers, ns.String())
		}
		for _, s := range oc.SearchDomains {
			d.SearchDomains = append(d.SearchDomains, s.WithoutTrailingDot())
		}
		for _, m := range oc.MatchDomains {
			d.MatchDomains = append(d.MatchDomains, m.WithoutTrailingDot())
		}
		req.DnsSettings = d
	}
	return req
}

func addRoute(v4 *[]*vpnpb.NetworkSettingsRequest_IPv4Settings_IPv4Route, v6 *[]*vpnpb.NetworkSettingsRequest_IPv6Settings_IPv6Route, p netip.Prefix) {
	p = p.Masked()
	if p.Addr().Is4() {
		*v4 = append(*v4, &vpnpb.NetworkSettingsRequest_IPv4Settings_IPv4Route{
			Destination: p.Addr().String(),
			Mask:        ipv4Mask(p.Bits()),
		})
		return
	}
	*v6 = append(*v6, &vpnpb.NetworkSettingsRequest_IPv6Settings_IPv6Route{
		Destination:  p.Addr().String(),
		PrefixLength: uint32(p.Bits()),
	})
}

// ipv4Mask renders a prefix length as a dotted-decimal subnet mask.
func ipv4Mask(bits int) string {
	return net.IP(net.CIDRMask(bits, 32)).String()
}

// settingsError is what a success=false NetworkSettingsResponse becomes.
func settingsError(msg string) error {
	if msg == "" {
		msg = "no reason given"
	}
	return fmt.Errorf("the host refused the network settings: %s", msg)
}
