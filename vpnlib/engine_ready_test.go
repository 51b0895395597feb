package vpnlib

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"tailscale.com/ipn/ipnstate"
	"tailscale.com/types/key"

	"github.com/coder/coder/v2/tailnet"
	"github.com/coder/coder/v2/tailnet/proto"

	vpnpb "github.com/codervpn/codervpn/proto"
)

// readyEngine stands in for the engine as awaitPeers sees it: like the real
// one it configures a peer once it holds the peer's node and its
// ready-for-handshake (here at once), and it counts the status reads made
// before that could have found every peer.
type readyEngine struct {
	engine // nil: only the methods below are called

	mu        sync.Mutex
	keys      map[uuid.UUID]key.NodePublic
	ready     map[uuid.UUID]bool
	want      int // peers awaited
	reads     int
	premature int           // reads before every awaited peer was configured
	complete  bool          // a read listed every awaited peer
	read      chan struct{} // receives on every read, if there is room
}

func (e *readyEngine) UpdatePeers(updates []*proto.CoordinateResponse_PeerUpdate) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, u := range updates {
		id, err := uuid.FromBytes(u.GetId())
		if err != nil {
			continue
		}
		switch u.GetKind() {
		case proto.CoordinateResponse_PeerUpdate_NODE:
			var k key.NodePublic
			if err := k.UnmarshalBinary(u.GetNode().GetKey()); err == nil {
				e.keys[id] = k
			}
		case proto.CoordinateResponse_PeerUpdate_READY_FOR_HANDSHAKE:
			e.ready[id] = true
		}
	}
	return nil
}

func (*readyEngine) SetAllPeersLost() {}

func (e *readyEngine) Status() *ipnstate.Status {
	e.mu.Lock()
	defer e.mu.Unlock()
	st := &ipnstate.Status{Peer: map[key.NodePublic]*ipnstate.PeerStatus{}}
	for id, k := range e.keys {
		if e.ready[id] {
			st.Peer[k] = &ipnstate.PeerStatus{InEngine: true}
		}
	}
	e.reads++
	if len(st.Peer) < e.want {
		e.premature++
	} else {
		e.complete = true
	}
	select {
	case e.read <- struct{}{}:
	default:
	}
	return st
}

// A Start asks the engine for its status only once the engine holds every
// agent's node and ready-for-handshake: before that the answer can only be
// no, and each read holds the engine's locks while it builds the status of
// every peer. (It polled every 5 ms from the first workspace update on.)
// Once they are in, the StartResponse waits for the engine's peers as
// before.
func TestAwaitPeersAsksOnlyWhenItCanBeReady(t *testing.T) {
	t.Parallel()
	agents := []uuid.UUID{uuid.New(), uuid.New()}
	eng := &readyEngine{keys: map[uuid.UUID]key.NodePublic{}, ready: map[uuid.UUID]bool{},
		want: len(agents), read: make(chan struct{}, 1)}
	runCtx, cancel := context.WithCancel(context.Background())
	proxy := newEngineProxy(runCtx, eng)
	ran := make(chan struct{})
	go func() { proxy.run(); close(ran) }()
	t.Cleanup(func() { cancel(); <-ran })

	tracker := newPeerTracker("alice", "coder", proxy, func(*vpnpb.PeerUpdate) {})
	wsID := uuid.New()
	_ = tracker.Update(tailnet.WorkspaceUpdate{Kind: tailnet.Snapshot,
		UpsertedWorkspaces: []*tailnet.Workspace{ws(wsID, "dev", proto.Workspace_RUNNING)},
		UpsertedAgents:     []*tailnet.Agent{agent(agents[0], wsID, "a"), agent(agents[1], wsID, "b")},
	})
	// The tracker read the engine's status for the handshake times of what
	// it sent the manager; count from here.
	eng.mu.Lock()
	eng.reads, eng.premature = 0, 0
	eng.mu.Unlock()
	select {
	case <-eng.read:
	default:
	}

	done := make(chan time.Time, 1)
	go func() {
		awaitPeers(context.Background(), tracker, proxy)
		done <- time.Now()
	}()

	var nodes, ready []*proto.CoordinateResponse_PeerUpdate
	for _, id := range agents {
		k, err := key.NewNode().Public().MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, &proto.CoordinateResponse_PeerUpdate{Id: id[:], Kind: proto.CoordinateResponse_PeerUpdate_NODE,
			Node: &proto.Node{Key: k, PreferredDerp: 1}})
		ready = append(ready, &proto.CoordinateResponse_PeerUpdate{Id: id[:], Kind: proto.CoordinateResponse_PeerUpdate_READY_FOR_HANDSHAKE})
	}
	if err := proxy.UpdatePeers(nodes); err != nil {
		t.Fatal(err)
	}
	// Not a settle: the engine has the nodes but not the agents' readiness,
	// and for this window (forty of the old polls) nothing may read its
	// status. The window ends the wait either way; a read fails at once.
	select {
	case <-eng.read:
		t.Error("the engine's status was read before it had every agent's ready-for-handshake")
	case <-time.After(200 * time.Millisecond):
	}
	sent := time.Now()
	if err := proxy.UpdatePeers(ready); err != nil {
		t.Fatal(err)
	}
	var returned time.Time
	select {
	case returned = <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("awaitPeers did not return")
	}
	eng.mu.Lock()
	defer eng.mu.Unlock()
	if !eng.complete {
		t.Errorf("awaitPeers returned without the engine listing every agent (%d reads)", eng.reads)
	}
	if eng.premature != 0 {
		t.Errorf("%d of %d status reads came before the engine could have every peer", eng.premature, eng.reads)
	}
	t.Logf("returned %v after the last ready-for-handshake, %d status reads", returned.Sub(sent), eng.reads)
}
