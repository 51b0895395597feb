package vpntest_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/goleak"

	"cdr.dev/slog/v3"
	"cdr.dev/slog/v3/sloggers/slogtest"
	"github.com/coder/coder/v2/codersdk/workspacesdk"
	"github.com/coder/coder/v2/tailnet"

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

// coderClient wraps vpntest.Client, the client assembled only from Coder's
// client libraries, with the helpers these tests use.
type coderClient struct {
	*vpntest.Client
	conn     *tailnet.Conn
	updates  *tailnet.TunnelAllWorkspaceUpdatesController
	resume   tailnet.ResumeTokenController
	connInfo workspacesdk.AgentConnectionInfo
}

func newCoderClient(ctx context.Context, t testing.TB, d *vpntest.Deployment) *coderClient {
	t.Helper()
	cl, err := d.Dial(ctx, testLogger(t).Named("client"))
	if err != nil {
		t.Fatal(err)
	}
	c := &coderClient{Client: cl, conn: cl.Conn, updates: cl.Updates, resume: cl.Resume, connInfo: cl.ConnInfo}
	t.Cleanup(c.close)
	return c
}

// close stops the controller and the tailnet; safe to call more than once.
func (c *coderClient) close() { _ = c.Client.Close() }

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
