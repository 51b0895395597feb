package vpntest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"time"

	"github.com/google/uuid"
	"tailscale.com/tailcfg"
	"tailscale.com/types/key"

	"github.com/coder/coder/v2/tailnet"
	"github.com/coder/coder/v2/tailnet/proto"
)

// AddStubAgent lists an agent that has a node but no engine: it tells the
// coordinator a node with fresh keys, homed on the embedded relay, and
// nothing answers behind it. Clients see it like any agent (workspace
// update, node, WireGuard peer) and configure it; a connection to it never
// completes. It costs the deployment a goroutine, so scale tests can list
// thousands. Its Conn is nil.
func (d *Deployment) AddStubAgent(ctx context.Context, workspaceID uuid.UUID, name string) (*Agent, error) {
	return d.addAgent(ctx, workspaceID, uuid.New(), name, d.startStubAgent)
}

func (d *Deployment) startStubAgent(_ context.Context, workspaceID uuid.UUID, _ string, id uuid.UUID, name string) (*Agent, error) {
	node, err := tailnet.NodeToProto(&tailnet.Node{
		ID:            tailcfg.NodeID(rand.Int64N(1 << 53)),
		AsOf:          time.Now(),
		Key:           key.NewNode().Public(),
		DiscoKey:      key.NewDisco().Public(),
		PreferredDERP: EmbeddedRegionID,
		Addresses: []netip.Prefix{
			tailnet.TailscaleServicePrefix.PrefixFromUUID(id),
			tailnet.CoderServicePrefix.PrefixFromUUID(id),
		},
		AllowedIPs: []netip.Prefix{
			tailnet.TailscaleServicePrefix.PrefixFromUUID(id),
			tailnet.CoderServicePrefix.PrefixFromUUID(id),
		},
	})
	if err != nil {
		return nil, fmt.Errorf("stub agent node: %w", err)
	}
	a := &Agent{
		ID:          id,
		WorkspaceID: workspaceID,
		Name:        name,
		Addr:        tailnet.CoderServicePrefix.AddrFromUUID(id),
		coordStop:   make(chan struct{}),
		coordDone:   make(chan struct{}),
	}
	coordCtx, cancel := context.WithCancel(context.Background())
	reqs, resps := d.Coordinator().Coordinate(coordCtx, id, name, tailnet.AgentCoordinateeAuth{ID: id})
	reqs <- &proto.CoordinateRequest{UpdateSelf: &proto.CoordinateRequest_UpdateSelf{Node: node}}
	go func() {
		defer close(a.coordDone)
		defer cancel()
		for {
			select {
			case <-a.coordStop:
				return
			case _, ok := <-resps: // what clients tell it goes nowhere
				if !ok {
					return
				}
			}
		}
	}()
	return a, nil
}
