package speaker

import (
	"context"
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	vpnpb "github.com/codervpn/codervpn/proto"
)

func TestSpeakerVersionGates(t *testing.T) {
	t.Parallel()
	ping := &vpnpb.LastPing{DidP2P: true, PreferredDerp: "home"}
	tests := []struct {
		peer          Version // the manager's offered (and so negotiated) version
		wantTelemetry bool
		wantLastPing  bool
		wantWake      bool
	}{
		{peer: Version{1, 0}},
		{peer: Version{1, 1}, wantTelemetry: true},
		{peer: Version{1, 2}, wantTelemetry: true, wantLastPing: true},
		{peer: Version{1, 3}, wantTelemetry: true, wantLastPing: true, wantWake: true},
	}
	for _, tt := range tests {
		t.Run(tt.peer.String(), func(t *testing.T) {
			t.Parallel()
			treqs, onTReq := queue[*vpnpb.ManagerMessage]()
			mmsgs, onMMsg := queue[*vpnpb.TunnelMessage]()
			m, tun := speakerPair(t,
				Options[*vpnpb.TunnelMessage]{Versions: []Version{tt.peer}, OnMessage: onMMsg},
				Options[*vpnpb.ManagerMessage]{OnRequest: onTReq})
			if m.Version() != tt.peer || tun.Version() != tt.peer {
				t.Fatalf("negotiated %v/%v, want %v", m.Version(), tun.Version(), tt.peer)
			}

			// Wake: refused below 1.3 without writing anything.
			wakeCtx, cancelWake := context.WithCancel(testContext(t))
			defer cancelWake()
			wakeErr := make(chan error, 1)
			go func() {
				_, err := m.Call(wakeCtx, &vpnpb.ManagerMessage{Msg: &vpnpb.ManagerMessage_Wake{Wake: &vpnpb.WakeRequest{}}})
				wakeErr <- err
			}()
			if !tt.wantWake {
				if err := recv(t, wakeErr, "refused wake"); !errors.Is(err, ErrUnsupportedByPeer) {
					t.Fatalf("Wake at %v = %v, want ErrUnsupportedByPeer", tt.peer, err)
				}
			} else {
				req := recv(t, treqs, "wake request")
				if req.GetWake() == nil {
					t.Fatalf("tunnel got %v, want a wake", req)
				}
				if err := tun.Reply(req, &vpnpb.TunnelMessage{Msg: &vpnpb.TunnelMessage_Wake{Wake: &vpnpb.WakeResponse{}}}); err != nil {
					t.Fatal(err)
				}
				if err := recv(t, wakeErr, "wake reply"); err != nil {
					t.Fatal(err)
				}
			}

			// StartRequest telemetry: stripped below 1.1; the caller's message is untouched.
			start := &vpnpb.StartRequest{CoderUrl: "https://coder.example.com", DeviceId: "dev", DeviceOs: "macOS", CoderDesktopVersion: "0.9"}
			startMsg := &vpnpb.ManagerMessage{Msg: &vpnpb.ManagerMessage_Start{Start: start}}
			startErr := make(chan error, 1)
			go func() {
				_, err := m.Call(testContext(t), startMsg)
				startErr <- err
			}()
			req := recv(t, treqs, "start request")
			if req.GetWake() != nil {
				t.Fatal("a refused Wake reached the tunnel")
			}
			gotStart := req.GetStart()
			if gotStart.GetCoderUrl() != start.CoderUrl {
				t.Fatalf("start lost its URL: %v", gotStart)
			}
			hasTelemetry := gotStart.GetDeviceId() == "dev" && gotStart.GetDeviceOs() == "macOS" && gotStart.GetCoderDesktopVersion() == "0.9"
			noTelemetry := gotStart.GetDeviceId() == "" && gotStart.GetDeviceOs() == "" && gotStart.GetCoderDesktopVersion() == ""
			if (tt.wantTelemetry && !hasTelemetry) || (!tt.wantTelemetry && !noTelemetry) {
				t.Fatalf("at %v the tunnel got start %v; telemetry wanted: %v", tt.peer, gotStart, tt.wantTelemetry)
			}
			if start.DeviceId != "dev" || startMsg.Rpc != nil {
				t.Fatalf("the caller's StartRequest was modified: %v", startMsg)
			}
			if err := tun.Reply(req, &vpnpb.TunnelMessage{Msg: &vpnpb.TunnelMessage_Start{Start: &vpnpb.StartResponse{Success: true}}}); err != nil {
				t.Fatal(err)
			}
			if err := recv(t, startErr, "start reply"); err != nil {
				t.Fatal(err)
			}

			// PeerUpdate last_ping: stripped below 1.2, in upserted and deleted agents.
			pu := &vpnpb.PeerUpdate{
				UpsertedAgents: []*vpnpb.Agent{{Name: "a", LastPing: ping}},
				DeletedAgents:  []*vpnpb.Agent{{Name: "b", LastPing: ping}},
			}
			if err := tun.Send(&vpnpb.TunnelMessage{Msg: &vpnpb.TunnelMessage_PeerUpdate{PeerUpdate: pu}}); err != nil {
				t.Fatal(err)
			}
			got := recv(t, mmsgs, "peer update").GetPeerUpdate()
			for _, a := range append(got.GetUpsertedAgents(), got.GetDeletedAgents()...) {
				if tt.wantLastPing != proto.Equal(a.GetLastPing(), ping) || (!tt.wantLastPing && a.GetLastPing() != nil) {
					t.Fatalf("at %v agent %q arrived with last_ping %v; wanted: %v", tt.peer, a.GetName(), a.GetLastPing(), tt.wantLastPing)
				}
			}
			if len(got.GetUpsertedAgents()) != 1 || len(got.GetDeletedAgents()) != 1 {
				t.Fatalf("peer update lost agents: %v", got)
			}
			if pu.UpsertedAgents[0].LastPing == nil || pu.DeletedAgents[0].LastPing == nil {
				t.Fatal("the caller's PeerUpdate was modified")
			}

			// WakeResponse from the tunnel: refused below 1.3.
			err := tun.Reply(&vpnpb.ManagerMessage{Rpc: &vpnpb.RPC{MsgId: 77}},
				&vpnpb.TunnelMessage{Msg: &vpnpb.TunnelMessage_Wake{Wake: &vpnpb.WakeResponse{}}})
			if tt.wantWake != (err == nil) || (!tt.wantWake && !errors.Is(err, ErrUnsupportedByPeer)) {
				t.Fatalf("WakeResponse at %v = %v", tt.peer, err)
			}
		})
	}
}
