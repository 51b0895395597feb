package hosttest

import (
	"context"
	"sync"
	"testing"
	"time"

	vpnpb "github.com/codervpn/codervpn/proto"
	"github.com/codervpn/codervpn/vpnlib/speaker"
)

// fakeTunnel is the smallest tunnel that exercises a Host: on Start it asks
// the manager to apply settings and reports the answer; it answers Stop
// (closing its side), GetPeerUpdate (with snapshot) and Wake.
type fakeTunnel struct {
	s        *speaker.Tunnel
	settings *vpnpb.NetworkSettingsRequest
	snapshot *vpnpb.PeerUpdate
	timeout  time.Duration // for the NetworkSettings call

	mu        sync.Mutex
	startReqs []*vpnpb.StartRequest
	wg        sync.WaitGroup
}

// connectFake starts a fake tunnel on h's tunnel ends and connects h to it.
func connectFake(t *testing.T, h *Host, ft *fakeTunnel) *fakeTunnel {
	t.Helper()
	if ft.timeout == 0 {
		ft.timeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, r, w := h.TunnelFiles()
	type result struct {
		s   *speaker.Tunnel
		err error
	}
	ch := make(chan result, 1)
	go func() {
		s, err := speaker.NewTunnel(ctx, r, w, speaker.Options[*vpnpb.ManagerMessage]{
			OnRequest: func(req *vpnpb.ManagerMessage) {
				ft.wg.Add(1)
				go ft.serve(req)
			},
		})
		ch <- result{s, err}
	}()
	if err := h.Connect(ctx); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	res := <-ch
	if res.err != nil {
		t.Fatalf("tunnel handshake: %v", res.err)
	}
	ft.mu.Lock()
	ft.s = res.s
	ft.mu.Unlock()
	t.Cleanup(ft.close)
	return ft
}

// close ends the fake tunnel's session and waits for its goroutines; only
// then are the fds it was reading from really closed.
func (ft *fakeTunnel) close() {
	ft.speaker().Close()
	ft.wg.Wait()
}

func (ft *fakeTunnel) speaker() *speaker.Tunnel {
	for {
		ft.mu.Lock()
		s := ft.s
		ft.mu.Unlock()
		if s != nil {
			return s
		}
		time.Sleep(time.Millisecond) // only between handshake and connectFake's return
	}
}

func (ft *fakeTunnel) serve(req *vpnpb.ManagerMessage) {
	defer ft.wg.Done()
	s := ft.speaker()
	switch m := req.GetMsg().(type) {
	case *vpnpb.ManagerMessage_Start:
		ft.mu.Lock()
		ft.startReqs = append(ft.startReqs, m.Start)
		ft.mu.Unlock()
		resp := &vpnpb.StartResponse{Success: true}
		ctx, cancel := context.WithTimeout(context.Background(), ft.timeout)
		defer cancel()
		reply, err := s.Call(ctx, &vpnpb.TunnelMessage{Msg: &vpnpb.TunnelMessage_NetworkSettings{NetworkSettings: ft.settings}})
		switch {
		case err != nil:
			resp = &vpnpb.StartResponse{ErrorMessage: "apply network settings: " + err.Error()}
		case !reply.GetNetworkSettings().GetSuccess():
			resp = &vpnpb.StartResponse{ErrorMessage: "network settings refused: " + reply.GetNetworkSettings().GetErrorMessage()}
		}
		s.Reply(req, &vpnpb.TunnelMessage{Msg: &vpnpb.TunnelMessage_Start{Start: resp}})
	case *vpnpb.ManagerMessage_Stop:
		s.ReplyFinal(req, &vpnpb.TunnelMessage{Msg: &vpnpb.TunnelMessage_Stop{Stop: &vpnpb.StopResponse{Success: true}}})
	case *vpnpb.ManagerMessage_GetPeerUpdate:
		s.Reply(req, &vpnpb.TunnelMessage{Msg: &vpnpb.TunnelMessage_PeerUpdate{PeerUpdate: ft.snapshot}})
	case *vpnpb.ManagerMessage_Wake:
		s.Reply(req, &vpnpb.TunnelMessage{Msg: &vpnpb.TunnelMessage_Wake{Wake: &vpnpb.WakeResponse{}}})
	}
}

// goodSettings are what a correct tunnel sends: its /128, the Coder prefix,
// the DNS server with the suffix as match domain, MTU 1280.
func goodSettings() *vpnpb.NetworkSettingsRequest {
	return &vpnpb.NetworkSettingsRequest{
		Mtu: 1280,
		Ipv6Settings: &vpnpb.NetworkSettingsRequest_IPv6Settings{
			Addrs:         []string{hostAddr.String()},
			PrefixLengths: []uint32{128},
			IncludedRoutes: []*vpnpb.NetworkSettingsRequest_IPv6Settings_IPv6Route{
				{Destination: "fd60:627a:a42b::", PrefixLength: 48},
			},
		},
		DnsSettings: &vpnpb.NetworkSettingsRequest_DNSSettings{
			Servers:      []string{dnsAddr.String()},
			MatchDomains: []string{"coder"},
		},
	}
}
