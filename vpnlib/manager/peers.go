package manager

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	vpnpb "github.com/codervpn/codervpn/proto"
)

// Peers is the manager's picture of the user's workspaces and agents, built
// the way Coder Desktop builds it: by applying every one-way PeerUpdate in
// order, deletions first, then upserts (an upsert replaces the whole
// record), so an update that deletes and re-adds an id (a rebuilt agent)
// keeps it. Deleting a workspace does not delete its agents: the tunnel
// must say so itself, and a test should see it if it does not. A Session
// keeps one; a Peers is not safe for concurrent use.
type Peers struct {
	Workspaces map[uuid.UUID]*vpnpb.Workspace
	Agents     map[uuid.UUID]*vpnpb.Agent
	// Updates counts the PeerUpdate messages applied.
	Updates int
}

// NewPeers returns an empty picture with the updates applied in order. It
// rebuilds the picture from any list, for example to compare a
// GetPeerUpdate snapshot with what the one-way updates added up to.
func NewPeers(updates ...*vpnpb.PeerUpdate) (*Peers, error) {
	s := &Peers{Workspaces: map[uuid.UUID]*vpnpb.Workspace{}, Agents: map[uuid.UUID]*vpnpb.Agent{}}
	var errs []string
	for _, u := range updates {
		if err := s.Apply(u); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return s, fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return s, nil
}

// Apply merges one PeerUpdate. Records whose id is not a 16-byte UUID are
// skipped and reported in the error (the rest is still applied), since a
// manager cannot key them.
func (s *Peers) Apply(u *vpnpb.PeerUpdate) error {
	s.Updates++
	var bad []string
	for _, w := range u.GetDeletedWorkspaces() {
		if id, ok := idOf(w.GetId(), "deleted workspace", w.GetName(), &bad); ok {
			delete(s.Workspaces, id)
		}
	}
	for _, a := range u.GetDeletedAgents() {
		if id, ok := idOf(a.GetId(), "deleted agent", a.GetName(), &bad); ok {
			delete(s.Agents, id)
		}
	}
	for _, w := range u.GetUpsertedWorkspaces() {
		if id, ok := idOf(w.GetId(), "upserted workspace", w.GetName(), &bad); ok {
			s.Workspaces[id] = proto.CloneOf(w)
		}
	}
	for _, a := range u.GetUpsertedAgents() {
		id, ok := idOf(a.GetId(), "upserted agent", a.GetName(), &bad)
		if _, wsOK := idOf(a.GetWorkspaceId(), "workspace_id of upserted agent", a.GetName(), &bad); ok && wsOK {
			s.Agents[id] = proto.CloneOf(a)
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("peer update %d: %s", s.Updates, strings.Join(bad, "; "))
	}
	return nil
}

func idOf(b []byte, what, name string, bad *[]string) (uuid.UUID, bool) {
	id, err := uuid.FromBytes(b)
	if err != nil {
		*bad = append(*bad, fmt.Sprintf("%s %q has a %d-byte id, want a 16-byte UUID", what, name, len(b)))
		return uuid.UUID{}, false
	}
	return id, true
}

// Clone returns a deep copy that later updates do not change.
func (s *Peers) Clone() *Peers {
	c := &Peers{
		Workspaces: make(map[uuid.UUID]*vpnpb.Workspace, len(s.Workspaces)),
		Agents:     make(map[uuid.UUID]*vpnpb.Agent, len(s.Agents)),
		Updates:    s.Updates,
	}
	for id, w := range s.Workspaces {
		c.Workspaces[id] = proto.CloneOf(w)
	}
	for id, a := range s.Agents {
		c.Agents[id] = proto.CloneOf(a)
	}
	return c
}

// Workspace returns the workspace called name, or nil.
func (s *Peers) Workspace(name string) *vpnpb.Workspace {
	for _, w := range s.Workspaces {
		if w.GetName() == name {
			return w
		}
	}
	return nil
}

// Agent returns the agent called agent in the workspace called workspace, or
// nil. The workspace must be known, as in the manager's UI.
func (s *Peers) Agent(workspace, agent string) *vpnpb.Agent {
	w := s.Workspace(workspace)
	if w == nil {
		return nil
	}
	for _, a := range s.Agents {
		if a.GetName() == agent && slices.Equal(a.GetWorkspaceId(), w.GetId()) {
			return a
		}
	}
	return nil
}

// AgentByFQDN returns the agent that lists fqdn (compared without case and
// trailing dot), or nil.
func (s *Peers) AgentByFQDN(fqdn string) *vpnpb.Agent {
	want := strings.TrimSuffix(strings.ToLower(fqdn), ".")
	for _, a := range s.Agents {
		for _, f := range a.GetFqdn() {
			if strings.TrimSuffix(strings.ToLower(f), ".") == want {
				return a
			}
		}
	}
	return nil
}

// String lists workspaces and agents by name, sorted, for failure messages.
func (s *Peers) String() string {
	var ws, as []string
	names := map[string]string{}
	for id, w := range s.Workspaces {
		ws = append(ws, fmt.Sprintf("%s(%s)", w.GetName(), w.GetStatus()))
		names[string(id[:])] = w.GetName()
	}
	for _, a := range s.Agents {
		wsName, ok := names[string(a.GetWorkspaceId())]
		if !ok {
			wsName = "?"
		}
		as = append(as, fmt.Sprintf("%s.%s%v", a.GetName(), wsName, a.GetIpAddrs()))
	}
	sort.Strings(ws)
	sort.Strings(as)
	return fmt.Sprintf("after %d updates: workspaces [%s] agents [%s]", s.Updates, strings.Join(ws, " "), strings.Join(as, " "))
}
