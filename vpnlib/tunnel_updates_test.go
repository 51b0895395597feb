package vpnlib_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/google/uuid"

	"github.com/coder/coder/v2/codersdk"
	"github.com/coder/coder/v2/tailnet"

	vpnpb "github.com/codervpn/codervpn/proto"
	"github.com/codervpn/codervpn/vpnlib/hosttest"
	"github.com/codervpn/codervpn/vpnlib/vpntest"
)

// peerModel is what the manager must end up knowing: workspace name →
// status, agent name → FQDNs (agent names are unique in these tests).
type peerModel struct {
	ws     map[string]vpnpb.Workspace_Status
	agents map[string][]string
}

func (m peerModel) matches(s *hosttest.PeerState) bool {
	if len(s.Workspaces) != len(m.ws) || len(s.Agents) != len(m.agents) {
		return false
	}
	for _, w := range s.Workspaces {
		if st, ok := m.ws[w.GetName()]; !ok || st != w.GetStatus() {
			return false
		}
	}
	for _, a := range s.Agents {
		if f, ok := m.agents[a.GetName()]; !ok || !sameSet(f, a.GetFqdn()) {
			return false
		}
	}
	return true
}

// peerChange is what one deployment change must bring the manager, in a
// single PeerUpdate: a workspace renamed with its agents' old names still
// listed, or a second agent whose sibling keeps the workspace's short name,
// would be a moment of wrong DNS names in Coder Desktop.
type peerChange struct {
	upWS      map[string]vpnpb.Workspace_Status
	upAgents  map[string][]string
	delWS     []string
	delAgents []string
}

// touches reports whether u carries any part of c: the first PeerUpdate
// that does must carry all of it.
func (c peerChange) touches(u *vpnpb.PeerUpdate) bool {
	for _, w := range u.GetUpsertedWorkspaces() {
		if _, ok := c.upWS[w.GetName()]; ok {
			return true
		}
	}
	for _, a := range u.GetUpsertedAgents() {
		if f, ok := c.upAgents[a.GetName()]; ok && sameSet(f, a.GetFqdn()) {
			return true
		}
	}
	return len(u.GetDeletedWorkspaces())+len(u.GetDeletedAgents()) > 0
}

// check returns what u, the PeerUpdate carrying c, gets wrong.
func (c peerChange) check(u *vpnpb.PeerUpdate, ids map[string]uuid.UUID) []string {
	var bad []string
	for name, status := range c.upWS {
		i := slices.IndexFunc(u.GetUpsertedWorkspaces(), func(w *vpnpb.Workspace) bool { return w.GetName() == name })
		switch {
		case i < 0:
			bad = append(bad, "workspace "+name+" not upserted")
		case u.GetUpsertedWorkspaces()[i].GetStatus() != status:
			bad = append(bad, fmt.Sprintf("workspace %s has status %v, want %v", name, u.GetUpsertedWorkspaces()[i].GetStatus(), status))
		case uuid.UUID(u.GetUpsertedWorkspaces()[i].GetId()) != ids[name]:
			bad = append(bad, "workspace "+name+" has the wrong id")
		}
	}
	for name, fqdns := range c.upAgents {
		i := slices.IndexFunc(u.GetUpsertedAgents(), func(a *vpnpb.Agent) bool { return a.GetName() == name })
		if i < 0 {
			bad = append(bad, "agent "+name+" not upserted")
			continue
		}
		a := u.GetUpsertedAgents()[i]
		if !sameSet(a.GetFqdn(), fqdns) {
			bad = append(bad, fmt.Sprintf("agent %s has FQDNs %v, want %v", name, a.GetFqdn(), fqdns))
		}
		if uuid.UUID(a.GetId()) != ids[name] || uuid.UUID(a.GetWorkspaceId()) != ids["dev"] {
			bad = append(bad, "agent "+name+" has the wrong id or workspace id")
		}
		if want := tailnet.CoderServicePrefix.AddrFromUUID(ids[name]).String(); !slices.Equal(a.GetIpAddrs(), []string{want}) {
			bad = append(bad, fmt.Sprintf("agent %s has ip_addrs %v, want %s", name, a.GetIpAddrs(), want))
		}
	}
	var delWS, delAgents []string
	for _, w := range u.GetDeletedWorkspaces() {
		delWS = append(delWS, w.GetName())
	}
	for _, a := range u.GetDeletedAgents() {
		delAgents = append(delAgents, a.GetName())
	}
	if !sameSet(delWS, c.delWS) || !sameSet(delAgents, c.delAgents) {
		bad = append(bad, fmt.Sprintf("deleted workspaces %v and agents %v, want %v and %v", delWS, delAgents, c.delWS, c.delAgents))
	}
	return bad
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// TestTunnelPeerUpdatesAtRunTime changes the deployment after Start, one
// step at a time: a workspace and its agent appear, the workspace is renamed
// and stopped, a second agent joins (so the workspace's short name
// <ws>.coder. must leave the first agent), leaves again (and the short name
// comes back), and the workspace is deleted. After each step the manager's
// merged state must be exactly right, the change must arrive whole in one
// PeerUpdate, and nothing else may be deleted on the way.
func TestTunnelPeerUpdatesAtRunTime(t *testing.T) {
	r := newRig(t, rigOptions{deployment: &vpntest.Options{}})
	r.start(nil)
	owner := r.d.OwnerName
	names := func(agent, ws string, alone bool) []string {
		f := []string{agent + "." + ws + ".me.coder.", agent + "." + ws + "." + owner + ".coder."}
		if alone {
			f = append(f, ws+".coder.")
		}
		return f
	}
	const running, stopped = vpnpb.Workspace_RUNNING, vpnpb.Workspace_STOPPED
	ids := map[string]uuid.UUID{}
	var ws *vpntest.Workspace
	steps := []struct {
		name   string
		do     func() error
		model  peerModel
		change peerChange
	}{
		{
			name: "add workspace",
			do: func() (err error) {
				ws, err = r.d.AddWorkspace("dev", codersdk.WorkspaceStatusRunning)
				if err == nil {
					ids["dev"], ids["prod"] = ws.ID, ws.ID
				}
				return err
			},
			model:  peerModel{ws: map[string]vpnpb.Workspace_Status{"dev": running}},
			change: peerChange{upWS: map[string]vpnpb.Workspace_Status{"dev": running}},
		},
		{
			name: "add agent",
			do:   func() error { return r.addAgent(ws.ID, "main", ids) },
			model: peerModel{ws: map[string]vpnpb.Workspace_Status{"dev": running},
				agents: map[string][]string{"main": names("main", "dev", true)}},
			change: peerChange{upAgents: map[string][]string{"main": names("main", "dev", true)}},
		},
		{
			name: "rename workspace",
			do:   func() error { return r.d.RenameWorkspace(ws.ID, "prod") },
			model: peerModel{ws: map[string]vpnpb.Workspace_Status{"prod": running},
				agents: map[string][]string{"main": names("main", "prod", true)}},
			change: peerChange{upWS: map[string]vpnpb.Workspace_Status{"prod": running},
				upAgents: map[string][]string{"main": names("main", "prod", true)}},
		},
		{
			name: "stop workspace",
			do:   func() error { return r.d.SetWorkspaceStatus(ws.ID, codersdk.WorkspaceStatusStopped) },
			model: peerModel{ws: map[string]vpnpb.Workspace_Status{"prod": stopped},
				agents: map[string][]string{"main": names("main", "prod", true)}},
			change: peerChange{upWS: map[string]vpnpb.Workspace_Status{"prod": stopped}},
		},
		{
			name: "second agent",
			do:   func() error { return r.addAgent(ws.ID, "second", ids) },
			model: peerModel{ws: map[string]vpnpb.Workspace_Status{"prod": stopped},
				agents: map[string][]string{"main": names("main", "prod", false), "second": names("second", "prod", false)}},
			change: peerChange{upAgents: map[string][]string{
				"main": names("main", "prod", false), "second": names("second", "prod", false)}},
		},
		{
			name: "remove agent",
			do:   func() error { return r.d.RemoveAgent(ids["second"]) },
			model: peerModel{ws: map[string]vpnpb.Workspace_Status{"prod": stopped},
				agents: map[string][]string{"main": names("main", "prod", true)}},
			change: peerChange{upAgents: map[string][]string{"main": names("main", "prod", true)},
				delAgents: []string{"second"}},
		},
		{
			name:   "remove workspace",
			do:     func() error { return r.d.RemoveWorkspace(ws.ID) },
			model:  peerModel{},
			change: peerChange{delWS: []string{"prod"}, delAgents: []string{"main"}},
		},
	}
	for _, step := range steps {
		mark := len(r.h.PeerUpdates())
		if err := step.do(); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		if _, err := r.h.WaitPeerUpdate(r.ctx, step.model.matches); err != nil {
			t.Fatalf("%s: the manager's state never matched: %v", step.name, err)
		}
		found := false
		for i, u := range r.h.PeerUpdates()[mark:] {
			if !found && step.change.touches(u) {
				found = true
				for _, b := range step.change.check(u, ids) {
					t.Errorf("%s: PeerUpdate %d: %s", step.name, mark+i, b)
				}
				continue
			}
			if len(u.GetDeletedWorkspaces())+len(u.GetDeletedAgents()) > 0 {
				t.Errorf("%s: PeerUpdate %d deletes unexpectedly: %v", step.name, mark+i, u)
			}
		}
		if !found {
			t.Fatalf("%s: no PeerUpdate carried the change; state %v", step.name, r.h.Peers())
		}
	}
	snap, err := r.h.GetPeerUpdate(r.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.GetUpsertedWorkspaces())+len(snap.GetUpsertedAgents()) != 0 {
		t.Fatalf("GetPeerUpdate after every workspace is gone: %v", snap)
	}
	r.stop()
}

// addAgent adds an agent to workspace wsID and records its id under name.
func (r *rig) addAgent(wsID uuid.UUID, name string, ids map[string]uuid.UUID) error {
	a, err := r.d.AddAgent(r.ctx, wsID, name)
	if err != nil {
		return err
	}
	ids[name] = a.ID
	return nil
}
