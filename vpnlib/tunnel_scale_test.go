package vpnlib_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/coder/coder/v2/codersdk"

	"github.com/codervpn/codervpn/vpnlib/vpntest"
)

// A user with 2,000 agents: the tunnel comes up with every peer in the
// engine over one control connection, and stops without leaving goroutines
// behind (the rig checks).
//
// Both have failed. The coordinator drops a client that falls 512 responses
// behind, and applying its nodes one response at a time (each a full engine
// status) fell that far behind in the C host at this scale (the bench counts
// the drops; in this process the drop did not reproduce, the start took 57 s
// under the race detector instead of 15). And a stop marked every peer lost,
// which for peers that never completed a handshake started one status-building
// goroutine each: thousands of them outlived the tunnel.
func TestManyAgents(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a tunnel to 2,000 agents")
	}
	const workspaces, perWorkspace = 1000, 2
	r := newRig(t, rigOptions{deployment: &vpntest.Options{}})
	for i := range workspaces {
		ws, err := r.d.AddWorkspace(fmt.Sprintf("ws-%04d", i), codersdk.WorkspaceStatusRunning)
		if err != nil {
			t.Fatal(err)
		}
		for j := range perWorkspace {
			if _, err := r.d.AddStubAgent(r.ctx, ws.ID, fmt.Sprintf("agent-%d", j)); err != nil {
				t.Fatal(err)
			}
		}
	}
	r.start(nil)
	want := workspaces * perWorkspace
	for r.tun.EnginePeers() < want {
		if r.ctx.Err() != nil {
			t.Fatalf("the engine has %d of %d peers at the deadline", r.tun.EnginePeers(), want)
		}
		time.Sleep(50 * time.Millisecond) // polling interval
	}
	if n := r.d.TotalControlConnections(); n != 1 {
		t.Errorf("%d control connections by the time the engine had all %d peers, want 1 (the coordinator dropped us)", n, want)
	}
	r.stop()
}
