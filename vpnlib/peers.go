package vpnlib

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"tailscale.com/util/dnsname"

	"github.com/coder/coder/v2/tailnet"

	vpnpb "github.com/codervpn/codervpn/proto"
)

// peerEngine is the part of the engine the tracker reads agent status from.
type peerEngine interface {
	// LastHandshakes returns the latest WireGuard handshake of every agent
	// that has had one, from a single read of the engine's status.
	LastHandshakes() map[uuid.UUID]time.Time
}

// peerTracker keeps the manager's view of the user's workspaces and agents.
// It is the workspace-updates controller's UpdatesHandler, answers
// GetPeerUpdate with a snapshot, and carries ping results.
//
// Locking: mu guards the maps and is only ever held for map work. The engine
// (LastHandshakes) and the manager (send) are called with mu released:
// the controller calls Update while holding its own lock, and the reference
// implementation deadlocked by taking its tracker lock and then calling back
// into the controller. sendMu only orders outgoing PeerUpdates; nothing that
// takes sendMu is ever called with mu held.
type peerTracker struct {
	owner  string // the user's name, for <agent>.<ws>.<owner>.<suffix>.
	suffix string // hostname suffix without dots, e.g. "coder"
	engine peerEngine
	send   func(*vpnpb.PeerUpdate)

	first     chan struct{} // closed by the first Update
	firstOnce sync.Once

	sendMu sync.Mutex
	// sent is each agent's live status as last sent; guarded by sendMu.
	sent map[uuid.UUID]sentStatus
	// silenced is set once the session halts: nothing more is sent;
	// guarded by sendMu.
	silenced bool

	mu         sync.Mutex
	workspaces map[uuid.UUID]*vpnpb.Workspace
	agents     map[uuid.UUID]*trackedAgent
}

// sentStatus is the live part of an agent's record as the manager last got
// it: the handshake time and the ping result (a new ping is a new pointer).
type sentStatus struct {
	handshake time.Time
	ping      *agentPing
}

type trackedAgent struct {
	view agentView
	ping *agentPing
}

// agentView is what the manager knows about an agent apart from its live
// status; a change in it (a rename, a sibling appearing) is sent as an upsert.
type agentView struct {
	id, workspaceID uuid.UUID
	name            string
	fqdns           []string
	ips             []string
}

func (a agentView) equal(b agentView) bool {
	return a.id == b.id && a.workspaceID == b.workspaceID && a.name == b.name &&
		slices.Equal(a.fqdns, b.fqdns) && slices.Equal(a.ips, b.ips)
}

// agentPing is the result of the latest successful ping of an agent.
type agentPing struct {
	latency     time.Duration
	p2p         bool
	derp        string
	derpLatency *time.Duration
}

// agentStatus is an agent with its live status, ready to render.
type agentStatus struct {
	view agentView
	ping *agentPing
}

func newPeerTracker(owner, suffix string, engine peerEngine, send func(*vpnpb.PeerUpdate)) *peerTracker {
	return &peerTracker{
		owner:      owner,
		suffix:     suffix,
		engine:     engine,
		send:       send,
		workspaces: map[uuid.UUID]*vpnpb.Workspace{},
		agents:     map[uuid.UUID]*trackedAgent{},
		sent:       map[uuid.UUID]sentStatus{},
		first:      make(chan struct{}),
	}
}

// firstUpdate is closed once the first workspace update has been applied
// and sent to the manager.
func (p *peerTracker) firstUpdate() <-chan struct{} { return p.first }

// Update implements tailnet.UpdatesHandler. It applies the change, and sends
// the manager a PeerUpdate with what changed. The first update after every
// (re)connection is a snapshot: whatever we knew that it lacks was deleted
// while we were disconnected and is sent as deleted.
func (p *peerTracker) Update(u tailnet.WorkspaceUpdate) error {
	p.sendMu.Lock()
	defer p.sendMu.Unlock()
	upWS, upAgents, delWS, delAgents := p.apply(u)
	rendered, live := p.render(upAgents)
	for i, a := range upAgents {
		p.sent[a.view.id] = live[i]
	}
	for _, v := range delAgents {
		delete(p.sent, v.id)
	}
	out := &vpnpb.PeerUpdate{
		UpsertedWorkspaces: upWS,
		UpsertedAgents:     rendered,
		DeletedWorkspaces:  delWS,
		DeletedAgents:      p.renderDeleted(delAgents),
	}
	if len(out.UpsertedWorkspaces)+len(out.UpsertedAgents)+len(out.DeletedWorkspaces)+len(out.DeletedAgents) > 0 && !p.silenced {
		p.send(out)
	}
	p.firstOnce.Do(func() { close(p.first) })
	return nil
}

// apply updates the maps under mu and returns copies of what changed.
func (p *peerTracker) apply(u tailnet.WorkspaceUpdate) (upWS []*vpnpb.Workspace, upAgents []agentStatus, delWS []*vpnpb.Workspace, delAgents []agentView) {
	p.mu.Lock()
	defer p.mu.Unlock()

	explicit := map[uuid.UUID]bool{}
	if u.Kind == tailnet.Snapshot {
		inWS := map[uuid.UUID]bool{}
		for _, w := range u.UpsertedWorkspaces {
			inWS[w.ID] = true
		}
		for _, a := range u.UpsertedAgents {
			explicit[a.ID] = true
		}
		for id, a := range p.agents {
			if !explicit[id] {
				delAgents = append(delAgents, a.view)
				delete(p.agents, id)
			}
		}
		for id, w := range p.workspaces {
			if !inWS[id] {
				delWS = append(delWS, w)
				delete(p.workspaces, id)
			}
		}
	}
	for _, a := range u.DeletedAgents {
		if t, ok := p.agents[a.ID]; ok {
			delAgents = append(delAgents, t.view)
			delete(p.agents, a.ID)
			continue
		}
		if u.Kind != tailnet.Snapshot {
			delAgents = append(delAgents, agentView{id: a.ID, workspaceID: a.WorkspaceID, name: a.Name})
		}
	}
	for _, w := range u.DeletedWorkspaces {
		if old, ok := p.workspaces[w.ID]; ok {
			delWS = append(delWS, old)
			delete(p.workspaces, w.ID)
		} else if u.Kind != tailnet.Snapshot {
			delWS = append(delWS, workspaceProto(w))
		}
	}
	for _, w := range u.UpsertedWorkspaces {
		pw := workspaceProto(w)
		p.workspaces[w.ID] = pw
		upWS = append(upWS, proto.CloneOf(pw))
	}
	for _, a := range u.UpsertedAgents {
		explicit[a.ID] = true
		t, ok := p.agents[a.ID]
		if !ok {
			t = &trackedAgent{}
			p.agents[a.ID] = t
		}
		// The view is recomputed below; keep the ping across upserts.
		t.view = agentView{id: a.ID, workspaceID: a.WorkspaceID, name: a.Name}
	}

	// Recompute every agent's names: a rename of its workspace, or a second
	// agent joining it, changes them without the agent being in the update.
	counts := map[uuid.UUID]int{}
	for _, t := range p.agents {
		counts[t.view.workspaceID]++
	}
	for id, t := range p.agents {
		old := t.view
		t.view = p.viewLocked(old.id, old.workspaceID, old.name, counts[old.workspaceID])
		if explicit[id] || !t.view.equal(old) {
			upAgents = append(upAgents, agentStatus{view: t.view, ping: t.ping})
		}
	}
	sortAgents(upAgents)
	return upWS, upAgents, delWS, delAgents
}

// viewLocked computes an agent's DNS names and addresses the way the
// engine's resolver serves them: lower case, <agent>.<ws>.me.<suffix>.,
// <agent>.<ws>.<owner>.<suffix>., and <ws>.<suffix>. when the workspace has
// a single agent. Shortest name first.
func (p *peerTracker) viewLocked(id, wsID uuid.UUID, name string, siblings int) agentView {
	v := agentView{id: id, workspaceID: wsID, name: name,
		ips: []string{tailnet.CoderServicePrefix.AddrFromUUID(id).String()}}
	ws, ok := p.workspaces[wsID]
	if !ok {
		return v
	}
	agent, wsName, owner := strings.ToLower(name), strings.ToLower(ws.Name), strings.ToLower(p.owner)
	candidates := []string{
		fmt.Sprintf("%s.%s.me.%s.", agent, wsName, p.suffix),
		fmt.Sprintf("%s.%s.%s.%s.", agent, wsName, owner, p.suffix),
	}
	if siblings == 1 {
		candidates = append(candidates, fmt.Sprintf("%s.%s.", wsName, p.suffix))
	}
	for _, c := range candidates {
		if f, err := dnsname.ToFQDN(c); err == nil {
			v.fqdns = append(v.fqdns, f.WithTrailingDot())
		}
	}
	slices.SortFunc(v.fqdns, func(a, b string) int {
		return cmp.Or(cmp.Compare(len(a), len(b)), strings.Compare(a, b))
	})
	return v
}

// silence stops every PeerUpdate the tracker would send from now on; one
// being sent is done when it returns. The session calls it as it halts:
// the workspace-updates controller may still hand us an update while it
// winds down, and the manager must hear nothing after the StopResponse.
func (p *peerTracker) silence() {
	p.sendMu.Lock()
	defer p.sendMu.Unlock()
	p.silenced = true
}

// snapshot is the full current state, for GetPeerUpdate.
func (p *peerTracker) snapshot() *vpnpb.PeerUpdate {
	p.mu.Lock()
	ws := make([]*vpnpb.Workspace, 0, len(p.workspaces))
	for _, w := range p.workspaces {
		ws = append(ws, proto.CloneOf(w))
	}
	agents := p.statusLocked()
	p.mu.Unlock()
	slices.SortFunc(ws, func(a, b *vpnpb.Workspace) int {
		return cmp.Or(strings.Compare(a.Name, b.Name), strings.Compare(string(a.Id), string(b.Id)))
	})
	rendered, _ := p.render(agents)
	return &vpnpb.PeerUpdate{UpsertedWorkspaces: ws, UpsertedAgents: rendered}
}

// sendStatus sends the agents whose handshake or ping changed since the
// manager last heard of them. Agents that are quiet (offline, or never
// reached) are not repeated every round: with thousands of agents that
// would be hundreds of kilobytes every few seconds, saying nothing new.
func (p *peerTracker) sendStatus() {
	p.sendMu.Lock()
	defer p.sendMu.Unlock()
	p.mu.Lock()
	agents := p.statusLocked()
	p.mu.Unlock()
	if len(agents) == 0 {
		return
	}
	rendered, live := p.render(agents)
	var changed []*vpnpb.Agent
	for i, a := range agents {
		if p.sent[a.view.id] != live[i] {
			p.sent[a.view.id] = live[i]
			changed = append(changed, rendered[i])
		}
	}
	if len(changed) > 0 && !p.silenced {
		p.send(&vpnpb.PeerUpdate{UpsertedAgents: changed})
	}
}

func (p *peerTracker) statusLocked() []agentStatus {
	out := make([]agentStatus, 0, len(p.agents))
	for _, t := range p.agents {
		out = append(out, agentStatus{view: t.view, ping: t.ping})
	}
	sortAgents(out)
	return out
}

// agentIDs lists the agents to ping.
func (p *peerTracker) agentIDs() []uuid.UUID {
	p.mu.Lock()
	defer p.mu.Unlock()
	ids := make([]uuid.UUID, 0, len(p.agents))
	for id := range p.agents {
		ids = append(ids, id)
	}
	return ids
}

// recordPing stores a successful ping; agents deleted meanwhile are ignored.
func (p *peerTracker) recordPing(id uuid.UUID, ping agentPing) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if t, ok := p.agents[id]; ok {
		t.ping = &ping
	}
}

// render converts agents to protobuf, with the latest handshakes the
// engine reports, and returns the live status it rendered for each. It must
// be called without mu held.
func (p *peerTracker) render(agents []agentStatus) ([]*vpnpb.Agent, []sentStatus) {
	out := make([]*vpnpb.Agent, 0, len(agents))
	live := make([]sentStatus, 0, len(agents))
	var handshakes map[uuid.UUID]time.Time
	if p.engine != nil && len(agents) > 0 {
		handshakes = p.engine.LastHandshakes()
	}
	for _, a := range agents {
		pa := agentProto(a.view)
		hs, ok := handshakes[a.view.id]
		if ok {
			pa.LastHandshake = timestamppb.New(hs)
		}
		live = append(live, sentStatus{handshake: hs, ping: a.ping})
		if a.ping != nil {
			pa.LastPing = &vpnpb.LastPing{
				Latency:       durationpb.New(a.ping.latency),
				DidP2P:        a.ping.p2p,
				PreferredDerp: a.ping.derp,
			}
			if a.ping.derpLatency != nil {
				pa.LastPing.PreferredDerpLatency = durationpb.New(*a.ping.derpLatency)
			}
		}
		out = append(out, pa)
	}
	return out, live
}

func (p *peerTracker) renderDeleted(views []agentView) []*vpnpb.Agent {
	out := make([]*vpnpb.Agent, 0, len(views))
	for _, v := range views {
		out = append(out, agentProto(v))
	}
	return out
}

func agentProto(v agentView) *vpnpb.Agent {
	return &vpnpb.Agent{
		Id:          uuidBytes(v.id),
		Name:        v.name,
		WorkspaceId: uuidBytes(v.workspaceID),
		Fqdn:        slices.Clone(v.fqdns),
		IpAddrs:     slices.Clone(v.ips),
	}
}

func workspaceProto(w *tailnet.Workspace) *vpnpb.Workspace {
	return &vpnpb.Workspace{
		Id:     uuidBytes(w.ID),
		Name:   w.Name,
		Status: vpnpb.Workspace_Status(w.Status),
	}
}

func uuidBytes(id uuid.UUID) []byte {
	b := id
	return b[:]
}

func sortAgents(a []agentStatus) {
	slices.SortFunc(a, func(x, y agentStatus) int {
		return cmp.Or(strings.Compare(x.view.name, y.view.name), strings.Compare(x.view.id.String(), y.view.id.String()))
	})
}
