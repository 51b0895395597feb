package vpnlib

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"tailscale.com/ipn/ipnstate"
	"tailscale.com/tailcfg"

	"cdr.dev/slog/v3"
	"github.com/coder/coder/v2/tailnet"
	tailnetproto "github.com/coder/coder/v2/tailnet/proto"
)

type fakePingEngine struct {
	mu    sync.Mutex
	fail  map[netip.Addr]bool
	pings int
}

func (f *fakePingEngine) Ping(_ context.Context, ip netip.Addr) (time.Duration, bool, *ipnstate.PingResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pings++
	if f.fail[ip] {
		return 0, false, nil, context.DeadlineExceeded
	}
	return 7 * time.Millisecond, true, &ipnstate.PingResult{Endpoint: "127.0.0.1:1234", DERPRegionID: 999}, nil
}

func (*fakePingEngine) Node() *tailnet.Node {
	return &tailnet.Node{PreferredDERP: 999, DERPLatency: map[string]float64{"999-v4": 0.012}}
}

func (*fakePingEngine) DERPMap() *tailcfg.DERPMap {
	return &tailcfg.DERPMap{Regions: map[int]*tailcfg.DERPRegion{999: {RegionID: 999, RegionName: "Embedded"}}}
}

func TestPingRoundRecordsResults(t *testing.T) {
	t.Parallel()
	sent := &sentUpdates{}
	p := newPeerTracker("alice", "coder", nil, sent.send)
	_ = p.Update(tailnet.WorkspaceUpdate{Kind: tailnet.Snapshot,
		UpsertedWorkspaces: []*tailnet.Workspace{ws(wsA, "dev", tailnetproto.Workspace_RUNNING)},
		UpsertedAgents:     []*tailnet.Agent{agent(agentA1, wsA, "ok"), agent(agentA2, wsA, "down")},
	})
	eng := &fakePingEngine{fail: map[netip.Addr]bool{tailnet.CoderServicePrefix.AddrFromUUID(agentA2): true}}
	pingRound(context.Background(), p, eng, time.Second, slog.Make())
	p.sendStatus()
	u := sent.last(t)
	ok := findAgent(t, u.UpsertedAgents, agentA1)
	if ok.LastPing == nil || ok.LastPing.Latency.AsDuration() != 7*time.Millisecond || !ok.LastPing.DidP2P {
		t.Fatalf("last_ping %v", ok.LastPing)
	}
	if ok.LastPing.PreferredDerp != "Embedded" || ok.LastPing.PreferredDerpLatency.AsDuration() != 12*time.Millisecond {
		t.Fatalf("derp %q latency %v", ok.LastPing.PreferredDerp, ok.LastPing.PreferredDerpLatency)
	}
	// The agent that did not answer has nothing new to say: it is not sent
	// again (the manager still has it from the snapshot).
	if len(u.UpsertedAgents) != 1 {
		t.Fatalf("status update carries %d agents, want only the one that answered: %v", len(u.UpsertedAgents), u.UpsertedAgents)
	}
	// Nothing changed since: the next round sends nothing.
	before := sent.count()
	p.sendStatus()
	if sent.count() != before {
		t.Fatalf("an unchanged status was sent again: %v", sent.last(t))
	}
	// The ping survives an upsert of the same agent.
	_ = p.Update(tailnet.WorkspaceUpdate{Kind: tailnet.Diff, UpsertedAgents: []*tailnet.Agent{agent(agentA1, wsA, "ok")}})
	if findAgent(t, sent.last(t).UpsertedAgents, agentA1).LastPing == nil {
		t.Fatal("upsert dropped the last ping")
	}
}

// A silenced tracker (the session halted) sends nothing more, though the
// controller may still hand it updates while it winds down.
func TestPeerTrackerSilenced(t *testing.T) {
	t.Parallel()
	sent := &sentUpdates{}
	eng := &fakePeerEngine{handshakes: map[uuid.UUID]time.Time{agentA1: time.Now()}}
	p := newPeerTracker("alice", "coder", eng, sent.send)
	p.silence()
	_ = p.Update(tailnet.WorkspaceUpdate{Kind: tailnet.Snapshot,
		UpsertedWorkspaces: []*tailnet.Workspace{ws(wsA, "dev", tailnetproto.Workspace_RUNNING)},
		UpsertedAgents:     []*tailnet.Agent{agent(agentA1, wsA, "one")},
	})
	p.sendStatus()
	if n := sent.count(); n != 0 {
		t.Fatalf("a silenced tracker sent %d PeerUpdates: %v", n, sent.last(t))
	}
	if got := len(p.snapshot().UpsertedAgents); got != 1 {
		t.Fatalf("the snapshot after a silenced update lists %d agents, want 1", got)
	}
}

// A session that ends during a round hands the engine no more pings: at
// thousands of agents each would be a goroutine of the engine's that the
// Stop waits for.
func TestPingRoundEndsWithTheSession(t *testing.T) {
	t.Parallel()
	p := newPeerTracker("alice", "coder", nil, (&sentUpdates{}).send)
	_ = p.Update(tailnet.WorkspaceUpdate{Kind: tailnet.Snapshot,
		UpsertedWorkspaces: []*tailnet.Workspace{ws(wsA, "dev", tailnetproto.Workspace_RUNNING)},
		UpsertedAgents:     []*tailnet.Agent{agent(agentA1, wsA, "one"), agent(agentA2, wsA, "two")},
	})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	eng := &fakePingEngine{}
	pingRound(ctx, p, eng, time.Second, slog.Make())
	if eng.pings != 0 {
		t.Fatalf("%d pings started after the session ended, want none", eng.pings)
	}
}

func TestPingLoopSendsStatus(t *testing.T) {
	t.Parallel()
	sent := &sentUpdates{}
	p := newPeerTracker("alice", "coder", nil, sent.send)
	_ = p.Update(tailnet.WorkspaceUpdate{Kind: tailnet.Snapshot,
		UpsertedWorkspaces: []*tailnet.Workspace{ws(wsA, "dev", tailnetproto.Workspace_RUNNING)},
		UpsertedAgents:     []*tailnet.Agent{agent(agentA1, wsA, "ok")},
	})
	before := sent.count()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		runPingLoop(ctx, p, &fakePingEngine{}, 10*time.Millisecond, slog.Make())
	}()
	deadline := time.After(10 * time.Second)
	for sent.count() < before+2 {
		select {
		case <-deadline:
			t.Fatal("ping loop sent no status")
		case <-time.After(5 * time.Millisecond):
		}
	}
	cancel()
	<-done
	if findAgent(t, sent.last(t).UpsertedAgents, agentA1).LastPing == nil {
		t.Fatal("status has no last_ping")
	}
}
