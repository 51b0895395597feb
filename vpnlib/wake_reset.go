package vpnlib

import (
	"context"
	"time"

	"github.com/google/uuid"
	"tailscale.com/types/key"

	"github.com/coder/coder/v2/tailnet/proto"
)

// Why a wake must reset every WireGuard session, not only rebind:
//
// WireGuard's timers (wireguard-go device/timers.go, and the age checks of
// keypairs in device/send.go and receive.go) measure time with Go's
// monotonic clock, which on Linux (CLOCK_MONOTONIC) and macOS
// (mach_absolute_time) stands still while the machine is suspended. After a
// long sleep the engine therefore believes its session keys are as fresh as
// when it went to sleep, and it keeps encrypting with them, while the agent,
// whose clock did run, dropped them long ago (they are rejected after
// 3 minutes and erased after 9). The agent discards every packet it cannot
// decrypt; our side only notices after its "no reply to data" timer
// (KeepaliveTimeout + RekeyTimeout, 15 s of its own, unsuspended time)
// and starts a handshake then. That is the tunnel being dead for the first
// 15 seconds or more after a wake.
//
// The engine (tailnet.Conn over tailscale's wgengine) offers no call to
// expire a peer's keys. What it does is drop a peer's WireGuard state when
// the peer leaves the network map and start with a fresh handshake on the
// first packet once it is back. resetSessions uses exactly that: it takes
// every peer out of the engine, waits for the engine to have dropped them,
// and puts them back with the coordinator's latest node.

// resetWait bounds how long resetSessions waits for the engine to drop the
// peers before putting them back anyway.
const resetWait = 2 * time.Second

// resetPoll is how often resetSessions looks at the engine's status.
const resetPoll = 5 * time.Millisecond

// resetSessions makes the engine forget the WireGuard session of every
// peer the coordinator gave it, so the next packet to each starts a new
// handshake. It returns how many peers it reset. The peers are gone from
// the engine for the few milliseconds a reconfiguration takes; a packet in
// that gap is dropped (TCP resends it).
func (v *engineProxy) resetSessions(ctx context.Context) int {
	v.mu.Lock()
	ids := make([]uuid.UUID, 0, len(v.nodes))
	keys := make([]key.NodePublic, 0, len(v.nodes))
	gone := make([]*proto.CoordinateResponse_PeerUpdate, 0, len(v.nodes))
	for id, u := range v.nodes {
		ids = append(ids, id)
		keys = append(keys, v.keys[id])
		gone = append(gone, &proto.CoordinateResponse_PeerUpdate{
			Id: u.GetId(), Kind: proto.CoordinateResponse_PeerUpdate_DISCONNECTED, Reason: "system wake: new WireGuard session",
		})
	}
	// Queued under v.mu, so that no update of the coordinator's can slip
	// between what we read and what we queue.
	err := v.batch.add(gone)
	v.mu.Unlock()
	if len(ids) == 0 || err != nil {
		return 0
	}

	ctx, cancel := context.WithTimeout(ctx, resetWait)
	defer cancel()
	ticker := time.NewTicker(resetPoll)
	defer ticker.Stop()
	for v.anyConfigured(keys) {
		select {
		case <-ctx.Done():
		case <-ticker.C:
			continue
		}
		break
	}
	if v.ended.Err() != nil {
		return 0
	}

	// Back with the latest node of each: the coordinator may have sent a
	// newer one meanwhile (already queued after our removal, and repeated
	// here harmlessly) or disconnected the peer (then it stays out).
	v.mu.Lock()
	back := make([]*proto.CoordinateResponse_PeerUpdate, 0, 2*len(ids))
	backIDs := make([]uuid.UUID, 0, len(ids))
	for _, id := range ids {
		u, ok := v.nodes[id]
		if !ok {
			continue
		}
		backIDs = append(backIDs, id)
		back = append(back, u)
		// A peer we opened a tunnel to (an agent) comes back as one, with
		// the READY_FOR_HANDSHAKE it sent: the engine then keeps it alive
		// (persistent keepalives) as it did before. Without the READY it
		// would wait for one that is not coming again, so without one
		// recorded the peer comes back as a plain peer.
		if r, ok := v.ready[id]; ok {
			v.engine.SetTunnelDestination(id)
			back = append(back, r)
		}
	}
	err = v.batch.add(back)
	v.mu.Unlock()
	if err != nil {
		return 0
	}
	v.awaitBack(ctx, backIDs)
	return len(back)
}

// awaitBack waits, within resetWait, for the engine to have each of ids
// as a peer again. The WakeResponse waits for it: a packet the host sends
// on reading it (a TCP SYN) finds no peer while the engine is still
// reconfiguring and is dropped, which costs TCP a one-second resend.
func (v *engineProxy) awaitBack(ctx context.Context, ids []uuid.UUID) {
	ctx, cancel := context.WithTimeout(ctx, resetWait)
	defer cancel()
	ticker := time.NewTicker(resetPoll)
	defer ticker.Stop()
	for !v.configured(ids) {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// anyConfigured reports whether the engine still has a WireGuard peer for
// any of keys.
func (v *engineProxy) anyConfigured(keys []key.NodePublic) bool {
	st := v.engine.Status()
	for _, k := range keys {
		if _, ok := st.Peer[k]; ok {
			return true
		}
	}
	return false
}
