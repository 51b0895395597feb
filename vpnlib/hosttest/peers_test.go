package hosttest

import (
	"testing"

	vpnpb "github.com/codervpn/codervpn/proto"
)

func TestPeerStateCloneAndLookups(t *testing.T) {
	s, err := NewPeerState(&vpnpb.PeerUpdate{
		UpsertedWorkspaces: []*vpnpb.Workspace{pbWorkspace(ws1, "one", vpnpb.Workspace_RUNNING)},
		UpsertedAgents:     []*vpnpb.Agent{pbAgent(ag1, ws1, "main", "main.one.me.coder.")},
	})
	if err != nil {
		t.Fatal(err)
	}
	c := s.Clone()
	s.Workspaces[ws1].Name = "changed"
	if c.Workspace("one") == nil {
		t.Fatal("the clone shares records with the original")
	}
	for _, q := range []string{"main.one.me.coder.", "MAIN.one.me.coder"} {
		if c.AgentByFQDN(q) == nil {
			t.Errorf("AgentByFQDN(%q) = nil", q)
		}
	}
	if c.AgentByFQDN("other.one.me.coder") != nil || c.Agent("two", "main") != nil {
		t.Error("lookups of unknown names found something")
	}
	if got, want := c.String(), "after 1 updates: workspaces [one(RUNNING)] agents [main.one[]]"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}
