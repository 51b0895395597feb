package vpnlib_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	"github.com/coder/coder/v2/codersdk"
	"github.com/coder/coder/v2/tailnet"

	vpnpb "github.com/codervpn/codervpn/proto"
	"github.com/codervpn/codervpn/vpnlib/hosttest"
	"github.com/codervpn/codervpn/vpnlib/vpntest"
)

// snapshotProblems lists what makes a GetPeerUpdate reply malformed. A
// snapshot must be one consistent moment: no deletions, valid unique ids,
// every agent's workspace present, its address derived from its id, and its
// names those of the workspace it is in, with <ws>.coder. exactly when it
// is that workspace's only agent in the same snapshot.
func snapshotProblems(u *vpnpb.PeerUpdate, owner string) []string {
	var bad []string
	if len(u.GetDeletedWorkspaces())+len(u.GetDeletedAgents()) > 0 {
		bad = append(bad, "a snapshot with deletions")
	}
	wsName := map[uuid.UUID]string{}
	for _, w := range u.GetUpsertedWorkspaces() {
		id, err := uuid.FromBytes(w.GetId())
		if err != nil || w.GetName() == "" {
			bad = append(bad, fmt.Sprintf("workspace %v: bad id or empty name", w))
			continue
		}
		if _, dup := wsName[id]; dup {
			bad = append(bad, "workspace listed twice: "+w.GetName())
		}
		wsName[id] = w.GetName()
	}
	siblings := map[uuid.UUID]int{}
	for _, a := range u.GetUpsertedAgents() {
		siblings[uuid.UUID(a.GetWorkspaceId())]++
	}
	seen := map[uuid.UUID]bool{}
	for _, a := range u.GetUpsertedAgents() {
		id, err := uuid.FromBytes(a.GetId())
		if err != nil || seen[id] {
			bad = append(bad, fmt.Sprintf("agent %q: bad or repeated id", a.GetName()))
			continue
		}
		seen[id] = true
		ws, ok := wsName[uuid.UUID(a.GetWorkspaceId())]
		if !ok {
			bad = append(bad, fmt.Sprintf("agent %q: its workspace is not in the snapshot", a.GetName()))
			continue
		}
		want := []string{a.GetName() + "." + ws + ".me.coder.", a.GetName() + "." + ws + "." + owner + ".coder."}
		if siblings[uuid.UUID(a.GetWorkspaceId())] == 1 {
			want = append(want, ws+".coder.")
		}
		if !sameSet(a.GetFqdn(), want) {
			bad = append(bad, fmt.Sprintf("agent %q: FQDNs %v, want %v", a.GetName(), a.GetFqdn(), want))
		}
		if ip := tailnet.CoderServicePrefix.AddrFromUUID(id).String(); !slices.Equal(a.GetIpAddrs(), []string{ip}) {
			bad = append(bad, fmt.Sprintf("agent %q: ip_addrs %v, want %s", a.GetName(), a.GetIpAddrs(), ip))
		}
	}
	return bad
}

// withoutLiveStatus strips what changes on every ping round, so a snapshot
// and the merged one-way state can be compared.
func withoutLiveStatus(s *hosttest.PeerState) *hosttest.PeerState {
	s = s.Clone()
	for id, a := range s.Agents {
		a = proto.CloneOf(a)
		a.LastHandshake, a.LastPing = nil, nil
		s.Agents[id] = a
	}
	return s
}

// samePeers compares two states record by record.
func samePeers(a, b *hosttest.PeerState) bool {
	eq := func(x, y proto.Message) bool { return proto.Equal(x, y) }
	return maps.EqualFunc(a.Workspaces, b.Workspaces, func(x, y *vpnpb.Workspace) bool { return eq(x, y) }) &&
		maps.EqualFunc(a.Agents, b.Agents, func(x, y *vpnpb.Agent) bool { return eq(x, y) })
}

// TestTunnelGetPeerUpdateStorm asks for snapshots from several goroutines
// from the moment StartResponse arrives, exactly while the first workspace
// update is applied (what Coder Desktop does, and where the reference
// implementation can deadlock: its tracker and the workspace-updates
// controller take each other's locks in opposite order), and goes on while
// the deployment adds and removes workspaces and agents. Every call must be
// answered within a deadline with a well-formed snapshot, and once the
// changes settle the snapshot must equal what the one-way PeerUpdates add up to.
func TestTunnelGetPeerUpdateStorm(t *testing.T) {
	const askers = 4
	const callDeadline = 10 * time.Second // far beyond a round trip: a miss is a deadlock
	r := newRig(t, rigOptions{deployment: &vpntest.Options{}})
	owner := r.d.OwnerName
	dev, err := r.d.AddWorkspace("dev", codersdk.WorkspaceStatusRunning)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.d.AddAgent(r.ctx, dev.ID, "main"); err != nil {
		t.Fatal(err)
	}
	r.start(nil)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var problems []string
	calls := 0
	for range askers {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(r.ctx, callDeadline)
				snap, err := r.h.GetPeerUpdate(ctx)
				cancel()
				mu.Lock()
				calls++
				if err != nil {
					if errors.Is(err, context.DeadlineExceeded) {
						err = fmt.Errorf("no answer within %s (deadlock?): %w", callDeadline, err)
					}
					problems = append(problems, err.Error())
				} else {
					problems = append(problems, snapshotProblems(snap, owner)...)
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		})
	}

	// The changes: two workspaces appear with agents, a second agent joins
	// dev, then one agent and one whole workspace go away.
	a, err := r.d.AddWorkspace("alpha", codersdk.WorkspaceStatusRunning)
	if err != nil {
		t.Fatal(err)
	}
	b, err := r.d.AddWorkspace("beta", codersdk.WorkspaceStatusStarting)
	if err != nil {
		t.Fatal(err)
	}
	var remove *vpntest.Agent
	for _, add := range []struct {
		ws   uuid.UUID
		name string
	}{{a.ID, "a1"}, {a.ID, "a2"}, {b.ID, "b1"}, {dev.ID, "main2"}} {
		ag, err := r.d.AddAgent(r.ctx, add.ws, add.name)
		if err != nil {
			t.Fatal(err)
		}
		if add.name == "a2" {
			remove = ag
		}
	}
	if err := r.d.RemoveAgent(remove.ID); err != nil {
		t.Fatal(err)
	}
	if err := r.d.RemoveWorkspace(b.ID); err != nil {
		t.Fatal(err)
	}

	// The one-way updates reach the final state while the storm goes on.
	want := map[string]string{"main": "dev", "main2": "dev", "a1": "alpha"}
	if _, err := r.h.WaitPeerUpdate(r.ctx, func(s *hosttest.PeerState) bool {
		if len(s.Workspaces) != 2 || len(s.Agents) != len(want) {
			return false
		}
		for agent, ws := range want {
			if s.Agent(ws, agent) == nil {
				return false
			}
		}
		return true
	}); err != nil {
		t.Fatal(err)
	}
	close(stop)
	waited := make(chan struct{})
	go func() { wg.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-r.ctx.Done():
		t.Fatal("the askers did not finish: a GetPeerUpdate is stuck")
	}
	mu.Lock()
	t.Logf("%d GetPeerUpdate calls answered during the changes", calls)
	for _, p := range problems {
		t.Error(p)
	}
	mu.Unlock()

	snap, err := r.h.GetPeerUpdate(r.ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range snapshotProblems(snap, owner) {
		t.Errorf("final snapshot: %s", p)
	}
	got, err := hosttest.NewPeerState(snap)
	if err != nil {
		t.Fatal(err)
	}
	merged := r.h.Peers()
	if !samePeers(withoutLiveStatus(got), withoutLiveStatus(merged)) {
		t.Fatalf("the final snapshot differs from the merged one-way state:\nsnapshot: %v\nmerged:   %v",
			snap, merged)
	}
	r.stop()
}
