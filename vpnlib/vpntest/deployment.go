package vpntest

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"tailscale.com/tailcfg"
	"tailscale.com/types/key"

	"cdr.dev/slog/v3"
	"github.com/coder/coder/v2/tailnet"
	tailnetproto "github.com/coder/coder/v2/tailnet/proto"
)

// DefaultHostnameSuffix is the workspace hostname suffix a deployment reports
// when Options.HostnameSuffix is empty; it is coderd's default too.
const DefaultHostnameSuffix = "coder"

// DefaultOwnerName is the username of the deployment's only user when
// Options.OwnerName is empty.
const DefaultOwnerName = "alice"

// Options configure a Deployment. The zero value is a deployment that allows
// direct UDP, uses plain DERP upgrades, the "coder" suffix and a random token.
type Options struct {
	// BlockDirect tells clients (AgentConnectionInfo.DisableDirectConnections)
	// and the simulated agents (tailnet BlockEndpoints) not to use direct UDP,
	// so every packet goes through the DERP relay.
	BlockDirect bool
	// DERPForceWebSockets tells clients and agents to reach the DERP relay over
	// websockets instead of the "Upgrade: derp" protocol.
	DERPForceWebSockets bool
	// HostnameSuffix is reported in AgentConnectionInfo; default "coder".
	HostnameSuffix string
	// RelayHostName, if set, is the host name the DERP map given to clients
	// (connection info and the DERP map stream) names for the embedded
	// relay, with no address and the HTTPS port, the way coderd names its
	// access URL's host. A client must point the relay at the URL it reached
	// the deployment by, as Coder's clients do
	// (tailnet.RewriteDERPMapDefaultRelay); one that does not cannot reach
	// the relay. The simulated agents use the real listener.
	RelayHostName string
	// Token is the only API token the deployment accepts in the
	// Coder-Session-Token header; default a random coderd-shaped token.
	Token string
	// OwnerName is the username of the deployment's only user; default "alice".
	OwnerName string
	// Logger receives the logs of the coordinator, DERP relay and agents.
	// The zero value discards them.
	Logger slog.Logger
	// ListenAddr is the IP address and port the deployment listens on;
	// default "127.0.0.1:0". A test whose tunnel runs in another network
	// namespace sets an address of a veth that namespace can route to. The
	// access URL and the embedded relay in the DERP map name the address
	// the listener got, so clients and agents reach the relay there too.
	ListenAddr string
}

// Deployment is an embedded Coder deployment built from Coder's own server
// parts (tailnet coordinator, dRPC client service, DERP relay) plus the REST
// endpoints a CoderVPN tunnel calls. It listens on 127.0.0.1 only unless
// Options.ListenAddr says otherwise.
//
// Every /api/v2 endpoint requires Token in the Coder-Session-Token header.
type Deployment struct {
	// URL is the access URL, http://127.0.0.1:<port> (or Options.ListenAddr's
	// address and the port the listener got).
	URL *url.URL
	// Token is the API token the deployment accepts.
	Token string
	// OwnerID and OwnerName identify the deployment's only user; every
	// workspace belongs to them.
	OwnerID   uuid.UUID
	OwnerName string

	opts    Options
	logger  slog.Logger
	derpMap *tailcfg.DERPMap

	// coordPtr is the coordinator in service; RestartCoordinator swaps it.
	coordPtr    atomic.Pointer[tailnet.Coordinator]
	service     *tailnet.ClientService
	resumeToken *resumeTokens
	// derpKey outlives relay restarts, as coderd keeps its relay's key in
	// the database; relay is the DERP server in service (RestartDERP).
	derpKey key.NodePrivate
	relay   atomic.Pointer[relay]
	// restartMu serializes the restarts with each other and with Close.
	restartMu sync.Mutex

	listener   net.Listener
	httpServer *http.Server
	serveDone  chan struct{}

	// handlers tracks every running HTTP handler (including hijacked DERP and
	// control websockets) so Close can wait for all of them.
	handlerMu     sync.Mutex
	handlerClosed bool
	handlers      sync.WaitGroup

	control controlConns
	state   *state
	reqs    requestLog

	closeOnce sync.Once
	closeErr  error
}

// Start runs a deployment until Close. It needs no test, so the demo uses
// it; tests should prefer New.
func Start(ctx context.Context, opts Options) (*Deployment, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("start deployment: %w", err)
	}
	if opts.HostnameSuffix == "" {
		opts.HostnameSuffix = DefaultHostnameSuffix
	}
	if opts.OwnerName == "" {
		opts.OwnerName = DefaultOwnerName
	}
	if opts.Token == "" {
		tok, err := randomToken()
		if err != nil {
			return nil, fmt.Errorf("generate API token: %w", err)
		}
		opts.Token = tok
	}

	if opts.ListenAddr == "" {
		opts.ListenAddr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", opts.ListenAddr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s for the deployment (Options.ListenAddr must be an IP address of this network namespace and a port, 0 for any): %w", opts.ListenAddr, err)
	}
	bound := ln.Addr().(*net.TCPAddr).AddrPort()
	bound = netip.AddrPortFrom(bound.Addr().Unmap(), bound.Port())

	d := &Deployment{
		URL:       &url.URL{Scheme: "http", Host: bound.String()},
		Token:     opts.Token,
		OwnerID:   uuid.New(),
		OwnerName: opts.OwnerName,
		opts:      opts,
		logger:    opts.Logger,
		derpMap:   embeddedDERPMap(bound),
		listener:  ln,
		serveDone: make(chan struct{}),
	}
	d.state = newState(d.OwnerID)
	d.reqs.max = maxRecordedRequests

	coord := tailnet.NewCoordinator(d.logger.Named("coord"))
	d.coordPtr.Store(&coord)
	d.resumeToken = &resumeTokens{ResumeTokenProvider: tailnet.NewInsecureTestResumeTokenProvider()}
	d.service, err = tailnet.NewClientService(tailnet.ClientServiceOptions{
		Logger:                   d.logger.Named("tailnet_service"),
		CoordPtr:                 &d.coordPtr,
		DERPMapUpdateFrequency:   derpMapUpdateFrequency,
		DERPMapFn:                d.clientDERPMap,
		NetworkTelemetryHandler:  func([]*tailnetproto.TelemetryEvent) {},
		ResumeTokenProvider:      d.resumeToken,
		WorkspaceUpdatesProvider: d.state,
	})
	if err != nil {
		_ = ln.Close()
		_ = coord.Close()
		return nil, fmt.Errorf("create tailnet client service: %w", err)
	}

	d.derpKey = key.NewNode()
	d.relay.Store(d.newRelay())
	d.httpServer = &http.Server{
		Handler:           d.track(d.record(d.routes())),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(slogWriter{d.logger.Named("http")}, "", 0),
	}
	go func() {
		defer close(d.serveDone)
		err := d.httpServer.Serve(ln)
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.logger.Error(context.Background(), "deployment HTTP server stopped", slog.Error(err))
		}
	}()
	return d, nil
}

// TB is the part of testing.TB that New and NewProxy use; *testing.T and
// *testing.B are TBs. It is declared here so that this package, which the
// demo links into the codervpn binary, does not import package testing,
// as net/http/httptest does not.
type TB interface {
	Helper()
	Cleanup(func())
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
}

// New is Start for tests: it fails t if the deployment cannot start and
// registers Close with t.Cleanup.
func New(t TB, opts Options) *Deployment {
	t.Helper()
	d, err := Start(context.Background(), opts)
	if err != nil {
		t.Fatalf("start embedded deployment: %v", err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("close embedded deployment: %v", err)
		}
	})
	return d
}

// Options returns the options the deployment runs with, defaults filled in.
func (d *Deployment) Options() Options { return d.opts }

// DERPMap returns a copy of the deployment's DERP map: one embedded relay
// region served by the deployment itself at its listener (127.0.0.1 unless
// Options.ListenAddr says otherwise).
func (d *Deployment) DERPMap() *tailcfg.DERPMap { return d.derpMap.Clone() }

// clientDERPMap is the DERP map as clients are given it: DERPMap, with the
// embedded relay renamed when Options.RelayHostName is set.
func (d *Deployment) clientDERPMap() *tailcfg.DERPMap {
	m := d.DERPMap()
	if d.opts.RelayHostName == "" {
		return m
	}
	for _, node := range m.Regions[EmbeddedRegionID].Nodes {
		node.HostName = d.opts.RelayHostName
		node.IPv4, node.IPv6 = "", ""
		node.DERPPort = 443
		node.ForceHTTP = false
	}
	return m
}

// Coordinator exposes the deployment's tailnet coordinator, e.g. for tests
// that want to inspect a peer's node with Coordinator().Node(id). After
// RestartCoordinator it is the new one.
func (d *Deployment) Coordinator() tailnet.Coordinator { return *d.coordPtr.Load() }

// Close stops the agents, the HTTP server, every control and DERP
// connection, the relay and the coordinator, and waits for every goroutine
// the deployment started. It is safe to call more than once.
func (d *Deployment) Close() error {
	d.closeOnce.Do(func() { d.closeErr = d.close() })
	return d.closeErr
}

func (d *Deployment) close() error {
	var errs []error
	// Agents first: they are DERP and coordinator clients of what follows.
	for _, a := range d.state.closeAll() {
		if err := a.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close agent %s: %w", a.Name, err))
		}
	}

	d.handlerMu.Lock()
	d.handlerClosed = true
	d.handlerMu.Unlock()

	if err := d.httpServer.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close HTTP server: %w", err))
	}
	<-d.serveDone
	d.control.closeAll()
	d.restartMu.Lock()
	defer d.restartMu.Unlock()
	if err := d.relay.Load().close(); err != nil {
		errs = append(errs, fmt.Errorf("close DERP server: %w", err))
	}
	d.handlers.Wait()

	if err := d.state.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close workspace updates: %w", err))
	}
	if err := d.Coordinator().Close(); err != nil {
		errs = append(errs, fmt.Errorf("close coordinator: %w", err))
	}
	return errors.Join(errs...)
}

// track counts running handlers so Close can wait for them, and refuses new
// requests once Close has begun.
func (d *Deployment) track(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d.handlerMu.Lock()
		if d.handlerClosed {
			d.handlerMu.Unlock()
			http.Error(w, "deployment is shutting down", http.StatusServiceUnavailable)
			return
		}
		d.handlers.Add(1)
		d.handlerMu.Unlock()
		defer d.handlers.Done()
		next.ServeHTTP(w, r)
	})
}

// slogWriter adapts the standard library's *log.Logger output (used by
// net/http for connection errors) to our slog logger at debug level.
type slogWriter struct{ l slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.l.Debug(context.Background(), string(p))
	return len(p), nil
}
