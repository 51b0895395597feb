package vpntest_test

import (
	"errors"
	"io"
	"net/http"
	"syscall"
	"testing"

	"github.com/codervpn/codervpn/vpnlib/vpntest"
)

// TestProxyCutAndRestore checks the proxy forwards to the deployment,
// refuses connections while cut (and closes the ones it carried), and
// forwards again on the same address once restored.
func TestProxyCutAndRestore(t *testing.T) {
	d := vpntest.New(t, vpntest.Options{})
	p := vpntest.NewProxy(t, d.URL)
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	get := func() error {
		resp, err := client.Get(p.URL.JoinPath("/derp/latency-check").String())
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d through the proxy", resp.StatusCode)
		}
		return nil
	}
	if err := get(); err != nil {
		t.Fatalf("through the proxy: %v", err)
	}
	p.Cut()
	if err := get(); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("while cut: %v, want connection refused", err)
	}
	if err := p.Restore(); err != nil {
		t.Fatal(err)
	}
	if err := get(); err != nil {
		t.Fatalf("after restore: %v", err)
	}
	if n := p.Accepted(); n != 2 {
		t.Errorf("Accepted = %d, want 2", n)
	}
	p.Close()
	if err := p.Restore(); err == nil {
		t.Error("Restore after Close succeeded")
	}
}

// TestRestarts restarts the coordinator, the relay and an agent under a
// client built from Coder's own libraries: after each, the client reaches
// the agent again, and the agent keeps its id and address.
func TestRestarts(t *testing.T) {
	ctx := testCtx(t)
	d := vpntest.New(t, vpntest.Options{BlockDirect: true, Logger: testLogger(t).Named("deployment")})
	a, err := d.AddRunningAgent(ctx, "dev", "main")
	if err != nil {
		t.Fatal(err)
	}
	c := newCoderClient(ctx, t, d)
	c.waitForAgent(ctx, t, a.ID)
	c.waitHello(ctx, t, a)

	oldCoord := d.Coordinator()
	if err := d.RestartCoordinator(); err != nil {
		t.Fatal(err)
	}
	if d.Coordinator() == oldCoord {
		t.Fatal("Coordinator() still returns the old coordinator")
	}
	c.waitHello(ctx, t, a)

	if err := d.RestartDERP(); err != nil {
		t.Fatal(err)
	}
	c.waitHello(ctx, t, a)

	back, err := d.RestartAgent(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if back.ID != a.ID || back.Addr != a.Addr || back == a {
		t.Fatalf("restarted agent %+v, want a new agent with id %s and address %s", back, a.ID, a.Addr)
	}
	if agents := d.Agents(); len(agents) != 1 || agents[0] != back {
		t.Fatalf("Agents() = %v after the restart, want only the new agent", agents)
	}
	c.waitHello(ctx, t, back)

	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.RestartCoordinator(); err == nil {
		t.Error("RestartCoordinator after Close succeeded")
	}
	if err := d.RestartDERP(); err == nil {
		t.Error("RestartDERP after Close succeeded")
	}
}
