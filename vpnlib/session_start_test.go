package vpnlib_test

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/tailscale/wireguard-go/tun"
	"tailscale.com/ipn/ipnstate"
	"tailscale.com/net/dns"
	"tailscale.com/tailcfg"
	"tailscale.com/util/dnsname"
	"tailscale.com/wgengine/router"

	"github.com/coder/coder/v2/tailnet"
	"github.com/coder/coder/v2/tailnet/proto"

	vpnpb "github.com/codervpn/codervpn/proto"
	"github.com/codervpn/codervpn/tunfd"
	"github.com/codervpn/codervpn/vpnlib"
	"github.com/codervpn/codervpn/vpnlib/vpntest"
)

// steps records what the session did to the device and the engine, in order.
type steps struct {
	mu   sync.Mutex
	list []string
}

func (s *steps) add(step string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.list = append(s.list, step)
}

func (s *steps) snapshot() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.list)
}

// count is how many times step was recorded.
func (s *steps) count(step string) int {
	n := 0
	for _, x := range s.snapshot() {
		if x == step {
			n++
		}
	}
	return n
}

// before fails t unless a was first recorded before b.
func (s *steps) before(t *testing.T, a, b string) {
	t.Helper()
	list := s.snapshot()
	i, j := slices.Index(list, a), slices.Index(list, b)
	if i < 0 || j < 0 || i > j {
		t.Errorf("steps %v: want %q before %q", list, a, b)
	}
}

// recordedDevice is the real tunnel device, noting when it closes.
type recordedDevice struct {
	tun.Device
	steps *steps
}

func (d recordedDevice) Close() error {
	d.steps.add("close device")
	return d.Device.Close()
}

// recordDevice opens the real device through steps.
func recordDevice(s *steps) func(*vpnlib.TunnelConfig) {
	return func(c *vpnlib.TunnelConfig) {
		c.OpenTun = func(fd int) (tun.Device, error) {
			s.add("open device")
			d, err := tunfd.Open(fd, tunfd.Options{})
			if err != nil {
				return nil, err
			}
			return recordedDevice{d, s}, nil
		}
	}
}

// A Start whose engine fails to start closes the device it opened and
// leaves nothing behind (the rig checks fds and goroutines), and the
// tunnel can still be stopped.
func TestStartEngineFailureReleasesDevice(t *testing.T) {
	var s steps
	r := newRig(t, rigOptions{deployment: &vpntest.Options{}, config: func(c *vpnlib.TunnelConfig) {
		recordDevice(&s)(c)
		vpnlib.SetEngine(c, func(*tailnet.Options) (vpnlib.Engine, error) {
			s.add("start engine")
			return nil, errors.New("no engine in this test")
		})
	}})
	resp, err := r.h.Start(r.ctx, &vpnpb.StartRequest{CoderUrl: r.d.URL.String(), ApiToken: r.d.Token})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Success || !strings.Contains(resp.ErrorMessage, "start the tailnet engine: no engine in this test") {
		t.Fatalf("StartResponse %v, want the engine's failure", resp)
	}
	if got, want := s.snapshot(), []string{"open device", "start engine", "close device"}; !slices.Equal(got, want) {
		t.Errorf("steps %v, want %v", got, want)
	}
	r.stop()
}

// fakeEngine stands in for the tailnet engine: like the real one it hands
// the router and DNS configuration to the tunnel's network settings as it
// starts, and it records what the controllers give it.
type fakeEngine struct {
	steps *steps
	opts  *tailnet.Options

	mu       sync.Mutex
	derpMap  *tailcfg.DERPMap
	dnsHosts map[dnsname.FQDN][]netip.Addr
}

func startFakeEngine(s *steps) func(*tailnet.Options) (vpnlib.Engine, error) {
	return func(opts *tailnet.Options) (vpnlib.Engine, error) {
		s.add("start engine")
		e := &fakeEngine{steps: s, opts: opts}
		if err := opts.Router.Set(&router.Config{
			LocalAddrs: opts.Addresses,
			Routes:     []netip.Prefix{tailnet.CoderServicePrefix.AsNetip()},
		}); err != nil {
			return nil, err
		}
		nameserver := netip.MustParseAddr("fd60:627a:a42b::53")
		if err := opts.DNSConfigurator.SetDNS(dns.OSConfig{
			Nameservers:  []netip.Addr{nameserver},
			MatchDomains: []dnsname.FQDN{dnsname.FQDN(opts.DNSMatchDomain + ".")},
		}); err != nil {
			return nil, err
		}
		return e, nil
	}
}

func (*fakeEngine) UpdatePeers([]*proto.CoordinateResponse_PeerUpdate) error { return nil }
func (*fakeEngine) SetAllPeersLost()                                         {}
func (*fakeEngine) SetNodeCallback(func(*tailnet.Node))                      {}
func (*fakeEngine) SetTunnelDestination(uuid.UUID)                           {}
func (*fakeEngine) Rebind()                                                  {}
func (*fakeEngine) Node() *tailnet.Node                                      { return nil }
func (*fakeEngine) Status() *ipnstate.Status                                 { return &ipnstate.Status{} }

func (e *fakeEngine) SetDERPMap(m *tailcfg.DERPMap) {
	e.steps.add("set DERP map")
	e.mu.Lock()
	defer e.mu.Unlock()
	e.derpMap = m
}

func (e *fakeEngine) DERPMap() *tailcfg.DERPMap {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.derpMap
}

func (e *fakeEngine) SetDNSHosts(hosts map[dnsname.FQDN][]netip.Addr) error {
	e.steps.add("set DNS hosts")
	e.mu.Lock()
	defer e.mu.Unlock()
	e.dnsHosts = hosts
	return nil
}

func (*fakeEngine) Ping(context.Context, netip.Addr) (time.Duration, bool, *ipnstate.PingResult, error) {
	return 0, false, nil, errors.New("the fake engine pings nothing")
}

func (e *fakeEngine) Close() error {
	e.steps.add("close engine")
	// The real engine closes the device it was given.
	return e.opts.TUNDev.Close()
}

func (e *fakeEngine) has(name string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	_, ok := e.dnsHosts[dnsname.FQDN(name)]
	return ok
}

// A Start goes through its steps in order with whatever engine it is
// given: the device opens before the engine starts, the engine's first
// settings reach the host before the StartResponse, the controllers give
// it the deployment's DERP map (pointed at the URL we used) and the
// agents' DNS names, and Stop closes the engine before the device.
func TestStartSessionStepsWithFakeEngine(t *testing.T) {
	var s steps
	var engine *fakeEngine
	r := newRig(t, rigOptions{deployment: &vpntest.Options{RelayHostName: "coder.invalid"}, config: func(c *vpnlib.TunnelConfig) {
		recordDevice(&s)(c)
		start := startFakeEngine(&s)
		vpnlib.SetEngine(c, func(opts *tailnet.Options) (vpnlib.Engine, error) {
			e, err := start(opts)
			if err == nil {
				engine = e.(*fakeEngine)
			}
			return e, err
		})
	}})
	if _, err := r.d.AddRunningAgent(r.ctx, "dev", "main"); err != nil {
		t.Fatal(err)
	}
	r.start(nil)
	if cfg, ok := r.h.Applied(); !ok || len(cfg.DNSServers) != 1 {
		t.Fatalf("applied %+v (ok %v) when Start returned: want the fake engine's router and DNS settings", cfg, ok)
	}
	r.waitAgent("dev", "main")
	waitFor(r.ctx, t, "the engine to get the DERP map and the agent's DNS name", func() bool {
		return engine.DERPMap() != nil && engine.has("main.dev.me.coder.")
	})
	for _, region := range engine.DERPMap().Regions {
		for _, node := range region.Nodes {
			if node.HostName != r.d.URL.Hostname() {
				t.Errorf("the engine's relay is %q, want the URL's host %q", node.HostName, r.d.URL.Hostname())
			}
		}
	}
	r.stop()
	s.before(t, "open device", "start engine")
	s.before(t, "start engine", "set DERP map")
	s.before(t, "start engine", "set DNS hosts")
	s.before(t, "close engine", "close device")
	if n := s.count("close engine"); n != 1 {
		t.Errorf("the engine was closed %d times, want once", n)
	}
}

// quietEngine is a fakeEngine that has not reconfigured yet: it never hands
// the tunnel its router or DNS configuration.
type quietEngine struct{ *fakeEngine }

// A Start sends the host the network settings the engine will start with
// as the engine starts, without waiting for the engine's first
// reconfiguration (5 to 30 ms later on a loaded machine, and the
// StartResponse waited for the host's answer behind it). With an engine
// that never gets there the Start still succeeds, and the host has our
// address and the Coder service route. (It waited for the engine, and the
// Start timed out.)
func TestStartSendsSettingsBeforeTheEngine(t *testing.T) {
	var s steps
	var addrs []netip.Prefix
	r := newRig(t, rigOptions{deployment: &vpntest.Options{}, config: func(c *vpnlib.TunnelConfig) {
		c.StartTimeout = 5 * time.Second
		vpnlib.SetEngine(c, func(opts *tailnet.Options) (vpnlib.Engine, error) {
			addrs = opts.Addresses
			return quietEngine{&fakeEngine{steps: &s, opts: opts}}, nil
		})
	}})
	r.start(nil)
	cfg, ok := r.h.Applied()
	if !ok {
		t.Fatal("the host has no settings when Start returned")
	}
	if !slices.Equal(cfg.Addrs, addrs) {
		t.Errorf("host addresses %v, want the engine's %v", cfg.Addrs, addrs)
	}
	if want := []netip.Prefix{tailnet.CoderServicePrefix.AsNetip()}; !slices.Equal(cfg.Routes, want) {
		t.Errorf("host routes %v, want %v", cfg.Routes, want)
	}
	if n := len(r.h.Settings()); n != 1 {
		t.Errorf("the host got %d settings requests, want 1", n)
	}
	r.stop()
}
