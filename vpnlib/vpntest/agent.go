package vpntest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/google/uuid"

	"cdr.dev/slog/v3"
	"github.com/coder/coder/v2/tailnet"
	"github.com/coder/coder/v2/tailnet/proto"
)

// Ports the simulated agents serve on their tailnet addresses. See the
// package documentation for the sink and source protocols.
const (
	AgentHTTPPort   uint16 = 80
	AgentSinkPort   uint16 = 9  // like the discard service (RFC 863)
	AgentSourcePort uint16 = 19 // like chargen (RFC 864), but sized on request
)

// agentReadyTimeout bounds how long AddAgent waits for a new agent to find
// its DERP home when the caller's context has no earlier deadline.
const agentReadyTimeout = 30 * time.Second

// Agent is a simulated workspace agent: a real tailnet.Conn (netstack, no
// TUN) coordinating through the deployment's coordinator as an agent, with
// the addresses a Coder agent advertises, serving TCP on its tailnet address.
type Agent struct {
	ID          uuid.UUID
	WorkspaceID uuid.UUID
	Name        string
	// Addr is the agent's CoderVPN address, CoderServicePrefix.AddrFromUUID(ID)
	// in fd60:627a:a42b::/48. Like a real agent it also answers on
	// TailscaleServicePrefix.AddrFromUUID(ID).
	Addr       netip.Addr
	HTTPPort   uint16
	SinkPort   uint16
	SourcePort uint16

	conn     *tailnet.Conn
	services *services
	peers    *peerMemory // what the coordinator told the agent, for ForgetSessions
	// coordStop ends the coordination loop; coordDone closes when it has
	// said goodbye to the coordinator.
	coordStop chan struct{}
	coordDone chan struct{}
	coordErr  error

	closeOnce sync.Once
	closeErr  error
}

// nodeObserver is the tailnet.Conn as the coordination controller sees it; it
// also tells us about each node update after the controller has sent it to
// the coordinator, so AddAgent can wait for a usable node.
type nodeObserver struct {
	*tailnet.Conn
	onNode func(*tailnet.Node)
	peers  *peerMemory
}

// UpdatePeers notes each peer's latest node, then hands the updates on.
func (o nodeObserver) UpdatePeers(updates []*proto.CoordinateResponse_PeerUpdate) error {
	o.peers.record(updates)
	return o.Conn.UpdatePeers(updates)
}

func (o nodeObserver) SetNodeCallback(cb func(*tailnet.Node)) {
	o.Conn.SetNodeCallback(func(n *tailnet.Node) {
		cb(n)
		o.onNode(n)
	})
}

func (d *Deployment) startAgent(ctx context.Context, workspaceID uuid.UUID, workspaceName string, id uuid.UUID, name string) (_ *Agent, err error) {
	logger := d.logger.Named("agent").With(slog.F("agent", name), slog.F("workspace", workspaceName))
	a := &Agent{
		ID:          id,
		WorkspaceID: workspaceID,
		Name:        name,
		Addr:        tailnet.CoderServicePrefix.AddrFromUUID(id),
		HTTPPort:    AgentHTTPPort,
		SinkPort:    AgentSinkPort,
		SourcePort:  AgentSourcePort,
	}
	a.conn, err = tailnet.NewConn(&tailnet.Options{
		ID: id,
		Addresses: []netip.Prefix{
			tailnet.TailscaleServicePrefix.PrefixFromUUID(id),
			tailnet.CoderServicePrefix.PrefixFromUUID(id),
		},
		DERPMap:             d.DERPMap(),
		DERPForceWebSockets: d.opts.DERPForceWebSockets,
		BlockEndpoints:      d.opts.BlockDirect,
		Logger:              logger.Named("tailnet"),
		// Everything is on loopback; don't let magicsock decide the host is
		// offline because it has no default route (e.g. in a bare netns).
		ForceNetworkUp: true,
	})
	if err != nil {
		return nil, fmt.Errorf("create agent tailnet: %w", err)
	}
	defer func() {
		if err != nil {
			_ = a.Close()
		}
	}()

	a.services, err = startServices(a.conn, a, logger.Named("services"))
	if err != nil {
		return nil, err
	}

	ready := make(chan struct{})
	var readyOnce sync.Once
	a.peers = newPeerMemory()
	obs := nodeObserver{Conn: a.conn, peers: a.peers, onNode: func(n *tailnet.Node) {
		if n.PreferredDERP != 0 {
			readyOnce.Do(func() { close(ready) })
		}
	}}
	a.coordStop, a.coordDone = make(chan struct{}), make(chan struct{})
	go a.coordinate(d, tailnet.NewAgentCoordinationController(logger.Named("coordination"), obs), logger)

	wait, cancel := context.WithTimeout(ctx, agentReadyTimeout)
	defer cancel()
	select {
	case <-ready:
		return a, nil
	case <-wait.Done():
		return nil, fmt.Errorf("agent %q did not reach the DERP relay: %w", name, wait.Err())
	}
}

// coordinateRetry is how long an agent waits before coordinating again after
// its coordinator went away, so a closing deployment cannot make it spin.
const coordinateRetry = 50 * time.Millisecond

// coordinate keeps the agent coordinating with the deployment's current
// coordinator, as a real agent redials coderd: when the coordinator it uses
// closes (RestartCoordinator), it starts over with the one that replaced it.
func (a *Agent) coordinate(d *Deployment, ctrl tailnet.CoordinationController, logger slog.Logger) {
	defer close(a.coordDone)
	for {
		client := tailnet.NewInMemoryCoordinatorClient(logger, a.ID, tailnet.AgentCoordinateeAuth{ID: a.ID}, d.Coordinator())
		coordination := ctrl.New(client)
		select {
		case <-a.coordStop:
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err := coordination.Close(ctx)
			cancel()
			if err != nil && !errors.Is(err, context.Canceled) {
				a.coordErr = fmt.Errorf("disconnect from coordinator: %w", err)
			}
			return
		case err := <-coordination.Wait():
			logger.Debug(context.Background(), "coordination ended; coordinating again", slog.Error(err))
		}
		retry := time.NewTimer(coordinateRetry)
		select {
		case <-a.coordStop:
			retry.Stop()
			return
		case <-retry.C:
		}
	}
}

// Close stops the agent: its services, its coordination (it disconnects
// from the coordinator, so clients see it go away) and its tailnet. The
// agent stays listed in its workspace until RemoveAgent, like a real agent
// that went offline. Safe to call more than once.
func (a *Agent) Close() error {
	a.closeOnce.Do(func() {
		var errs []error
		if a.services != nil {
			a.services.close()
		}
		if a.coordStop != nil {
			close(a.coordStop)
			<-a.coordDone
			if a.coordErr != nil {
				errs = append(errs, a.coordErr)
			}
		}
		if a.conn != nil { // stubs have no engine
			if err := a.conn.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close tailnet: %w", err))
			}
		}
		a.closeErr = errors.Join(errs...)
	})
	return a.closeErr
}

// Conn exposes the agent's tailnet connection, e.g. to ping the client back
// or read its status. It is nil for a stub agent (AddStubAgent).
func (a *Agent) Conn() *tailnet.Conn { return a.conn }
