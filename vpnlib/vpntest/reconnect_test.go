package vpntest_test

import (
	"strings"
	"testing"

	"github.com/codervpn/codervpn/vpnlib/vpntest"
)

// TestDropControlConnections cuts the client's control connection; Coder's
// controller must reconnect (with its resume token, keeping its peer id)
// and the agent must stay reachable.
func TestDropControlConnections(t *testing.T) {
	ctx := testCtx(t)
	d := vpntest.New(t, vpntest.Options{BlockDirect: true, Logger: testLogger(t).Named("deployment")})
	a, err := d.AddRunningAgent(ctx, "dev", "main")
	if err != nil {
		t.Fatal(err)
	}
	c := newCoderClient(ctx, t, d)
	c.waitForAgent(ctx, t, a.ID)
	c.waitHello(ctx, t, a)
	if got := d.ControlConnections(); got != 1 {
		t.Fatalf("ControlConnections = %d before the drop, want 1", got)
	}
	// Wait until the client holds a resume token, so the reconnect can use it.
	waitFor(ctx, t, "the client to get a resume token", func() bool {
		return c.hasResumeToken()
	})

	n := d.DropControlConnections()
	if n != 1 {
		t.Fatalf("DropControlConnections closed %d, want 1", n)
	}
	// The dropped connection is no longer counted. The client may have
	// reconnected already (a busy machine can run it before this line), so
	// what is counted is at most what was accepted less what was dropped.
	if got, total := d.ControlConnections(), d.TotalControlConnections(); got > total-n {
		t.Fatalf("ControlConnections = %d of %d accepted right after dropping %d: a dropped one is still counted", got, total, n)
	}
	waitFor(ctx, t, "the client to reconnect", func() bool {
		return d.TotalControlConnections() == 2 && d.ControlConnections() == 1
	})
	tailnetReqs := d.RequestsTo("/api/v2/tailnet")
	if len(tailnetReqs) != 2 {
		t.Fatalf("%d requests to /api/v2/tailnet, want 2", len(tailnetReqs))
	}
	if !strings.Contains(tailnetReqs[1].RawQuery, "resume_token=") {
		t.Errorf("reconnect query %q carries no resume token", tailnetReqs[1].RawQuery)
	}
	c.waitHello(ctx, t, a)

	// The agent goes away and comes back under the same id; the client
	// follows through workspace updates.
	if err := d.RemoveAgent(a.ID); err != nil {
		t.Fatal(err)
	}
	back, err := d.AddAgentWithID(ctx, a.WorkspaceID, a.ID, "main")
	if err != nil {
		t.Fatal(err)
	}
	c.waitForAgent(ctx, t, back.ID)
	c.waitHello(ctx, t, back)
}
