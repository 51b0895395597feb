package vpnlib_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/coder/coder/v2/codersdk"

	"github.com/codervpn/codervpn/vpnlib"
	"github.com/codervpn/codervpn/vpnlib/hosttest"
	"github.com/codervpn/codervpn/vpnlib/vpntest"
)

// A user with 2,000 agents: the tunnel comes up with every peer in the
// engine, and stops without leaving goroutines behind (the rig checks).
//
// Each has failed. The coordinator drops a client that falls 512 responses
// behind, and applying its nodes one response at a time (each a full engine
// status) fell that far behind at this scale; the bench counts the drops
// (target 0). Here the deployment shares the process, and when other work
// keeps both cores busy it can still outrun our reading and drop us: the
// test logs the reconnects and requires what the user needs, every peer
// back after them. That found the next fault: the loss of the first
// connection was applied after nodes the second had sent, and hundreds of
// agents never came back (peerBatcher.coordinationLost). And a stop marked
// every peer lost, which for peers that never completed a handshake started
// one status-building goroutine each: thousands of them outlived the tunnel.
//
// Each step has a deadline of its own: under the race detector on a loaded
// machine the engine took 52 s to get all peers, and a deadline shared with
// the start left the stop none.
func TestManyAgents(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a tunnel to 2,000 agents")
	}
	const workspaces, perWorkspace = 1000, 2
	// No ping rounds: a round is an engine ping to each of 2,000 agents that
	// never answer, which under the race detector on a busy machine costs
	// more than everything this test is about (TestPingRoundEndsWithTheSession
	// covers a round cut short by the stop).
	r := newRig(t, rigOptions{deployment: &vpntest.Options{}, config: func(c *vpnlib.TunnelConfig) {
		c.PingInterval = time.Hour
	}})
	setup := r.step()
	for i := range workspaces {
		ws, err := r.d.AddWorkspace(fmt.Sprintf("ws-%04d", i), codersdk.WorkspaceStatusRunning)
		if err != nil {
			t.Fatal(err)
		}
		for j := range perWorkspace {
			if _, err := r.d.AddStubAgent(setup, ws.ID, fmt.Sprintf("agent-%d", j)); err != nil {
				t.Fatal(err)
			}
		}
	}
	r.start(nil)
	want := workspaces * perWorkspace
	began := time.Now()
	if err := waitEnginePeers(r.step(), r.tun, want); err != nil {
		t.Fatal(err)
	}
	t.Logf("the engine had all %d peers %s after the StartResponse", want, time.Since(began).Round(time.Millisecond))
	if _, err := r.h.WaitPeerUpdate(r.step(), func(s *hosttest.PeerState) bool { return len(s.Agents) == want }); err != nil {
		t.Fatalf("the host was not told of every agent: %v", err)
	}
	if n := r.d.TotalControlConnections(); n != 1 {
		t.Logf("the coordinator dropped us %d times during the start (the bench counts this, target 0)", n-1)
	}
	began = time.Now()
	r.stop()
	t.Logf("StopRequest → tunnel done: %s", time.Since(began).Round(time.Millisecond))
}

// waitEnginePeers waits until the tunnel's engine has want peers. The
// engine announces nothing when it takes peers in, so its status is read
// every 100 ms; each read builds the status of every peer, so not more often.
func waitEnginePeers(ctx context.Context, tun *vpnlib.Tunnel, want int) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		n := tun.EnginePeers()
		if n >= want {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the engine has %d of %d peers: %w", n, want, context.Cause(ctx))
		case <-tick.C:
		}
	}
}
