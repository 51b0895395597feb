package vpnlib_test

import (
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"tailscale.com/net/dns"

	"github.com/coder/coder/v2/tailnet"

	"github.com/codervpn/codervpn/vpnlib"

	"github.com/codervpn/codervpn/vpnlib/hosttest"
	"github.com/codervpn/codervpn/vpnlib/vpntest"
)

// A host uses the tunnel the moment StartResponse arrives (Coder Desktop asks
// for a snapshot, a user's ssh dials). By then the agents of the first
// workspace update are known and the engine has a peer for each, so the
// snapshot lists them, their names resolve on the first question, and the
// very first TCP SYN gets through: nothing has to be retransmitted, which
// would cost a second.
func TestStartResponseMeansReady(t *testing.T) {
	r := newRig(t, rigOptions{deployment: &vpntest.Options{}, host: hosttest.Options{SendTunFD: true}})
	agent, err := r.d.AddRunningAgent(r.ctx, "dev", "main")
	if err != nil {
		t.Fatal(err)
	}
	r.start(nil)
	snap, err := r.h.GetPeerUpdate(r.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.GetUpsertedAgents()) != 1 {
		t.Fatalf("snapshot right after StartResponse: %v", snap)
	}
	// The agent's name answers at once: an OS that asked the tunnel's DNS
	// server and got NXDOMAIN would cache the failure and the user's ssh
	// would fail until it expires.
	name := "main.dev.me.coder"
	addrs, err := r.h.LookupAAAA(r.ctx, name)
	if err != nil {
		t.Fatalf("the first lookup of %s right after StartResponse: %v", name, err)
	}
	if !slices.Contains(addrs, agent.Addr) {
		t.Fatalf("%s resolved to %v right after StartResponse, want %v", name, addrs, agent.Addr)
	}
	before := r.h.Netstack().Stats().TCPSyns
	body := httpGet(r.ctx, t, r.h, netip.AddrPortFrom(agent.Addr, agent.HTTPPort))
	if !strings.Contains(body, "hello from agent main") {
		t.Fatalf("agent answered %q", body)
	}
	if n := r.h.Netstack().Stats().TCPSyns - before; n != 1 {
		t.Fatalf("the first connection after StartResponse took %d SYNs, want 1", n)
	}
	r.stop()
}

// dnsCall is one SetDNS of the engine: what it set, how long it took.
type dnsCall struct {
	cfg  dns.OSConfig
	took time.Duration
}

// timedDNS records the engine's SetDNS calls to the tunnel's configurator.
type timedDNS struct {
	dns.OSConfigurator
	mu    sync.Mutex
	calls []dnsCall
}

func (d *timedDNS) SetDNS(cfg dns.OSConfig) error {
	begin := time.Now()
	err := d.OSConfigurator.SetDNS(cfg)
	d.mu.Lock()
	d.calls = append(d.calls, dnsCall{cfg: cfg, took: time.Since(begin)})
	d.mu.Unlock()
	return err
}

// withServers is the first recorded call that set DNS servers.
func (d *timedDNS) withServers() (dnsCall, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.calls {
		if len(c.cfg.Nameservers) > 0 {
			return c, true
		}
	}
	return dnsCall{}, false
}

// The host's DNS settings go out with the first network settings, as the
// engine starts: the StartResponse finds them applied, and when the real
// engine sets its DNS after the first workspace update (inside a
// reconfiguration, holding its locks, the agents' peers behind it) it is
// the configuration already sent, so the host is not asked again and the
// engine does not wait for it. (The engine's DNS was a second request, and
// the engine waited for the host's answer.)
func TestStartSendsDNSEarly(t *testing.T) {
	var rec *timedDNS
	r := newRig(t, rigOptions{deployment: &vpntest.Options{}, host: hosttest.Options{SendTunFD: true}, config: func(c *vpnlib.TunnelConfig) {
		vpnlib.SetEngine(c, func(opts *tailnet.Options) (vpnlib.Engine, error) {
			rec = &timedDNS{OSConfigurator: opts.DNSConfigurator}
			opts.DNSConfigurator = rec
			return tailnet.NewConn(opts)
		})
	}})
	agent, err := r.d.AddRunningAgent(r.ctx, "dev", "main")
	if err != nil {
		t.Fatal(err)
	}
	r.start(nil)
	cfg, ok := r.h.Applied()
	wantServers := []netip.Addr{netip.MustParseAddr("fd60:627a:a42b::53")}
	if !ok || !slices.Equal(cfg.DNSServers, wantServers) || !slices.Equal(cfg.MatchDomains, []string{"coder"}) {
		t.Fatalf("applied %+v (ok %v) when Start returned: want DNS server %v for match domain coder", cfg, ok, wantServers)
	}
	waitFor(r.ctx, t, "the engine to set its DNS servers", func() bool {
		_, ok := rec.withServers()
		return ok
	})
	call, _ := rec.withServers()
	t.Logf("the engine's SetDNS with servers took %v", call.took)
	// The engine answers the agent's name with what the host was sent.
	var addrs []netip.Addr
	waitFor(r.ctx, t, "main.dev.me.coder to resolve through the tunnel", func() bool {
		addrs, err = r.h.LookupAAAA(r.ctx, "main.dev.me.coder")
		return err == nil
	})
	if !slices.Contains(addrs, agent.Addr) {
		t.Fatalf("main.dev.me.coder resolved to %v, want %v", addrs, agent.Addr)
	}
	if reqs := r.h.Settings(); len(reqs) != 1 {
		t.Errorf("the host got %d settings requests, want 1 (router and DNS together): %v", len(reqs), reqs)
	}
	r.stop()
}
