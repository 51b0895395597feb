package manager

import (
	"fmt"
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
