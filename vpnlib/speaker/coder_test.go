package speaker

import (
	"context"
	"errors"
	"io"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"cdr.dev/slog/v3"
	"github.com/google/uuid"
	"tailscale.com/ipn/ipnstate"
	"tailscale.com/tailcfg"
	"tailscale.com/util/dnsname"

	"github.com/coder/coder/v2/tailnet"
	codervpn "github.com/coder/coder/v2/vpn"

	vpnpb "github.com/codervpn/codervpn/proto"
)

// These tests prove wire compatibility with Coder's own implementation of the
// protocol (github.com/coder/coder/v2/vpn), used here only as an independent
// peer: its Tunnel is driven by our Manager over real pipes.

// fileRWC joins a pipe's read end and another's write end into the single
// io.ReadWriteCloser Coder's tunnel wants.
type fileRWC struct {
	r, w *os.File
}

func (f fileRWC) Read(p []byte) (int, error)  { return f.r.Read(p) }
func (f fileRWC) Write(p []byte) (int, error) { return f.w.Write(p) }
func (f fileRWC) Close() error                { return errors.Join(f.r.Close(), f.w.Close()) }

// fakeCoderClient stands in for the connection to coderd: it fails the first
// NewConn (so the tunnel answers Start with an error) and then hands out
// fakeCoderConn.
type fakeCoderClient struct {
	mu      sync.Mutex
	calls   int
	conn    *fakeCoderConn
	gotURL  string
	gotAuth string
}

func (c *fakeCoderClient) NewConn(_ context.Context, u *url.URL, token string, _ *codervpn.Options) (codervpn.Conn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	c.gotURL, c.gotAuth = u.String(), token
	if c.calls == 1 {
		return nil, errors.New("fake coderd is unreachable")
	}
	return c.conn, nil
}

var (
	testWorkspaceID = uuid.MustParse("11111111-2222-3333-4444-555555555555")
	testAgentID     = uuid.MustParse("66666666-7777-8888-9999-000000000000")
)

// fakeCoderConn is a tailnet connection with one workspace and one agent.
type fakeCoderConn struct {
	closed chan struct{}
	once   sync.Once
}

func (*fakeCoderConn) CurrentWorkspaceState() (tailnet.WorkspaceUpdate, error) {
	return tailnet.WorkspaceUpdate{
		Kind:               tailnet.Snapshot,
		UpsertedWorkspaces: []*tailnet.Workspace{{ID: testWorkspaceID, Name: "dev"}},
		UpsertedAgents: []*tailnet.Agent{{
			ID: testAgentID, Name: "main", WorkspaceID: testWorkspaceID,
			Hosts: map[dnsname.FQDN][]netip.Addr{"main.dev.me.coder.": {netip.MustParseAddr("fd60:627a:a42b::1")}},
		}},
	}, nil
}

func (*fakeCoderConn) GetPeerDiagnostics(uuid.UUID) tailnet.PeerDiagnostics {
	return tailnet.PeerDiagnostics{}
}

func (*fakeCoderConn) Ping(context.Context, uuid.UUID) (time.Duration, bool, *ipnstate.PingResult, error) {
	return 0, false, nil, errors.New("fake conn does not ping")
}
func (*fakeCoderConn) Node() *tailnet.Node       { return nil }
func (*fakeCoderConn) DERPMap() *tailcfg.DERPMap { return nil }
func (*fakeCoderConn) Rebind()                   {}
func (c *fakeCoderConn) Close() error            { c.once.Do(func() { close(c.closed) }); return nil }

func TestCoderTunnelAgainstOurManager(t *testing.T) {
	t.Parallel()
	mEnd, tEnd := newPipePair(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	client := &fakeCoderClient{conn: &fakeCoderConn{closed: make(chan struct{})}}

	type tunRes struct {
		tun *codervpn.Tunnel
		err error
	}
	tunCh := make(chan tunRes, 1)
	go func() {
		tun, err := codervpn.NewTunnel(ctx, slog.Logger{}, fileRWC{r: tEnd.r, w: tEnd.w}, client)
		tunCh <- tunRes{tun, err}
	}()
	reqs, onReq := queue[*vpnpb.TunnelMessage]()
	m, err := NewManager(ctx, mEnd.r, mEnd.w, Options[*vpnpb.TunnelMessage]{OnRequest: onReq})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	tr := recv(t, tunCh, "Coder's tunnel handshake")
	if tr.err != nil {
		t.Fatal(tr.err)
	}
	defer func() {
		// Coder's tunnel stops its goroutines when its context ends.
		cancel()
		_ = tr.tun.Close()
	}()
	if m.Version() != (Version{1, 3}) {
		t.Fatalf("negotiated %v with Coder's tunnel, want 1.3", m.Version())
	}

	start := func() *vpnpb.StartResponse {
		t.Helper()
		resp, err := m.Call(ctx, &vpnpb.ManagerMessage{Msg: &vpnpb.ManagerMessage_Start{Start: &vpnpb.StartRequest{
			CoderUrl: "https://coder.example.com", ApiToken: "secret-token", DeviceOs: "linux",
		}}})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetStart()
	}
	// 1. A Start that fails comes back as an error reply.
	if sr := start(); sr.GetSuccess() || !strings.Contains(sr.GetErrorMessage(), "fake coderd is unreachable") {
		t.Fatalf("first Start = %v, want failure carrying the client's error", sr)
	}
	// 2. A Start that works.
	if sr := start(); !sr.GetSuccess() {
		t.Fatalf("second Start = %v, want success", sr)
	}
	if client.gotURL != "https://coder.example.com" || client.gotAuth != "secret-token" {
		t.Fatalf("Coder's tunnel got url %q token %q from our StartRequest", client.gotURL, client.gotAuth)
	}

	// 3. GetPeerUpdate: Coder's reply decodes into our types.
	resp, err := m.Call(ctx, &vpnpb.ManagerMessage{Msg: &vpnpb.ManagerMessage_GetPeerUpdate{GetPeerUpdate: &vpnpb.GetPeerUpdate{}}})
	if err != nil {
		t.Fatal(err)
	}
	pu := resp.GetPeerUpdate()
	if len(pu.GetUpsertedWorkspaces()) != 1 || pu.GetUpsertedWorkspaces()[0].GetName() != "dev" ||
		len(pu.GetUpsertedAgents()) != 1 || pu.GetUpsertedAgents()[0].GetName() != "main" ||
		pu.GetUpsertedAgents()[0].GetFqdn()[0] != "main.dev.me.coder." ||
		uuid.UUID(pu.GetUpsertedAgents()[0].GetId()) != testAgentID {
		t.Fatalf("PeerUpdate from Coder's tunnel decoded as %v", pu)
	}

	// 4. An RPC in the other direction: Coder's tunnel asks us to apply
	// network settings, our OnRequest/Reply answers it.
	applied := make(chan error, 1)
	go func() {
		applied <- tr.tun.ApplyNetworkSettings(ctx, &codervpn.NetworkSettingsRequest{Mtu: 1280, TunnelRemoteAddress: "127.0.0.1"})
	}()
	req := recv(t, reqs, "NetworkSettingsRequest from Coder's tunnel")
	if req.GetNetworkSettings().GetMtu() != 1280 || req.GetRpc().GetMsgId() == 0 {
		t.Fatalf("NetworkSettingsRequest decoded as %v", req)
	}
	if err := m.Reply(req, &vpnpb.ManagerMessage{Msg: &vpnpb.ManagerMessage_NetworkSettings{
		NetworkSettings: &vpnpb.NetworkSettingsResponse{Success: true},
	}}); err != nil {
		t.Fatal(err)
	}
	if err := recv(t, applied, "ApplyNetworkSettings"); err != nil {
		t.Fatalf("Coder's tunnel did not accept our reply: %v", err)
	}

	// 5. A clean Stop: StopResponse, then EOF.
	resp, err = m.Call(ctx, &vpnpb.ManagerMessage{Msg: &vpnpb.ManagerMessage_Stop{Stop: &vpnpb.StopRequest{}}})
	if err != nil || !resp.GetStop().GetSuccess() {
		t.Fatalf("Stop = %v, %v", resp, err)
	}
	waitDone(t, client.conn.closed, "Coder's tunnel to close its connection")
	waitDone(t, m.Done(), "EOF after the StopResponse")
	if err := m.Err(); !errors.Is(err, io.EOF) {
		t.Fatalf("session after Stop ended with %v, want a clean io.EOF", err)
	}
	if n := m.DroppedReplies(); n != 0 {
		t.Fatalf("DroppedReplies = %d", n)
	}
}
