package vpnlib

import (
	"context"
	"net/netip"
	"os"
	"testing"
	"time"

	"tailscale.com/ipn/ipnstate"
	"tailscale.com/types/key"

	"github.com/coder/coder/v2/tailnet"
)

// Engine is what a session needs of the tailnet engine, for fakes.
type Engine = engine

// SetEngine makes tunnels made with c start newEngine instead of the
// tailnet engine.
func SetEngine(c *TunnelConfig, newEngine func(*tailnet.Options) (Engine, error)) {
	c.newEngine = newEngine
}

// EnginePeers reports how many WireGuard peers the running session's engine
// has, or -1 when no session runs. For tests that must know when the
// coordinator's nodes have all reached the engine.
func (t *Tunnel) EnginePeers() int {
	t.mu.Lock()
	sess := t.session
	t.mu.Unlock()
	if sess == nil {
		return -1
	}
	return len(sess.conn.Status().Peer)
}

// RPCPipes opens the two pipes between a tunnel and its manager: the tunnel
// reads tunR and writes tunW, the manager reads mgrR and writes mgrW.
// Closing them is left to the caller, since tests hang up on purpose.
func RPCPipes(t testing.TB) (tunR, tunW, mgrR, mgrW *os.File) {
	t.Helper()
	tunR, mgrW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	mgrR, tunW, err = os.Pipe()
	if err != nil {
		_ = tunR.Close()
		_ = mgrW.Close()
		t.Fatal(err)
	}
	return tunR, tunW, mgrR, mgrW
}

// EngineHandshake reports when the running session's engine last completed
// a WireGuard handshake with the peer whose node key is k; the zero time
// when it has no session with it (or no such peer, or no session runs).
func (t *Tunnel) EngineHandshake(k key.NodePublic) time.Time {
	t.mu.Lock()
	sess := t.session
	t.mu.Unlock()
	if sess == nil {
		return time.Time{}
	}
	if ps, ok := sess.conn.Status().Peer[k]; ok {
		return ps.LastHandshake
	}
	return time.Time{}
}

// SetResolver makes tunnels made with c resolve the deployment's hosts
// (to keep its addresses out of the tunnel's routes) with resolve.
func SetResolver(c *TunnelConfig, resolve func(ctx context.Context, host string) ([]netip.Addr, error)) {
	c.resolveHost = resolve
}

// EngineStatus is the running session's engine status, or nil when no
// session runs: for tests that follow one peer's path and handshakes.
func (t *Tunnel) EngineStatus() *ipnstate.Status {
	t.mu.Lock()
	sess := t.session
	t.mu.Unlock()
	if sess == nil {
		return nil
	}
	return sess.conn.Status()
}

// EngineNodeKey is the running session's node key, or the zero key.
func (t *Tunnel) EngineNodeKey() key.NodePublic {
	t.mu.Lock()
	sess := t.session
	t.mu.Unlock()
	if sess == nil {
		return key.NodePublic{}
	}
	if n := sess.conn.Node(); n != nil {
		return n.Key
	}
	return key.NodePublic{}
}
