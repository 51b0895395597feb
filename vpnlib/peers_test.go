package vpnlib

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/coder/coder/v2/tailnet"
	tailnetproto "github.com/coder/coder/v2/tailnet/proto"

	vpnpb "github.com/codervpn/codervpn/proto"
)

// fakePeerEngine answers diagnostics from a map, taking its own lock like the
// real engine does.
type fakePeerEngine struct {
	mu         sync.Mutex
	handshakes map[uuid.UUID]time.Time
}

func (f *fakePeerEngine) LastHandshakes() map[uuid.UUID]time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[uuid.UUID]time.Time, len(f.handshakes))
	for id, hs := range f.handshakes {
		if !hs.IsZero() {
			out[id] = hs
		}
	}
	return out
}

type sentUpdates struct {
	mu  sync.Mutex
	all []*vpnpb.PeerUpdate
}

func (s *sentUpdates) send(u *vpnpb.PeerUpdate) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.all = append(s.all, u)
}

func (s *sentUpdates) last(t *testing.T) *vpnpb.PeerUpdate {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.all) == 0 {
		t.Fatal("no PeerUpdate sent")
	}
	return s.all[len(s.all)-1]
}

func (s *sentUpdates) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.all)
}

var (
	wsA     = uuid.MustParse("aaaaaaaa-0000-0000-0000-000000000001")
	wsB     = uuid.MustParse("bbbbbbbb-0000-0000-0000-000000000002")
	agentA1 = uuid.MustParse("aaaaaaaa-0000-0000-0000-0000000000a1")
	agentA2 = uuid.MustParse("aaaaaaaa-0000-0000-0000-0000000000a2")
	agentB1 = uuid.MustParse("bbbbbbbb-0000-0000-0000-0000000000b1")
)

func ws(id uuid.UUID, name string, status tailnetproto.Workspace_Status) *tailnet.Workspace {
	return &tailnet.Workspace{ID: id, Name: name, Status: status}
}

func agent(id, wsID uuid.UUID, name string) *tailnet.Agent {
	return &tailnet.Agent{ID: id, WorkspaceID: wsID, Name: name}
}

func ids[T interface{ GetId() []byte }](items []T) []uuid.UUID {
	out := make([]uuid.UUID, 0, len(items))
	for _, it := range items {
		out = append(out, uuid.UUID(it.GetId()))
	}
	slices.SortFunc(out, func(a, b uuid.UUID) int { return slices.Compare(a[:], b[:]) })
	return out
}

func findAgent(t *testing.T, agents []*vpnpb.Agent, id uuid.UUID) *vpnpb.Agent {
	t.Helper()
	for _, a := range agents {
		if uuid.UUID(a.Id) == id {
			return a
		}
	}
	t.Fatalf("agent %s not in %v", id, agents)
	return nil
}

func TestPeerTrackerUpdates(t *testing.T) {
	t.Parallel()
	hs := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	eng := &fakePeerEngine{handshakes: map[uuid.UUID]time.Time{agentA1: hs}}
	sent := &sentUpdates{}
	p := newPeerTracker("Alice", "coder", eng, sent.send)

	// Empty before anything arrives.
	if s := p.snapshot(); len(s.UpsertedAgents)+len(s.UpsertedWorkspaces) != 0 {
		t.Fatalf("snapshot before updates: %v", s)
	}

	// First snapshot: one workspace with one agent.
	_ = p.Update(tailnet.WorkspaceUpdate{Kind: tailnet.Snapshot,
		UpsertedWorkspaces: []*tailnet.Workspace{ws(wsA, "Dev", tailnetproto.Workspace_RUNNING)},
		UpsertedAgents:     []*tailnet.Agent{agent(agentA1, wsA, "Main")},
	})
	u := sent.last(t)
	if got := ids(u.UpsertedWorkspaces); !slices.Equal(got, []uuid.UUID{wsA}) || u.UpsertedWorkspaces[0].Status != vpnpb.Workspace_RUNNING {
		t.Fatalf("workspaces %v", u.UpsertedWorkspaces)
	}
	a := findAgent(t, u.UpsertedAgents, agentA1)
	wantFQDN := []string{"dev.coder.", "main.dev.me.coder.", "main.dev.alice.coder."}
	if !slices.Equal(a.Fqdn, wantFQDN) {
		t.Fatalf("fqdn %v, want %v", a.Fqdn, wantFQDN)
	}
	if want := tailnet.CoderServicePrefix.AddrFromUUID(agentA1).String(); !slices.Equal(a.IpAddrs, []string{want}) {
		t.Fatalf("ip_addrs %v, want %v", a.IpAddrs, want)
	}
	if !a.LastHandshake.AsTime().Equal(hs) {
		t.Fatalf("last_handshake %v", a.LastHandshake)
	}

	// A second agent joins: both agents are sent, the first loses dev.coder.
	_ = p.Update(tailnet.WorkspaceUpdate{Kind: tailnet.Diff,
		UpsertedAgents: []*tailnet.Agent{agent(agentA2, wsA, "second")},
	})
	u = sent.last(t)
	if got := ids(u.UpsertedAgents); !slices.Equal(got, []uuid.UUID{agentA1, agentA2}) {
		t.Fatalf("upserted agents %v", got)
	}
	if f := findAgent(t, u.UpsertedAgents, agentA1).Fqdn; slices.Contains(f, "dev.coder.") {
		t.Fatalf("agent 1 still has the workspace name: %v", f)
	}
	if a2 := findAgent(t, u.UpsertedAgents, agentA2); a2.LastHandshake != nil {
		t.Fatalf("agent without handshake has last_handshake %v", a2.LastHandshake)
	}

	// Workspace rename: its agents are re-sent with new names.
	_ = p.Update(tailnet.WorkspaceUpdate{Kind: tailnet.Diff,
		UpsertedWorkspaces: []*tailnet.Workspace{ws(wsA, "prod", tailnetproto.Workspace_RUNNING)},
	})
	u = sent.last(t)
	if f := findAgent(t, u.UpsertedAgents, agentA2).Fqdn; !slices.Contains(f, "second.prod.me.coder.") {
		t.Fatalf("after rename fqdn %v", f)
	}

	// Remove an agent: deleted with its names; the sibling regains prod.coder.
	_ = p.Update(tailnet.WorkspaceUpdate{Kind: tailnet.Diff,
		DeletedAgents: []*tailnet.Agent{agent(agentA2, wsA, "second")},
	})
	u = sent.last(t)
	if got := ids(u.DeletedAgents); !slices.Equal(got, []uuid.UUID{agentA2}) || len(u.DeletedAgents[0].Fqdn) == 0 {
		t.Fatalf("deleted %v", u.DeletedAgents)
	}
	if f := findAgent(t, u.UpsertedAgents, agentA1).Fqdn; !slices.Contains(f, "prod.coder.") {
		t.Fatalf("sibling fqdn %v", f)
	}

	// Nothing changed: nothing sent.
	n := sent.count()
	_ = p.Update(tailnet.WorkspaceUpdate{Kind: tailnet.Diff})
	if sent.count() != n {
		t.Fatal("empty diff sent a PeerUpdate")
	}

	// Snapshot after a reconnect: wsA vanished, wsB appeared.
	_ = p.Update(tailnet.WorkspaceUpdate{Kind: tailnet.Snapshot,
		UpsertedWorkspaces: []*tailnet.Workspace{ws(wsB, "other", tailnetproto.Workspace_STOPPED)},
		UpsertedAgents:     []*tailnet.Agent{agent(agentB1, wsB, "b")},
	})
	u = sent.last(t)
	if got := ids(u.DeletedWorkspaces); !slices.Equal(got, []uuid.UUID{wsA}) {
		t.Fatalf("reconcile deleted workspaces %v", got)
	}
	if got := ids(u.DeletedAgents); !slices.Equal(got, []uuid.UUID{agentA1}) {
		t.Fatalf("reconcile deleted agents %v", got)
	}
	if got := ids(u.UpsertedAgents); !slices.Equal(got, []uuid.UUID{agentB1}) {
		t.Fatalf("reconcile upserted agents %v", got)
	}
	s := p.snapshot()
	if got := ids(s.UpsertedWorkspaces); !slices.Equal(got, []uuid.UUID{wsB}) {
		t.Fatalf("snapshot workspaces %v", got)
	}
	if got := ids(s.UpsertedAgents); !slices.Equal(got, []uuid.UUID{agentB1}) {
		t.Fatalf("snapshot agents %v", got)
	}
	if len(s.DeletedAgents)+len(s.DeletedWorkspaces) != 0 {
		t.Fatalf("snapshot has deletions: %v", s)
	}
}

// reentrantEngine calls back into the tracker from LastHandshakes, as an
// engine callback might: if the tracker held its lock while calling the
// engine, this would deadlock.
type reentrantEngine struct {
	fakePeerEngine
	p *peerTracker
}

func (r *reentrantEngine) LastHandshakes() map[uuid.UUID]time.Time {
	_ = r.p.agentIDs()
	return r.fakePeerEngine.LastHandshakes()
}

// TestPeerTrackerSnapshotStorm races GetPeerUpdate-style snapshots and status
// sends against updates delivered while the "controller" holds its own lock
// (as the workspace-updates controller does). The engine and the sender both
// call back into the tracker, so holding the tracker lock across either call
// deadlocks the test.
func TestPeerTrackerSnapshotStorm(t *testing.T) {
	t.Parallel()
	eng := &reentrantEngine{fakePeerEngine: fakePeerEngine{handshakes: map[uuid.UUID]time.Time{}}}
	sent := &sentUpdates{}
	var p *peerTracker
	p = newPeerTracker("alice", "coder", eng, func(u *vpnpb.PeerUpdate) {
		_ = p.snapshot()
		sent.send(u)
	})
	eng.p = p
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var progress atomic.Int64 // iterations done, by all the goroutines

	var ctrlMu sync.Mutex
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 300 && ctx.Err() == nil; i++ {
			id := uuid.New()
			ctrlMu.Lock()
			_ = p.Update(tailnet.WorkspaceUpdate{Kind: tailnet.Diff,
				UpsertedWorkspaces: []*tailnet.Workspace{ws(wsA, "dev", tailnetproto.Workspace_RUNNING)},
				UpsertedAgents:     []*tailnet.Agent{agent(id, wsA, id.String()[:8])},
			})
			ctrlMu.Unlock()
			eng.mu.Lock()
			eng.handshakes[id] = time.Now()
			eng.mu.Unlock()
			progress.Add(1)
		}
	}()
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100 && ctx.Err() == nil; i++ {
				_ = p.snapshot()
				p.sendStatus()
				progress.Add(1)
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	// A deadlock is no progress at all; a busy machine (this is hundreds of
	// renders under the race detector) is slow progress, however long the
	// whole storm takes.
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	last, since := int64(-1), time.Now()
	for stormDone := false; !stormDone; {
		select {
		case <-done:
			stormDone = true
		case <-tick.C:
			if n := progress.Load(); n != last {
				last, since = n, time.Now()
			} else if time.Since(since) > 10*time.Second {
				cancel()
				t.Fatalf("snapshot storm deadlocked: no progress for 10 s after %d iterations", n)
			}
		}
	}
	s := p.snapshot()
	if got := len(s.UpsertedAgents); got != 300 {
		t.Fatalf("%d agents after the storm, want 300", got)
	}
	for _, a := range s.UpsertedAgents {
		if a.LastHandshake == nil {
			t.Fatalf("agent %s has no handshake in the final snapshot", a.Name)
		}
	}
}

// A new handshake is news: the agent is sent again with it, and only then.
func TestSendStatusOnHandshake(t *testing.T) {
	t.Parallel()
	sent := &sentUpdates{}
	eng := &fakePeerEngine{handshakes: map[uuid.UUID]time.Time{}}
	p := newPeerTracker("alice", "coder", eng, sent.send)
	_ = p.Update(tailnet.WorkspaceUpdate{Kind: tailnet.Snapshot,
		UpsertedWorkspaces: []*tailnet.Workspace{ws(wsA, "dev", tailnetproto.Workspace_RUNNING)},
		UpsertedAgents:     []*tailnet.Agent{agent(agentA1, wsA, "one"), agent(agentA2, wsA, "two")},
	})
	before := sent.count()
	p.sendStatus()
	if sent.count() != before {
		t.Fatalf("status sent with nothing new: %v", sent.last(t))
	}
	hs := time.Now().Truncate(time.Second)
	eng.mu.Lock()
	eng.handshakes[agentA2] = hs
	eng.mu.Unlock()
	p.sendStatus()
	u := sent.last(t)
	if len(u.UpsertedAgents) != 1 || !findAgent(t, u.UpsertedAgents, agentA2).LastHandshake.AsTime().Equal(hs) {
		t.Fatalf("status after a handshake: %v", u)
	}
	before = sent.count()
	p.sendStatus()
	if sent.count() != before {
		t.Fatalf("the same handshake was sent twice: %v", sent.last(t))
	}
}
