package vpnlib_test

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/codervpn/codervpn/internal/fdtest"
	vpnpb "github.com/codervpn/codervpn/proto"
	"github.com/codervpn/codervpn/vpnlib"
	"github.com/codervpn/codervpn/vpnlib/hosttest"
	"github.com/codervpn/codervpn/vpnlib/vpntest"
)

// silentListener is a deployment that hangs: the kernel completes TCP
// handshakes into its backlog, and nothing ever accepts or answers them
// (so no fd of this process belongs to those connections).
func silentListener(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return "http://" + l.Addr().String()
}

func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}

// TestTunnelStartErrors checks every way a Start can fail: the reply names
// the problem in words a user can act on, the failure leaves no fd,
// goroutine or engine behind, and the tunnel keeps serving (GetPeerUpdate
// is answered, empty) until it is stopped.
func TestTunnelStartErrors(t *testing.T) {
	cases := []struct {
		name   string
		host   hosttest.Options
		config func(*vpnlib.TunnelConfig)
		req    func(t *testing.T, d *vpntest.Deployment, req *vpnpb.StartRequest)
		want   []string
	}{
		{
			name: "empty url",
			req:  func(_ *testing.T, _ *vpntest.Deployment, r *vpnpb.StartRequest) { r.CoderUrl = "" },
			want: []string{"StartRequest.coder_url is empty"},
		},
		{
			name: "not http",
			req: func(_ *testing.T, _ *vpntest.Deployment, r *vpnpb.StartRequest) {
				r.CoderUrl = "ftp://coder.example.com"
			},
			want: []string{"StartRequest.coder_url must start with https:// or http://"},
		},
		{
			name: "no host",
			req:  func(_ *testing.T, _ *vpntest.Deployment, r *vpnpb.StartRequest) { r.CoderUrl = "https:///path" },
			want: []string{"StartRequest.coder_url", "has no host"},
		},
		{
			name: "empty token",
			req:  func(_ *testing.T, _ *vpntest.Deployment, r *vpnpb.StartRequest) { r.ApiToken = "" },
			want: []string{"StartRequest.api_token is empty"},
		},
		{
			name: "bad header name",
			req: func(_ *testing.T, _ *vpntest.Deployment, r *vpnpb.StartRequest) {
				r.Headers = []*vpnpb.StartRequest_Header{{Name: "Bad Name", Value: "v"}}
			},
			want: []string{`StartRequest.headers[0].name "Bad Name" is not a valid HTTP header name`},
		},
		{
			name:   "no tun fd",
			config: func(c *vpnlib.TunnelConfig) { c.TunFD = -1 },
			want:   []string{"StartRequest.tunnel_file_descriptor is 0 (unset)"},
		},
		{
			name:   "closed tun fd",
			config: func(c *vpnlib.TunnelConfig) { c.TunFD = -1 },
			req:    func(_ *testing.T, _ *vpntest.Deployment, r *vpnpb.StartRequest) { r.TunnelFileDescriptor = 1 << 20 },
			want:   []string{"StartRequest.tunnel_file_descriptor 1048576 is not usable", "bad file descriptor"},
		},
		{
			name: "connection refused",
			req: func(t *testing.T, _ *vpntest.Deployment, r *vpnpb.StartRequest) {
				r.CoderUrl = "http://" + closedAddr(t)
			},
			want: []string{"cannot reach http://127.0.0.1:", "connection refused"},
		},
		{
			name: "token rejected",
			req:  func(_ *testing.T, _ *vpntest.Deployment, r *vpnpb.StartRequest) { r.ApiToken = "wrong-token" },
			want: []string{"the deployment rejected the API token (401)"},
		},
		{
			name: "not a deployment",
			req: func(t *testing.T, _ *vpntest.Deployment, r *vpnpb.StartRequest) {
				srv := httptest.NewServer(http.NotFoundHandler())
				t.Cleanup(srv.Close)
				r.CoderUrl = srv.URL
			},
			want: []string{" is not a Coder deployment (404 on /api/v2/users/me)"},
		},
		{
			name: "untrusted certificate",
			req: func(t *testing.T, _ *vpntest.Deployment, r *vpnpb.StartRequest) {
				srv := httptest.NewUnstartedServer(http.NotFoundHandler())
				srv.Config.ErrorLog = quietLog()
				srv.StartTLS()
				t.Cleanup(srv.Close)
				r.CoderUrl = srv.URL
			},
			want: []string{"TLS error talking to https://127.0.0.1:", "unknown authority"},
		},
		{
			name: "settings refused",
			host: hosttest.Options{RefuseSettings: "the VPN configuration is disabled"},
			want: []string{"the host refused the network settings: the VPN configuration is disabled"},
		},
		{
			name:   "settings unanswered",
			host:   hosttest.Options{IgnoreSettings: true},
			config: func(c *vpnlib.TunnelConfig) { c.SettingsTimeout = 300 * time.Millisecond },
			want:   []string{"the host did not answer the network settings request within 300ms"},
		},
		{
			name:   "deadline",
			config: func(c *vpnlib.TunnelConfig) { c.StartTimeout = 500 * time.Millisecond },
			req: func(t *testing.T, _ *vpntest.Deployment, r *vpnpb.StartRequest) {
				r.CoderUrl = silentListener(t)
			},
			want: []string{"the tunnel did not start within 500ms", "cannot reach http://127.0.0.1:", "timed out"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, rigOptions{deployment: &vpntest.Options{}, host: tc.host, config: tc.config})
			req := &vpnpb.StartRequest{CoderUrl: r.d.URL.String(), ApiToken: r.d.Token}
			if tc.req != nil {
				tc.req(t, r.d, req)
			}
			// GetPeerUpdate before Start: answered, empty. It also proves
			// the tunnel's loops run before we take the goroutine snapshot.
			pu, err := r.h.GetPeerUpdate(r.ctx)
			if err != nil {
				t.Fatalf("GetPeerUpdate before Start: %v", err)
			}
			if len(pu.UpsertedAgents)+len(pu.UpsertedWorkspaces)+len(pu.DeletedAgents)+len(pu.DeletedWorkspaces) != 0 {
				t.Fatalf("GetPeerUpdate before Start is not empty: %v", pu)
			}
			fdsBefore := fdtest.Take(t)
			ignore := goleak.IgnoreCurrent()

			started := time.Now()
			resp, err := r.h.Start(r.ctx, req)
			if err != nil {
				t.Fatalf("start: %v", err)
			}
			if resp.Success {
				t.Fatal("Start succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(resp.ErrorMessage, w) {
					t.Errorf("error %q does not contain %q", resp.ErrorMessage, w)
				}
			}
			t.Logf("Start failed after %v: %s", time.Since(started).Round(time.Millisecond), resp.ErrorMessage)
			if strings.Contains(resp.ErrorMessage, r.d.Token) {
				t.Errorf("the error carries the token: %s", resp.ErrorMessage)
			}

			// Nothing the failed Start made survives it.
			waitNoNewGoroutines(t, ignore, "the failed Start")
			fdsBefore.WaitClosed(t, nil, leakWait, "the failed Start")

			pu, err = r.h.GetPeerUpdate(r.ctx)
			if err != nil {
				t.Fatalf("GetPeerUpdate after a failed Start: %v", err)
			}
			if len(pu.UpsertedAgents)+len(pu.UpsertedWorkspaces) != 0 {
				t.Fatalf("GetPeerUpdate after a failed Start is not empty: %v", pu)
			}
			r.stop()
		})
	}
}
