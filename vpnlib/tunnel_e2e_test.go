package vpnlib_test

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/coder/coder/v2/codersdk"

	vpnpb "github.com/codervpn/codervpn/proto"
	"github.com/codervpn/codervpn/vpnlib/hosttest"
	"github.com/codervpn/codervpn/vpnlib/vpntest"
)

// TestTunnelEndToEnd starts the tunnel against the embedded deployment, then
// reaches an agent's HTTP server through the host's network stack, the utun
// socketpair, the engine and the relay or direct path, in each transport
// mode. It also checks the settings the host applied, DNS through the
// tunnel, the headers the deployment saw, and that no Log leaks a secret.
func TestTunnelEndToEnd(t *testing.T) {
	cases := []struct {
		name string
		opts vpntest.Options
	}{
		{name: "direct", opts: vpntest.Options{}},
		{name: "derp-only", opts: vpntest.Options{BlockDirect: true}},
		{name: "derp-websockets", opts: vpntest.Options{BlockDirect: true, DERPForceWebSockets: true}},
		// The DERP map names a relay host nobody can reach, as coderd's does
		// when it is reached by another name than its access URL: only a
		// tunnel that points the embedded relay at coder_url gets through.
		{name: "derp-renamed-relay", opts: vpntest.Options{BlockDirect: true, RelayHostName: "relay.coder.invalid"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			const headerValue = "custom-header-secret-value"
			opts := tc.opts
			r := newRig(t, rigOptions{deployment: &opts, host: hosttest.Options{SendTunFD: true}})
			agent, err := r.d.AddRunningAgent(r.ctx, "dev", "main")
			if err != nil {
				t.Fatal(err)
			}
			r.start(func(req *vpnpb.StartRequest) {
				req.Headers = []*vpnpb.StartRequest_Header{{Name: "X-Test-Header", Value: headerValue}}
				req.DeviceId, req.DeviceOs, req.CoderDesktopVersion = "device-1", "macOS", "0.9.0"
			})

			cfg, ok := r.h.Applied()
			if !ok {
				t.Fatal("Start succeeded before the host applied settings")
			}
			checkSettings(t, cfg)

			got := r.waitAgent("dev", "main")
			wantFQDN := []string{"dev.coder.", "main.dev.me.coder.", "main.dev." + r.d.OwnerName + ".coder."}
			if !slices.Equal(got.Fqdn, wantFQDN) || !slices.Equal(got.IpAddrs, []string{agent.Addr.String()}) {
				t.Fatalf("agent fqdn %v ips %v, want %v %v", got.Fqdn, got.IpAddrs, wantFQDN, agent.Addr)
			}

			// DNS for the agent's name, answered through the tunnel. The
			// host has the DNS settings from the first request on, before
			// the engine has the names: ask until the engine answers.
			if _, err := r.h.WaitSettings(r.ctx, func(c hosttest.NetConfig) bool { return len(c.DNSServers) > 0 }); err != nil {
				t.Fatal(err)
			}
			var addrs []netip.Addr
			waitFor(r.ctx, t, "main.dev.me.coder to resolve through the tunnel", func() bool {
				addrs, err = r.h.LookupAAAA(r.ctx, "main.dev.me.coder")
				return err == nil
			})
			if !slices.Contains(addrs, agent.Addr) {
				t.Fatalf("main.dev.me.coder resolved to %v, want %v", addrs, agent.Addr)
			}

			body := httpGetThroughTunnel(t, r, netip.AddrPortFrom(agent.Addr, agent.HTTPPort))
			if !strings.Contains(body, "hello from agent main") {
				t.Fatalf("agent answered %q", body)
			}

			// Path: with direct UDP blocked, the ping must go over DERP;
			// with it allowed, the path must become direct.
			st, err := r.h.WaitPeerUpdate(r.ctx, func(s *hosttest.PeerState) bool {
				a := s.Agent("dev", "main")
				return a.GetLastPing() != nil && a.GetLastHandshake() != nil &&
					(opts.BlockDirect || a.GetLastPing().GetDidP2P())
			})
			if err != nil {
				t.Fatal(err)
			}
			if lp := st.Agent("dev", "main").GetLastPing(); opts.BlockDirect && lp.DidP2P {
				t.Fatalf("ping went direct with direct connections blocked: %v", lp)
			} else if lp.PreferredDerp == "" {
				t.Fatalf("last_ping names no DERP region: %v", lp)
			}

			checkHeadersOnce(t, r.d, headerValue)
			if opts.DERPForceWebSockets {
				checkTunnelDERPWebsocket(t, r.d, headerValue)
			}
			r.stop()
			for _, secret := range []string{r.d.Token, headerValue} {
				if text, found := logsContain(r.h, secret); found {
					t.Fatalf("a Log message carries a secret: %s", text)
				}
			}
			if len(r.h.Logs()) == 0 {
				t.Fatal("no Log messages reached the manager")
			}
		})
	}
}

func checkSettings(t *testing.T, cfg hosttest.NetConfig) {
	t.Helper()
	coderPrefix := netip.MustParsePrefix("fd60:627a:a42b::/48")
	if len(cfg.Addrs) != 1 || cfg.Addrs[0].Bits() != 128 || !coderPrefix.Contains(cfg.Addrs[0].Addr()) {
		t.Errorf("addresses %v, want one /128 in %v", cfg.Addrs, coderPrefix)
	}
	if !slices.Contains(cfg.Routes, coderPrefix) {
		t.Errorf("routes %v lack %v", cfg.Routes, coderPrefix)
	}
	if cfg.MTU != 1280 {
		t.Errorf("MTU %d, want 1280", cfg.MTU)
	}
}

// checkHeadersOnce checks every request the deployment saw carried the
// token and the custom header exactly once, and the telemetry header.
func checkHeadersOnce(t *testing.T, d *vpntest.Deployment, headerValue string) {
	t.Helper()
	paths := map[string]bool{}
	for _, req := range d.Requests() {
		if !strings.HasPrefix(req.Path, "/api/v2/") {
			continue
		}
		paths[req.Path] = true
		if v := req.Header.Values("X-Test-Header"); !slices.Equal(v, []string{headerValue}) {
			t.Errorf("%s: X-Test-Header %q, want it once", req.Path, v)
		}
		if v := req.Header.Values(codersdk.SessionTokenHeader); len(v) != 1 {
			t.Errorf("%s: %d session token headers", req.Path, len(v))
		}
		if v := req.Header.Get(codersdk.CoderDesktopTelemetryHeader); !strings.Contains(v, `"device_id":"device-1"`) {
			t.Errorf("%s: telemetry header %q", req.Path, v)
		}
	}
	for _, p := range []string{"/api/v2/users/me", "/api/v2/workspaceagents/connection", "/api/v2/tailnet"} {
		if !paths[p] {
			t.Errorf("the deployment never saw %s (saw %v)", p, paths)
		}
	}
}

// checkTunnelDERPWebsocket checks the tunnel's own DERP connections (told
// from the agents' by the custom header the tunnel sends) used websockets.
func checkTunnelDERPWebsocket(t *testing.T, d *vpntest.Deployment, headerValue string) {
	t.Helper()
	n := 0
	for _, req := range d.RequestsTo("/derp") {
		if req.Header.Get("X-Test-Header") != headerValue {
			continue
		}
		n++
		if !strings.EqualFold(req.Header.Get("Upgrade"), "websocket") {
			t.Errorf("the tunnel's DERP request had Upgrade %q, want websocket", req.Header.Get("Upgrade"))
		}
	}
	if n == 0 {
		t.Error("the deployment saw no DERP request from the tunnel")
	}
}

// httpGetThroughTunnel fetches / from addr over a TCP connection the host's
// network stack makes through the tunnel.
func httpGetThroughTunnel(t *testing.T, r *rig, addr netip.AddrPort) string {
	t.Helper()
	return httpGet(r.ctx, t, r.h, addr)
}

// httpGet fetches / from addr through h's tunnel.
func httpGet(ctx context.Context, t *testing.T, h *hosttest.Host, addr netip.AddrPort) string {
	t.Helper()
	body, err := h.HTTPGet(ctx, addr, "/")
	if err != nil {
		t.Fatal(err)
	}
	return body
}

func agentID(a *vpnpb.Agent) uuid.UUID { return uuid.UUID(a.GetId()) }
