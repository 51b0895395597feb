package speaker

import (
	"bytes"
	"errors"
	"io"
	"testing"

	vpnpb "github.com/codervpn/codervpn/proto"
)

// These tests talk to our speakers in bytes written out by hand, so that a
// mistake shared by both of our sides (which would cancel out in a
// speaker-to-speaker test) cannot hide.

func readExactly(t *testing.T, r io.Reader, want []byte, what string) {
	t.Helper()
	got := make([]byte, len(want))
	if _, err := io.ReadFull(r, got); err != nil {
		t.Fatalf("reading %s: %v (got % x so far)", what, err, got)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s:\n got % x (%q)\nwant % x (%q)", what, got, got, want, want)
	}
}

func TestRawManagerBytesAgainstOurTunnel(t *testing.T) {
	t.Parallel()
	reqs, onReq := queue[*vpnpb.ManagerMessage]()
	peer, us := newPipePair(t)
	// The manager's header and its first request arrive in one write: the
	// handshake must not swallow any of the frame.
	var hand []byte
	hand = append(hand, "codervpn manager 1.3\n"...)
	// ManagerMessage{rpc: {msg_id: 1}, get_peer_update: {}}
	hand = append(hand, 0, 0, 0, 6, 0x0a, 0x02, 0x08, 0x01, 0x12, 0x00)
	if _, err := peer.w.Write(hand); err != nil {
		t.Fatal(err)
	}
	tun, err := NewTunnel(testContext(t), us.r, us.w, Options[*vpnpb.ManagerMessage]{OnRequest: onReq})
	if err != nil {
		t.Fatal(err)
	}
	defer tun.Close()
	readExactly(t, peer.r, []byte("codervpn tunnel 1.3\n"), "tunnel header")
	if tun.Version() != (Version{1, 3}) {
		t.Fatalf("negotiated %v", tun.Version())
	}

	req := recv(t, reqs, "GetPeerUpdate request")
	if req.GetGetPeerUpdate() == nil || req.GetRpc().GetMsgId() != 1 {
		t.Fatalf("tunnel decoded %v", req)
	}
	if err := tun.Reply(req, &vpnpb.TunnelMessage{Msg: &vpnpb.TunnelMessage_PeerUpdate{PeerUpdate: &vpnpb.PeerUpdate{}}}); err != nil {
		t.Fatal(err)
	}
	// TunnelMessage{rpc: {response_to: 1}, peer_update: {}}
	readExactly(t, peer.r, []byte{0, 0, 0, 6, 0x0a, 0x02, 0x10, 0x01, 0x1a, 0x00}, "PeerUpdate reply frame")

	// A one-way Log: TunnelMessage{log: {level: WARN, message: "hi"}}
	if err := tun.Send(&vpnpb.TunnelMessage{Msg: &vpnpb.TunnelMessage_Log{Log: &vpnpb.Log{Level: vpnpb.Log_WARN, Message: "hi"}}}); err != nil {
		t.Fatal(err)
	}
	readExactly(t, peer.r, []byte{0, 0, 0, 8, 0x12, 0x06, 0x08, 0x02, 0x12, 0x02, 'h', 'i'}, "Log frame")

	// The manager hangs up between frames: a clean end.
	_ = peer.w.Close()
	waitDone(t, tun.Done(), "session end")
	if err := tun.Err(); !errors.Is(err, io.EOF) {
		t.Fatalf("Err = %v, want io.EOF", err)
	}
	if rest, err := io.ReadAll(peer.r); err != nil || len(rest) != 0 {
		t.Fatalf("after the end the manager read %q, %v; want a bare EOF", rest, err)
	}
}

func TestRawTunnelBytesAgainstOurManager(t *testing.T) {
	t.Parallel()
	msgs, onMsg := queue[*vpnpb.TunnelMessage]()
	peer, us := newPipePair(t)
	if _, err := peer.w.WriteString("codervpn tunnel 1.0,2.5\n"); err != nil {
		t.Fatal(err)
	}
	m, err := NewManager(testContext(t), us.r, us.w, Options[*vpnpb.TunnelMessage]{OnMessage: onMsg})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	readExactly(t, peer.r, []byte("codervpn manager 1.3\n"), "manager header")
	if m.Version() != (Version{1, 0}) {
		t.Fatalf("negotiated %v, want 1.0", m.Version())
	}

	stopResp := make(chan *vpnpb.TunnelMessage, 1)
	go func() {
		resp, err := m.Call(testContext(t), &vpnpb.ManagerMessage{Msg: &vpnpb.ManagerMessage_Stop{Stop: &vpnpb.StopRequest{}}})
		if err != nil {
			t.Error(err)
		}
		stopResp <- resp
	}()
	// ManagerMessage{rpc: {msg_id: 1}, stop: {}}
	readExactly(t, peer.r, []byte{0, 0, 0, 6, 0x0a, 0x02, 0x08, 0x01, 0x2a, 0x00}, "Stop request frame")

	var hand []byte
	// TunnelMessage{log: {message: "bye"}}: one-way, before the reply
	hand = append(hand, 0, 0, 0, 7, 0x12, 0x05, 0x12, 0x03, 'b', 'y', 'e')
	// TunnelMessage{rpc: {response_to: 1}, stop: {success: true}}
	hand = append(hand, 0, 0, 0, 8, 0x0a, 0x02, 0x10, 0x01, 0x32, 0x02, 0x08, 0x01)
	if _, err := peer.w.Write(hand); err != nil {
		t.Fatal(err)
	}
	_ = peer.w.Close()

	if got := recv(t, msgs, "log").GetLog().GetMessage(); got != "bye" {
		t.Fatalf("log message %q", got)
	}
	resp := recv(t, stopResp, "Stop reply")
	if !resp.GetStop().GetSuccess() || resp.GetRpc().GetResponseTo() != 1 {
		t.Fatalf("Stop reply decoded as %v", resp)
	}
	waitDone(t, m.Done(), "session end")
	if err := m.Err(); !errors.Is(err, io.EOF) {
		t.Fatalf("Err = %v, want io.EOF", err)
	}
}
