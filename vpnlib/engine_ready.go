package vpnlib

import (
	"context"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/coder/coder/v2/tailnet/proto"
)

// deliveries records, per peer, whether the engine has taken its node and
// its ready-for-handshake: the engine's UpdatePeers returned from a batch
// that carried them. It wakes whoever waits on every delivery.
//
// Why: the engine configures a WireGuard peer for an agent (a tunnel
// destination) only once it holds both, and it announces nothing when it
// does. Until both were delivered, asking the engine whether it has the
// peer can only say no, and every such question (Status) builds the status
// of every peer under the engine's locks, the same locks its
// reconfiguration needs. Knowing the deliveries ourselves, a Start asks
// the engine only when the answer can be yes.
type deliveries struct {
	mu      sync.Mutex
	node    map[uuid.UUID]bool
	ready   map[uuid.UUID]bool
	changed chan struct{} // closed, and replaced, on every delivery
}

func newDeliveries() *deliveries {
	return &deliveries{node: map[uuid.UUID]bool{}, ready: map[uuid.UUID]bool{}, changed: make(chan struct{})}
}

// note records updates the engine has taken, in their order.
func (d *deliveries) note(updates []*proto.CoordinateResponse_PeerUpdate) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, u := range updates {
		id, err := uuid.FromBytes(u.GetId())
		if err != nil {
			continue
		}
		switch u.GetKind() {
		case proto.CoordinateResponse_PeerUpdate_NODE:
			d.node[id] = true
		case proto.CoordinateResponse_PeerUpdate_READY_FOR_HANDSHAKE:
			d.ready[id] = true
		case proto.CoordinateResponse_PeerUpdate_DISCONNECTED:
			delete(d.node, id)
			delete(d.ready, id)
		}
	}
	close(d.changed)
	d.changed = make(chan struct{})
}

// all reports whether the engine has taken a node and a ready-for-handshake
// for every one of ids. When it has not, next is closed at the next
// delivery.
func (d *deliveries) all(ids []uuid.UUID) (ok bool, next <-chan struct{}) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, id := range ids {
		if !d.node[id] || !d.ready[id] {
			return false, d.changed
		}
	}
	return true, nil
}

// peersReadyWait bounds how long a Start waits for the engine to have a
// peer for every agent the first workspace update listed. An agent that is
// offline never gets one, so the wait must be short; agents that are online
// get theirs within tens of milliseconds.
const peersReadyWait = 500 * time.Millisecond

// awaitPeers returns once the first workspace update has been applied and
// the engine has a peer for each of its agents, or after peersReadyWait.
//
// Why: the manager sends its first packets the moment it has the
// StartResponse. A packet for an agent the engine has no peer for yet is
// dropped, and a dropped TCP SYN costs the user the kernel's one-second
// retransmission timeout; with the peer in place, WireGuard holds the
// packet during its handshake instead.
//
// It waits in two steps. Until the engine has taken every agent's node and
// ready-for-handshake (deliveries) it does not ask the engine anything.
// After that the engine reconfigures WireGuard on a goroutine of its own,
// which it does not announce either, so its status is read until it lists
// every agent: at first right away (the read waits on the engine's lock
// while a reconfiguration holds it, and returns as it ends), then at an
// interval that grows, so that a thousand peers are not slowed down by our
// asking.
func awaitPeers(ctx context.Context, p *peerTracker, v *engineProxy) {
	ctx, cancel := context.WithTimeout(ctx, peersReadyWait)
	defer cancel()
	select {
	case <-p.firstUpdate():
	case <-ctx.Done():
		return
	}
	ids := p.agentIDs()
	for {
		ok, next := v.taken.all(ids)
		if ok {
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-next:
		}
	}
	wait := peersPollFirst
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for !v.configured(ids) {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		wait = min(wait*2, peersPollMax)
		timer.Reset(wait)
	}
}

// Once every agent's node and ready-for-handshake are in the engine,
// awaitPeers reads its status after peersPollFirst, then at an interval
// doubling up to peersPollMax.
const (
	peersPollFirst = time.Millisecond
	peersPollMax   = 50 * time.Millisecond
)
