package vpnlib

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/tailscale/wireguard-go/tun"

	"cdr.dev/slog/v3"
	"github.com/coder/coder/v2/codersdk"
	"github.com/coder/coder/v2/tailnet"
	"github.com/coder/quartz"

	"github.com/codervpn/codervpn/internal/coderd"
)

// gracefulDisconnect bounds the goodbye to the coordinator when a session
// ends, so a host that died is fully cleaned up within a second.
const gracefulDisconnect = 500 * time.Millisecond

// session is one started tunnel: the engine, the controllers that program
// it, and what reports on it.
type session struct {
	cancel     context.CancelFunc // ends the controllers and the ping loop
	controller *tailnet.Controller
	conn       *tailnet.Conn
	dev        tun.Device
	settings   *netSettings
	peers      *peerTracker
	waker      *waker
	client     *coderd.Client
	wg         sync.WaitGroup
	closeOnce  sync.Once
	closeErr   error
}

// close stops everything the session runs and releases the device. The
// network settings are frozen first so that tearing the engine down sends
// the manager nothing.
func (s *session) close() error {
	s.closeOnce.Do(func() {
		s.settings.shutdown()
		s.cancel()
		<-s.controller.Closed()
		s.wg.Wait()
		s.closeErr = s.conn.Close()
		_ = s.dev.Close() // the engine closed it already; this is a no-op then
		s.client.CloseIdle()
	})
	return s.closeErr
}

// controllerLogger is the logger handed to the tailnet controller: the
// tunnel's own sinks behind coderd.DemoteRetries, under the same names.
func (t *Tunnel) controllerLogger() slog.Logger {
	return slog.Make(coderd.DemoteRetries(t.sink)).
		Leveled(t.cfg.LogLevel).Named("vpn").Named("session").Named("control")
}

// startSession connects to the deployment and starts the engine. It returns
// once the control connection is up and the host has applied the first
// network settings.
func (t *Tunnel) startSession(ctx context.Context, p startParams) (_ *session, err error) {
	logger := t.logger.Named("session")
	client := coderd.NewClient(p.url, p.header, t.cfg.TLSConfig)
	defer func() {
		if err != nil {
			client.CloseIdle()
		}
	}()
	me, err := client.Me(ctx)
	if err != nil {
		return nil, err
	}
	info, err := client.ConnectionInfo(ctx)
	if err != nil {
		return nil, err
	}
	suffix := dnsSuffix(info.HostnameSuffix)
	rewriter := coderd.DERPRewriter{Logger: logger, AccessURL: p.url}
	rewriter.RewriteDERPMap(info.DERPMap)
	logger.Info(ctx, "deployment reached",
		slog.F("user", me.Username), slog.F("hostname_suffix", suffix),
		slog.F("direct_connections", !info.DisableDirectConnections),
		slog.F("derp_force_websockets", info.DERPForceWebSockets))

	rawDev, err := t.cfg.OpenTun(p.tunFD)
	if err != nil {
		return nil, fmt.Errorf("open the tunnel device (fd %d): %w", p.tunFD, err)
	}
	dev := &onceClosedDevice{Device: rawDev}
	settings := newNetSettings(t.requestSettings, t.cfg.SettingsTimeout, suffix, logger.Named("settings"))
	// coderd's relay needs no token (its /derp route is unauthenticated, and
	// Coder's own SDK sends none), and the DERP map may name relays on hosts
	// other than coder_url's: the token must never reach those.
	derpHeader := p.header.Clone()
	derpHeader.Del(codersdk.SessionTokenHeader)
	conn, err := tailnet.NewConn(&tailnet.Options{
		Addresses:           []netip.Prefix{netip.PrefixFrom(tailnet.CoderServicePrefix.RandomAddr(), 128)},
		DERPMap:             info.DERPMap,
		DERPHeader:          &derpHeader,
		DERPTLSConfig:       t.cfg.TLSConfig,
		DERPForceWebSockets: info.DERPForceWebSockets,
		BlockEndpoints:      info.DisableDirectConnections,
		Logger:              t.logger.Named("net"),
		DNSConfigurator:     settings,
		Router:              settings,
		TUNDev:              dev,
		DNSMatchDomain:      suffix,
	})
	if err != nil {
		_ = dev.Close()
		return nil, fmt.Errorf("start the tailnet engine: %w", err)
	}

	runCtx, cancel := context.WithCancel(context.Background())
	sess := &session{cancel: cancel, conn: conn, dev: dev, settings: settings, client: client}
	proxy := newEngineProxy(runCtx, conn)
	sess.peers = newPeerTracker(me.Username, suffix, proxy, t.sendPeerUpdate)
	sess.waker = newWaker(conn.Rebind, wakeDebounce)

	// Coder's controllers log every failed redial as an error; ours log the
	// condition once (the dialer's health) and theirs at debug.
	ctrlLogger := t.controllerLogger()
	dialer := client.ControlDialer(me.ID, ctrlLogger, logger.Named("control"))
	controller := tailnet.NewController(ctrlLogger, dialer, tailnet.WithGracefulTimeout(gracefulDisconnect))
	coord := tailnet.NewTunnelSrcCoordController(ctrlLogger, proxy)
	controller.CoordCtrl = coord
	controller.DERPCtrl = tailnet.NewBasicDERPController(ctrlLogger, rewriter, conn)
	controller.ResumeTokenCtrl = tailnet.NewBasicResumeTokenController(ctrlLogger, quartz.NewReal())
	controller.WorkspaceUpdatesCtrl = tailnet.NewTunnelAllWorkspaceUpdatesController(ctrlLogger, coord,
		tailnet.WithDNS(conn, me.Username, tailnet.DNSNameOptions{Suffix: suffix}),
		tailnet.WithHandler(sess.peers))
	sess.controller = controller
	sess.wg.Go(proxy.run)
	controller.Run(runCtx)
	defer func() {
		if err != nil {
			_ = sess.close()
		}
	}()

	// Both must happen: the control connection comes up (or is refused for
	// good), and the host applies our first network settings (or refuses).
	dialed, settled := dialer.First(), settings.firstResult
	for dialed != nil || settled != nil {
		select {
		case <-ctx.Done():
			if last := dialer.LastError(); last != nil && dialed != nil {
				return nil, fmt.Errorf("connecting to the tailnet API: %w", last)
			}
			if settled != nil {
				return nil, errors.New("waiting for the host to apply the network settings")
			}
			return nil, errors.New("waiting for the tailnet API")
		case err := <-dialed:
			if err != nil {
				return nil, err
			}
			dialed = nil
		case err := <-settled:
			if err != nil {
				return nil, err
			}
			settled = nil
		}
	}
	awaitPeers(ctx, sess.peers, proxy)
	sess.wg.Go(func() { runPingLoop(runCtx, sess.peers, conn, t.cfg.PingInterval, logger.Named("ping")) })
	return sess, nil
}

// onceClosedDevice lets both the engine and our error paths close the
// device without caring who was first.
type onceClosedDevice struct {
	tun.Device
	once sync.Once
	err  error
}

func (d *onceClosedDevice) Close() error {
	d.once.Do(func() { d.err = d.Device.Close() })
	return d.err
}
