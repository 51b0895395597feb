package vpntest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	"tailscale.com/types/key"

	"github.com/coder/coder/v2/tailnet/proto"
)

// peerMemory keeps the latest node the coordinator sent an agent for each
// of its peers.
type peerMemory struct {
	mu    sync.Mutex
	nodes map[uuid.UUID]*proto.CoordinateResponse_PeerUpdate
}

func newPeerMemory() *peerMemory {
	return &peerMemory{nodes: map[uuid.UUID]*proto.CoordinateResponse_PeerUpdate{}}
}

func (m *peerMemory) record(updates []*proto.CoordinateResponse_PeerUpdate) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, u := range updates {
		id, err := uuid.FromBytes(u.GetId())
		if err != nil {
			continue
		}
		switch u.GetKind() {
		case proto.CoordinateResponse_PeerUpdate_NODE:
			m.nodes[id] = u
		case proto.CoordinateResponse_PeerUpdate_DISCONNECTED:
			delete(m.nodes, id)
		}
	}
}

func (m *peerMemory) snapshot() []*proto.CoordinateResponse_PeerUpdate {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*proto.CoordinateResponse_PeerUpdate, 0, len(m.nodes))
	for _, u := range m.nodes {
		out = append(out, u)
	}
	return out
}

// ForgetSessions makes the agent drop the WireGuard session (keys and
// handshake state) it has with every peer, keeping its own node key,
// address and peers. WireGuard does this by itself to keys older than
// 9 minutes (three times RejectAfterTime): it is what a client that slept
// longer than that finds on waking, while its own monotonic clock, which
// stood still, tells it its keys are fresh. The agent's side of a peer is
// back at once, and it starts no handshake itself: the client must.
// It returns how many peers' sessions were dropped.
func (a *Agent) ForgetSessions(ctx context.Context) (int, error) {
	if a.conn == nil {
		return 0, errors.New("a stub agent has no WireGuard sessions")
	}
	nodes := a.peers.snapshot()
	gone := make([]*proto.CoordinateResponse_PeerUpdate, 0, len(nodes))
	keys := make([]key.NodePublic, 0, len(nodes))
	for _, u := range nodes {
		var k key.NodePublic
		if err := k.UnmarshalBinary(u.GetNode().GetKey()); err != nil {
			return 0, fmt.Errorf("peer node key: %w", err)
		}
		keys = append(keys, k)
		gone = append(gone, &proto.CoordinateResponse_PeerUpdate{
			Id: u.GetId(), Kind: proto.CoordinateResponse_PeerUpdate_DISCONNECTED, Reason: "test: sessions expired",
		})
	}
	if err := a.conn.UpdatePeers(gone); err != nil {
		return 0, fmt.Errorf("remove the agent's peers: %w", err)
	}
	// The engine applies a change in the background; the keys are gone
	// once its WireGuard device no longer has the peers.
	ticker := time.NewTicker(5 * time.Millisecond)
	defer ticker.Stop()
	for {
		st, left := a.conn.Status(), 0
		for _, k := range keys {
			if _, ok := st.Peer[k]; ok {
				left++
			}
		}
		if left == 0 {
			break
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("the agent's engine still has %d of %d peers: %w", left, len(keys), ctx.Err())
		case <-ticker.C:
		}
	}
	if err := a.conn.UpdatePeers(nodes); err != nil {
		return 0, fmt.Errorf("put the agent's peers back: %w", err)
	}
	return len(nodes), nil
}
