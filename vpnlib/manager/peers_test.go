package manager

import (
	"maps"
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
			gotWS := map[string]vpnpb.Workspace_Status{}
			wsNames := map[string]string{} // id -> name
			for id, w := range s.Workspaces {
				gotWS[w.GetName()] = w.GetStatus()
				wsNames[string(id[:])] = w.GetName()
			}
			if !maps.Equal(gotWS, tc.wantWS) {
				t.Errorf("workspaces %v, want %v", gotWS, tc.wantWS)
			}
			gotAgents := map[string]string{} // agent name -> workspace name, "?" when unknown
			for _, a := range s.Agents {
				wsName, ok := wsNames[string(a.GetWorkspaceId())]
				if !ok {
					wsName = "?"
				}
				gotAgents[a.GetName()] = wsName
			}
			if !maps.Equal(gotAgents, tc.wantAgent) {
				t.Errorf("agents %v, want %v", gotAgents, tc.wantAgent)
			}
		})
	}
}
