package vpntest_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/goleak"
	"tailscale.com/tailcfg"

	"cdr.dev/slog/v3"
	"cdr.dev/slog/v3/sloggers/slogtest"
	"github.com/coder/coder/v2/codersdk"
	"github.com/coder/coder/v2/codersdk/workspacesdk"
	"github.com/coder/coder/v2/tailnet"
	tailnetproto "github.com/coder/coder/v2/tailnet/proto"
	"github.com/coder/quartz"
	"github.com/coder/websocket"

	"github.com/codervpn/codervpn/vpnlib/vpntest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testTimeout bounds every wait in these tests.
const testTimeout = 30 * time.Second

func testLogger(t testing.TB) slog.Logger {
	return slogtest.Make(t, &slogtest.Options{IgnoreErrors: true}).Leveled(slog.LevelInfo)
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// coderClient is a CoderVPN-style client assembled only from Coder's client
// libraries (codersdk, workspacesdk's websocket dialer, tailnet controllers
// and tailnet.NewConn with netstack), i.e. an independent peer that proves
// the deployment serves what those libraries expect.
type coderClient struct {
	conn     *tailnet.Conn
	ctrl     *tailnet.Controller
	updates  *tailnet.TunnelAllWorkspaceUpdatesController
	resume   tailnet.ResumeTokenController
	cancel   context.CancelFunc
	connInfo workspacesdk.AgentConnectionInfo
	me       codersdk.User

	closeOnce sync.Once
}

type rewriter struct{ d *vpntest.Deployment }

func (r rewriter) RewriteDERPMap(m *tailcfg.DERPMap) {
	tailnet.RewriteDERPMapDefaultRelay(context.Background(), slog.Logger{}, m, r.d.URL)
}

func newCoderClient(ctx context.Context, t testing.TB, d *vpntest.Deployment) *coderClient {
	t.Helper()
	logger := testLogger(t).Named("client")
	sdk := codersdk.New(d.URL)
	sdk.SetSessionToken(d.Token)

	me, err := sdk.User(ctx, codersdk.Me)
	if err != nil {
		t.Fatalf("get users/me: %v", err)
	}
	info, err := workspacesdk.New(sdk).AgentConnectionInfoGeneric(ctx)
	if err != nil {
		t.Fatalf("get connection info: %v", err)
	}
	rewriter{d}.RewriteDERPMap(info.DERPMap)

	conn, err := tailnet.NewConn(&tailnet.Options{
		Addresses:           []netip.Prefix{tailnet.CoderServicePrefix.RandomPrefix()},
		DERPMap:             info.DERPMap,
		DERPForceWebSockets: info.DERPForceWebSockets,
		BlockEndpoints:      info.DisableDirectConnections,
		Logger:              logger.Named("tailnet"),
		DNSMatchDomain:      info.HostnameSuffix,
	})
	if err != nil {
		t.Fatalf("client tailnet: %v", err)
	}

	rpcURL := d.URL.JoinPath("/api/v2/tailnet")
	header := http.Header{}
	header.Set(codersdk.SessionTokenHeader, d.Token)
	dialer := workspacesdk.NewWebsocketDialer(logger.Named("dialer"), rpcURL, &websocket.DialOptions{
		HTTPHeader:      header,
		CompressionMode: websocket.CompressionDisabled,
	}, workspacesdk.WithWorkspaceUpdates(&tailnetproto.WorkspaceUpdatesRequest{
		WorkspaceOwnerId: tailnet.UUIDToByteSlice(me.ID),
	}))

	runCtx, cancel := context.WithCancel(context.Background())
	ctrl := tailnet.NewController(logger.Named("controller"), dialer)
	coordCtrl := tailnet.NewTunnelSrcCoordController(logger.Named("coord"), conn)
	ctrl.CoordCtrl = coordCtrl
	ctrl.DERPCtrl = tailnet.NewBasicDERPController(logger.Named("derp"), rewriter{d}, conn)
	resume := tailnet.NewBasicResumeTokenController(logger.Named("resume"), quartz.NewReal())
	ctrl.ResumeTokenCtrl = resume
	// No WithDNS: a netstack Conn has no DNS configurator to take the hosts.
	updates := tailnet.NewTunnelAllWorkspaceUpdatesController(logger.Named("updates"), coordCtrl)
	ctrl.WorkspaceUpdatesCtrl = updates
	ctrl.Run(runCtx)

	c := &coderClient{
		conn: conn, ctrl: ctrl, updates: updates, resume: resume,
		cancel: cancel, connInfo: info, me: me,
	}
	t.Cleanup(c.close)
	select {
	case err := <-dialer.Connected():
		if err != nil {
			t.Fatalf("connect to tailnet API: %v", err)
		}
	case <-ctx.Done():
		t.Fatalf("timed out connecting to the tailnet API: %v", ctx.Err())
	}
	return c
}

// close stops the controller and the tailnet; safe to call more than once.
func (c *coderClient) close() {
	c.closeOnce.Do(func() {
		c.cancel()
		<-c.ctrl.Closed()
		_ = c.conn.Close()
	})
}

func (c *coderClient) hasResumeToken() bool {
	_, ok := c.resume.Token()
	return ok
}

// waitForAgent waits until the client's workspace state lists the agent.
func (c *coderClient) waitForAgent(ctx context.Context, t testing.TB, id uuid.UUID) {
	t.Helper()
	waitFor(ctx, t, fmt.Sprintf("client to learn agent %s", id), func() bool {
		st, err := c.updates.CurrentState()
		if err != nil {
			return false
		}
		for _, a := range st.UpsertedAgents {
			if a.ID == id {
				return true
			}
		}
		return false
	})
}

// httpGet fetches path from the agent over the client's tailnet.
func (c *coderClient) httpGet(ctx context.Context, a *vpntest.Agent, path string) (string, error) {
	hc := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return c.conn.DialContextTCP(ctx, netip.AddrPortFrom(a.Addr, a.HTTPPort))
		},
		DisableKeepAlives: true,
	}}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s%s", a.Name, path), nil)
	if err != nil {
		return "", err
	}
	res, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return "", err
	}
	if res.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %d: %s", res.StatusCode, b)
	}
	return string(b), nil
}

// waitHello retries GET / on the agent until it answers with its name; the
// first attempts can fail while WireGuard handshakes.
func (c *coderClient) waitHello(ctx context.Context, t testing.TB, a *vpntest.Agent) {
	t.Helper()
	var lastErr error
	waitFor(ctx, t, fmt.Sprintf("HTTP reply from agent %s", a.Name), func() bool {
		attempt, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		body, err := c.httpGet(attempt, a, "/")
		if err != nil {
			lastErr = err
			return false
		}
		if !strings.Contains(body, "hello from agent "+a.Name) {
			lastErr = fmt.Errorf("unexpected body %q", body)
			return false
		}
		return true
	}, func() string { return fmt.Sprint(lastErr) })
}

// waitFor polls cond until it holds or ctx ends (then fails t). It polls
// rather than sleeps for a fixed time: the wait ends as soon as cond holds.
func waitFor(ctx context.Context, t testing.TB, what string, cond func() bool, detail ...func() string) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if cond() {
			return
		}
		select {
		case <-ctx.Done():
			msg := ""
			for _, d := range detail {
				msg += " " + d()
			}
			t.Fatalf("timed out waiting for %s:%s", what, msg)
		case <-tick.C:
		}
	}
}
