package hosttest

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/codervpn/codervpn/internal/fdtest"
	vpnpb "github.com/codervpn/codervpn/proto"
	"github.com/codervpn/codervpn/vpnlib/speaker"
)

func TestHostPeerUpdatesLogsAndViolations(t *testing.T) {
	ctx := testCtx(t)
	h := New(t, Options{})
	ft := connectFake(t, h, &fakeTunnel{})
	s := ft.speaker()
	send := func(m *vpnpb.TunnelMessage) {
		t.Helper()
		if err := s.Send(m); err != nil {
			t.Fatal(err)
		}
	}
	pu := func(u *vpnpb.PeerUpdate) *vpnpb.TunnelMessage {
		return &vpnpb.TunnelMessage{Msg: &vpnpb.TunnelMessage_PeerUpdate{PeerUpdate: u}}
	}

	send(&vpnpb.TunnelMessage{Msg: &vpnpb.TunnelMessage_Log{Log: &vpnpb.Log{Level: vpnpb.Log_INFO, Message: "connected"}}})
	send(pu(&vpnpb.PeerUpdate{
		UpsertedWorkspaces: []*vpnpb.Workspace{pbWorkspace(ws1, "ws", vpnpb.Workspace_STARTING)},
		UpsertedAgents:     []*vpnpb.Agent{pbAgent(ag1, ws1, "main", "main.ws.me.coder.")},
	}))
	st, err := h.WaitPeerUpdate(ctx, func(s *PeerState) bool { return s.Agent("ws", "main") != nil })
	if err != nil {
		t.Fatal(err)
	}
	if st.Updates != 1 || st.AgentByFQDN("main.ws.me.coder") == nil {
		t.Errorf("state %v: want the agent after one update", st)
	}

	send(pu(&vpnpb.PeerUpdate{UpsertedWorkspaces: []*vpnpb.Workspace{pbWorkspace(ws1, "ws", vpnpb.Workspace_RUNNING)}}))
	send(pu(&vpnpb.PeerUpdate{DeletedAgents: []*vpnpb.Agent{pbAgent(ag1, ws1, "main")}}))
	st, err = h.WaitPeerUpdate(ctx, func(s *PeerState) bool { return len(s.Agents) == 0 })
	if err != nil {
		t.Fatal(err)
	}
	if w := st.Workspace("ws"); st.Updates != 3 || w.GetStatus() != vpnpb.Workspace_RUNNING {
		t.Errorf("state %v: want ws RUNNING after 3 updates", st)
	}
	if n := len(h.PeerUpdates()); n != 3 {
		t.Errorf("%d PeerUpdates recorded, want 3", n)
	}
	if l, err := h.WaitLog(ctx, func(l *vpnpb.Log) bool { return l.GetMessage() == "connected" }); err != nil || l.GetLevel() != vpnpb.Log_INFO {
		t.Errorf("WaitLog = %v, %v", l, err)
	}

	// A condition that never holds fails at the deadline and shows the state.
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	_, err = h.WaitPeerUpdate(short, func(s *PeerState) bool { return s.Workspace("other") != nil })
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "ws(RUNNING)") {
		t.Errorf("WaitPeerUpdate that never holds: err = %v", err)
	}

	// What a manager would not accept is recorded, not fatal.
	send(pu(&vpnpb.PeerUpdate{UpsertedWorkspaces: []*vpnpb.Workspace{{Id: []byte{1, 2}, Name: "bad"}}}))
	send(&vpnpb.TunnelMessage{Msg: &vpnpb.TunnelMessage_Start{Start: &vpnpb.StartResponse{}}})
	callCtx, cancelCall := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancelCall()
	s.Call(callCtx, &vpnpb.TunnelMessage{Msg: &vpnpb.TunnelMessage_Stop{Stop: &vpnpb.StopResponse{}}})
	for _, want := range []string{`"bad" has a 2-byte id`, "one-way *vpnpb.TunnelMessage_Start", "TunnelMessage_Stop request"} {
		err := h.wait(ctx, want, func() bool {
			for _, v := range h.violations {
				if strings.Contains(v.Error(), want) {
					return true
				}
			}
			return false
		}, nil)
		if err != nil {
			t.Errorf("violation %q: %v; have %v", want, err, h.Violations())
		}
	}
}

func TestHostOldManagerVersion(t *testing.T) {
	ctx := testCtx(t)
	h := New(t, Options{Versions: []speaker.Version{speaker.Version12}})
	connectFake(t, h, &fakeTunnel{})
	if v := h.Version(); v != speaker.Version12 {
		t.Fatalf("negotiated %v, want 1.2", v)
	}
	if err := h.Wake(ctx); !errors.Is(err, speaker.ErrUnsupportedByPeer) {
		t.Fatalf("Wake on 1.2: err = %v, want ErrUnsupportedByPeer", err)
	}
}

func TestHostHangUp(t *testing.T) {
	h := New(t, Options{})
	ft := connectFake(t, h, &fakeTunnel{})
	h.HangUp()
	s := ft.speaker()
	select {
	case <-s.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the tunnel did not see the host hang up")
	}
	if !errors.Is(s.Err(), io.EOF) {
		t.Errorf("tunnel session ended with %v, want EOF", s.Err())
	}
	if _, err := h.Start(testCtx(t), &vpnpb.StartRequest{}); !errors.Is(err, speaker.ErrClosed) {
		t.Errorf("Start after HangUp: err = %v, want ErrClosed", err)
	}
}

func TestHostBeforeConnect(t *testing.T) {
	ctx := testCtx(t)
	h := New(t, Options{})
	if _, err := h.Start(ctx, &vpnpb.StartRequest{}); !errors.Is(err, errNotConnected) {
		t.Errorf("Start before Connect: err = %v", err)
	}
	if h.Done() != nil || h.Err() != nil || h.Version() != (speaker.Version{}) {
		t.Error("Done, Err, Version should be zero before Connect")
	}
	if _, err := h.LookupAAAA(ctx, "a.coder"); err == nil || !strings.Contains(err.Error(), "no network settings") {
		t.Errorf("LookupAAAA before settings: err = %v", err)
	}
	h.Close()
	if err := h.Connect(ctx); err == nil {
		t.Error("Connect after Close succeeded")
	}
	if _, err := h.WaitSettings(ctx, nil); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("WaitSettings after Close: err = %v", err)
	}
}

func TestHostConnectFailsOnBadPeer(t *testing.T) {
	ctx := testCtx(t)
	h := New(t, Options{})
	_, r, w := h.TunnelFiles()
	go func() {
		w.Write([]byte("codervpn manager 1.0\n")) // wrong role
		io.Copy(io.Discard, r)
	}()
	err := h.Connect(ctx)
	if err == nil || !strings.Contains(err.Error(), "handshake") {
		t.Fatalf("Connect to a peer claiming to be a manager: err = %v", err)
	}
	if err := h.Connect(ctx); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("second Connect: err = %v", err)
	}
	h.Close() // unblocks the reader goroutine above by closing the tunnel ends
}

func TestHostCloseReleasesEverything(t *testing.T) {
	before := fdtest.Take(t)
	for range 2 {
		h, err := newHost(t, Options{})
		if err != nil {
			t.Fatal(err)
		}
		ft := connectFake(t, h, &fakeTunnel{settings: goodSettings()})
		if _, err := h.Start(testCtx(t), &vpnpb.StartRequest{}); err != nil {
			t.Fatal(err)
		}
		h.Close()
		h.Close()
		// A read blocked on a closed *os.File releases the fd when it
		// returns: let the tunnel side finish before counting.
		ft.close()
	}
	before.Check(t, fdtest.Any(fdtest.Sockets, fdtest.Pipes), "two sessions")
}
