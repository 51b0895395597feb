package vpnlib

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"tailscale.com/ipn/ipnstate"
	"tailscale.com/net/dns"
	"tailscale.com/net/tsaddr"
	"tailscale.com/util/dnsname"
	"tailscale.com/wgengine/router"

	"cdr.dev/slog/v3"
	"github.com/coder/coder/v2/codersdk"
	"github.com/coder/coder/v2/codersdk/workspacesdk"
	"github.com/coder/coder/v2/tailnet"
	"github.com/coder/quartz"

	"github.com/codervpn/codervpn/internal/coderd"
)

// engine is what a session needs of the tailnet engine (a *tailnet.Conn):
// it takes the coordinator's peers, the DERP map and the workspaces' DNS
// names, pings agents, rebinds its sockets on wake, reports its status,
// and closes. TunnelConfig.newEngine makes one; tests hand in a fake.
type engine interface {
	tailnet.Coordinatee
	tailnet.DERPMapSetter
	tailnet.DNSHostsSetter
	pingEngine
	Rebind()
	Status() *ipnstate.Status
	Close() error
}

// startTailnet is the engine of a real session.
func startTailnet(opts *tailnet.Options) (engine, error) {
	return tailnet.NewConn(opts)
}

// controllerLogger is the logger handed to the tailnet controller: the
// tunnel's own sinks behind coderd.DemoteRetries, under the same names.
func (t *Tunnel) controllerLogger() slog.Logger {
	return slog.Make(coderd.DemoteRetries(t.sink)).
		Leveled(t.cfg.LogLevel).Named("vpn").Named("session").Named("control")
}

// sessionStart is a Start in progress: what each step made, for the next
// step, and for undo when a later one fails.
type sessionStart struct {
	t      *Tunnel
	p      startParams
	logger slog.Logger

	client   *coderd.Client
	me       codersdk.User
	info     workspacesdk.AgentConnectionInfo
	suffix   string
	rewriter coderd.DERPRewriter
	dev      *onceClosedDevice
	settings *netSettings
	dialer   *coderd.ControlDialer
	proxy    *engineProxy
	sess     *session // set once the engine runs: its close undoes everything
	// deploymentAddrs are coder_url's and the DERP relays' addresses,
	// whose routes the route watch follows (route_watch.go).
	deploymentAddrs []netip.Addr
}

// startSession connects to the deployment and starts the engine, in the
// steps below. It returns once the control connection is up and the host
// has applied the first network settings; on error nothing it made is left.
func (t *Tunnel) startSession(ctx context.Context, p startParams) (_ *session, err error) {
	s := &sessionStart{t: t, p: p, logger: t.logger.Named("session")}
	defer func() {
		if err != nil {
			s.undo()
		}
	}()
	if err := s.reachDeployment(ctx); err != nil {
		return nil, err
	}
	if err := s.openDevice(); err != nil {
		return nil, err
	}
	if err := s.startEngine(ctx); err != nil {
		return nil, err
	}
	s.startRouteWatch()
	s.startControllers()
	if err := s.awaitReady(ctx); err != nil {
		return nil, err
	}
	s.startPinging()
	return s.sess, nil
}

// undo releases what the steps so far made.
func (s *sessionStart) undo() {
	switch {
	case s.sess != nil:
		_ = s.sess.close() // the device and the client included
	case s.dev != nil:
		if s.settings != nil {
			s.settings.shutdown() // ends sendEarly's request
		}
		_ = s.dev.Close()
		fallthrough
	case s.client != nil:
		s.client.CloseIdle()
	}
}

// reachDeployment asks the deployment who the token belongs to and how to
// reach its relays, before anything is opened. The two questions go out
// together: each is a round trip to the deployment before the control
// connection can even be dialed, and over a long path one round trip is
// most of a start. Who the token belongs to is the answer that explains a
// refusal, so its error wins when both fail.
func (s *sessionStart) reachDeployment(ctx context.Context) error {
	s.client = coderd.NewClient(s.p.url, s.p.header, s.t.cfg.TLSConfig)
	var infoErr error
	infoDone := make(chan struct{})
	go func() {
		defer close(infoDone)
		s.info, infoErr = s.client.ConnectionInfo(ctx)
	}()
	var err error
	s.me, err = s.client.Me(ctx)
	<-infoDone
	if err != nil {
		return err
	}
	if infoErr != nil {
		return infoErr
	}
	s.suffix = dnsSuffix(s.info.HostnameSuffix)
	s.rewriter = coderd.DERPRewriter{Logger: s.logger, AccessURL: s.p.url}
	s.rewriter.RewriteDERPMap(s.info.DERPMap)
	s.logger.Info(ctx, "deployment reached",
		slog.F("user", s.me.Username), slog.F("hostname_suffix", s.suffix),
		slog.F("direct_connections", !s.info.DisableDirectConnections),
		slog.F("derp_force_websockets", s.info.DERPForceWebSockets))
	return nil
}

// openDevice opens the tunnel device on the host's fd.
func (s *sessionStart) openDevice() error {
	raw, err := s.t.cfg.OpenTun(s.p.tunFD)
	if err != nil {
		return fmt.Errorf("open the tunnel device (fd %d): %w", s.p.tunFD, err)
	}
	s.dev = &onceClosedDevice{Device: raw}
	return nil
}

// startEngine starts the tailnet engine on the device, with the network
// settings as its router and DNS configurator.
func (s *sessionStart) startEngine(ctx context.Context) error {
	var exclude []netip.Prefix
	exclude, s.deploymentAddrs = excludedFromTunnel(ctx, s.t.cfg.resolveHost, deploymentHosts(s.p.url, s.info.DERPMap), tunnelRoutes, s.logger)
	mon, err := s.t.newNetworkMonitor()
	if err != nil {
		return err
	}
	s.settings = newNetSettings(s.t.requestSettings, s.t.cfg.SettingsTimeout, s.suffix, exclude, s.logger.Named("settings"))
	// coderd's relay needs no token (its /derp route is unauthenticated, and
	// Coder's own SDK sends none), and the DERP map may name relays on hosts
	// other than coder_url's: the token must never reach those.
	derpHeader := s.p.header.Clone()
	derpHeader.Del(codersdk.SessionTokenHeader)
	addrs := []netip.Prefix{netip.PrefixFrom(tailnet.CoderServicePrefix.RandomAddr(), 128)}
	// What the engine's first reconfiguration gives its router (Coder's
	// configmaps.go: our addresses, CoderServicePrefix as the only route),
	// and the DNS it sets at the first workspace update (engineDNS).
	s.settings.sendEarly(&router.Config{LocalAddrs: addrs, Routes: tunnelRoutes}, engineDNS(s.suffix))
	conn, err := s.t.cfg.newEngine(&tailnet.Options{
		WireguardMonitor:    mon,
		Addresses:           addrs,
		DERPMap:             s.info.DERPMap,
		DERPHeader:          &derpHeader,
		DERPTLSConfig:       s.t.cfg.TLSConfig,
		DERPForceWebSockets: s.info.DERPForceWebSockets,
		BlockEndpoints:      s.info.DisableDirectConnections,
		Logger:              s.t.logger.Named("net"),
		DNSConfigurator:     s.settings,
		Router:              s.settings,
		TUNDev:              s.dev,
		DNSMatchDomain:      s.suffix,
	})
	if err != nil {
		_ = mon.Close() // the engine closed it already, unless it is a test's fake
		return fmt.Errorf("start the tailnet engine: %w", err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	s.sess = &session{runCtx: runCtx, cancel: cancel, conn: conn, mon: mon, dev: s.dev, settings: s.settings, client: s.client}
	s.proxy = newEngineProxy(runCtx, conn)
	s.sess.peers = newPeerTracker(s.me.Username, s.suffix, s.proxy, s.t.sendPeerUpdate)
	proxy, logger := s.proxy, s.logger
	s.sess.waker = newWaker(func() {
		conn.Rebind()
		// After a sleep the engine's keys look fresh to it and are long
		// gone at the agents (wake_reset.go).
		n := proxy.resetSessions(runCtx)
		logger.Info(runCtx, "system wake: new WireGuard sessions with every peer", slog.F("peers", n))
	}, wakeDebounce)
	return nil
}

// engineDNS is the DNS configuration the engine hands its DNS configurator
// from the first workspace update on, for the match domain suffix, or nil
// if suffix is no valid domain (the engine then refuses to start anyway).
//
// Why it is known before that update: Coder's workspace updates always
// give the engine at least one name (the "is Coder Connect enabled" name
// under suffix), and once it has names the engine's DNS manager gives a
// configurator that does split DNS one nameserver, its own service address
// (tailscale's dns.Manager with Coder's OnlyIPv6 hosts), and one match
// domain, suffix, whatever the names are. TestStartSendsDNSEarly fails if
// the engine's configuration differs from this one.
func engineDNS(suffix string) *dns.OSConfig {
	match, err := dnsname.ToFQDN(suffix + ".")
	if err != nil {
		return nil
	}
	return &dns.OSConfig{
		Nameservers:  []netip.Addr{tsaddr.CoderServiceIPv6()},
		MatchDomains: []dnsname.FQDN{match},
	}
}

// startControllers runs Coder's tailnet controller over the control
// connection: coordination (peers into the engine, through the proxy), the
// DERP map, resume tokens and the workspace updates that feed the peer
// tracker and the engine's DNS names.
func (s *sessionStart) startControllers() {
	// Coder's controllers log every failed redial as an error; ours log the
	// condition once (the dialer's health) and theirs at debug.
	ctrlLogger := s.t.controllerLogger()
	s.dialer = s.client.ControlDialer(s.me.ID, ctrlLogger, s.logger.Named("control"))
	controller := tailnet.NewController(ctrlLogger, s.dialer, tailnet.WithGracefulTimeout(gracefulDisconnect))
	coord := tailnet.NewTunnelSrcCoordController(ctrlLogger, s.proxy)
	controller.CoordCtrl = coord
	controller.DERPCtrl = tailnet.NewBasicDERPController(ctrlLogger, s.rewriter, s.sess.conn)
	controller.ResumeTokenCtrl = tailnet.NewBasicResumeTokenController(ctrlLogger, quartz.NewReal())
	controller.WorkspaceUpdatesCtrl = tailnet.NewTunnelAllWorkspaceUpdatesController(ctrlLogger, coord,
		tailnet.WithDNS(s.sess.conn, s.me.Username, tailnet.DNSNameOptions{Suffix: s.suffix}),
		tailnet.WithHandler(s.sess.peers))
	s.sess.controller = controller
	s.sess.wg.Go(s.proxy.run)
	controller.Run(s.sess.runCtx)
}

// awaitReady waits for both: the control connection up (or refused for
// good), and the host's answer to our first network settings. Then it
// gives the engine a moment to have a peer for every agent (awaitPeers).
func (s *sessionStart) awaitReady(ctx context.Context) error {
	dialed, settled := s.dialer.First(), s.settings.firstResult
	for dialed != nil || settled != nil {
		select {
		case <-ctx.Done():
			if last := s.dialer.LastError(); last != nil && dialed != nil {
				return fmt.Errorf("connecting to the tailnet API: %w", last)
			}
			if settled != nil {
				return errors.New("waiting for the host to apply the network settings")
			}
			return errors.New("waiting for the tailnet API")
		case err := <-dialed:
			if err != nil {
				return err
			}
			dialed = nil
		case err := <-settled:
			if err != nil {
				return err
			}
			settled = nil
		}
	}
	awaitPeers(ctx, s.sess.peers, s.proxy)
	return nil
}

// startPinging starts the loop that pings the agents and reports their
// status to the manager.
func (s *sessionStart) startPinging() {
	sess, logger := s.sess, s.logger.Named("ping")
	sess.wg.Go(func() { runPingLoop(sess.runCtx, sess.peers, sess.conn, s.t.cfg.PingInterval, logger) })
}
