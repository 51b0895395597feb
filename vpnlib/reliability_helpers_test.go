package vpnlib_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/coder/coder/v2/codersdk"

	vpnpb "github.com/codervpn/codervpn/proto"
	"github.com/codervpn/codervpn/vpnlib/hosttest"
	"github.com/codervpn/codervpn/vpnlib/vpntest"
)

// attemptTimeout bounds one probe of an agent through the tunnel. A probe
// whose first SYN is lost waits for gVisor's retransmission (1 s), so
// recovery times are measured to about a second.
const attemptTimeout = 2 * time.Second

// probeHTTP fetches / from agent through h's tunnel once and checks that the
// agent named itself.
func probeHTTP(ctx context.Context, h *hosttest.Host, a *vpntest.Agent) error {
	return probeHTTPWithin(ctx, h, a, attemptTimeout)
}

// probeHTTPWithin is probeHTTP bounded by d instead of attemptTimeout.
func probeHTTPWithin(ctx context.Context, h *hosttest.Host, a *vpntest.Agent, d time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	conn, err := h.DialTCP(ctx, netip.AddrPortFrom(a.Addr, a.HTTPPort))
	if err != nil {
		return err
	}
	defer conn.Close()
	dl, _ := ctx.Deadline()
	_ = conn.SetDeadline(dl)
	if _, err := fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n"); err != nil {
		return fmt.Errorf("send the request: %w", err)
	}
	body, err := io.ReadAll(conn)
	if err != nil {
		return fmt.Errorf("read the answer: %w", err)
	}
	if want := "hello from agent " + a.Name; !strings.Contains(string(body), want) {
		return fmt.Errorf("the agent answered %q, want %q in it", body, want)
	}
	return nil
}

// waitTraffic probes agent until a probe succeeds and returns how long that
// took from since. Each probe is bounded by attemptTimeout, which paces the
// loop; a probe that fails at once (no route yet) waits a moment before the
// next, since there is nothing to wait on.
func waitTraffic(ctx context.Context, t *testing.T, h *hosttest.Host, a *vpntest.Agent, since time.Time) time.Duration {
	t.Helper()
	var last error
	for ctx.Err() == nil {
		started := time.Now()
		if last = probeHTTP(ctx, h, a); last == nil {
			return time.Since(since)
		}
		if time.Since(started) < 100*time.Millisecond {
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	t.Fatalf("agent %s never answered through the tunnel: %v", a.Name, last)
	return 0
}

// waitFor polls cond until it holds, for state that has no notification
// (deployment counters).
func waitFor(ctx context.Context, t *testing.T, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// stream is one TCP connection to an agent's sink port, kept open across a
// fault: if the tunnel survives without a restart, the connection does too.
type stream struct {
	conn net.Conn
	sent uint64
}

func openStream(ctx context.Context, t *testing.T, h *hosttest.Host, a *vpntest.Agent) *stream {
	t.Helper()
	conn, err := h.DialTCP(ctx, netip.AddrPortFrom(a.Addr, a.SinkPort))
	if err != nil {
		t.Fatalf("open a stream to %s: %v", a.Name, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &stream{conn: conn}
}

// send writes n bytes within the context's deadline.
func (s *stream) send(ctx context.Context, n int) error {
	if dl, ok := ctx.Deadline(); ok {
		_ = s.conn.SetWriteDeadline(dl)
	}
	w, err := s.conn.Write(make([]byte, n))
	s.sent += uint64(w)
	return err
}

// finish half-closes the stream and checks the agent counted every byte.
func (s *stream) finish(ctx context.Context) error {
	cw, ok := s.conn.(interface{ CloseWrite() error })
	if !ok {
		return errors.New("the stream cannot half-close")
	}
	if err := cw.CloseWrite(); err != nil {
		return fmt.Errorf("half-close: %w", err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = s.conn.SetReadDeadline(dl)
	}
	var count [8]byte
	if _, err := io.ReadFull(s.conn, count[:]); err != nil {
		return fmt.Errorf("read the sink's count: %w", err)
	}
	if got := binary.BigEndian.Uint64(count[:]); got != s.sent {
		return fmt.Errorf("the sink counted %d bytes, %d were sent", got, s.sent)
	}
	return nil
}

// startWithAgent adds workspace dev with agent main to the rig's deployment,
// starts the tunnel against url (the deployment's, or a proxy's) and waits
// for the agent to answer through the tunnel.
func (r *rig) startWithAgent(url string) (*vpntest.Workspace, *vpntest.Agent) {
	r.t.Helper()
	ws, err := r.d.AddWorkspace("dev", codersdk.WorkspaceStatusRunning)
	if err != nil {
		r.t.Fatal(err)
	}
	a, err := r.d.AddAgent(r.ctx, ws.ID, "main")
	if err != nil {
		r.t.Fatal(err)
	}
	resp, err := r.h.Start(r.ctx, &vpnpb.StartRequest{CoderUrl: url, ApiToken: r.d.Token})
	if err != nil {
		r.t.Fatalf("start: %v", err)
	}
	if !resp.Success {
		r.t.Fatalf("start failed: %s", resp.ErrorMessage)
	}
	r.waitAgent("dev", "main")
	took := waitTraffic(r.ctx, r.t, r.h, a, time.Now())
	r.t.Logf("first answer through the tunnel after %v", took.Round(time.Millisecond))
	return ws, a
}

// warnings returns the Log messages at warning level or above whose text
// contains s.
func warnings(h *hosttest.Host, s string) []string {
	var out []string
	for _, l := range h.Logs() {
		if l.GetLevel() < vpnpb.Log_WARN {
			continue
		}
		text := fmt.Sprint(l.GetMessage(), " ", l.GetFields())
		if strings.Contains(text, s) {
			out = append(out, text)
		}
	}
	return out
}

// countLogs counts the Log messages (any level) whose message contains s.
func countLogs(h *hosttest.Host, s string) int {
	n := 0
	for _, l := range h.Logs() {
		if strings.Contains(l.GetMessage(), s) {
			n++
		}
	}
	return n
}
