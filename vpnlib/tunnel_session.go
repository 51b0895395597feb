package vpnlib

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"sync"
	"time"

	"github.com/tailscale/wireguard-go/tun"
	"tailscale.com/tailcfg"

	"cdr.dev/slog/v3"
	"github.com/coder/coder/v2/codersdk"
	"github.com/coder/coder/v2/codersdk/workspacesdk"
	"github.com/coder/coder/v2/tailnet"
	tailnetproto "github.com/coder/coder/v2/tailnet/proto"
	"github.com/coder/quartz"
	"github.com/coder/websocket"
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
	client     *coderdClient
	wg         sync.WaitGroup
	haltOnce   sync.Once
	haltErr    error
	finishOnce sync.Once
}

// close stops everything the session runs and releases the device.
func (s *session) close() error {
	err := s.halt()
	s.finish()
	return err
}

// halt stops the session carrying traffic: when it returns, the engine and
// the device are closed, and the session sends the manager no more network
// settings or peer updates (both are silenced first, so that tearing the
// engine down sends the manager nothing).
//
// What is left for finish is the goodbye to the coordinator, which the
// controllers started when halt canceled them and which runs beside the
// engine's teardown. It is bounded (gracefulDisconnect) but takes a round
// trip to the deployment and the coordinator's work on every tunnel we had
// (at 2,000 agents, bench/RESULTS.md): the StopResponse need not wait for
// it. The engine closing under the controllers is safe:
// our engineView stops handing it peer updates once the session ends, and
// what the controllers still set on it (DERP map, DNS names, tunnel
// destinations) a closed engine keeps without acting on.
func (s *session) halt() error {
	s.haltOnce.Do(func() {
		s.settings.shutdown()
		s.peers.silence()
		s.cancel()
		s.wg.Wait()
		s.haltErr = s.conn.Close()
		_ = s.dev.Close() // the engine closed it already; this is a no-op then
	})
	return s.haltErr
}

// finish waits for the controllers to end (the coordinator's goodbye) and
// closes the idle connections to the deployment. It halts the session
// first if that has not happened yet.
func (s *session) finish() {
	_ = s.halt()
	s.finishOnce.Do(func() {
		<-s.controller.Closed()
		s.client.closeIdle()
	})
}

// startSession connects to the deployment and starts the engine. It returns
// once the control connection is up and the host has applied the first
// network settings.
func (t *Tunnel) startSession(ctx context.Context, p startParams) (_ *session, err error) {
	logger := t.logger.Named("session")
	client := newCoderdClient(p.url, p.header, t.cfg.TLSConfig)
	defer func() {
		if err != nil {
			client.closeIdle()
		}
	}()
	me, err := client.me(ctx)
	if err != nil {
		return nil, err
	}
	info, err := client.connectionInfo(ctx)
	if err != nil {
		return nil, err
	}
	suffix := dnsSuffix(info.HostnameSuffix)
	rewriter := derpRewriter{logger: logger, accessURL: p.url}
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
	settings := newNetSettings(t.applySettings, t.cfg.SettingsTimeout, suffix, logger.Named("settings"))
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
	view := newEngineView(runCtx, conn)
	sess.peers = newPeerTracker(me.Username, suffix, view, t.sendPeerUpdate)
	sess.waker = newWaker(conn.Rebind, wakeDebounce)

	rpcURL := p.url.JoinPath("/api/v2/tailnet")
	// Coder's controllers log every failed redial as an error; ours log the
	// condition once (controlHealth) and theirs at debug.
	ctrlLogger := t.controllerLogger()
	dialer := newControlDialer(p.url, workspacesdk.NewWebsocketDialer(ctrlLogger, rpcURL,
		&websocket.DialOptions{
			// Headers come from client.ws's transport, once each.
			HTTPClient:      client.ws,
			CompressionMode: websocket.CompressionDisabled,
		},
		workspacesdk.WithWorkspaceUpdates(&tailnetproto.WorkspaceUpdatesRequest{
			WorkspaceOwnerId: tailnet.UUIDToByteSlice(me.ID),
		})))
	dialer.health = newControlHealth(logger.Named("control"))
	controller := tailnet.NewController(ctrlLogger, dialer, tailnet.WithGracefulTimeout(gracefulDisconnect))
	coord := tailnet.NewTunnelSrcCoordController(ctrlLogger, view)
	controller.CoordCtrl = coord
	controller.DERPCtrl = tailnet.NewBasicDERPController(ctrlLogger, rewriter, conn)
	controller.ResumeTokenCtrl = tailnet.NewBasicResumeTokenController(ctrlLogger, quartz.NewReal())
	controller.WorkspaceUpdatesCtrl = tailnet.NewTunnelAllWorkspaceUpdatesController(ctrlLogger, coord,
		tailnet.WithDNS(conn, me.Username, tailnet.DNSNameOptions{Suffix: suffix}),
		tailnet.WithHandler(sess.peers))
	sess.controller = controller
	sess.wg.Go(view.run)
	controller.Run(runCtx)
	defer func() {
		if err != nil {
			_ = sess.close()
		}
	}()

	// Both must happen: the control connection comes up (or is refused for
	// good), and the host applies our first network settings (or refuses).
	dialed, settled := dialer.first, settings.firstResult
	for dialed != nil || settled != nil {
		select {
		case <-ctx.Done():
			if last := dialer.lastError(); last != nil && dialed != nil {
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
	awaitPeers(ctx, sess.peers, view)
	sess.wg.Go(func() { runPingLoop(runCtx, sess.peers, conn, t.cfg.PingInterval, logger.Named("ping")) })
	return sess, nil
}

// derpRewriter points the deployment's embedded relay at the URL we reached
// it by (the DERP map names the deployment's own idea of its address).
type derpRewriter struct {
	logger    slog.Logger
	accessURL *url.URL
}

func (d derpRewriter) RewriteDERPMap(m *tailcfg.DERPMap) {
	tailnet.RewriteDERPMapDefaultRelay(context.Background(), d.logger, m, d.accessURL)
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

// controlDialer wraps the websocket dialer to learn the outcome of the
// first dial, which decides the Start: success, a refusal that retrying
// cannot fix (401, 403, 404...), or, at the deadline, the last error.
type controlDialer struct {
	inner *workspacesdk.WebsocketDialer
	base  *url.URL
	first chan error // receives the decisive first outcome, once
	// health, if set, logs the connection's condition changes once each.
	health *controlHealth

	once    sync.Once
	mu      sync.Mutex
	lastErr error
}

func newControlDialer(base *url.URL, inner *workspacesdk.WebsocketDialer) *controlDialer {
	return &controlDialer{inner: inner, base: base, first: make(chan error, 1)}
}

// Dial implements tailnet.ControlProtocolDialer.
func (d *controlDialer) Dial(ctx context.Context, r tailnet.ResumeTokenController) (tailnet.ControlProtocolClients, error) {
	if d.health != nil {
		d.health.dialing(ctx)
	}
	clients, err := d.inner.Dial(ctx, r)
	// The inner dialer reports its first permanent failure on a channel of
	// one slot and would block forever on a second: empty it every time.
	select {
	case <-d.inner.Connected():
	default:
	}
	if err == nil {
		d.report(nil)
		if d.health != nil {
			d.health.dialed(ctx, nil)
		}
		return clients, nil
	}
	described := describeDialError(d.base, err)
	if d.health != nil {
		d.health.dialed(ctx, described)
	}
	d.mu.Lock()
	d.lastErr = described
	d.mu.Unlock()
	var sdkErr *codersdk.Error
	var redirect *redirectError
	switch {
	case errors.As(err, &sdkErr):
		switch sdkErr.StatusCode() {
		case http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound, http.StatusConflict:
			d.report(described)
		}
	case errors.As(err, &redirect):
		// Coder never redirects its API, and we never follow: retrying
		// cannot help.
		d.report(described)
	}
	return clients, err
}

func (d *controlDialer) report(err error) {
	d.once.Do(func() { d.first <- err })
}

func (d *controlDialer) lastError() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.lastErr
}

// describeDialError names a failed control-connection dial.
func describeDialError(base *url.URL, err error) error {
	var sdkErr *codersdk.Error
	if errors.As(err, &sdkErr) {
		body, _ := json.Marshal(sdkErr.Response)
		return describeStatus(base, "/api/v2/tailnet", sdkErr.StatusCode(), body)
	}
	var redirect *redirectError
	if errors.As(err, &redirect) {
		return describeStatus(base, "/api/v2/tailnet", redirect.status, nil)
	}
	return describeTransportError(base, err)
}
