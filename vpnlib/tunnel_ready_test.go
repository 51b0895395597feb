package vpnlib_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/codervpn/codervpn/vpnlib/hosttest"
	"github.com/codervpn/codervpn/vpnlib/vpntest"
)

// A host uses the tunnel the moment StartResponse arrives (Coder Desktop asks
// for a snapshot, a user's ssh dials). By then the agents of the first
// workspace update are known and the engine has a peer for each, so the
// snapshot lists them and the very first TCP SYN gets through: nothing has
// to be retransmitted, which would cost a second.
func TestStartResponseMeansReady(t *testing.T) {
	r := newRig(t, rigOptions{deployment: &vpntest.Options{}, host: hosttest.Options{SendTunFD: true}})
	agent, err := r.d.AddRunningAgent(r.ctx, "dev", "main")
	if err != nil {
		t.Fatal(err)
	}
	r.start(nil)
	snap, err := r.h.GetPeerUpdate(r.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.GetUpsertedAgents()) != 1 {
		t.Fatalf("snapshot right after StartResponse: %v", snap)
	}
	before := r.h.Netstack().Stats().TCPSyns
	body := httpGet(r.ctx, t, r.h, netip.AddrPortFrom(agent.Addr, agent.HTTPPort))
	if !strings.Contains(body, "hello from agent main") {
		t.Fatalf("agent answered %q", body)
	}
	if n := r.h.Netstack().Stats().TCPSyns - before; n != 1 {
		t.Fatalf("the first connection after StartResponse took %d SYNs, want 1", n)
	}
	r.stop()
}
