package bench

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/coder/coder/v2/codersdk"

	vpnpb "github.com/codervpn/codervpn/proto"
	"github.com/codervpn/codervpn/vpnlib"
	"github.com/codervpn/codervpn/vpnlib/hosttest"
	"github.com/codervpn/codervpn/vpnlib/vpntest"
)

// world is an embedded deployment with one running workspace "dev" and its
// agents main, second, third... (as many as asked for).
type world struct {
	d      *vpntest.Deployment
	agents []*vpntest.Agent
}

var agentNames = []string{"main", "second", "third"}

func newWorld(ctx context.Context, b *testing.B, opts vpntest.Options, agents int) world {
	b.Helper()
	d := vpntest.New(b, opts)
	ws, err := d.AddWorkspace("dev", codersdk.WorkspaceStatusRunning)
	if err != nil {
		b.Fatal(err)
	}
	w := world{d: d}
	for _, name := range agentNames[:agents] {
		a, err := d.AddAgent(ctx, ws.ID, name)
		if err != nil {
			b.Fatal(err)
		}
		w.agents = append(w.agents, a)
	}
	return w
}

// sinkAddr is the agent's byte sink: it counts what it gets until EOF.
func sinkAddr(a *vpntest.Agent) netip.AddrPort { return netip.AddrPortFrom(a.Addr, a.SinkPort) }

// startTunnel runs our tunnel in this process on a hosttest.Host (manager
// and userspace IP stack on a utun socketpair), starts it against w and
// waits until every agent is known to the manager.
func startTunnel(ctx context.Context, b *testing.B, w world, hopts hosttest.Options) *hosttest.Host {
	b.Helper()
	h := hosttest.New(b, hopts)
	tunFile, read, write := h.TunnelFiles()
	tun, err := vpnlib.NewTunnel(vpnlib.TunnelConfig{TunFD: int(tunFile.Fd()), RPCRead: read, RPCWrite: write})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = tun.Close() })
	if err := h.Connect(ctx); err != nil {
		b.Fatal(err)
	}
	resp, err := h.Start(ctx, &vpnpb.StartRequest{CoderUrl: w.d.URL.String(), ApiToken: w.d.Token})
	if err != nil || !resp.GetSuccess() {
		b.Fatalf("StartRequest: %v %v", resp, err)
	}
	waitAgents(ctx, b, h, len(w.agents))
	return h
}

func waitAgents(ctx context.Context, b *testing.B, h *hosttest.Host, n int) {
	b.Helper()
	_, err := h.WaitPeerUpdate(ctx, func(s *hosttest.PeerState) bool {
		for _, name := range agentNames[:n] {
			if s.Agent("dev", name) == nil {
				return false
			}
		}
		return true
	})
	if err != nil {
		b.Fatal(err)
	}
}

// dialer opens TCP connections to agents over one path under test.
type dialer func(ctx context.Context, addr netip.AddrPort) (net.Conn, error)

// dialRetry dials until the path works: the first packets to a new peer
// wait for WireGuard's handshake, which is not what is being measured.
func dialRetry(ctx context.Context, dial dialer, addr netip.AddrPort) (net.Conn, error) {
	for {
		attempt, cancel := context.WithTimeout(ctx, 2*time.Second)
		c, err := dial(attempt, addr)
		cancel()
		if err == nil {
			return c, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("dial %v: %w", addr, err)
		}
	}
}

// sendToSink writes size bytes to the agent's sink over one TCP stream and
// returns the rate at which they arrived: the clock stops when the agent's
// count of received bytes comes back.
func sendToSink(ctx context.Context, dial dialer, a *vpntest.Agent, size int64) (float64, error) {
	c, err := dialRetry(ctx, dial, sinkAddr(a))
	if err != nil {
		return 0, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	chunk := make([]byte, 64<<10)
	start := time.Now()
	for sent := int64(0); sent < size; {
		n := min(int64(len(chunk)), size-sent)
		if _, err := c.Write(chunk[:n]); err != nil {
			return 0, fmt.Errorf("write to the sink: %w", err)
		}
		sent += n
	}
	cw, ok := c.(interface{ CloseWrite() error })
	if !ok {
		return 0, fmt.Errorf("%T cannot half-close", c)
	}
	if err := cw.CloseWrite(); err != nil {
		return 0, fmt.Errorf("half-close: %w", err)
	}
	var got [8]byte
	if _, err := io.ReadFull(c, got[:]); err != nil {
		return 0, fmt.Errorf("read the sink's count: %w", err)
	}
	elapsed := time.Since(start)
	if n := binary.BigEndian.Uint64(got[:]); n != uint64(size) {
		return 0, fmt.Errorf("the sink counted %d bytes, sent %d", n, size)
	}
	return float64(size) / elapsed.Seconds(), nil
}
