package vpntest_test

import (
	"testing"

	"github.com/coder/coder/v2/codersdk"

	"github.com/codervpn/codervpn/vpnlib/vpntest"
)

// A stub agent is listed and has a node a client receives, with no engine.
func TestStubAgent(t *testing.T) {
	ctx := testCtx(t)
	d := vpntest.New(t, vpntest.Options{Logger: testLogger(t)})
	ws, err := d.AddWorkspace("big", codersdk.WorkspaceStatusRunning)
	if err != nil {
		t.Fatal(err)
	}
	stub, err := d.AddStubAgent(ctx, ws.ID, "stub")
	if err != nil {
		t.Fatal(err)
	}
	if stub.Conn() != nil {
		t.Fatal("a stub agent has an engine")
	}
	if _, err := d.AddStubAgent(ctx, ws.ID, "stub"); err == nil {
		t.Fatal("a second agent named stub was accepted")
	}
	c := newCoderClient(ctx, t, d)
	c.waitForAgent(ctx, t, stub.ID)
	waitFor(ctx, t, "the stub agent's node", func() bool {
		return c.conn.GetPeerDiagnostics(stub.ID).ReceivedNode != nil
	})
	if err := d.RemoveAgent(stub.ID); err != nil {
		t.Fatal(err)
	}
}
