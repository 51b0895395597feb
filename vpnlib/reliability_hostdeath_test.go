package vpnlib_test

import (
	"context"
	"io"
	"testing"
	"time"

	"cdr.dev/slog/v3"
	"cdr.dev/slog/v3/sloggers/slogtest"

	"github.com/codervpn/codervpn/internal/fdtest"
	vpnpb "github.com/codervpn/codervpn/proto"
	"github.com/codervpn/codervpn/vpnlib"
	"github.com/codervpn/codervpn/vpnlib/hosttest"
	"github.com/codervpn/codervpn/vpnlib/vpntest"
)

// hostDeathBound is how soon a tunnel must be gone, fds and all, after its
// host died (the bound).
const hostDeathBound = time.Second

// TestHostDies kills the host (both of its pipe ends closed, as when the
// process dies) at every stage of a session. The tunnel must end within
// hostDeathBound and leave no fd behind: every fd open once it ended was
// open before it was created. Goroutines are checked at cleanup.
func TestHostDies(t *testing.T) {
	cases := []struct {
		name       string
		deployment bool
		// live brings the session to the stage at which the host dies.
		// silent is a deployment that never answers.
		live func(t *testing.T, ctx context.Context, h *hosttest.Host, d *vpntest.Deployment, silent string)
	}{
		{
			name: "before the handshake",
			live: func(*testing.T, context.Context, *hosttest.Host, *vpntest.Deployment, string) {},
		},
		{
			name: "after the handshake",
			live: func(t *testing.T, ctx context.Context, h *hosttest.Host, _ *vpntest.Deployment, _ string) {
				if err := h.Connect(ctx); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name: "during Start",
			live: func(t *testing.T, ctx context.Context, h *hosttest.Host, _ *vpntest.Deployment, silent string) {
				if err := h.Connect(ctx); err != nil {
					t.Fatal(err)
				}
				// Start waits on the silent deployment until its deadline.
				go func() { _, _ = h.Start(ctx, &vpnpb.StartRequest{CoderUrl: silent, ApiToken: "token-of-a-dead-host"}) }()
				if _, err := h.WaitLog(ctx, func(l *vpnpb.Log) bool { return l.GetMessage() == "starting the tunnel" }); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name:       "while running",
			deployment: true,
			live: func(t *testing.T, ctx context.Context, h *hosttest.Host, d *vpntest.Deployment, _ string) {
				if err := h.Connect(ctx); err != nil {
					t.Fatal(err)
				}
				resp, err := h.Start(ctx, &vpnpb.StartRequest{CoderUrl: d.URL.String(), ApiToken: d.Token})
				if err != nil || !resp.Success {
					t.Fatalf("start: %v %v", resp, err)
				}
				a := d.Agents()[0]
				if _, err := h.WaitPeerUpdate(ctx, func(s *hosttest.PeerState) bool { return s.Agent("dev", "main") != nil }); err != nil {
					t.Fatal(err)
				}
				waitTraffic(ctx, t, h, a, time.Now())
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			checkNoLeaks(t)
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			var d *vpntest.Deployment
			if tc.deployment {
				d = vpntest.New(t, vpntest.Options{Logger: slogtest.Make(t, &slogtest.Options{IgnoreErrors: true}).Leveled(slog.LevelInfo)})
				ws, err := d.AddWorkspace("dev", "running")
				if err != nil {
					t.Fatal(err)
				}
				if _, err := d.AddAgent(ctx, ws.ID, "main"); err != nil {
					t.Fatal(err)
				}
			}
			silent := silentListener(t)
			h := hosttest.New(t, hosttest.Options{})
			before := fdtest.Take(t)
			tunFile, read, write := h.TunnelFiles()
			tun, err := vpnlib.NewTunnel(vpnlib.TunnelConfig{
				TunFD: int(tunFile.Fd()), RPCRead: read, RPCWrite: write,
				Logger: slogtest.Make(t, &slogtest.Options{IgnoreErrors: true}).Leveled(slog.LevelInfo),
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = tun.Close() })
			tc.live(t, ctx, h, d, silent)

			diedAt := time.Now()
			h.HangUp()
			waitTunnelGone(t, tun, diedAt, before, d)
		})
	}
}

// TestHostDiesMidHeader hangs up after part of the manager's header line:
// the handshake fails at once rather than wait out its timeout.
func TestHostDiesMidHeader(t *testing.T) {
	checkNoLeaks(t)
	before := fdtest.Take(t)
	tunR, tunW, mgrR, mgrW := vpnlib.RPCPipes(t)
	tun, err := vpnlib.NewTunnel(vpnlib.TunnelConfig{TunFD: -1, RPCRead: tunR, RPCWrite: tunW})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tun.Close() })
	if _, err := io.WriteString(mgrW, "codervpn manager 1."); err != nil {
		t.Fatal(err)
	}
	diedAt := time.Now()
	_ = mgrW.Close()
	_ = mgrR.Close()
	waitTunnelGone(t, tun, diedAt, before, nil)
	if tun.Err() == nil {
		t.Error("a handshake cut short ended the session without an error")
	} else {
		t.Logf("the tunnel says: %v", tun.Err())
	}
}

// waitTunnelGone requires tun to end within hostDeathBound of diedAt and to
// hold no fd that was not open in before. The deployment d, if any, is
// closed first: its agents open sockets of their own (latency checks) at
// any time, and only the tunnel's must be accounted for here.
func waitTunnelGone(t *testing.T, tun *vpnlib.Tunnel, diedAt time.Time, before fdtest.Snapshot, d *vpntest.Deployment) {
	t.Helper()
	select {
	case <-tun.Done():
		t.Logf("the tunnel ended %v after the host died (err: %v)", time.Since(diedAt).Round(time.Millisecond), tun.Err())
	case <-time.After(hostDeathBound):
		t.Fatalf("the tunnel still runs %v after its host died", hostDeathBound)
	}
	if d != nil {
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
	}
	before.WaitClosed(t, nil, leakWait, "the tunnel")
}
