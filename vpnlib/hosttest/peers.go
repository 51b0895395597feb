package hosttest

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	vpnpb "github.com/codervpn/codervpn/proto"
	"github.com/codervpn/codervpn/vpnlib/manager"
)

// PeerState is the picture of workspaces and agents that the tunnel's
// one-way PeerUpdates add up to, as a manager keeps it (manager.Peers: its
// Workspaces, Agents and Updates), with the lookups tests ask of it.
type PeerState struct{ *manager.Peers }

// NewPeerState returns the picture the updates add up to, applied in order
// (manager.NewPeers). It lets a test rebuild the picture from any list, for
// example to compare a GetPeerUpdate snapshot with what the one-way updates
// added up to.
func NewPeerState(updates ...*vpnpb.PeerUpdate) (*PeerState, error) {
	p, err := manager.NewPeers(updates...)
	return &PeerState{p}, err
}

// Clone returns a deep copy that later updates do not change.
func (s *PeerState) Clone() *PeerState { return &PeerState{s.Peers.Clone()} }

// Workspace returns the workspace called name, or nil.
func (s *PeerState) Workspace(name string) *vpnpb.Workspace {
	for _, w := range s.Workspaces {
		if w.GetName() == name {
			return w
		}
	}
	return nil
}

// Agent returns the agent called agent in the workspace called workspace, or
// nil. The workspace must be known, as in the manager's UI.
func (s *PeerState) Agent(workspace, agent string) *vpnpb.Agent {
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
func (s *PeerState) AgentByFQDN(fqdn string) *vpnpb.Agent {
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
func (s *PeerState) String() string {
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
