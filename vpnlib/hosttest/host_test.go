package hosttest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/codervpn/codervpn/internal/netstack"
	"github.com/codervpn/codervpn/internal/netstack/netstacktest"
	vpnpb "github.com/codervpn/codervpn/proto"
	"github.com/codervpn/codervpn/vpnlib/speaker"
)

var (
	ws1 = uuid.MustParse("00000000-0000-0000-0000-0000000000a1")
	ag1 = uuid.MustParse("00000000-0000-0000-0000-0000000000b1")
)

func pbWorkspace(id uuid.UUID, name string, st vpnpb.Workspace_Status) *vpnpb.Workspace {
	return &vpnpb.Workspace{Id: id[:], Name: name, Status: st}
}

func pbAgent(id, ws uuid.UUID, name string, fqdn ...string) *vpnpb.Agent {
	return &vpnpb.Agent{Id: id[:], WorkspaceId: ws[:], Name: name, Fqdn: fqdn}
}

var (
	hostAddr  = netip.MustParseAddr("fd60:627a:a42b:1::1")
	agentAddr = netip.MustParseAddr("fd60:627a:a42b:2::2")
	dnsAddr   = netip.MustParseAddr("fd60:627a:a42b::53")
	prefix48  = netip.MustParsePrefix("fd60:627a:a42b::/48")
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestHostSession drives a whole session the way an end-to-end test of the
// tunnel will: the fake tunnel side is a second Netstack on the tunnel end
// of the socketpair that owns the agent's and the DNS server's addresses.
func TestHostSession(t *testing.T) {
	ctx := testCtx(t)
	h := New(t, Options{SendTunFD: true})
	tunFile, _, _ := h.TunnelFiles()
	peer, err := netstack.New(int(tunFile.Fd()), 1280)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { peer.Close() })
	for _, a := range []netip.Addr{agentAddr, dnsAddr} {
		if err := peer.AddAddress(netip.PrefixFrom(a, 128)); err != nil {
			t.Fatal(err)
		}
	}
	peer.AddRoute(netip.MustParsePrefix("::/0"))
	l, err := peer.ListenTCP(netip.AddrPortFrom(agentAddr, 80))
	if err != nil {
		t.Fatal(err)
	}
	netstacktest.ServeEcho(t, l)
	pc, err := peer.ListenUDP(netip.AddrPortFrom(dnsAddr, 53))
	if err != nil {
		t.Fatal(err)
	}
	netstacktest.ServeAAAA(t, pc, map[string]netip.Addr{"main.ws.me.coder.": agentAddr})

	snapshot := &vpnpb.PeerUpdate{UpsertedWorkspaces: []*vpnpb.Workspace{pbWorkspace(ws1, "ws", vpnpb.Workspace_RUNNING)}}
	ft := connectFake(t, h, &fakeTunnel{settings: goodSettings(), snapshot: snapshot})
	if v := h.Version(); v != speaker.CurrentVersion {
		t.Errorf("negotiated %v, want %v", v, speaker.CurrentVersion)
	}

	resp, err := h.Start(ctx, &vpnpb.StartRequest{CoderUrl: "http://127.0.0.1:1", ApiToken: "tok"})
	if err != nil || !resp.GetSuccess() {
		t.Fatalf("Start = %v, %v; want success", resp, err)
	}
	ft.mu.Lock()
	gotFD := ft.startReqs[0].GetTunnelFileDescriptor()
	ft.mu.Unlock()
	if _, _, _ = h.TunnelFDs(); gotFD != int32(h.tunFD) {
		t.Errorf("tunnel_file_descriptor = %d, want the tunnel end %d", gotFD, h.tunFD)
	}
	cfg, ok := h.Applied()
	if !ok || h.Netstack().MTU() != 1280 || len(cfg.Routes) != 1 || cfg.Routes[0] != prefix48 {
		t.Fatalf("applied %+v (ok %v), MTU %d; want the good settings", cfg, ok, h.Netstack().MTU())
	}

	conn, err := h.DialTCP(ctx, netip.AddrPortFrom(agentAddr, 80))
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Repeat([]byte("hello through utun "), 500)
	go conn.Write(want)
	got := make([]byte, len(want))
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(conn, got); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("echo through the host netstack: %v", err)
	}
	conn.Close()

	addrs, err := h.LookupAAAA(ctx, "main.ws.me.coder")
	if err != nil || len(addrs) != 1 || addrs[0] != agentAddr {
		t.Fatalf("LookupAAAA = %v, %v; want [%s]", addrs, err, agentAddr)
	}
	if _, err := h.LookupAAAA(ctx, "example.com"); err == nil || !strings.Contains(err.Error(), "match domains") {
		t.Errorf("LookupAAAA outside the match domains: err = %v", err)
	}

	pu, err := h.GetPeerUpdate(ctx)
	if err != nil || len(pu.GetUpsertedWorkspaces()) != 1 {
		t.Fatalf("GetPeerUpdate = %v, %v", pu, err)
	}
	if err := h.Wake(ctx); err != nil {
		t.Fatalf("Wake: %v", err)
	}
	stop, err := h.Stop(ctx)
	if err != nil || !stop.GetSuccess() {
		t.Fatalf("Stop = %v, %v", stop, err)
	}
	select {
	case <-h.Done():
	case <-ctx.Done():
		t.Fatal("the session did not end after StopResponse")
	}
	if !errors.Is(h.Err(), io.EOF) {
		t.Errorf("Err = %v, want a clean EOF", h.Err())
	}
	if v := h.Violations(); len(v) != 0 {
		t.Errorf("violations: %v", v)
	}
}

func TestHostSettingsAnswers(t *testing.T) {
	badAddr := goodSettings()
	badAddr.Ipv6Settings.Addrs = []string{"not-an-ip"}
	for _, tc := range []struct {
		name        string
		opts        Options
		settings    *vpnpb.NetworkSettingsRequest
		wantSuccess bool
		wantErr     string // in the StartResponse
		wantApplied bool
	}{
		{name: "accepted", settings: goodSettings(), wantSuccess: true, wantApplied: true},
		{name: "refused", opts: Options{RefuseSettings: "the user said no"}, settings: goodSettings(),
			wantErr: "network settings refused: the user said no"},
		{name: "ignored", opts: Options{IgnoreSettings: true}, settings: goodSettings(),
			wantErr: "context deadline exceeded"},
		{name: "invalid", settings: badAddr,
			wantErr: `invalid network settings: ipv6_settings.addrs[0]: "not-an-ip" is not an IPv6 address`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			h := New(t, tc.opts)
			connectFake(t, h, &fakeTunnel{settings: tc.settings, timeout: 300 * time.Millisecond})
			resp, err := h.Start(ctx, &vpnpb.StartRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if resp.GetSuccess() != tc.wantSuccess || !strings.Contains(resp.GetErrorMessage(), tc.wantErr) {
				t.Fatalf("StartResponse %v, want success=%v and error containing %q", resp, tc.wantSuccess, tc.wantErr)
			}
			if n := len(h.Settings()); n != 1 {
				t.Errorf("%d settings recorded, want 1", n)
			}
			if _, ok := h.Applied(); ok != tc.wantApplied {
				t.Errorf("applied = %v, want %v", ok, tc.wantApplied)
			}
			if tc.wantApplied {
				if _, err := h.WaitSettings(ctx, func(c NetConfig) bool { return c.MTU == 1280 }); err != nil {
					t.Error(err)
				}
			}
		})
	}
}
