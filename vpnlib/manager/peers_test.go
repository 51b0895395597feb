package manager

import (
	"strings"
	"testing"

	"github.com/google/uuid"

	vpnpb "github.com/codervpn/codervpn/proto"
)

var (
	ws1 = uuid.MustParse("00000000-0000-0000-0000-0000000000a1")
	ws2 = uuid.MustParse("00000000-0000-0000-0000-0000000000a2")
	ag1 = uuid.MustParse("00000000-0000-0000-0000-0000000000b1")
	ag2 = uuid.MustParse("00000000-0000-0000-0000-0000000000b2")
)

func pbWorkspace(id uuid.UUID, name string, st vpnpb.Workspace_Status) *vpnpb.Workspace {
	return &vpnpb.Workspace{Id: id[:], Name: name, Status: st}
}

func pbAgent(id, ws uuid.UUID, name string, fqdn ...string) *vpnpb.Agent {
	return &vpnpb.Agent{Id: id[:], WorkspaceId: ws[:], Name: name, Fqdn: fqdn}
}

func TestPeerStateApply(t *testing.T) {
	running := vpnpb.Workspace_RUNNING
	for _, tc := range []struct {
		name      string
		updates   []*vpnpb.PeerUpdate
		wantWS    map[string]vpnpb.Workspace_Status
		wantAgent map[string]string // agent name -> workspace name
		wantErr   string
	}{
		{
			name: "upserts accumulate",
			updates: []*vpnpb.PeerUpdate{
				{UpsertedWorkspaces: []*vpnpb.Workspace{pbWorkspace(ws1, "one", running)}},
				{UpsertedWorkspaces: []*vpnpb.Workspace{pbWorkspace(ws2, "two", vpnpb.Workspace_STARTING)},
					UpsertedAgents: []*vpnpb.Agent{pbAgent(ag1, ws1, "main")}},
			},
			wantWS:    map[string]vpnpb.Workspace_Status{"one": running, "two": vpnpb.Workspace_STARTING},
			wantAgent: map[string]string{"main": "one"},
		},
		{
			name: "upsert replaces the record",
			updates: []*vpnpb.PeerUpdate{
				{UpsertedWorkspaces: []*vpnpb.Workspace{pbWorkspace(ws1, "one", vpnpb.Workspace_STARTING)}},
				{UpsertedWorkspaces: []*vpnpb.Workspace{pbWorkspace(ws1, "renamed", running)}},
			},
			wantWS: map[string]vpnpb.Workspace_Status{"renamed": running},
		},
		{
			name: "deleting a workspace leaves its agents until they are deleted too",
			updates: []*vpnpb.PeerUpdate{
				{UpsertedWorkspaces: []*vpnpb.Workspace{pbWorkspace(ws1, "one", running)},
					UpsertedAgents: []*vpnpb.Agent{pbAgent(ag1, ws1, "main"), pbAgent(ag2, ws1, "side")}},
				{DeletedWorkspaces: []*vpnpb.Workspace{pbWorkspace(ws1, "one", running)},
					DeletedAgents: []*vpnpb.Agent{pbAgent(ag1, ws1, "main")}},
			},
			wantWS:    map[string]vpnpb.Workspace_Status{},
			wantAgent: map[string]string{"side": "?"},
		},
		{
			name: "delete then upsert of the same id in one update keeps it",
			updates: []*vpnpb.PeerUpdate{
				{DeletedAgents: []*vpnpb.Agent{pbAgent(ag1, ws1, "old")},
					UpsertedAgents:     []*vpnpb.Agent{pbAgent(ag1, ws1, "new")},
					UpsertedWorkspaces: []*vpnpb.Workspace{pbWorkspace(ws1, "one", running)}},
			},
			wantWS:    map[string]vpnpb.Workspace_Status{"one": running},
			wantAgent: map[string]string{"new": "one"},
		},
		{
			name: "malformed ids are reported and skipped",
			updates: []*vpnpb.PeerUpdate{
				{UpsertedWorkspaces: []*vpnpb.Workspace{{Id: []byte("short"), Name: "bad"}, pbWorkspace(ws1, "one", running)},
					UpsertedAgents: []*vpnpb.Agent{{Id: ag1[:], WorkspaceId: nil, Name: "orphan"}}},
			},
			wantWS:  map[string]vpnpb.Workspace_Status{"one": running},
			wantErr: `upserted workspace "bad" has a 5-byte id, want a 16-byte UUID; workspace_id of upserted agent "orphan" has a 0-byte id`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := NewPeers(tc.updates...)
			if tc.wantErr == "" && err != nil {
				t.Fatal(err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
			}
			if s.Updates != len(tc.updates) {
				t.Errorf("Updates = %d, want %d", s.Updates, len(tc.updates))
			}
			if len(s.Workspaces) != len(tc.wantWS) {
				t.Errorf("state %v, want workspaces %v", s, tc.wantWS)
			}
			for name, st := range tc.wantWS {
				if w := s.Workspace(name); w == nil || w.Status != st {
					t.Errorf("workspace %q = %v, want status %v", name, w, st)
				}
			}
			if len(s.Agents) != len(tc.wantAgent) {
				t.Errorf("state %v, want agents %v", s, tc.wantAgent)
			}
			for name, ws := range tc.wantAgent {
				if ws == "?" {
					continue
				}
				if s.Agent(ws, name) == nil {
					t.Errorf("no agent %q in workspace %q: %v", name, ws, s)
				}
			}
		})
	}
}

func TestPeerStateCloneAndLookups(t *testing.T) {
	s, err := NewPeers(&vpnpb.PeerUpdate{
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
