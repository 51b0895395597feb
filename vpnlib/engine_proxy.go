package vpnlib

import (
	"context"
	"sync"
	"time"

	"github.com/google/uuid"
	"tailscale.com/types/key"

	"github.com/coder/coder/v2/tailnet"
	"github.com/coder/coder/v2/tailnet/proto"
)

// engineProxy stands between the coordination controller and the engine,
// both ways: the coordinator's peer updates go through it to the engine,
// in batches, and it remembers which WireGuard key each peer uses, so that
// the handshake times of every agent come from one read of the engine's
// status.
//
// Why: the engine can only be asked for one peer at a time
// (GetPeerDiagnostics), and each such question builds the status of every
// peer. Rendering n agents that way costs n², which at a thousand
// workspaces made each PeerUpdate and GetPeerUpdate take most of a second.
//
// The batches (peerBatcher) go out from its run method, which must be
// running for the updates to arrive.
type engineProxy struct {
	engine
	batch *peerBatcher
	taken *deliveries     // what the engine's UpdatePeers has returned from
	ended context.Context // done once the session is ending

	mu    sync.Mutex
	keys  map[uuid.UUID]key.NodePublic
	nodes map[uuid.UUID]*proto.CoordinateResponse_PeerUpdate // the latest NODE of each peer, for resetSessions
	ready map[uuid.UUID]*proto.CoordinateResponse_PeerUpdate // each peer's READY_FOR_HANDSHAKE, likewise
}

// newEngineProxy returns the proxy of conn for a session that ends with ctx.
func newEngineProxy(ctx context.Context, conn engine) *engineProxy {
	taken := newDeliveries()
	apply := func(updates []*proto.CoordinateResponse_PeerUpdate) error {
		err := conn.UpdatePeers(updates)
		if err == nil {
			taken.note(updates)
		}
		return err
	}
	return &engineProxy{engine: conn, batch: newPeerBatcher(apply, conn.SetAllPeersLost), taken: taken, ended: ctx,
		keys: map[uuid.UUID]key.NodePublic{}, nodes: map[uuid.UUID]*proto.CoordinateResponse_PeerUpdate{},
		ready: map[uuid.UUID]*proto.CoordinateResponse_PeerUpdate{}}
}

// UpdatePeers implements tailnet.Coordinatee: it notes each peer's key and
// queues the updates for the engine.
func (v *engineProxy) UpdatePeers(updates []*proto.CoordinateResponse_PeerUpdate) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.record(updates)
	return v.batch.add(updates)
}

// SetAllPeersLost implements tailnet.Coordinatee. The updates queued before
// the call arrived before the coordinator was lost, so they reach the
// engine first; those queued after it come from the next connection and
// reach it after (peerBatcher.coordinationLost).
//
// When the session is ending the engine is about to close, and marking its
// peers lost would only start work that outlives the tunnel: the engine
// arms a timer per lost peer, and a peer that never completed a handshake
// times out at once, each building the status of every peer. With
// thousands of agents that was thousands of goroutines still running after
// the tunnel reported it had stopped.
func (v *engineProxy) SetAllPeersLost() {
	if v.ended.Err() != nil {
		return
	}
	v.batch.coordinationLost()
}

// SetNodeCallback implements tailnet.Coordinatee. The controller calls it
// as each coordination starts, which is how the batcher knows where in the
// order of updates a coordination began.
func (v *engineProxy) SetNodeCallback(callback func(*tailnet.Node)) {
	v.batch.coordinationStarted()
	v.engine.SetNodeCallback(callback)
}

// run delivers the queued peer updates until the session ends.
func (v *engineProxy) run() { v.batch.run(v.ended) }

// record notes the key and node of each peer; v.mu is held.
func (v *engineProxy) record(updates []*proto.CoordinateResponse_PeerUpdate) {
	for _, u := range updates {
		id, err := uuid.FromBytes(u.GetId())
		if err != nil {
			continue // the engine rejects it too, and logs why
		}
		switch u.GetKind() {
		case proto.CoordinateResponse_PeerUpdate_NODE:
			var k key.NodePublic
			if err := k.UnmarshalBinary(u.GetNode().GetKey()); err == nil {
				v.keys[id] = k
				v.nodes[id] = u
			}
		case proto.CoordinateResponse_PeerUpdate_READY_FOR_HANDSHAKE:
			v.ready[id] = u
		case proto.CoordinateResponse_PeerUpdate_DISCONNECTED:
			delete(v.keys, id)
			delete(v.nodes, id)
			delete(v.ready, id)
		}
		// LOST keeps the key: the engine keeps the peer (and its last
		// handshake) until it times out or comes back.
	}
}

// LastHandshakes implements peerEngine.
func (v *engineProxy) LastHandshakes() map[uuid.UUID]time.Time {
	st := v.engine.Status()
	v.mu.Lock()
	defer v.mu.Unlock()
	out := make(map[uuid.UUID]time.Time, len(v.keys))
	for id, k := range v.keys {
		if ps, ok := st.Peer[k]; ok && !ps.LastHandshake.IsZero() {
			out[id] = ps.LastHandshake
		}
	}
	return out
}

// configured reports whether the engine has a WireGuard peer for each of
// ids: the coordinator sent its node and the engine took it in.
//
// The peer must be in WireGuard itself (InEngine). The engine's status also
// lists the peers of its network map, which it hands its sockets just
// before it reconfigures WireGuard: a read between the two listed an agent
// whose packets WireGuard would still drop, and a first SYN sent then cost
// the user a one-second retransmission (TestStartResponseMeansReady, about
// one run in twenty once the status was read right after the agents'
// ready-for-handshake).
func (v *engineProxy) configured(ids []uuid.UUID) bool {
	st := v.engine.Status()
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, id := range ids {
		k, ok := v.keys[id]
		if !ok {
			return false
		}
		if ps, ok := st.Peer[k]; !ok || !ps.InEngine {
			return false
		}
	}
	return true
}
