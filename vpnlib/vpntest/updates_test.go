package vpntest_test

import (
	"context"
	"fmt"
	"net/http"
	"reflect"
	"sort"
	"testing"

	"github.com/google/uuid"

	"github.com/coder/coder/v2/codersdk"
	"github.com/coder/coder/v2/tailnet"
	tailnetproto "github.com/coder/coder/v2/tailnet/proto"
	"github.com/coder/websocket"

	"github.com/codervpn/codervpn/vpnlib/vpntest"
)

// dialTailnetAPI opens the dRPC Tailnet API the way Coder's dialer does
// (binary websocket, version 2.3) and returns the raw client.
func dialTailnetAPI(ctx context.Context, t testing.TB, d *vpntest.Deployment) tailnetproto.DRPCTailnetClient {
	t.Helper()
	u := d.URL.JoinPath("/api/v2/tailnet")
	u.RawQuery = "version=2.3"
	h := http.Header{}
	h.Set(codersdk.SessionTokenHeader, d.Token)
	ws, res, err := websocket.Dial(ctx, u.String(), &websocket.DialOptions{HTTPHeader: h})
	if res != nil && res.Body != nil {
		_ = res.Body.Close()
	}
	if err != nil {
		t.Fatalf("dial tailnet API: %v", err)
	}
	client, err := tailnet.NewDRPCClient(websocket.NetConn(context.Background(), ws, websocket.MessageBinary), testLogger(t))
	if err != nil {
		t.Fatalf("dRPC client: %v", err)
	}
	t.Cleanup(func() { _ = client.DRPCConn().Close() })
	return client
}

func subscribe(ctx context.Context, t testing.TB, d *vpntest.Deployment, owner uuid.UUID) tailnetproto.DRPCTailnet_WorkspaceUpdatesClient {
	t.Helper()
	stream, err := dialTailnetAPI(ctx, t, d).WorkspaceUpdates(ctx, &tailnetproto.WorkspaceUpdatesRequest{
		WorkspaceOwnerId: tailnet.UUIDToByteSlice(owner),
	})
	if err != nil {
		t.Fatalf("WorkspaceUpdates: %v", err)
	}
	return stream
}

// update is a WorkspaceUpdate in a comparable, readable form.
type update struct {
	UpsertedWorkspaces, UpsertedAgents, DeletedWorkspaces, DeletedAgents []string
}

func wsKey(id uuid.UUID, name string, st tailnetproto.Workspace_Status) string {
	return fmt.Sprintf("%s %s %s", id, name, st)
}

func agentKey(id, wsID uuid.UUID, name string) string {
	return fmt.Sprintf("%s %s in %s", id, name, wsID)
}

func canon(t testing.TB, u *tailnetproto.WorkspaceUpdate) update {
	t.Helper()
	id := func(b []byte) uuid.UUID {
		v, err := uuid.FromBytes(b)
		if err != nil {
			t.Fatalf("bad uuid in update: %v", err)
		}
		return v
	}
	var out update
	for _, w := range u.UpsertedWorkspaces {
		out.UpsertedWorkspaces = append(out.UpsertedWorkspaces, wsKey(id(w.Id), w.Name, w.Status))
	}
	for _, w := range u.DeletedWorkspaces {
		out.DeletedWorkspaces = append(out.DeletedWorkspaces, wsKey(id(w.Id), w.Name, w.Status))
	}
	for _, a := range u.UpsertedAgents {
		out.UpsertedAgents = append(out.UpsertedAgents, agentKey(id(a.Id), id(a.WorkspaceId), a.Name))
	}
	for _, a := range u.DeletedAgents {
		out.DeletedAgents = append(out.DeletedAgents, agentKey(id(a.Id), id(a.WorkspaceId), a.Name))
	}
	for _, s := range [][]string{out.UpsertedWorkspaces, out.UpsertedAgents, out.DeletedWorkspaces, out.DeletedAgents} {
		sort.Strings(s)
	}
	return out
}

func expectUpdate(t testing.TB, name string, s tailnetproto.DRPCTailnet_WorkspaceUpdatesClient, want update) {
	t.Helper()
	got, err := s.Recv()
	if err != nil {
		t.Fatalf("%s: receive update: %v", name, err)
	}
	if c := canon(t, got); !reflect.DeepEqual(c, want) {
		t.Fatalf("%s:\n got  %+v\n want %+v", name, c, want)
	}
}

// TestWorkspaceUpdates changes workspaces and agents at run time and checks
// that every subscriber gets the snapshot and then exactly one diff per
// change, in order.
func TestWorkspaceUpdates(t *testing.T) {
	ctx := testCtx(t)
	d := vpntest.New(t, vpntest.Options{Logger: testLogger(t).Named("deployment")})

	pre, err := d.AddWorkspace("pre", codersdk.WorkspaceStatusRunning)
	if err != nil {
		t.Fatal(err)
	}
	a0, err := d.AddAgent(ctx, pre.ID, "a0")
	if err != nil {
		t.Fatal(err)
	}
	preSnap := update{
		UpsertedWorkspaces: []string{wsKey(pre.ID, "pre", tailnetproto.Workspace_RUNNING)},
		UpsertedAgents:     []string{agentKey(a0.ID, pre.ID, "a0")},
	}

	subs := []tailnetproto.DRPCTailnet_WorkspaceUpdatesClient{
		subscribe(ctx, t, d, d.OwnerID),
		subscribe(ctx, t, d, d.OwnerID),
	}
	for i, s := range subs {
		expectUpdate(t, fmt.Sprintf("subscriber %d snapshot", i), s, preSnap)
	}

	var dev *vpntest.Workspace
	var main *vpntest.Agent
	steps := []struct {
		name   string
		change func() error
		want   func() update
	}{
		{
			name: "AddWorkspace",
			change: func() (err error) {
				dev, err = d.AddWorkspace("dev", codersdk.WorkspaceStatusStarting)
				return err
			},
			want: func() update {
				return update{UpsertedWorkspaces: []string{wsKey(dev.ID, "dev", tailnetproto.Workspace_STARTING)}}
			},
		},
		{
			name: "AddAgent",
			change: func() (err error) {
				main, err = d.AddAgent(ctx, dev.ID, "main")
				return err
			},
			want: func() update { return update{UpsertedAgents: []string{agentKey(main.ID, dev.ID, "main")}} },
		},
		{
			name:   "SetWorkspaceStatus",
			change: func() error { return d.SetWorkspaceStatus(dev.ID, codersdk.WorkspaceStatusRunning) },
			want: func() update {
				return update{UpsertedWorkspaces: []string{wsKey(dev.ID, "dev", tailnetproto.Workspace_RUNNING)}}
			},
		},
		{
			name:   "RenameWorkspace",
			change: func() error { return d.RenameWorkspace(dev.ID, "dev2") },
			want: func() update {
				return update{UpsertedWorkspaces: []string{wsKey(dev.ID, "dev2", tailnetproto.Workspace_RUNNING)}}
			},
		},
		{
			name:   "RemoveAgent",
			change: func() error { return d.RemoveAgent(main.ID) },
			want:   func() update { return update{DeletedAgents: []string{agentKey(main.ID, dev.ID, "main")}} },
		},
		{
			name: "AddAgentWithID (agent comes back)",
			change: func() error {
				back, err := d.AddAgentWithID(ctx, dev.ID, main.ID, "main")
				if err == nil && back.ID != main.ID {
					err = fmt.Errorf("agent came back as %s, want %s", back.ID, main.ID)
				}
				return err
			},
			want: func() update { return update{UpsertedAgents: []string{agentKey(main.ID, dev.ID, "main")}} },
		},
		{
			name:   "RemoveWorkspace",
			change: func() error { return d.RemoveWorkspace(dev.ID) },
			want: func() update {
				return update{
					DeletedWorkspaces: []string{wsKey(dev.ID, "dev2", tailnetproto.Workspace_RUNNING)},
					DeletedAgents:     []string{agentKey(main.ID, dev.ID, "main")},
				}
			},
		},
	}
	for _, step := range steps {
		if err := step.change(); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		for i, s := range subs {
			expectUpdate(t, fmt.Sprintf("%s, subscriber %d", step.name, i), s, step.want())
		}
	}

	// A late subscriber's snapshot reflects the end state; someone else's
	// subscription sees no workspaces, as coderd shows no one else's.
	expectUpdate(t, "late snapshot", subscribe(ctx, t, d, d.OwnerID), preSnap)
	expectUpdate(t, "other user's snapshot", subscribe(ctx, t, d, uuid.New()), update{})
	if got := len(d.Agents()); got != 1 {
		t.Fatalf("Agents() lists %d agents after the changes, want 1", got)
	}
}

// TestChangeErrors checks that invalid changes fail with an error and send
// nothing.
func TestChangeErrors(t *testing.T) {
	ctx := testCtx(t)
	d := vpntest.New(t, vpntest.Options{})
	a, err := d.AddRunningAgent(ctx, "dev", "main")
	if err != nil {
		t.Fatal(err)
	}
	sub := subscribe(ctx, t, d, d.OwnerID)
	if _, err := sub.Recv(); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name string
		do   func() error
	}{
		{"workspace name invalid", func() error { _, err := d.AddWorkspace("Not Valid!", codersdk.WorkspaceStatusRunning); return err }},
		{"workspace name taken", func() error { _, err := d.AddWorkspace("dev", codersdk.WorkspaceStatusRunning); return err }},
		{"workspace status unknown", func() error { _, err := d.AddWorkspace("x", "sleepy"); return err }},
		{"status of missing workspace", func() error { return d.SetWorkspaceStatus(uuid.New(), codersdk.WorkspaceStatusStopped) }},
		{"remove missing workspace", func() error { return d.RemoveWorkspace(uuid.New()) }},
		{"agent in missing workspace", func() error { _, err := d.AddAgent(ctx, uuid.New(), "x"); return err }},
		{"agent name taken", func() error { _, err := d.AddAgent(ctx, a.WorkspaceID, "main"); return err }},
		{"agent id taken", func() error { _, err := d.AddAgentWithID(ctx, a.WorkspaceID, a.ID, "other"); return err }},
		{"agent name invalid", func() error { _, err := d.AddAgent(ctx, a.WorkspaceID, "no_underscores"); return err }},
		{"remove missing agent", func() error { return d.RemoveAgent(uuid.New()) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.do(); err == nil {
				t.Fatal("expected an error")
			}
		})
	}

	// Nothing was published: the next update is the one for this change.
	if err := d.SetWorkspaceStatus(a.WorkspaceID, codersdk.WorkspaceStatusStopped); err != nil {
		t.Fatal(err)
	}
	expectUpdate(t, "after errors", sub, update{
		UpsertedWorkspaces: []string{wsKey(a.WorkspaceID, "dev", tailnetproto.Workspace_STOPPED)},
	})

	if err := d.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if _, err := d.AddWorkspace("late", codersdk.WorkspaceStatusRunning); err == nil {
		t.Fatal("AddWorkspace after Close succeeded")
	}
}
